"""One remote participant: an RTCPeerConnection negotiated by perfect negotiation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCDataChannel,
    RTCIceCandidate,
    RTCPeerConnection,
    RTCSessionDescription,
)

from signaling.client import SignalReceived
from signaling.ids import ParticipantId

from .ice import parse_candidate
from .impair import lose_outgoing_rtp
from .sink import FrameCounter
from .taskutil import (
    cancel_and_wait,
    close_pc,
    finish,
    set_local_description,
    set_remote_description,
)
from .tracks import SyntheticMedia

log = logging.getLogger(__name__)

# Sends one signal to the remote participant: keyword arguments of
# SignalingClient.signal, {"description": {type, sdp}} or {"candidate": ... | None}.
SendSignal = Callable[[dict[str, Any]], Awaitable[None]]
# Told about each data channel the remote participant opens.
OnDataChannel = Callable[["PeerLink", RTCDataChannel], None]
# Sets up each new peer connection of a link in place of the synthetic media and frame
# counters: adds its tracks, handles "track" (and then owns consuming every received track).
OnPeerConnection = Callable[[RTCPeerConnection], None]

# The data channel an offering link creates before its first offer, so that the SDP
# carries the SCTP application m-line: aiortc cannot renegotiate, and without that
# m-line no data channel could ever open. Later channels then open in-band (DCEP).
CONTROL_CHANNEL: Final = "ctl"

_MAKE_OFFER: Final = "make-offer"
_Command = SignalReceived | Literal["make-offer"]


@dataclass(frozen=True, slots=True)
class LinkStats:
    """What one remote participant has sent us so far."""

    audio_frames: int
    video_frames: int
    # RTCPeerConnection.connectionState: new, connecting, connected, failed, closed.
    connection_state: str
    # Size of the last video frame received, if any.
    video_size: tuple[int, int] | None
    # Peer connections made for this participant; 2 after the polite side of a glare.
    connections: int


class PeerLink:
    """Perfect negotiation with one remote participant, over one RTCPeerConnection at a time.

    Everything that touches the peer connection (our offer, the remote's descriptions
    and candidates) runs in arrival order on one task: setLocalDescription gathers ICE
    candidates before it returns and is slow, and nothing may interleave with it.

    Each peer connection sends a fresh pair of synthetic tracks and counts every track
    it receives with a `FrameCounter` (a remote track nobody reads grows without bound).

    Glare (an offer arrives while our own is unanswered): the impolite side ignores
    the incoming offer, and the candidates that follow it until the next description,
    exactly as in the standard pattern. aiortc cannot roll back a local offer, so the
    polite side instead closes its peer connection and answers the offer on a fresh
    one, with new tracks and a new ICE/DTLS session. That is equivalent to a rollback
    only while the old connection never had an answer, which holds for
    `HeadlessPeer`: it offers once per link, before any media flowed.

    Data channels: as the offerer, each peer connection creates the `CONTROL_CHANNEL`
    before its offer, so the session has SCTP and `create_data_channel` works later
    without renegotiation. As the answerer that holds only when the remote offer had an
    application m-line (the SDKs create a channel before their first offer too).
    Channels the remote opens go to `on_data_channel`.

    aiortc has no trickle ICE: its descriptions already carry every candidate, so
    after each one we only send end-of-candidates (`candidate: null`). Remote
    candidates are applied as they come (kept until a remote description exists);
    the ones aiortc cannot parse or apply are ignored.
    """

    def __init__(self, remote: ParticipantId, *, polite: bool, configuration: RTCConfiguration,
                 media: SyntheticMedia | OnPeerConnection, send: SendSignal,
                 on_data_channel: OnDataChannel | None = None, send_loss: float = 0.0) -> None:
        """`media`: synthetic tracks to send (counting every received track), or a
        function that sets up each new peer connection itself (a media worker's job).
        `send_loss` drops that fraction of our outgoing RTP (media.impair), for tests."""
        self.remote = remote
        self._send_loss = send_loss
        self.on_data_channel = on_data_channel
        self.polite = polite
        self._configuration = configuration
        self._media = media
        self._send = send
        self._inbox: asyncio.Queue[_Command] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._pc: RTCPeerConnection | None = None
        self._connections = 0
        self._sources: list[MediaStreamTrack] = []
        self._sinks: list[FrameCounter] = []
        self._pending: list[RTCIceCandidate | None] = []
        self._ignore_offer = False
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()

    # -- inputs ----------------------------------------------------------------------

    def offer(self) -> None:
        """Queue an offer (skipped if a negotiation is under way when its turn comes)."""
        self._enqueue(_MAKE_OFFER)

    def deliver(self, signal: SignalReceived) -> None:
        """Queue a signal from the remote participant."""
        self._enqueue(signal)

    # -- state -----------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True from the moment `close()` is called (see `wait_closed` for the end)."""
        return self._closing

    @property
    def connection_state(self) -> str:
        if self._pc is None:
            return "closed" if self._closing else "new"
        return str(self._pc.connectionState)

    def stats(self) -> LinkStats:
        video = [s for s in self._sinks if s.kind == "video"]
        sizes = [s.last_size for s in video if s.last_size is not None]
        return LinkStats(
            audio_frames=sum(s.frames for s in self._sinks if s.kind == "audio"),
            video_frames=sum(s.frames for s in video),
            connection_state=self.connection_state,
            video_size=sizes[-1] if sizes else None,
            connections=self._connections,
        )

    @property
    def usable(self) -> bool:
        """A connected peer connection with SCTP: `create_data_channel` can open one now."""
        pc = self._pc
        return (not self._closing and pc is not None and pc.connectionState == "connected"
                and pc.sctp is not None)

    def create_data_channel(self, label: str) -> RTCDataChannel:
        """An ordered, reliable channel on the current peer connection (see `usable`)."""
        if self._closing or self._pc is None:
            raise RuntimeError(f"no peer connection to {self.remote}")
        return self._pc.createDataChannel(label)

    @property
    def sources(self) -> tuple[MediaStreamTrack, ...]:
        """The synthetic tracks the current peer connection sends (empty for a worker's)."""
        return tuple(self._sources)

    @property
    def pc(self) -> RTCPeerConnection | None:
        """The current peer connection (replaced after a glare; None before the first)."""
        return self._pc

    @property
    def sinks(self) -> tuple[FrameCounter, ...]:
        return tuple(self._sinks)

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def close(self) -> None:
        """Stop negotiating, close the peer connection and every sink. Idempotent.

        The work runs in a task of its own, to its end even if the caller is cancelled
        (`finish`): a peer connection closed halfway keeps its transports and tasks alive.
        """
        if self._close_task is None:
            self._closing = True
            self._close_task = asyncio.create_task(
                self._close(), name=f"media-link-close:{self.remote}")
        await finish(self._close_task)

    async def _close(self) -> None:
        try:
            if self._worker is not None:
                await cancel_and_wait(self._worker)
            await self._close_pc()
        except Exception:
            log.exception("closing the connection to %s failed", self.remote)
        finally:
            self._closed.set()

    # -- the worker ------------------------------------------------------------------

    def _enqueue(self, command: _Command) -> None:
        if self._closing:
            return
        self._inbox.put_nowait(command)
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name=f"media-link:{self.remote}")

    async def _run(self) -> None:
        # The flag too, not only cancellation: aiortc/aioice code may swallow a CancelledError.
        while not self._closing:
            command = await self._inbox.get()
            try:
                if command == _MAKE_OFFER:
                    await self._make_offer()
                elif isinstance(command, SignalReceived):
                    await self._apply(command)
            except Exception:
                # One bad signal must not end the link; the next one may repair it.
                log.exception("negotiation with %s failed", self.remote)

    async def _make_offer(self) -> None:
        pc = self._pc if self._pc is not None else self._new_pc(offerer=True)
        if pc.signalingState != "stable":
            return
        await set_local_description(pc, await pc.createOffer())
        await self._send_local_description(pc)

    async def _apply(self, signal: SignalReceived) -> None:
        if signal.description is not None:
            await self._apply_description(signal.description)
        elif signal.is_candidate:
            await self._apply_candidate(signal.candidate)
        elif signal.restart:
            # aiortc cannot restart ICE on a live connection; the browser side's own
            # restartIce() offer is answered as usual instead.
            log.info("ignoring an ICE restart request from %s (not supported by aiortc)",
                     self.remote)

    async def _apply_description(self, description: dict[str, str]) -> None:
        kind, sdp = description.get("type"), description.get("sdp")
        if not isinstance(sdp, str) or kind not in ("offer", "answer"):
            log.warning("ignoring %r description from %s", kind, self.remote)
            return
        if kind == "offer":
            pc = self._pc if self._pc is not None else self._new_pc()
            collision = pc.signalingState != "stable"
            self._ignore_offer = collision and not self.polite
            if self._ignore_offer:
                log.info("glare with %s: ignoring its offer (impolite)", self.remote)
                return
            if collision:
                log.info("glare with %s: dropping our offer for a fresh connection", self.remote)
                await self._close_pc()
                pc = self._new_pc()
            await set_remote_description(pc, RTCSessionDescription(sdp=sdp, type="offer"))
            await self._flush_candidates(pc)
            await set_local_description(pc, await pc.createAnswer())
            await self._send_local_description(pc)
        else:
            if self._pc is None or self._pc.signalingState != "have-local-offer":
                log.info("ignoring an answer from %s we did not ask for", self.remote)
                return
            self._ignore_offer = False
            await set_remote_description(self._pc, RTCSessionDescription(sdp=sdp, type="answer"))
            await self._flush_candidates(self._pc)

    async def _apply_candidate(self, wire: dict[str, Any] | None) -> None:
        if self._ignore_offer:
            return  # it belongs to the offer we ignored
        try:
            candidate = parse_candidate(wire)
        except ValueError as exc:
            log.debug("ignoring candidate from %s: %s", self.remote, exc)
            return
        pc = self._pc
        if pc is None or pc.remoteDescription is None:
            self._pending.append(candidate)
        else:
            await self._add_candidate(pc, candidate)

    async def _flush_candidates(self, pc: RTCPeerConnection) -> None:
        pending, self._pending = self._pending, []
        for candidate in pending:
            await self._add_candidate(pc, candidate)

    async def _add_candidate(self, pc: RTCPeerConnection,
                             candidate: RTCIceCandidate | None) -> None:
        try:
            await pc.addIceCandidate(candidate)
        except Exception as exc:  # aiortc raises assorted errors; a candidate is never vital
            log.debug("candidate from %s not applied: %r", self.remote, exc)

    async def _send_local_description(self, pc: RTCPeerConnection) -> None:
        local = pc.localDescription
        await self._send({"description": {"type": local.type, "sdp": local.sdp}})
        await self._send({"candidate": None})

    # -- the peer connection ---------------------------------------------------------

    def _new_pc(self, *, offerer: bool = False) -> RTCPeerConnection:
        pc = RTCPeerConnection(self._configuration)
        self._connections += 1
        if isinstance(self._media, SyntheticMedia):
            self._sources = list(self._media.tracks())
            for track in self._sources:
                pc.addTrack(track)
            pc.on("track", self._on_track)
        else:
            self._media(pc)
        if offerer:
            pc.createDataChannel(CONTROL_CHANNEL)
        pc.on("datachannel", self._on_data_channel)
        pc.on("connectionstatechange", lambda: self._on_state(pc))
        self._pc = pc
        return pc

    async def _close_pc(self) -> None:
        # The closed pc stays referenced until a new one replaces it: its state is ours.
        if self._pc is not None:
            await close_pc(self._pc)  # ends the remote tracks, so the sinks finish on their own
        for track in self._sources:
            track.stop()
        self._sources = []
        self._pending = []
        for sink in self._sinks:
            await sink.close()

    def _on_track(self, track: MediaStreamTrack) -> None:
        sink = FrameCounter(track)
        self._sinks.append(sink)
        sink.start()

    def _on_data_channel(self, channel: RTCDataChannel) -> None:
        if self.on_data_channel is not None and not self._closing:
            self.on_data_channel(self, channel)

    def _on_state(self, pc: RTCPeerConnection) -> None:
        log.debug("connection to %s: %s", self.remote, pc.connectionState)
        if self._send_loss and pc.connectionState == "connecting":
            # The transports are final once connecting; media flows only after that.
            lose_outgoing_rtp(pc, self._send_loss)
