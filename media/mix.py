"""`mikoto-rtc mix`: one recording's per-track files mixed into a single WebM (VP8 + Opus).

Usage::

    mikoto-rtc mix RECORDING_DIR [-o OUT]

reads `RECORDING_DIR/catalog.json`, writes `OUT` (default `RECORDING_DIR/mixed.webm`; a
`.mkv` name gives Matroska) and prints its path and duration. Exit status 2 when the
catalog is missing or invalid, 1 when there is nothing to mix or writing fails.

The mixed file's time 0 is the recording's start (`startedAt`); it ends with the last
track. Each track file is placed at its catalog `start`, except a video file whose
participant's audio has a `senderStart` too: that one is placed against the audio file
nearest on the sender's clock, by the `senderStart` difference (exact; `start` is when
the worker received the first packet, so network delay and the wait for the first
keyframe shift it). A recording that moved between workers has several files per
participant and kind: each is placed by its own `start` (or its audio, as above).

- Video: a grid of one fixed cell per participant with a readable video file (in
  catalog order), `tile_width` x `tile_height` each, at a fixed frame rate. A cell shows
  the participant's latest picture (scaled to fit, aspect kept, whatever size the
  browser sent at that time) and is black when that participant has no picture then.
- Audio: every audio file decoded, resampled to 48 kHz stereo, summed and clipped.

Files that cannot be opened (or decoded) are skipped (the rest of a file that breaks
off mid-way too) with a warning, so a recording cut short by a killed worker mixes up
to the crash. This is a batch job: plain synchronous code, streaming through the
decoders and the encoders one output frame at a time, so memory does not grow with the
recording's length (at most two decoded pictures per participant are held).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

from signaling.recordings import CATALOG

log = logging.getLogger(__name__)

SAMPLE_RATE = 48_000
DEFAULT_OUTPUT = "mixed.webm"
_FORMATS = {".webm": "webm", ".mkv": "matroska"}
_BLACK_Y, _BLACK_UV = 16, 128
# Audio frames whose timestamps are within this of where the previous one ended are
# laid end to end: container timestamps are in milliseconds, samples are not.
_CONTIGUOUS = 0.002
_MAX_HOLD = 0.5  # seconds a file's last picture is shown, at most

Planes = tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8], npt.NDArray[np.uint8]]


class MixError(Exception):
    """Nothing could be mixed, or the output could not be written."""


class CatalogError(MixError):
    """The recording's catalog.json is missing or not in the documented shape."""


@dataclass(frozen=True)
class MixOptions:
    tile_width: int = 640
    tile_height: int = 360
    fps: int = 25
    video_bit_rate: int = 600_000  # per cell
    audio_bit_rate: int = 64_000

    def __post_init__(self) -> None:
        for name in ("tile_width", "tile_height"):
            value = getattr(self, name)
            if not 16 <= value <= 4096 or value % 2:
                raise ValueError(f"{name} must be even, in [16, 4096]: {value}")
        if not 1 <= self.fps <= 120:
            raise ValueError(f"fps must be in [1, 120]: {self.fps}")
        if self.video_bit_rate <= 0 or self.audio_bit_rate <= 0:
            raise ValueError("bit rates must be positive")


@dataclass(frozen=True)
class Segment:
    """One track file placed on the mixed timeline."""

    participant: str
    kind: str  # "audio" | "video"
    path: Path
    offset: float  # seconds on the mixed timeline at the file's time 0


@dataclass(frozen=True)
class MixResult:
    path: Path
    duration: float  # seconds
    width: int  # 0 without video
    height: int
    fps: int
    participants: tuple[str, ...]  # the video cells, left to right, top to bottom
    skipped: tuple[str, ...]  # track files listed but not mixed (unreadable)


def read_catalog(directory: Path) -> dict[str, Any]:
    """The recording's catalog, checked enough to place its tracks."""
    path = directory / CATALOG
    try:
        catalog = json.loads(path.read_text())
    except FileNotFoundError:
        raise CatalogError(f"no {CATALOG} in {directory}: not a recording directory") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CatalogError(f"cannot read {path}: {exc}") from None
    tracks = catalog.get("tracks") if isinstance(catalog, dict) else None
    if not isinstance(tracks, list):
        raise CatalogError(f"{path} is not a recording catalog (no tracks list)")
    for i, track in enumerate(tracks):
        problem = _track_problem(track)
        if problem:
            raise CatalogError(f"{path}: tracks[{i}]: {problem}")
    return dict(catalog)


def _track_problem(track: Any) -> str | None:
    if not isinstance(track, dict):
        return "not an object"
    if track.get("kind") not in ("audio", "video"):
        return f"kind must be audio or video, got {track.get('kind')!r}"
    if not isinstance(track.get("participant"), str):
        return "participant must be a string"
    name = track.get("file")
    if name is not None and (not isinstance(name, str) or Path(name).name != name
                             or name in ("", ".", "..")):
        return f"file must be a plain file name or null, got {name!r}"
    for key, optional in (("start", False), ("senderStart", True), ("duration", True)):
        value = track.get(key)
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            return f"{key} must be a number, got {value!r}"
    return None


def place(catalog: dict[str, Any], directory: Path) -> list[Segment]:
    """Every track with a file, at its place on the mixed timeline (not checked on disk)."""
    tracks = [t for t in catalog["tracks"] if t.get("file")]
    segments = []
    for track in tracks:
        offset = float(track["start"])
        if track["kind"] == "video" and track.get("senderStart") is not None:
            audio = [a for a in tracks if a["kind"] == "audio"
                     and a["participant"] == track["participant"]
                     and a.get("senderStart") is not None]
            if audio:
                # The audio file nearest on the sender's clock: after a move, that of the
                # same worker, whose `start` was measured against the same clock.
                ref = min(audio, key=lambda a: abs(a["senderStart"] - track["senderStart"]))
                offset = float(ref["start"]) + track["senderStart"] - ref["senderStart"]
        segments.append(Segment(track["participant"], track["kind"],
                                directory / track["file"], offset))
    return segments


def mix(directory: str | Path, out: str | Path | None = None,
        options: MixOptions | None = None) -> MixResult:
    """Mix the recording in `directory` into `out` (default `directory/mixed.webm`)."""
    directory = Path(directory)
    options = options or MixOptions()
    out = Path(out) if out is not None else directory / DEFAULT_OUTPUT
    container_format = _FORMATS.get(out.suffix.lower())
    if container_format is None:
        raise MixError(f"{out}: the output must be a .webm or .mkv file")
    catalog = read_catalog(directory)
    if catalog.get("state") != "complete":
        log.warning("recording %s is not complete (still running, or its worker died): "
                    "mixing what was written", catalog.get("id", directory.name))
    segments, skipped = [], []
    for segment in place(catalog, directory):
        problem = _unreadable(segment)
        if problem:
            log.warning("skipping %s: %s", segment.path.name, problem)
            skipped.append(segment.path.name)
        else:
            segments.append(segment)
    if not segments:
        raise MixError(f"nothing to mix in {directory}: no readable track file")

    order = [p["id"] for p in catalog.get("participants", []) if isinstance(p, dict)]
    order += sorted({s.participant for s in segments} - set(order),
                    key=lambda p: min(s.offset for s in segments if s.participant == p))
    cells = [p for p in order if any(s.participant == p and s.kind == "video" for s in segments)]

    tmp = out.with_name(f".{out.name}.part")
    try:
        with av.open(str(tmp), "w", format=container_format) as container:
            duration, size = _Mixer(container, segments, cells, options).run()
        tmp.replace(out)
    except (av.FFmpegError, OSError) as exc:
        raise MixError(f"writing {out} failed: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return MixResult(out, duration, size[0], size[1], options.fps, tuple(cells), tuple(skipped))


def _unreadable(segment: Segment) -> str | None:
    try:
        with av.open(str(segment.path)) as container:
            streams = container.streams.video if segment.kind == "video" \
                else container.streams.audio
            if not streams:
                return f"no {segment.kind} stream"
    except (av.FFmpegError, OSError) as exc:
        return str(exc)
    return None


def _decode(segment: Segment) -> Iterator[Any]:
    """The file's frames; ends (with a warning) where decoding breaks off."""
    try:
        with av.open(str(segment.path)) as container:
            stream = container.streams.video[0] if segment.kind == "video" \
                else container.streams.audio[0]
            yield from container.decode(stream)
    except (av.FFmpegError, OSError) as exc:
        log.warning("%s: decoding stopped early: %s", segment.path.name, exc)


@dataclass
class _Picture:
    start: float  # mixed-timeline seconds
    end: float
    frame: Any  # av.VideoFrame
    tile: Planes | None = None  # scaled and letterboxed, made when first shown


class _Cell:
    """One participant's pictures on the mixed timeline, from its video files in turn."""

    def __init__(self, segments: Sequence[Segment], width: int, height: int) -> None:
        self.width, self.height = width, height
        self._pictures = self._timed(sorted(segments, key=lambda s: s.offset))
        self._current: _Picture | None = None
        self._next = next(self._pictures, None)
        self.end = 0.0

    @property
    def done(self) -> bool:
        return self._next is None

    def tile_at(self, t: float) -> Planes | None:
        while self._next is not None and self._next.start <= t:
            self._current = self._next
            self.end = max(self.end, self._current.end)
            self._next = next(self._pictures, None)
        picture = self._current
        if picture is None or not picture.start <= t < picture.end:
            return None
        if picture.tile is None:
            picture.tile = self._fit(picture.frame)
            picture.frame = None  # the tile is all that is needed now
        return picture.tile

    def _timed(self, segments: Sequence[Segment]) -> Iterator[_Picture]:
        # Each picture lasts until the next one of its file; a file's last one as long as
        # the interval before it (a picture's own duration is not stored in WebM).
        for segment in segments:
            held: tuple[float, Any] | None = None
            interval = 0.0
            for frame in _decode(segment):
                if frame.time is None:
                    continue
                t = segment.offset + float(frame.time)
                if held is not None:
                    if t <= held[0]:
                        continue
                    interval = t - held[0]
                    yield _Picture(held[0], t, held[1])
                held = (t, frame)
            if held is not None:
                yield _Picture(held[0], held[0] + min(interval or _MAX_HOLD, _MAX_HOLD), held[1])

    def _fit(self, frame: Any) -> Planes:
        scale = min(self.width / frame.width, self.height / frame.height)
        w = min(self.width, max(2, round(frame.width * scale / 2) * 2))
        h = min(self.height, max(2, round(frame.height * scale / 2) * 2))
        y, u, v = _planes(frame.reformat(width=w, height=h, format="yuv420p").to_ndarray(), w, h)
        tile = _black(self.width, self.height)
        x0, y0 = (self.width - w) // 4 * 2, (self.height - h) // 4 * 2
        tile[0][y0:y0 + h, x0:x0 + w] = y
        tile[1][y0 // 2:(y0 + h) // 2, x0 // 2:(x0 + w) // 2] = u
        tile[2][y0 // 2:(y0 + h) // 2, x0 // 2:(x0 + w) // 2] = v
        return tile


def _black(width: int, height: int) -> Planes:
    return (np.full((height, width), _BLACK_Y, np.uint8),
            np.full((height // 2, width // 2), _BLACK_UV, np.uint8),
            np.full((height // 2, width // 2), _BLACK_UV, np.uint8))


def _planes(yuv420p: npt.NDArray[np.uint8], width: int, height: int) -> Planes:
    """Split PyAV's yuv420p ndarray (the three planes end to end) into planes."""
    flat = yuv420p.reshape(-1)
    luma, chroma = width * height, (width // 2) * (height // 2)
    return (flat[:luma].reshape(height, width),
            flat[luma:luma + chroma].reshape(height // 2, width // 2),
            flat[luma + chroma:luma + 2 * chroma].reshape(height // 2, width // 2))


class _AudioSource:
    """One audio file as 48 kHz stereo float samples at positions on the mixed timeline."""

    def __init__(self, segment: Segment) -> None:
        self.segment = segment
        self.first = round(segment.offset * SAMPLE_RATE)  # no earlier sample (pre-open)
        self.end = 0  # one past the last sample seen so far
        self.done = False
        self._chunks: Iterator[tuple[int, npt.NDArray[np.float32]]] | None = None
        self._pending: tuple[int, npt.NDArray[np.float32]] | None = None

    def add_into(self, block: npt.NDArray[np.float32], start: int) -> None:
        """Add this source's samples in [start, start + len(block)) to `block`."""
        stop = start + len(block)
        if self.done or stop <= self.first:
            return
        if self._chunks is None:
            self._chunks = self._resampled()
        while True:
            if self._pending is None:
                self._pending = next(self._chunks, None)
                if self._pending is None:
                    self.done = True
                    return
                self.end = max(self.end, self._pending[0] + len(self._pending[1]))
            at, samples = self._pending
            lo, hi = max(at, start), min(at + len(samples), stop)
            if lo < hi:
                block[lo - start:hi - start] += samples[lo - at:hi - at]
            if at + len(samples) > stop:
                return  # the rest is for the next blocks
            self._pending = None

    def _resampled(self) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
        resampler = av.AudioResampler(format="flt", layout="stereo", rate=SAMPLE_RATE)
        expected: int | None = None
        for frame in _decode(self.segment):
            if frame.time is None:
                continue
            try:
                out = resampler.resample(frame)
            except (av.FFmpegError, ValueError) as exc:  # e.g. the format changed mid-file
                log.warning("%s: resampling stopped early: %s", self.segment.path.name, exc)
                return
            if not out:
                continue
            samples = np.concatenate([f.to_ndarray().reshape(-1, 2) for f in out])
            at = round((self.segment.offset + float(frame.time)) * SAMPLE_RATE)
            if expected is not None and abs(at - expected) <= _CONTIGUOUS * SAMPLE_RATE:
                at = expected
            expected = at + len(samples)
            yield at, samples


class _Mixer:
    """Writes the mixed streams to an open container, one output frame period at a time."""

    def __init__(self, container: Any, segments: Sequence[Segment], cells: Sequence[str],
                 options: MixOptions) -> None:
        self._container = container
        self._fps = options.fps
        self._cells = [_Cell([s for s in segments if s.participant == p and s.kind == "video"],
                             options.tile_width, options.tile_height) for p in cells]
        self._audio = [_AudioSource(s) for s in segments if s.kind == "audio"]
        self._blank = _black(options.tile_width, options.tile_height)
        self._columns = math.ceil(math.sqrt(len(cells))) if cells else 0
        rows = math.ceil(len(cells) / self._columns) if cells else 0
        self.size = (self._columns * options.tile_width, rows * options.tile_height)
        self._video: Any = None
        self._sound: Any = None
        if self._cells:
            # libvpx's "good" mode at its fastest speed: measured here at over 100 fps for
            # a 1920x1080 grid on one core, so decoding the inputs costs more.
            self._video = container.add_stream("libvpx", rate=options.fps,
                                               options={"deadline": "good", "cpu-used": "5"})
            self._video.width, self._video.height = self.size
            self._video.pix_fmt = "yuv420p"
            self._video.bit_rate = options.video_bit_rate * len(cells)
            self._video.codec_context.gop_size = 2 * options.fps  # seekable every 2 s
        if self._audio:
            self._sound = container.add_stream("libopus", rate=SAMPLE_RATE, layout="stereo")
            self._sound.bit_rate = options.audio_bit_rate

    def run(self) -> tuple[float, tuple[int, int]]:
        """Mix until every source has ended; returns the duration in seconds and the size."""
        canvas = _black(*self.size) if self._cells else None
        k = 0
        while True:
            t = k / self._fps
            if self._ended_by(t):
                break
            if canvas is not None:
                self._draw(canvas, t)
                frame = av.VideoFrame.from_ndarray(
                    np.concatenate([p.reshape(-1) for p in canvas]).reshape(-1, self.size[0]),
                    format="yuv420p")
                frame.pts, frame.time_base = k, Fraction(1, self._fps)
                self._encode(self._video, frame)
            if self._audio:
                start = k * SAMPLE_RATE // self._fps
                block = np.zeros(((k + 1) * SAMPLE_RATE // self._fps - start, 2), np.float32)
                for source in self._audio:
                    source.add_into(block, start)
                if self._ended_by((start + len(block)) / SAMPLE_RATE):
                    block = block[:max(1, self._end_sample() - start)]
                self._write_audio(block, start)
            k += 1
        for stream in (self._video, self._sound):
            if stream is not None:
                self._encode(stream, None)
        return self._end_sample() / SAMPLE_RATE, self.size

    def _ended_by(self, t: float) -> bool:
        return (all(c.done for c in self._cells) and all(a.done for a in self._audio)
                and self._end_sample() / SAMPLE_RATE <= t)

    def _end_sample(self) -> int:
        video = max((c.end for c in self._cells), default=0.0)
        return max([round(video * SAMPLE_RATE)] + [a.end for a in self._audio])

    def _draw(self, canvas: Planes, t: float) -> None:
        width, height = self._cells[0].width, self._cells[0].height
        for i, cell in enumerate(self._cells):
            x, y = i % self._columns * width, i // self._columns * height
            tile = cell.tile_at(t) or self._blank
            canvas[0][y:y + height, x:x + width] = tile[0]
            canvas[1][y // 2:(y + height) // 2, x // 2:(x + width) // 2] = tile[1]
            canvas[2][y // 2:(y + height) // 2, x // 2:(x + width) // 2] = tile[2]

    def _write_audio(self, block: npt.NDArray[np.float32], start: int) -> None:
        np.clip(block, -1.0, 1.0, out=block)
        frame = av.AudioFrame.from_ndarray(block.reshape(1, -1), format="flt", layout="stereo")
        frame.sample_rate = SAMPLE_RATE
        frame.pts, frame.time_base = start, Fraction(1, SAMPLE_RATE)
        self._encode(self._sound, frame)

    def _encode(self, stream: Any, frame: Any) -> None:
        for packet in stream.encode(frame):
            self._container.mux(packet)
