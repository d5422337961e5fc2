"""Recording one passthrough VP8 track to WebM by muxing its packets, without decoding.

Unlike aiortc's `MediaRecorder` (which decodes and re-encodes every frame inside the event
loop), this only writes the received bitstream: the picture size comes from the first
keyframe's header, and a size change mid-call needs no codec reopen.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
from pathlib import Path
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError
from av.packet import Packet

from .passthrough import PassthroughTrack, vp8_frame_size
from .taskutil import cancel_and_wait

log = logging.getLogger(__name__)


class WebmRecorder:
    """Writes the packets of one video PassthroughTrack to `path` until the track ends or
    `close()`. Whoever starts it must `await close()` it (idempotent), which finalizes the file.

    Timestamps are rebased so the file starts at 0. Writing is plain file I/O of encoded
    data on the event loop (tens of kB/s for a video track).
    """

    def __init__(self, path: str | Path, track: PassthroughTrack) -> None:
        if track.kind != "video":
            raise ValueError("WebmRecorder records VP8 video tracks")
        self.path = Path(path)
        self.track = track
        self.packets = 0
        self.size: tuple[int, int] | None = None
        self._container: Any = None
        self._stream: Any = None
        self._first_pts: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="media-webm-recorder")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            await cancel_and_wait(self._task)
        self.track.stop()
        if self._container is not None:
            self._container.close()
            self._container = None

    async def _run(self) -> None:
        while True:
            try:
                packet = await self.track.recv()
            except MediaStreamError:
                return
            try:
                self.write(packet)
            except (av.FFmpegError, ValueError):
                log.exception("writing %s failed; recording stops", self.path)
                return

    def write(self, packet: Packet[Any]) -> None:
        """Mux one VP8 packet (the track only yields a keyframe first)."""
        data = bytes(packet)
        if self._container is None:
            size = vp8_frame_size(data)
            if size is None:
                return  # cannot start a file on a delta frame
            self.size = size
            self._container = av.open(str(self.path), "w", format="webm")
            self._stream = self._container.add_mux_stream("vp8", width=size[0],
                                                          height=size[1])
            self._first_pts = packet.pts
        assert self._first_pts is not None and packet.pts is not None
        out = Packet(data)
        out.pts = out.dts = packet.pts - self._first_pts
        out.time_base = packet.time_base or fractions.Fraction(1, 90_000)
        out.is_keyframe = packet.is_keyframe
        out.stream = self._stream
        self._container.mux(out)
        self.packets += 1
