"""A HeadlessPeer's side of a forwarded room: publish once, receive everyone from the worker.

Two connections to the worker (docs/protocol.md, "Forwarding"): `up` (we offer our
synthetic tracks) and `down` (the worker offers everyone else's tracks; we answer).
Each received track's id is `<publisher>-<kind>` (the worker sets the msid), so
frames are counted per publisher, as `PeerLink.stats` counts them per link in a mesh.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection

from signaling.client import SignalReceived
from signaling.ids import ParticipantId

from .forward import max_bundle
from .link import LinkStats, PeerLink, SendSignal
from .sink import FrameCounter
from .tracks import SyntheticMedia

log = logging.getLogger(__name__)


class ForwardedMedia:
    def __init__(self, worker: ParticipantId, *, configuration: RTCConfiguration,
                 media: SyntheticMedia, sender: Callable[[str], SendSignal],
                 send_loss: float = 0.0) -> None:
        self.worker = worker
        self._counters: dict[ParticipantId, list[FrameCounter]] = {}
        # When the down connection connected (time.monotonic()).
        self.connected_at: float | None = None
        self.up = PeerLink(worker, polite=False, configuration=configuration, media=media,
                           send=sender("up"), send_loss=send_loss)
        self.down = PeerLink(worker, polite=True, configuration=max_bundle(configuration),
                             media=self._attach, send=sender("down"))
        self.up.offer()

    def deliver(self, signal: SignalReceived) -> None:
        (self.down if signal.pc == "down" else self.up).deliver(signal)

    def stats(self) -> dict[ParticipantId, LinkStats]:
        out = {}
        for publisher, counters in self._counters.items():
            video = [c for c in counters if c.kind == "video"]
            sizes = [c.last_size for c in video if c.last_size is not None]
            out[publisher] = LinkStats(
                audio_frames=sum(c.frames for c in counters if c.kind == "audio"),
                video_frames=sum(c.frames for c in video),
                connection_state=self.down.connection_state,
                video_size=sizes[-1] if sizes else None, connections=1)
        return out

    def first_video(self) -> dict[ParticipantId, float]:
        """When each publisher's first video frame was decoded (time.monotonic())."""
        return {p: min(c.first_at for c in counters if c.first_at is not None)
                for p, counters in self._counters.items()
                if any(c.kind == "video" and c.first_at is not None for c in counters)}

    async def publisher_left(self, publisher: ParticipantId) -> None:
        for counter in self._counters.pop(publisher, []):
            await counter.close()

    async def close(self) -> None:
        await self.up.close()
        await self.down.close()
        for publisher in list(self._counters):
            await self.publisher_left(publisher)

    def _attach(self, pc: RTCPeerConnection) -> None:
        pc.on("track", self._on_track)
        pc.on("connectionstatechange", lambda: self._on_state(pc))

    def _on_state(self, pc: RTCPeerConnection) -> None:
        if pc.connectionState == "connected" and self.connected_at is None:
            self.connected_at = time.monotonic()

    def _on_track(self, track: MediaStreamTrack) -> None:
        publisher = ParticipantId(track.id.rsplit("-", 1)[0])
        counter = FrameCounter(track)
        self._counters.setdefault(publisher, []).append(counter)
        counter.start()
