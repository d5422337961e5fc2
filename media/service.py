"""`mikoto-rtc media-worker`: one MediaWorker process until SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

from .taskutil import cancel_and_wait
from .worker import MediaWorker

log = logging.getLogger(__name__)

_PARENT_POLL = 1.0


async def serve_worker(url: str, token: str | Callable[[], str], *, capacity: int,
                       recordings_dir: Path, parent: int | None = None) -> None:
    """Run a worker until a signal, or until process `parent` is gone (a worker that
    `mikoto-rtc serve` started must not outlive it, even when serve is killed)."""
    worker = MediaWorker(url, token, capacity=capacity, recordings_dir=recordings_dir)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(worker.start(), name="media-worker-start")
    watching = asyncio.create_task(_watch_parent(parent, stop), name="media-worker-parent")
    stopping = asyncio.create_task(_wait(stop), name="media-worker-stop")
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a refused token ends the process with its error
            log.info("media worker serving %s", url)
            await stopping
    finally:
        for task in (starting, watching, stopping):
            await cancel_and_wait(task)
        with contextlib.suppress(Exception):
            await worker.close()


async def _watch_parent(parent: int | None, stop: asyncio.Event) -> None:
    if parent is None:
        return
    # No event tells a process its parent died (short of prctl): poll.
    while os.getppid() == parent:  # noqa: ASYNC110
        await asyncio.sleep(_PARENT_POLL)
    log.warning("the process that started this media worker is gone: stopping")
    stop.set()


async def _wait(event: asyncio.Event) -> None:
    await event.wait()
