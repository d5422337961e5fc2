"""Stopping the background tasks and peer connections a media object owns."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from aiortc import RTCPeerConnection, RTCSessionDescription

log = logging.getLogger(__name__)

T = TypeVar("T")

# How long a cancelled task may take before it is cancelled again.
_RECANCEL_AFTER = 1.0
# How long closing a connection waits for a description change (an ICE gather) to end.
_CHANGE_WAIT = 10.0


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


async def finish(work: Awaitable[T]) -> T:
    """Await `work` (run as a task of its own) to its end even if the caller is cancelled
    meanwhile, then raise that cancellation.

    For closing (docs/decisions.md): unlike with `asyncio.shield`, the caller returns
    only once the work is done, so whoever cancelled it (`cancel_and_wait`) does not
    go on, and perhaps end the event loop, with a close halfway done.
    """
    task = asyncio.ensure_future(work)
    interrupted = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            interrupted = True
    if interrupted:
        raise asyncio.CancelledError
    return task.result()


# Where a peer connection keeps its description change in flight (see _carried).
_IN_FLIGHT = "_mikoto_in_flight"


async def set_local_description(pc: RTCPeerConnection,
                                description: RTCSessionDescription) -> None:
    """`pc.setLocalDescription`, carried to its end even if the caller is cancelled."""
    await _carried(pc, pc.setLocalDescription(description))


async def set_remote_description(pc: RTCPeerConnection,
                                 description: RTCSessionDescription) -> None:
    """`pc.setRemoteDescription`, carried to its end even if the caller is cancelled."""
    await _carried(pc, pc.setRemoteDescription(description))


async def _carried(pc: RTCPeerConnection, change: Awaitable[None]) -> None:
    """Both description changes open or close UDP sockets one at a time: the local one
    gathers ICE candidates, and aioice records a gather's sockets only once all are
    open; an answer stops the transports its BUNDLE makes redundant, closing their
    sockets one by one, and aiortc has forgotten them by then. Cut short (or overtaken
    by `pc.close()`), either leaks sockets. So the change runs shielded, and
    `close_pc` waits for it."""
    future = asyncio.ensure_future(change)
    setattr(pc, _IN_FLIGHT, future)
    await asyncio.shield(future)


async def close_pc(pc: RTCPeerConnection) -> None:
    """Close a peer connection once its description change in flight (if any) is done.

    All of it runs even if the caller is cancelled meanwhile (`finish`): aiortc stops
    the ICE transports, and so closes their sockets, last; a close cut short leaves
    them open, and a second `pc.close()` then waits forever for the first.
    """
    await finish(_close_pc(pc))


async def _close_pc(pc: RTCPeerConnection) -> None:
    future: asyncio.Future[None] | None = getattr(pc, _IN_FLIGHT, None)
    if future is not None and not future.done():
        await asyncio.wait([future], timeout=_CHANGE_WAIT)
    await pc.close()
    if future is not None and future.done() and not future.cancelled():
        future.exception()  # retrieved: a failed change on a closing connection is no news
