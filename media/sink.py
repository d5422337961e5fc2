"""A sink that reads a received track until it ends, counting its frames.

aiortc queues every decoded frame of a remote track without bound until someone
calls `recv()`, so every received track needs a reader, even one that only counts.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from .taskutil import cancel_and_wait

log = logging.getLogger(__name__)


class FrameCounter:
    """Counts the frames of one track from `start()` until the track ends or `close()`.

    Whoever starts it owns its task and must `await close()` it (idempotent).
    """

    def __init__(self, track: MediaStreamTrack) -> None:
        self.track = track
        self.kind: str = track.kind
        self.frames = 0
        # Size of the last video frame: the far side may change it mid-call.
        self.last_size: tuple[int, int] | None = None
        # Only the last video frame is kept, so a test can look at the picture.
        self.last_frame: VideoFrame | None = None
        # time.monotonic() at the first frame (how long a picture took to appear).
        self.first_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"media-sink:{self.kind}")

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    async def _run(self) -> None:
        while True:
            try:
                frame = await self.track.recv()
            except MediaStreamError:
                return  # the track ended
            except Exception:
                log.exception("reading a %s track failed; counting stops", self.kind)
                return
            self.frames += 1
            if self.first_at is None:
                self.first_at = time.monotonic()
            if isinstance(frame, VideoFrame):
                self.last_size = (frame.width, frame.height)
                self.last_frame = frame
