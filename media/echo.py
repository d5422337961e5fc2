"""The echo test: send a client's own encoded media back to it, then report what arrived.

The worker answers the client's offer and, for each track it receives, sends the
same encoded packets back on that transceiver (media.passthrough: no decoding, no
re-encoding, keyframe requests relayed to the client). A `_Tap` beside the echo
counts frames, bytes, keyframes and picture size (from VP8 or H.264 keyframes);
after `duration` seconds of media the job turns the counts and aiortc's RTP
statistics into a report (media.report).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from aiortc.stats import RTCInboundRtpStreamStats, RTCRemoteInboundRtpStreamStats

from signaling.client import SignalReceived
from signaling.ids import ParticipantId

from .link import PeerLink, SendSignal
from .passthrough import (
    PassthroughReceiver,
    PassthroughTrack,
    enable_passthrough,
    relay_keyframe_requests,
    video_frame_size,
)
from .report import ConnectionObservation, EchoObservation, StreamObservation, report
from .taskutil import cancel_and_wait

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0  # seconds from the job's start to a connected peer connection
MAX_ECHO = 60.0  # seconds an echo goes on after its report, unless ended sooner
_POLL = 0.1
_CLOCK_RATES = {"audio": 48_000, "video": 90_000}

SendReport = Callable[[dict[str, Any]], Awaitable[None]]


class _Tap:
    """Reads one subscription of a received track and counts what went by."""

    def __init__(self, handle: PassthroughReceiver) -> None:
        self.kind = handle.kind
        self._handle = handle
        self.frames = 0
        self.bytes = 0
        self.keyframes = 0
        self.size: tuple[int, int] | None = None
        # Large enough that the tap never drops under normal load: it only counts.
        self._track: PassthroughTrack = handle.subscribe(max_queue=256)
        self.task = asyncio.create_task(self._run(), name=f"media-echo-tap:{self.kind}")

    async def _run(self) -> None:
        while True:
            try:
                packet = await self._track.recv()
            except MediaStreamError:
                return
            self.frames += 1
            self.bytes += packet.size
            if self.kind == "video" and packet.is_keyframe:
                self.keyframes += 1
                codec = self._handle.codec or "video/vp8"
                self.size = video_frame_size(codec, bytes(packet)) or self.size

    def snapshot(self) -> tuple[int, int, int]:
        return self.frames, self.bytes, self.keyframes

    async def close(self) -> None:
        self._track.stop()
        await cancel_and_wait(self.task)


class EchoJob:
    """One echo test for one requester; `close()` (idempotent) ends it."""

    load = 2  # an audio and a video stream

    def __init__(self, job: str, requester: ParticipantId, *, duration: float,
                 configuration: RTCConfiguration, send: SendSignal,
                 send_report: SendReport, on_done: Callable[[EchoJob], None]) -> None:
        self.id = job
        self.requester = requester
        self.duration = duration
        self._send_report = send_report
        self._on_done = on_done
        self._taps: dict[str, _Tap] = {}
        self._old_taps: list[_Tap] = []
        self._connected = False
        self.report: dict[str, Any] | None = None
        self.link = PeerLink(requester, polite=True, configuration=configuration,
                             media=self._attach, send=send)
        self._task = asyncio.create_task(self._run(), name=f"media-echo:{job}")
        self._closed = False

    def deliver(self, signal: SignalReceived) -> None:
        self.link.deliver(signal)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await cancel_and_wait(self._task)
        await self.link.close()
        for tap in [*self._taps.values(), *self._old_taps]:
            await tap.close()

    # -- media ---------------------------------------------------------------------------

    def _attach(self, pc: RTCPeerConnection) -> None:
        # A new connection (the first, or one after a glare) starts counting afresh.
        self._old_taps.extend(self._taps.values())
        self._taps = {}
        pc.on("track", lambda track: self._on_track(pc, track))
        pc.on("connectionstatechange", lambda: self._on_state(pc))

    def _on_track(self, pc: RTCPeerConnection, track: MediaStreamTrack) -> None:
        receiver = next(t.receiver for t in pc.getTransceivers() if t.receiver.track is track)
        handle = enable_passthrough(receiver)
        echo = handle.subscribe()
        relay_keyframe_requests(pc.addTrack(echo), echo)  # same transceiver: sendrecv
        if track.kind not in self._taps:
            self._taps[track.kind] = _Tap(handle)

    def _on_state(self, pc: RTCPeerConnection) -> None:
        if pc.connectionState == "connected":
            self._connected = True

    # -- the test ------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            start = time.monotonic()
            while not self._has_media():
                if time.monotonic() - start > CONNECT_TIMEOUT or self._failed():
                    break
                await asyncio.sleep(_POLL)
            before = await self._sample()
            if self._has_media():
                await asyncio.sleep(self.duration)
            after = await self._sample()
            self.report = report(await self._observe(before, after))
            log.info("echo %s: %s %s", self.id, self.report["verdict"], self.report["reasons"])
            await self._send_report(self.report)
            if self.report["verdict"] != "failed":
                await asyncio.sleep(MAX_ECHO)
        finally:
            self._on_done(self)

    def _failed(self) -> bool:
        pc = self.link.pc
        return pc is not None and pc.connectionState == "failed"

    def _has_media(self) -> bool:
        return self._connected and any(t.frames for t in self._taps.values())

    async def _sample(self) -> _Sample:
        pc = self.link.pc
        stats = list((await pc.getStats()).values()) if pc is not None else []
        return _Sample(time.monotonic(), {k: t.snapshot() for k, t in self._taps.items()},
                       stats)

    async def _observe(self, before: _Sample, after: _Sample) -> EchoObservation:
        window = max(after.at - before.at, 1e-3)
        streams: dict[str, StreamObservation] = {}
        for kind, tap in self._taps.items():
            f0, b0, _ = before.taps.get(kind, (0, 0, 0))
            f1, b1, k1 = after.taps[kind]  # keyframes: all, the first one included
            received0, lost0, _ = before.inbound(kind)
            received1, lost1, jitter = after.inbound(kind)
            streams[kind] = StreamObservation(
                kind=kind, packets=received1 - received0, packets_lost=lost1 - lost0,
                jitter_ms=1000.0 * jitter / _CLOCK_RATES[kind],
                bitrate_kbps=8 * (b1 - b0) / window / 1000, frames=f1 - f0,
                frame_rate=(f1 - f0) / window, keyframes=k1, size=tap.size)
        return EchoObservation(duration=window, connection=self._connection(),
                               rtt_ms=after.rtt_ms(), audio=streams.get("audio"),
                               video=streams.get("video"))

    def _connection(self) -> ConnectionObservation:
        pc = self.link.pc
        state = pc.connectionState if pc is not None else "new"
        ice = _ice_connection(pc)
        pair = next(iter(ice._nominated.values()), None) if ice is not None else None
        return ConnectionObservation(
            state=state, connected=self._connected,
            local=pair.local_candidate.type if pair else None,
            remote=pair.remote_candidate.type if pair else None,
            protocol=pair.local_candidate.transport.lower() if pair else None,
            remote_candidates=len(ice._remote_candidates) if ice is not None else 0)


class _Sample:
    def __init__(self, at: float, taps: dict[str, tuple[int, int, int]],
                 stats: list[Any]) -> None:
        self.at = at
        self.taps = taps
        self._stats = stats

    def inbound(self, kind: str) -> tuple[int, int, int]:
        """packetsReceived, packetsLost, jitter (RTP clock units) of the `kind` stream."""
        for s in self._stats:
            if isinstance(s, RTCInboundRtpStreamStats) and s.kind == kind:
                return s.packetsReceived, s.packetsLost, s.jitter
        return 0, 0, 0

    def rtt_ms(self) -> float | None:
        rtts = [s.roundTripTime for s in self._stats
                if isinstance(s, RTCRemoteInboundRtpStreamStats) and s.roundTripTime]
        return 1000.0 * max(rtts) if rtts else None


def _ice_connection(pc: RTCPeerConnection | None) -> Any:
    """aioice's Connection under the peer connection (private: for the selected pair and
    the candidates the client offered, which aiortc's getStats does not give)."""
    if pc is None:
        return None
    for transceiver in pc.getTransceivers():
        transport = transceiver.receiver.transport
        if transport is not None:
            return getattr(transport.transport, "_connection", None)
    return None
