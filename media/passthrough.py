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

Codecs: VP8 and Opus, and H.264 (packetization mode 0 or 1): aiortc's depayloader hands
over each frame as an Annex-B access unit, which is a keyframe if it holds an IDR slice;
`H264ParameterSets` makes sure such an access unit also carries its SPS and PPS, so
whoever starts there can decode. Picture sizes come from the VP8 keyframe header or the
H.264 SPS (`video_frame_size`), parsed in Python: a few dozen bits per keyframe, no decoder.

Sender clocks: each track of a sender starts its RTP timestamps at a random value and
counts in its own clock rate, so the audio and video of one publisher (and so their
recordings) can only be lined up through RTCP sender reports, which pair an RTP timestamp
with the sender's NTP wallclock. aiortc reads SRs only for statistics, so
`enable_passthrough` also shadows `_handle_rtcp_packet` on the same receiver instance
and keeps the latest SR as a `SenderClock`, expressed on the packets' own timeline:
aiortc hands frames over with timestamps already unwrapped and rebased to 0 at the first
frame, while an SR carries the raw, wrapping 32-bit RTP timestamp.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import logging
import queue
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiortc
from aiortc import MediaStreamTrack, RTCRtpReceiver, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtcpSrPacket
from av.packet import Packet

log = logging.getLogger(__name__)

# Versions whose private receiver/sender internals this module was verified against.
TESTED_AIORTC_RANGE = ((1, 16), (1, 17))  # >= 1.16, < 1.17

DEFAULT_MAX_QUEUE = 64  # packets per subscriber: ~2 s of 30 fps video, ~1.3 s of Opus
DEFAULT_KEYFRAME_INTERVAL = 0.5  # seconds between PLIs sent to one publisher

_SUPPORTED_CODECS = frozenset({"video/vp8", "video/h264", "audio/opus"})
_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
_STARTED_ATTR = "_RTCRtpReceiver__started"
_KIND_ATTR = "_RTCRtpReceiver__kind"
_RTX_ATTR = "_RTCRtpReceiver__rtx_ssrc"  # RTX SSRC -> media SSRC, from the remote description
_MAPPER_ATTR = "_RTCRtpReceiver__timestamp_mapper"
_RTCP_ATTR = "_handle_rtcp_packet"

RTP_TIMESTAMP_MODULO = 1 << 32
_NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01


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


# --- H.264 (RFC 6184 depayloaded by aiortc: one Annex-B access unit per frame) -----------

H264_NAL_IDR = 5  # a slice of an IDR picture: decoding can start here
H264_NAL_SPS = 7
H264_NAL_PPS = 8
H264_NAL_AUD = 9
_START_CODE = b"\x00\x00\x00\x01"
# Profiles whose SPS carries chroma format, bit depths and scaling matrices (7.3.2.1.1).
_H264_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def h264_nal_units(data: bytes) -> list[bytes]:
    """The NAL units of an Annex-B access unit (start codes and trailing zeros removed).

    A NAL unit cannot contain 00 00 01 (emulation prevention), so splitting at start codes
    is exact."""
    units: list[bytes] = []
    start = data.find(b"\x00\x00\x01")
    while start != -1:
        start += 3
        end = data.find(b"\x00\x00\x01", start)
        unit = data[start:end if end != -1 else len(data)].rstrip(b"\x00")
        if unit:
            units.append(unit)
        start = end
    return units


def is_h264_keyframe(data: bytes) -> bool:
    """Whether an access unit holds an IDR slice (decoding can start there, given its SPS/PPS)."""
    return any(unit[0] & 0x1F == H264_NAL_IDR for unit in h264_nal_units(data))


class _BitReader:
    """Big-endian bits of an RBSP, with the Exp-Golomb codes of H.264 (9.1)."""

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._bits = len(data) * 8
        self._pos = 0

    def u(self, n: int) -> int:
        if self._pos + n > self._bits:
            raise ValueError("truncated")
        self._pos += n
        return (self._value >> (self._bits - self._pos)) & ((1 << n) - 1)

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise ValueError("Exp-Golomb code too long")
        return (1 << zeros) - 1 + self.u(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k % 2 else -(k // 2)


def h264_sps_frame_size(sps: bytes) -> tuple[int, int] | None:
    """Width and height (after cropping) from an SPS NAL unit (with its header byte), or None
    if it cannot be parsed. Follows 7.3.2.1.1 as far as the cropping fields, and 7.4.2.1.1
    for the crop units."""
    rbsp = sps[1:].replace(b"\x00\x00\x03", b"\x00\x00")  # emulation prevention (7.4.1)
    try:
        r = _BitReader(rbsp)
        profile = r.u(8)
        r.u(16)  # constraint flags, level_idc
        r.ue()  # seq_parameter_set_id
        chroma_format, separate_planes = 1, 0
        if profile in _H264_HIGH_PROFILES:
            chroma_format = r.ue()
            if chroma_format == 3:
                separate_planes = r.u(1)
            r.ue()  # bit_depth_luma_minus8
            r.ue()  # bit_depth_chroma_minus8
            r.u(1)  # qpprime_y_zero_transform_bypass_flag
            if r.u(1):  # seq_scaling_matrix_present_flag
                for index in range(8 if chroma_format != 3 else 12):
                    if r.u(1):  # scaling list present: skip it (7.3.2.1.1.1)
                        last = following = 8
                        for _ in range(16 if index < 6 else 64):
                            if following:
                                following = (last + r.se()) % 256
                            last = following or last
        r.ue()  # log2_max_frame_num_minus4
        poc_type = r.ue()
        if poc_type == 0:
            r.ue()  # log2_max_pic_order_cnt_lsb_minus4
        elif poc_type == 1:
            r.u(1)  # delta_pic_order_always_zero_flag
            r.se()  # offset_for_non_ref_pic
            r.se()  # offset_for_top_to_bottom_field
            for _ in range(r.ue()):  # num_ref_frames_in_pic_order_cnt_cycle
                r.se()
        r.ue()  # max_num_ref_frames
        r.u(1)  # gaps_in_frame_num_value_allowed_flag
        width_mbs = r.ue() + 1
        height_units = r.ue() + 1  # map units: macroblock pairs for field coding
        frame_mbs_only = r.u(1)
        if not frame_mbs_only:
            r.u(1)  # mb_adaptive_frame_field_flag
        r.u(1)  # direct_8x8_inference_flag
        crop = (r.ue(), r.ue(), r.ue(), r.ue()) if r.u(1) else (0, 0, 0, 0)
    except ValueError:
        return None
    width, height = width_mbs * 16, (2 - frame_mbs_only) * height_units * 16
    if separate_planes or chroma_format == 0:  # ChromaArrayType 0
        unit_x, unit_y = 1, 2 - frame_mbs_only
    else:
        unit_x = 2 if chroma_format in (1, 2) else 1
        unit_y = (2 if chroma_format == 1 else 1) * (2 - frame_mbs_only)
    width -= unit_x * (crop[0] + crop[1])
    height -= unit_y * (crop[2] + crop[3])
    return (width, height) if width > 0 and height > 0 else None


def h264_frame_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the SPS in an access unit, or None if it has no (valid) SPS."""
    for unit in h264_nal_units(data):
        if unit[0] & 0x1F == H264_NAL_SPS:
            return h264_sps_frame_size(unit)
    return None


class H264ParameterSets:
    """Makes each IDR access unit of one stream self-contained.

    A subscriber or a file starting at an IDR needs the SPS and PPS before it. aiortc
    (libx264 repeats them) sends both with every IDR, as browsers normally do; for a sender
    that sends them only once, this remembers the latest ones and puts them in front of an
    IDR that lacks them. An IDR whose parameter sets were never seen is not a keyframe for
    passthrough: nothing can start there, so subscribers keep waiting (and asking for one).
    """

    def __init__(self) -> None:
        self._sps: list[bytes] = []
        self._pps: list[bytes] = []

    def complete(self, data: bytes) -> tuple[bytes, bool]:
        """`(access unit, is_keyframe)`: the unit as it came, or with the SPS/PPS an IDR lacks."""
        units = h264_nal_units(data)
        types = [unit[0] & 0x1F for unit in units]
        sps = [u for u, t in zip(units, types, strict=True) if t == H264_NAL_SPS]
        pps = [u for u, t in zip(units, types, strict=True) if t == H264_NAL_PPS]
        if sps:
            self._sps, self._pps = sps, pps  # a new SPS invalidates the PPS that went with it
        elif pps:
            self._pps = pps
        if H264_NAL_IDR not in types:
            return data, False
        if sps and pps:
            return data, True
        if not self._sps or not self._pps:
            return data, False
        aud = [u for u, t in zip(units, types, strict=True) if t == H264_NAL_AUD]
        rest = [u for u, t in zip(units, types, strict=True)
                if t not in (H264_NAL_AUD, H264_NAL_SPS, H264_NAL_PPS)]
        return b"".join(_START_CODE + u for u in [*aud, *self._sps, *self._pps, *rest]), True


def video_frame_size(codec: str, data: bytes) -> tuple[int, int] | None:
    """The picture size a keyframe of `codec` (a lower-case MIME type) declares, else None."""
    if codec == "video/vp8":
        return vp8_frame_size(data)
    if codec == "video/h264":
        return h264_frame_size(data)
    return None


def rtp_timestamp_delta(later: int, earlier: int) -> int:
    """`later - earlier` for 32-bit RTP timestamps that may have wrapped in between: the
    signed difference nearest to zero (valid for gaps under 2**31 ticks, 6.6 h at 90 kHz)."""
    delta = (later - earlier) % RTP_TIMESTAMP_MODULO
    return delta - RTP_TIMESTAMP_MODULO if delta >= RTP_TIMESTAMP_MODULO // 2 else delta


def ntp_to_unix(ntp_timestamp: int) -> float:
    """A 64-bit NTP timestamp (32.32 fixed point seconds since 1900) as Unix seconds."""
    return (ntp_timestamp >> 32) - _NTP_UNIX_OFFSET + (ntp_timestamp & 0xFFFFFFFF) / (1 << 32)


@dataclass(frozen=True, slots=True)
class SenderClock:
    """One RTCP sender report: the sender's wallclock at one instant of a track's RTP clock.

    `pts` is that instant on the track's packet timeline (`packet.pts`), so a packet's
    sending time is `time_at(packet.pts)`. Tracks of one sender share its wallclock, which
    is what lines up their recordings; the wallclocks of different senders are only as
    close as those machines' clocks.
    """

    ntp_time: float  # Unix seconds on the sender's wallclock
    rtp_timestamp: int  # the raw RTP timestamp in the report (32 bits)
    clock_rate: int  # RTP ticks per second
    pts: int  # rtp_timestamp on the packet timeline: unwrapped, 0 at the receiver's first frame

    def __post_init__(self) -> None:
        if self.clock_rate <= 0:
            raise ValueError(f"clock_rate must be positive, got {self.clock_rate}")
        if not 0 <= self.rtp_timestamp < RTP_TIMESTAMP_MODULO:
            raise ValueError(f"rtp_timestamp must fit 32 bits, got {self.rtp_timestamp}")

    def time_at(self, pts: int) -> float:
        """The sender's wallclock (Unix seconds) at packet timestamp `pts`."""
        return self.ntp_time + (pts - self.pts) / self.clock_rate


class PassthroughTrack(MediaStreamTrack):
    """A track of encoded `av.Packet`s that an RTCRtpSender packetizes without re-encoding.

    Packets come in with `push()` (from a `PassthroughReceiver`). The queue is bounded and
    drops the oldest packets under overload. For video, a subscriber only starts at a
    keyframe: until one arrives (at start, and again after an overflow broke the chain
    of frames) delta frames are discarded and a keyframe is requested.

    `sender_clock` is the publisher's latest SenderClock, for a recorder to place the
    track on the sender's wallclock; None until the publisher's first SR (or for a track
    with no publisher). `codec` is the packets' codec as a lower-case MIME type
    ("video/vp8", "video/h264", "audio/opus"), which the publisher's receiver sets from its
    first frame; None until then (or for a track with no publisher).
    """

    def __init__(self, kind: str, *, request_keyframe: Callable[[], None] | None = None,
                 sender_clock: Callable[[], SenderClock | None] | None = None,
                 codec: str | None = None, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        super().__init__()
        if kind not in ("audio", "video"):
            raise ValueError(f"kind must be 'audio' or 'video', got {kind!r}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        self.kind = kind
        self.codec = codec
        self.max_queue = max_queue
        self._request_keyframe = request_keyframe
        self._sender_clock = sender_clock
        self._packets: collections.deque[Packet[Any]] = collections.deque()
        self._ready = asyncio.Event()
        self._ended = False
        # Audio needs no keyframe; video waits for one.
        self.waiting_for_keyframe = kind == "video"
        self.forwarded = 0  # packets returned by recv()
        self.dropped = 0  # packets discarded: overflow, or delta frames while waiting

    @property
    def sender_clock(self) -> SenderClock | None:
        return self._sender_clock() if self._sender_clock is not None else None

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
    `sender_clock` is the latest RTCP sender report from the publisher (see SenderClock).
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
        self.codec: str | None = None  # lower-case MIME type, from the first frame
        self._h264 = H264ParameterSets()
        self.packets = 0
        self.keyframes = 0
        self.plis_sent = 0
        self.sender_reports = 0
        self.sender_clock: SenderClock | None = None
        # The last frame's (raw RTP timestamp, pts) and clock rate: an SR's raw timestamp is
        # placed on the pts timeline next to it. An SR that comes before any frame waits.
        self._last_rtp: tuple[int, int] | None = None
        self._clock_rate: int | None = None
        self._pending_sr: tuple[float, int] | None = None

    def subscribe(self, *, max_queue: int = DEFAULT_MAX_QUEUE) -> PassthroughTrack:
        """A new track of this receiver's packets; stop it to unsubscribe."""
        track = PassthroughTrack(self.kind, request_keyframe=self.request_keyframe,
                                 sender_clock=lambda: self.sender_clock, codec=self.codec,
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
        # The media stream's SSRC, not its retransmission (RTX) stream's: Chromium probes
        # bandwidth on RTX first and ignores a PLI naming that SSRC.
        rtx = getattr(self.receiver, _RTX_ATTR, {})
        sources = [s for s in self.receiver.getSynchronizationSources() if s.source not in rtx]
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
        # The mapper has just rebased this frame's timestamp: undo it for the raw RTP value.
        origin: int = getattr(self.receiver, _MAPPER_ATTR)._origin
        self._last_rtp = ((origin + frame.timestamp) % RTP_TIMESTAMP_MODULO, frame.timestamp)
        self._clock_rate = int(codec.clockRate)
        if self._pending_sr is not None:
            self._set_sender_clock(*self._pending_sr)
            self._pending_sr = None
        data: bytes = frame.data
        if mime == "video/vp8":
            keyframe = is_vp8_keyframe(data)
        elif mime == "video/h264":
            data, keyframe = self._h264.complete(data)
        else:
            keyframe = True
        packet = Packet(data)
        packet.pts = packet.dts = frame.timestamp
        packet.time_base = fractions.Fraction(1, codec.clockRate)
        packet.is_keyframe = keyframe
        self.codec = mime
        self.packets += 1
        self.keyframes += packet.is_keyframe
        live = [t for t in self._subscribers if t.readyState == "live"]
        self._subscribers = live
        for track in live:
            track.codec = mime
            track.push(packet)

    def _on_rtcp(self, packet: Any) -> None:
        if not isinstance(packet, RtcpSrPacket):
            return
        info = packet.sender_info
        if info.ntp_timestamp == 0:
            return  # aiortc reports before its first RTP packet: no mapping yet
        self.sender_reports += 1
        ntp_time = ntp_to_unix(info.ntp_timestamp)
        if self._last_rtp is None:
            self._pending_sr = (ntp_time, info.rtp_timestamp)
        else:
            self._set_sender_clock(ntp_time, info.rtp_timestamp)

    def _set_sender_clock(self, ntp_time: float, rtp_timestamp: int) -> None:
        assert self._last_rtp is not None and self._clock_rate is not None
        last_raw, last_pts = self._last_rtp
        pts = last_pts + rtp_timestamp_delta(rtp_timestamp, last_raw)
        self.sender_clock = SenderClock(ntp_time=ntp_time, rtp_timestamp=rtp_timestamp,
                                        clock_rate=self._clock_rate, pts=pts)

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
    The receiver's RTCP sender reports also feed the handle's `sender_clock`.
    Raises PassthroughUnsupported for an untested aiortc or a receiver already started.
    """
    check_aiortc_version()
    current = getattr(receiver, _QUEUE_ATTR, None)
    if (type(current) is not queue.Queue
            or not isinstance(getattr(receiver, _STARTED_ATTR, None), bool)
            or getattr(receiver, _KIND_ATTR, None) not in ("audio", "video")
            or not hasattr(getattr(receiver, _MAPPER_ATTR, None), "_origin")
            or not callable(getattr(receiver, _RTCP_ATTR, None))
            or not isinstance(getattr(receiver, _RTX_ATTR, None), dict)):
        if isinstance(current, _PacketTap):
            raise PassthroughUnsupported("passthrough is already enabled on this receiver")
        raise PassthroughUnsupported("RTCRtpReceiver internals differ from the tested aiortc")
    if getattr(receiver, _STARTED_ATTR):
        raise PassthroughUnsupported("the receiver has started; enable passthrough before")
    handle = PassthroughReceiver(receiver, keyframe_interval=keyframe_interval)
    setattr(receiver, _QUEUE_ATTR, _PacketTap(handle._on_frame, handle._on_end))
    handle_rtcp = getattr(receiver, _RTCP_ATTR)

    async def handle_rtcp_packet(packet: Any) -> None:
        handle._on_rtcp(packet)
        await handle_rtcp(packet)

    # Shadowed on this instance, like the queue: the DTLS transport looks the method up on
    # the receiver for every RTCP packet routed to it.
    setattr(receiver, _RTCP_ATTR, handle_rtcp_packet)
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
