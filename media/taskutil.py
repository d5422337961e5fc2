"""Stopping the background tasks a media object owns."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)

# How long a cancelled task may take before it is cancelled again.
_RECANCEL_AFTER = 1.0


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait until it has finished.

    Unlike `task.cancel(); await task` under `suppress(CancelledError)`, this does not
    swallow a cancellation of the caller itself. The task is cancelled again if it
    carries on: some library code (aioice's close, for one) catches CancelledError
    while awaiting, which eats a cancellation meant for the task running it. An error
    the task ended with is logged, since nobody else will retrieve it.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=_RECANCEL_AFTER)
        if not task.done():
            log.warning("task %s ignored a cancellation; cancelling again", task.get_name())
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s failed", task.get_name(), exc_info=task.exception())
