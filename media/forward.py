"""A forward job: every participant publishes once to the worker and receives the others.

Each participant has two peer connections with the worker, kept apart by the
signal's `pc` tag so that each has a single offerer and glare cannot happen:

- `up`: the participant offers its tracks; the worker answers receive-only and
  takes each track's encoded frames (media.passthrough) without decoding them;
- `down`: the worker offers, send-only, one transceiver per track of every other
  publisher, and offers again whenever a publisher comes or goes. A transceiver's
  stream id (the SDP msid) is the publisher's participant id, which is how the
  subscriber tells whose track it is. A departed publisher's transceivers become
  `inactive` (aiortc cannot reuse them), so a long call's SDP grows by two m-lines
  per departure.

A new subscription waits for a keyframe and asks the publisher for one (PLI), and
the subscriber's own PLI/FIR are relayed to the publisher, so a late joiner sees
video within a keyframe request's round trip.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)

from signaling.client import SignalReceived
from signaling.ids import ParticipantId, RoomId

from .ice import parse_candidate
from .link import PeerLink, SendSignal
from .passthrough import PassthroughReceiver, PassthroughTrack, enable_passthrough
from .passthrough import relay_keyframe_requests as relay_plis
from .taskutil import (
    cancel_and_wait,
    close_pc,
    set_local_description,
    set_remote_description,
)

log = logging.getLogger(__name__)

ANSWER_TIMEOUT = 15.0
_MIMES = {"video": "video/VP8", "audio": "audio/opus"}
# The signal tag of each connection, as the participant sees it.
UP, DOWN = "up", "down"

Sender = Callable[[ParticipantId, str], SendSignal]
OnPublish = Callable[[ParticipantId, str, PassthroughReceiver], None]


def _prefer_passthrough_codec(transceiver: RTCRtpTransceiver) -> None:
    """Only the codecs passthrough forwards (VP8, Opus), so nothing needs transcoding.

    And no RTX: an aiortc subscriber routes RTP by media SSRC only, so with several
    video m-lines sharing the RTX payload type it drops every retransmission, and one
    lost packet then stalls its jitter buffer. Without RTX, a NACKed packet is sent
    again as it was.
    """
    caps = RTCRtpSender.getCapabilities(transceiver.kind)
    mime = _MIMES[transceiver.kind].lower()
    preferred = [c for c in caps.codecs if c.mimeType.lower() == mime]
    if preferred:
        transceiver.setCodecPreferences(preferred)


def max_bundle(configuration: RTCConfiguration) -> RTCConfiguration:
    """The same configuration with every m-line on one transport from the start.

    aiortc's default (balanced) gives the first transceiver of each kind a transport
    and puts later ones of that kind on it; when the answer's BUNDLE moves the first
    one onto the primary transport, the later ones are left on a transport that never
    connects. A connection carrying many tracks of one kind needs max-bundle, on the
    side that offers and on an aiortc side that answers.
    """
    return dataclasses.replace(configuration, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


class _Downstream:
    """The worker's `down` connection to one subscriber: the worker offers, it answers."""

    def __init__(self, subscriber: ParticipantId, configuration: RTCConfiguration,
                 send: SendSignal) -> None:
        self.subscriber = subscriber
        self.pc = RTCPeerConnection(max_bundle(configuration))
        self._send = send
        self._subscriptions: dict[tuple[ParticipantId, str],
                                  tuple[RTCRtpTransceiver, PassthroughTrack]] = {}
        self._pending: dict[tuple[ParticipantId, str], PassthroughReceiver] = {}
        self._answer: asyncio.Future[dict[str, str]] | None = None
        self._dirty = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name=f"media-forward-down:{subscriber}")

    @property
    def streams(self) -> int:
        return len(self._subscriptions) + len(self._pending)

    def add(self, publisher: ParticipantId, kind: str, handle: PassthroughReceiver) -> None:
        """Subscribe to a publisher's track, at the next offer."""
        self.remove(publisher, kind)
        self._pending[(publisher, kind)] = handle
        self._dirty.set()

    def remove(self, publisher: ParticipantId, kind: str | None = None) -> None:
        for key in [k for k in self._pending if k[0] == publisher and kind in (None, k[1])]:
            del self._pending[key]
        for key in [k for k in self._subscriptions
                    if k[0] == publisher and kind in (None, k[1])]:
            transceiver, track = self._subscriptions.pop(key)
            track.stop()
            transceiver.direction = "inactive"
            self._dirty.set()

    def _apply_pending(self) -> None:
        # Only between negotiations: aiortc bundles a transceiver added while an offer is
        # out on a transport of its own, which never starts.
        pending, self._pending = self._pending, {}
        for (publisher, kind), handle in pending.items():
            track = handle.subscribe()
            transceiver = self.pc.addTransceiver(track, direction="sendonly")
            _prefer_passthrough_codec(transceiver)
            # The msid names the publisher (aiortc otherwise gives all senders one id).
            transceiver.sender._stream_id = publisher
            transceiver.sender._track_id = f"{publisher}-{kind}"
            relay_plis(transceiver.sender, track)
            self._subscriptions[(publisher, kind)] = (transceiver, track)

    def deliver(self, signal: SignalReceived) -> None:
        description = signal.description
        if description is not None:
            if description.get("type") == "answer" and self._answer is not None \
                    and not self._answer.done():
                self._answer.set_result(description)
            else:
                log.info("down %s: ignoring a %r description", self.subscriber,
                         description.get("type"))
        elif signal.is_candidate:
            self._spawn_candidate(signal.candidate)

    def _spawn_candidate(self, wire: dict[str, Any] | None) -> None:
        try:
            candidate = parse_candidate(wire)
        except ValueError:
            return
        if candidate is not None and self.pc.remoteDescription is not None:
            task = asyncio.ensure_future(self.pc.addIceCandidate(candidate))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _run(self) -> None:
        first = True
        while True:
            await self._dirty.wait()
            if not first:
                # aiortc starts the senders of a renegotiation only once DTLS is up: an
                # offer answered while the first handshake runs leaves its new senders idle.
                await self._wait_connected()
            self._dirty.clear()
            first = False
            try:
                await self._negotiate()
            except Exception:
                log.exception("down %s: negotiation failed", self.subscriber)

    async def _wait_connected(self) -> None:
        deadline = asyncio.get_running_loop().time() + ANSWER_TIMEOUT
        # Polled: a handler would need removing again, and this is once per connection.
        while (self.pc.connectionState in ("new", "connecting")  # noqa: ASYNC110
               and asyncio.get_running_loop().time() < deadline):
            await asyncio.sleep(0.05)

    async def _negotiate(self) -> None:
        self._apply_pending()
        await set_local_description(self.pc, await self.pc.createOffer())
        self._answer = asyncio.get_running_loop().create_future()
        local = self.pc.localDescription
        await self._send({"description": {"type": local.type, "sdp": local.sdp}})
        await self._send({"candidate": None})
        try:
            answer = await asyncio.wait_for(self._answer, ANSWER_TIMEOUT)
        except TimeoutError:
            log.warning("down %s: no answer in %.0fs", self.subscriber, ANSWER_TIMEOUT)
            return
        await set_remote_description(self.pc, RTCSessionDescription(
            sdp=answer["sdp"], type="answer"))

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        for _, track in self._subscriptions.values():
            track.stop()
        self._subscriptions.clear()
        await close_pc(self.pc)


class ForwardJob:
    """Forwards a room's media; `close()` (idempotent) ends every connection."""

    def __init__(self, job: str, room: RoomId, *, configuration: RTCConfiguration,
                 sender: Sender) -> None:
        self.id = job
        self.room = room
        self._configuration = configuration
        self._sender = sender
        self._ups: dict[ParticipantId, PeerLink] = {}
        self._downs: dict[ParticipantId, _Downstream] = {}
        self._published: dict[ParticipantId, dict[str, PassthroughReceiver]] = {}
        self._taps: list[OnPublish] = []
        self._closed = False

    def tap(self, on_publish: OnPublish) -> Callable[[], None]:
        """Call `on_publish` with every track published so far and from now on (a
        recording of a forwarded room); returns the function that stops it."""
        for publisher, kinds in self._published.items():
            for kind, handle in kinds.items():
                on_publish(publisher, kind, handle)
        self._taps.append(on_publish)
        return lambda: self._taps.remove(on_publish)

    @property
    def load(self) -> int:
        received = sum(len(kinds) for kinds in self._published.values())
        return max(1, received + sum(d.streams for d in self._downs.values()))

    def deliver(self, signal: SignalReceived) -> None:
        if self._closed:
            return
        who = signal.sender
        if signal.pc == DOWN:
            down = self._downs.get(who)
            if down is not None:
                down.deliver(signal)
            return
        link = self._ups.get(who)
        if link is None:
            link = self._ups[who] = PeerLink(
                who, polite=True, configuration=self._configuration,
                media=lambda pc: self._attach(pc, who),
                send=self._sender(who, UP))
            self._subscribe(who)
        link.deliver(signal)

    def _subscribe(self, subscriber: ParticipantId) -> None:
        """Give a new participant its `down` connection with everyone published so far."""
        down = self._downs[subscriber] = _Downstream(subscriber, self._configuration,
                                                     self._sender(subscriber, DOWN))
        for publisher, kinds in self._published.items():
            if publisher != subscriber:
                for kind, handle in kinds.items():
                    down.add(publisher, kind, handle)

    def _attach(self, pc: RTCPeerConnection, publisher: ParticipantId) -> None:
        pc.on("track", lambda track: self._on_track(pc, track, publisher))

    def _on_track(self, pc: RTCPeerConnection, track: MediaStreamTrack,
                  publisher: ParticipantId) -> None:
        transceiver = next(t for t in pc.getTransceivers() if t.receiver.track is track)
        handle = enable_passthrough(transceiver.receiver)
        self._published.setdefault(publisher, {})[track.kind] = handle
        for subscriber, down in self._downs.items():
            if subscriber != publisher:
                down.add(publisher, track.kind, handle)
        for on_publish in self._taps:
            on_publish(publisher, track.kind, handle)
        log.info("forward %s: %s publishes %s", self.room, publisher, track.kind)

    async def participant_left(self, participant: ParticipantId) -> None:
        self._published.pop(participant, None)
        for other in self._downs.values():
            other.remove(participant)
        link = self._ups.pop(participant, None)
        if link is not None:
            await link.close()
        down = self._downs.pop(participant, None)
        if down is not None:
            await down.close()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for participant in list(self._ups):
            await self.participant_left(participant)
        for down in list(self._downs.values()):
            await down.close()
        self._downs.clear()
