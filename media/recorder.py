"""Recording one passthrough track to a file by muxing its packets: VP8 video and Opus audio
to WebM, H.264 video to Matroska (`.mkv`; WebM allows only VP8/VP9/AV1).

Unlike aiortc's `MediaRecorder` (which decodes and re-encodes every frame inside the event
loop), this only writes the received bitstream: the picture size comes from the first
keyframe's header (VP8) or SPS (H.264), and a size change mid-call needs no codec reopen
(the VP8 decoder reads each keyframe's own size; each H.264 IDR brings its own SPS).

H.264: Matroska stores it as AVC (`V_MPEG4/ISO/AVC`): length-prefixed NAL units, with
an `avcC` record (SPS/PPS) as CodecPrivate, which FFmpeg's muxer refuses to start without.
aiortc hands over Annex-B access units. A muxing-only PyAV stream has no way to set
extradata, but PyAV (>= 18) fills it in itself when the header is left to the first
`mux()`: it runs FFmpeg's `extract_extradata` filter on that packet, which gives the
Annex-B SPS/PPS; given Annex-B extradata, the muxer writes it as `avcC` and converts every
packet to length-prefixed NAL units, keeping the in-band SPS/PPS. So an H.264 file starts
at an IDR with its SPS/PPS (the passthrough receiver guarantees both) and its header is
written with that first packet. A later SPS (a new size) travels in band, which FFmpeg's
decoder follows; the CodecPrivate and the track's PixelWidth/Height keep the first size.

Crash safety: a worker killed with SIGKILL runs no cleanup, so whatever the muxer still
holds in memory is lost and the file is never finalized. FFmpeg's Matroska muxer keeps
the open cluster in memory and writes it out whole when the next one starts, and its I/O
layer buffers a further 32 kB. So files are opened with

- `cluster_time_limit` (default 100 ms): the muxer closes a cluster once it spans that much
  media, so at most about that much (plus one packet) is in memory;
- `flush_packets=1`: each write reaches the OS at once; the page cache survives the
  process (not a power cut: no fsync).

A killed file decodes from its first cluster, which is out about `cluster_duration`
after the first keyframe, to its last whole one; it has no duration and no cues (seek
index), and its last cluster may be cut short, which FFmpeg skips. A clean `close()`
writes duration and cues. Live mode (`live=1`) was not chosen: it leaves them out of
finished files too, and still holds a whole cluster in memory. A cluster per packet
(`cluster_time_limit=0`) would lose one packet at most, but costs 36 bytes a packet
(an audio-only file indexes every cluster) against 14 at 100 ms and 8 by default: a
third more for 32 kbit/s Opus.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import struct
from pathlib import Path
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError
from av.packet import Packet

from .passthrough import PassthroughTrack, rtp_timestamp_delta, video_frame_size
from .taskutil import cancel_and_wait

log = logging.getLogger(__name__)

DEFAULT_CLUSTER_DURATION = 0.1  # seconds of media a SIGKILL may lose (plus one packet)

# What WebRTC declares for Opus (RFC 7587): a 48 kHz clock and two channels, whatever
# the sender actually encodes; a stereo decoder plays mono packets too.
OPUS_SAMPLE_RATE = 48_000
OPUS_CHANNELS = 2
VIDEO_CLOCK_RATE = 90_000

# Codec (lower-case MIME type) -> (short name, file extension, FFmpeg muxer, codec name).
CODECS = {
    "video/vp8": ("vp8", ".webm", "webm", "vp8"),
    "video/h264": ("h264", ".mkv", "matroska", "h264"),
    "audio/opus": ("opus", ".webm", "webm", "libopus"),
}
DEFAULT_CODECS = {"video": "video/vp8", "audio": "audio/opus"}  # a track that does not say


def extension_for(codec: str) -> str:
    """The file extension a track of `codec` (a MIME type) is recorded with."""
    try:
        return CODECS[codec.lower()][1]
    except KeyError:
        raise ValueError(f"cannot record {codec}") from None


def opus_head(channels: int = OPUS_CHANNELS, pre_skip: int = 0) -> bytes:
    """The Opus identification header (RFC 7845 5.1) that WebM stores as CodecPrivate.

    Pre-skip defaults to 0: RTP timestamps already are the times a WebRTC receiver plays
    the decoded samples at, and skipping the encoder's lookahead would shift audio
    against video.
    """
    return b"OpusHead" + struct.pack("<BBHIhB", 1, channels, pre_skip, OPUS_SAMPLE_RATE, 0, 0)


class TrackRecorder:
    """Writes the packets of one PassthroughTrack to a file at `path` until the track
    ends or `close()`. Whoever starts it must `await close()` it (idempotent), which
    finalizes the file and stops the track (the recorder owns its subscription).

    The codec is the track's (`PassthroughTrack.codec`, known from the publisher's first
    frame; VP8 or Opus if the track does not say), and the file's extension follows it:
    when the first packet opens the file, `path` gets the codec's suffix (`extension_for`),
    so `x.webm` is written as `x.mkv` for H.264. `codec` is the short name ("vp8",
    "h264", "opus"), None before the track has a codec.

    The file starts at timestamp 0 at the first packet (for video, the first keyframe).
    Packet timestamps are unwrapped as 32-bit RTP timestamps, so both aiortc's (already
    unwrapped) and raw RTP timelines record continuously; a packet stepping back in time is
    dropped, as the muxer would refuse it. Writing is plain file I/O of encoded data on the
    event loop: tens of microseconds a packet.

    Catalog counters: `packets`, `keyframes`, `sizes` (video: each picture size in order),
    `first_pts`/`last_pts`/`duration` (seconds on the track's timeline) and
    `sender_start` (the sender's wallclock at the file's timestamp 0, from RTCP).
    """

    def __init__(self, path: str | Path, track: PassthroughTrack, *,
                 cluster_duration: float = DEFAULT_CLUSTER_DURATION) -> None:
        if track.kind not in ("audio", "video"):
            raise ValueError(f"track kind must be 'audio' or 'video', got {track.kind!r}")
        if not 0 <= cluster_duration <= 5:
            raise ValueError(f"cluster_duration must be in [0, 5] s, got {cluster_duration}")
        self.path = Path(path)
        self.track = track
        self.kind: str = track.kind
        self.cluster_duration = cluster_duration
        self.packets = 0  # packets written
        self.keyframes = 0
        self.dropped = 0  # packets not written: delta frames before a keyframe, steps back
        self.sizes: list[tuple[int, int]] = []
        self.error: BaseException | None = None  # why recording stopped early, if it did
        self._codec: str | None = None  # MIME type, fixed when the file opens
        self._time_base: fractions.Fraction | None = None
        self._first: int | None = None  # unwrapped timestamps, in `_time_base` ticks
        self._last: int | None = None
        self._last_raw: int | None = None
        self._sender_start: float | None = None
        self._container: Any = None
        self._stream: Any = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def codec(self) -> str | None:
        """"vp8", "h264" or "opus" once the track's codec is known (at the latest, when
        the file opens), else None."""
        codec = self._codec or self.track.codec
        return CODECS[codec][0] if codec in CODECS else None

    @property
    def first_pts(self) -> float | None:
        """The first packet's timestamp in seconds, on the track's timeline."""
        return self._seconds(self._first)

    @property
    def last_pts(self) -> float | None:
        """The last written packet's timestamp in seconds, on the track's timeline."""
        return self._seconds(self._last)

    @property
    def duration(self) -> float:
        """Seconds from the first to the last packet written (without the last one's length)."""
        if self._first is None or self._last is None or self._time_base is None:
            return 0.0
        return float((self._last - self._first) * self._time_base)

    @property
    def sender_start(self) -> float | None:
        """The sender's wallclock (Unix seconds) at the file's timestamp 0, or None while
        no RTCP sender report has come (the first comes about a second into the call).

        Computed from the first report available after the first packet and then kept:
        the report nearest the start is the one least affected by drift between the
        sender's wallclock and its media clock.
        """
        self._place_on_sender_clock()
        return self._sender_start

    def _place_on_sender_clock(self) -> None:
        if self._sender_start is None and self._first is not None:
            clock = self.track.sender_clock
            if clock is not None:
                self._sender_start = clock.time_at(self._first)

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name=f"media-recorder:{self.kind}")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            await cancel_and_wait(self._task)
        self.track.stop()
        self._place_on_sender_clock()
        if self._container is not None:
            container, self._container = self._container, None
            try:
                container.close()
            except (av.FFmpegError, OSError) as exc:
                log.exception("finalizing %s failed", self.path)
                self.error = self.error or exc

    async def _run(self) -> None:
        while True:
            try:
                packet = await self.track.recv()
            except MediaStreamError:
                return
            try:
                self.write(packet)
            except (av.FFmpegError, OSError, ValueError) as exc:
                log.exception("writing %s failed; recording stops", self.path)
                self.error = exc
                return

    def write(self, packet: Packet[Any]) -> None:
        """Mux one packet (the recording task calls this for each packet of the track)."""
        if packet.pts is None:
            raise ValueError("packets must have a pts")
        data = bytes(packet)
        codec = self._codec or self.track.codec or DEFAULT_CODECS[self.kind]
        size = video_frame_size(codec, data) if self.kind == "video" else None
        if self._container is None:
            # VP8 declares a size only in keyframes; an H.264 SPS may come without an IDR.
            startable = size is not None and (codec == "video/vp8" or packet.is_keyframe)
            if self.kind == "video" and not startable:
                self.dropped += 1
                return  # cannot start a file on a delta frame
            self._open(packet, codec, size)
        assert self._first is not None and self._last is not None
        assert self._last_raw is not None and self._time_base is not None
        pts = self._last + rtp_timestamp_delta(packet.pts, self._last_raw)
        if pts < self._last:
            self.dropped += 1
            return
        out = Packet(data)
        out.pts = out.dts = pts - self._first
        out.time_base = self._time_base
        out.is_keyframe = packet.is_keyframe
        out.stream = self._stream
        self._container.mux(out)
        self._last, self._last_raw = pts, packet.pts
        self.packets += 1
        self.keyframes += packet.is_keyframe
        if size is not None and (not self.sizes or self.sizes[-1] != size):
            self.sizes.append(size)
        self._place_on_sender_clock()

    def _open(self, packet: Packet[Any], codec: str, size: tuple[int, int] | None) -> None:
        assert packet.pts is not None
        if codec not in CODECS or not codec.startswith(f"{self.kind}/"):
            raise ValueError(f"cannot record {codec} as a {self.kind} track")
        _, extension, container_format, codec_name = CODECS[codec]
        options = {
            "cluster_time_limit": str(round(self.cluster_duration * 1000)),
            "flush_packets": "1",
        }
        path = self.path.with_suffix(extension)
        container: Any = av.open(str(path), "w", format=container_format, options=options)
        try:
            if size is not None:
                self._stream = container.add_mux_stream(codec_name, width=size[0],
                                                        height=size[1])
                default_rate = VIDEO_CLOCK_RATE
            else:
                # A muxing-only stream cannot carry the OpusHead that WebM requires as
                # CodecPrivate; an encoder context can. It is opened (so its own header
                # can be replaced) but never given a frame.
                self._stream = container.add_stream("libopus", rate=OPUS_SAMPLE_RATE,
                                                    layout="stereo")
                self._stream.codec_context.open()
                self._stream.codec_context.extradata = opus_head()
                default_rate = OPUS_SAMPLE_RATE
            if codec != "video/h264":
                container.start_encoding()  # writes the header now, so a crash leaves a file
            # H.264: PyAV writes the header at the first mux, with the SPS/PPS it finds in
            # that packet as extradata (see the module docstring).
        except BaseException:
            container.close()
            raise
        self.path, self._codec = path, codec
        self._container = container
        self._time_base = packet.time_base or fractions.Fraction(1, default_rate)
        self._first = self._last = self._last_raw = packet.pts

    def _seconds(self, ticks: int | None) -> float | None:
        if ticks is None or self._time_base is None:
            return None
        return float(ticks * self._time_base)
