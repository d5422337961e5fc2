"""Stopping the background tasks a media object owns."""

from __future__ import annotations

import asyncio
import logging

log = logging.getLogger(__name__)


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel `task` and wait until it has finished.

    Unlike `task.cancel(); await task` under `suppress(CancelledError)`, this does not
    swallow a cancellation of the caller itself; an error the task ended with is logged,
    since nobody else will retrieve it.
    """
    task.cancel()
    await asyncio.wait([task])
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s failed", task.get_name(), exc_info=task.exception())
