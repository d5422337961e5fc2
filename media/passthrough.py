"""Forwarding encoded media through aiortc without decoding or re-encoding it.

aiortc decodes every frame it receives and encodes every frame it sends. Its sender
already accepts encoded `av.Packet`s (it only packetizes them), but its receiver has
no encoded-frame output. This module adds one, scoped to the receivers we opt in:

    handle = enable_passthrough(receiver)      # before the receiver starts
    track = handle.subscribe()                 # a PassthroughTrack of av.Packets
    sender = out_pc.addTrack(track)
    relay_keyframe_requests(sender, track)     # subscriber PLI/FIR -> publisher PLI

Why this hook: the receiver hands each reassembled frame, on the event loop, to
`self.__decoder_queue.put((codec, jitter_frame))`, a `queue.Queue` that its decoder
thread reads. `enable_passthrough` replaces that queue *on one receiver instance*
before `receive()` starts the thread, with a queue that turns each frame into an
`av.Packet` and hands it to subscribers straight away. So:

- nothing global is patched: other receivers in the process (and `get_decoder`,
  `decoder_worker`) are untouched;
- no decoding, and no hop through the decoder thread (that thread is still started by
  aiortc, idles in `get()`, and exits normally when the receiver stops);
- the jitter buffer, NACKs and aiortc's own PLI on frame loss keep working.

The alternative, wrapping the module-level `get_decoder` with a check on a registry of
opted-in receivers, patches a global for every peer connection and must identify the
receiver from inside the decoder thread; it also still pays the thread hop.

Both hooks rely on aiortc private names; `check_aiortc_version` guards the tested range
and `enable_passthrough` checks the attributes it needs, so an aiortc upgrade fails
loudly instead of silently decoding or dropping media.

Keyframes: a sender cannot make a keyframe from packets, so a subscriber starts
with (and, after an overflow, returns to) waiting for a keyframe, asking the
publisher for one with a PLI; PLI/FIR from the subscriber's far end are relayed the same
way. Requests to one publisher are throttled.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import queue
import time
from collections.abc import Callable
from typing import Any

import aiortc
from aiortc import MediaStreamTrack, RTCRtpReceiver, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from av.packet import Packet

log = logging.getLogger(__name__)

# Versions whose private receiver/sender internals this module was verified against.
TESTED_AIORTC_RANGE = ((1, 16), (1, 17))  # >= 1.16, < 1.17

DEFAULT_MAX_QUEUE = 64  # packets per subscriber: ~2 s of 30 fps video, ~1.3 s of Opus
DEFAULT_KEYFRAME_INTERVAL = 0.5  # seconds between PLIs sent to one publisher

_SUPPORTED_CODECS = frozenset({"video/vp8", "audio/opus"})
_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
_STARTED_ATTR = "_RTCRtpReceiver__started"
_KIND_ATTR = "_RTCRtpReceiver__kind"


class PassthroughUnsupported(RuntimeError):
    """The installed aiortc, or this receiver's state, does not allow the passthrough hook."""


def _parse_version(version: str) -> tuple[int, int]:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        raise PassthroughUnsupported(f"cannot parse aiortc version {version!r}") from None


def check_aiortc_version(version: str | None = None) -> None:
    """Raise PassthroughUnsupported unless aiortc (or `version`) is in the tested range."""
    found = version if version is not None else str(aiortc.__version__)
    low, high = TESTED_AIORTC_RANGE
    if not low <= _parse_version(found) < high:
        raise PassthroughUnsupported(
            f"media passthrough relies on aiortc internals verified for "
            f">={low[0]}.{low[1]},<{high[0]}.{high[1]}; installed aiortc is {found}. "
            f"Pin aiortc to that range or re-verify media/passthrough.py."
        )


def is_vp8_keyframe(data: bytes) -> bool:
    """Whether a VP8 frame (the depayloaded bitstream) is a keyframe (RFC 6386 9.1: P bit 0)."""
    return len(data) >= 3 and not data[0] & 0x01


def vp8_frame_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 keyframe header, or None for other frames."""
    if not is_vp8_keyframe(data) or len(data) < 10 or data[3:6] != b"\x9d\x01\x2a":
        return None
    width = int.from_bytes(data[6:8], "little") & 0x3FFF
    height = int.from_bytes(data[8:10], "little") & 0x3FFF
    return width, height


class PassthroughTrack(MediaStreamTrack):
    """A track of encoded `av.Packet`s that an RTCRtpSender packetizes without re-encoding.

    Packets come in with `push()` (from a `PassthroughReceiver`). The queue is bounded and
    drops the oldest packets under overload. For video, a subscriber only starts at a
    keyframe: until one arrives (at start, and again after an overflow broke the chain
    of frames) delta frames are discarded and a keyframe is requested.
    """

    def __init__(self, kind: str, *, request_keyframe: Callable[[], None] | None = None,
                 max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        super().__init__()
        if kind not in ("audio", "video"):
            raise ValueError(f"kind must be 'audio' or 'video', got {kind!r}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.kind = kind
        self.max_queue = max_queue
        self._request_keyframe = request_keyframe
        self._packets: collections.deque[Packet[Any]] = collections.deque()
        self._ready = asyncio.Event()
        self._ended = False
        # Audio needs no keyframe; video waits for one.
        self.waiting_for_keyframe = kind == "video"
        self.forwarded = 0  # packets returned by recv()
        self.dropped = 0  # packets discarded: overflow, or delta frames while waiting

    def push(self, packet: Packet[Any]) -> None:
        """Queue one packet (non-blocking; call from the event loop thread)."""
        if self._ended or self.readyState != "live":
            return
        if self.waiting_for_keyframe:
            if not packet.is_keyframe:
                self.dropped += 1
                self.request_keyframe()  # throttled at the publisher's receiver
                return
            self.waiting_for_keyframe = False
        self._packets.append(packet)
        if len(self._packets) > self.max_queue:
            self._drop_oldest()
        self._ready.set()

    def _drop_oldest(self) -> None:
        self._packets.popleft()
        self.dropped += 1
        if self.kind != "video":
            return
        # Every delta frame after the dropped one depends on it: skip to the next keyframe.
        while self._packets and not self._packets[0].is_keyframe:
            self._packets.popleft()
            self.dropped += 1
        if not self._packets:
            self.waiting_for_keyframe = True
            self.request_keyframe()

    def end(self) -> None:
        """The source has ended: `recv()` returns what is queued, then raises MediaStreamError."""
        self._ended = True
        self._ready.set()

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe (a PLI); also what a relayed PLI/FIR calls."""
        if self._request_keyframe is not None and self.kind == "video":
            self._request_keyframe()

    async def recv(self) -> Packet[Any]:
        while not self._packets:
            if self._ended or self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        self.forwarded += 1
        return self._packets.popleft()

    def stop(self) -> None:
        super().stop()
        self._packets.clear()
        self._ready.set()  # wake a pending recv() so it raises


class _PacketTap(queue.Queue[Any]):
    """Stands in for one receiver's decoder input queue: frames go to subscribers as packets.

    aiortc calls `put((codec, jitter_frame))` from `_handle_rtp_packet` on the event loop and
    `put(None)` to stop the decoder thread, which blocks in `get()` until then.
    """

    def __init__(self, on_frame: Callable[[Any, Any], None], on_end: Callable[[], None]) -> None:
        super().__init__()
        self._on_frame = on_frame
        self._on_end = on_end

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            self._on_end()
            super().put(None, block, timeout)  # lets aiortc's idle decoder thread exit
            return
        codec, frame = item
        self._on_frame(codec, frame)


class PassthroughReceiver:
    """The encoded output of one RTCRtpReceiver; made by `enable_passthrough`.

    Each subscriber is a PassthroughTrack; a packet goes to every live subscriber. Keyframe
    requests from subscribers become one PLI to the publisher per `keyframe_interval`.
    """

    def __init__(self, receiver: RTCRtpReceiver, *, keyframe_interval: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.receiver = receiver
        self.kind: str = getattr(receiver, _KIND_ATTR)
        self.keyframe_interval = keyframe_interval
        self._clock = clock
        self._subscribers: list[PassthroughTrack] = []
        self._last_pli: float | None = None
        self._pli_tasks: set[asyncio.Task[None]] = set()
        self._warned: set[str] = set()
        self.ended = False
        self.packets = 0
        self.keyframes = 0
        self.plis_sent = 0

    def subscribe(self, *, max_queue: int = DEFAULT_MAX_QUEUE) -> PassthroughTrack:
        """A new track of this receiver's packets; stop it to unsubscribe."""
        track = PassthroughTrack(self.kind, request_keyframe=self.request_keyframe,
                                 max_queue=max_queue)
        if self.ended:
            track.end()
            return track
        self._subscribers.append(track)
        track.request_keyframe()
        return track

    def request_keyframe(self) -> None:
        """Send a PLI to the publisher, at most once per `keyframe_interval`."""
        if self.kind != "video" or self.ended:
            return
        sources = self.receiver.getSynchronizationSources()
        if not sources:
            return  # nothing received yet: the first frame will be a keyframe anyway
        now = self._clock()
        if self._last_pli is not None and now - self._last_pli < self.keyframe_interval:
            return
        self._last_pli = now
        self.plis_sent += 1
        task = asyncio.get_running_loop().create_task(
            self.receiver._send_rtcp_pli(sources[0].source), name="media-passthrough-pli")
        self._pli_tasks.add(task)
        task.add_done_callback(self._pli_tasks.discard)

    def _on_frame(self, codec: Any, frame: Any) -> None:
        mime = str(codec.mimeType).lower()
        if mime not in _SUPPORTED_CODECS:
            if mime not in self._warned:
                self._warned.add(mime)
                log.warning("passthrough does not support %s; its frames are dropped", mime)
            return
        data: bytes = frame.data
        packet = Packet(data)
        packet.pts = packet.dts = frame.timestamp
        packet.time_base = fractions.Fraction(1, codec.clockRate)
        packet.is_keyframe = is_vp8_keyframe(data) if mime == "video/vp8" else True
        self.packets += 1
        self.keyframes += packet.is_keyframe
        live = [t for t in self._subscribers if t.readyState == "live"]
        self._subscribers = live
        for track in live:
            track.push(packet)

    def _on_end(self) -> None:
        self.ended = True
        for track in self._subscribers:
            track.end()
        self._subscribers.clear()


def enable_passthrough(receiver: RTCRtpReceiver, *,
                       keyframe_interval: float = DEFAULT_KEYFRAME_INTERVAL
                       ) -> PassthroughReceiver:
    """Make `receiver` deliver encoded packets to subscribers instead of decoding them.

    Call it before the receiver starts: in the peer connection's "track" handler, or
    after `setRemoteDescription` and before the connection is up. Its own `receiver.track`
    then yields nothing and ends when the receiver stops; read `subscribe()` tracks instead.
    Raises PassthroughUnsupported for an untested aiortc or a receiver already started.
    """
    check_aiortc_version()
    current = getattr(receiver, _QUEUE_ATTR, None)
    if (type(current) is not queue.Queue
            or not isinstance(getattr(receiver, _STARTED_ATTR, None), bool)
            or getattr(receiver, _KIND_ATTR, None) not in ("audio", "video")):
        if isinstance(current, _PacketTap):
            raise PassthroughUnsupported("passthrough is already enabled on this receiver")
        raise PassthroughUnsupported("RTCRtpReceiver internals differ from the tested aiortc")
    if getattr(receiver, _STARTED_ATTR):
        raise PassthroughUnsupported("the receiver has started; enable passthrough before")
    handle = PassthroughReceiver(receiver, keyframe_interval=keyframe_interval)
    setattr(receiver, _QUEUE_ATTR, _PacketTap(handle._on_frame, handle._on_end))
    return handle


def relay_keyframe_requests(sender: RTCRtpSender, track: PassthroughTrack) -> None:
    """Turn PLI/FIR that reach `sender` (sending `track`) into keyframe requests to the publisher.

    aiortc's sender answers PLI/FIR by calling `self._send_keyframe()`, which for an encoder
    forces the next frame to be a keyframe and for packets does nothing. Shadowing that
    method on this one sender instance relays the request instead.
    """
    check_aiortc_version()
    if not callable(getattr(sender, "_send_keyframe", None)):
        raise PassthroughUnsupported("RTCRtpSender internals differ from the tested aiortc")
    sender._send_keyframe = track.request_keyframe  # type: ignore[method-assign]
