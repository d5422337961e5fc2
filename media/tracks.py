"""Synthetic media sources: a test-pattern video that numbers its frames, and a sine tone.

Both pace themselves in real time from their first frame, as aiortc's own
`VideoStreamTrack`/`AudioStreamTrack` do: an RTP sender pulls with `recv()` and
would otherwise send as fast as it can encode.
"""

from __future__ import annotations

import asyncio
import fractions
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_SAMPLE_RATE = 48_000
AUDIO_PTIME = 0.020

# The frame index is drawn as this many black/white cells along the top edge,
# most significant bit first; cells are large enough to survive VP8 at low bitrates.
INDEX_BITS = 16
_BLACK, _WHITE, _NEUTRAL_CHROMA = 16, 235, 128


class _Pacer:
    """Sleeps until a media time offset, counted from the first call."""

    def __init__(self) -> None:
        self._start: float | None = None

    async def wait(self, offset: float) -> None:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        delay = self._start + offset - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)


def _index_cell(width: int, height: int) -> int:
    """Side of one index cell in pixels: the cells span at most the width and 1/8 of the height."""
    return min(width // INDEX_BITS, height // 8)


def check_video_format(width: int, height: int, fps: float) -> None:
    """Raise ValueError unless such frames can be made (yuv420p needs even sizes)."""
    if width % 2 or height % 2:
        raise ValueError(f"video size must be even, got {width}x{height}")
    if _index_cell(width, height) < 2:
        raise ValueError(f"video size too small for the frame index: {width}x{height}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")


class SyntheticVideoTrack(MediaStreamTrack):
    """Video frames (yuv420p) with a moving bar and the frame index drawn in the picture.

    Frame `n` has `pts = n * 90000 / fps` in a 1/90000 time base; see `read_frame_index`.
    """

    kind = "video"

    def __init__(self, width: int = 640, height: int = 480, fps: float = 30.0) -> None:
        super().__init__()
        check_video_format(width, height, fps)
        self.fps = fps
        self._index = 0
        self._pacer = _Pacer()
        self._set_size(width, height)

    def _set_size(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self._cell = _index_cell(width, height)
        # Drawn once per size: a horizontal luma ramp over neutral chroma; frames copy it.
        self._template = np.full((height * 3 // 2, width), _NEUTRAL_CHROMA, dtype=np.uint8)
        self._template[:height] = np.linspace(_BLACK, _WHITE, width, dtype=np.uint8)

    @property
    def frame_count(self) -> int:
        """Frames returned by `recv()` so far (what a sender pulled and sent)."""
        return self._index

    def resize(self, width: int, height: int) -> None:
        """Make the following frames `width`x`height`, as a camera or a sender under load does
        mid-call (aiortc's encoder then starts again with a keyframe of the new size)."""
        check_video_format(width, height, self.fps)
        self._set_size(width, height)

    async def recv(self) -> VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        index = self._index
        await self._pacer.wait(index / self.fps)
        self._index += 1
        frame = VideoFrame.from_ndarray(self.picture(index), format="yuv420p")
        frame.pts = round(index * VIDEO_CLOCK_RATE / self.fps)
        frame.time_base = VIDEO_TIME_BASE
        return frame

    def picture(self, index: int) -> npt.NDArray[np.uint8]:
        """The yuv420p planes of frame `index`, stacked as `VideoFrame.from_ndarray` takes them."""
        w, h, cell = self.width, self.height, self._cell
        picture = self._template.copy()
        # A bar crossing the picture every two seconds, below the index row.
        bar = max(2, w // 16)
        x = round(index * w / (2 * self.fps)) % w
        picture[cell:h, x : x + bar] = _WHITE
        bits = (index >> np.arange(INDEX_BITS - 1, -1, -1)) & 1
        row = np.repeat(np.where(bits == 1, _WHITE, _BLACK).astype(np.uint8), cell)
        picture[:cell, : INDEX_BITS * cell] = row
        return picture


def read_frame_index(frame: VideoFrame) -> int:
    """The index drawn by `SyntheticVideoTrack` (modulo 2**INDEX_BITS), read from any frame size
    the encoder kept; exact on unencoded frames, usually exact after VP8."""
    luma = frame.to_ndarray(format="gray")
    cell = _index_cell(frame.width, frame.height)
    lo, hi = cell // 4, max(cell // 4 + 1, cell - cell // 4)  # the cell's middle, away from edges
    index = 0
    for bit in range(INDEX_BITS):
        x = bit * cell
        index = index << 1 | int(luma[lo:hi, x + lo : x + hi].mean() > (_BLACK + _WHITE) / 2)
    return index


class SineAudioTrack(MediaStreamTrack):
    """A continuous sine tone: mono s16 frames of `ptime` seconds (960 samples at 48 kHz, 20 ms).

    `pts` counts samples in a 1/sample_rate time base.
    """

    kind = "audio"

    def __init__(self, frequency: float = 440.0, *, sample_rate: int = AUDIO_SAMPLE_RATE,
                 ptime: float = AUDIO_PTIME, amplitude: float = 0.25) -> None:
        super().__init__()
        if not 0 < frequency < sample_rate / 2:
            raise ValueError(f"frequency must be in (0, {sample_rate / 2}) Hz, got {frequency}")
        if not 0 <= amplitude <= 1:
            raise ValueError(f"amplitude must be in [0, 1], got {amplitude}")
        self.frequency, self.sample_rate = frequency, sample_rate
        self.samples_per_frame = round(sample_rate * ptime)
        if self.samples_per_frame < 1:
            raise ValueError(f"ptime too short: {ptime}")
        self._amplitude = amplitude * 32767
        self._next_sample = 0
        self._pacer = _Pacer()
        self._time_base = fractions.Fraction(1, sample_rate)

    @property
    def frame_count(self) -> int:
        """Frames returned by `recv()` so far (what a sender pulled and sent)."""
        return self._next_sample // self.samples_per_frame

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        first = self._next_sample
        await self._pacer.wait(first / self.sample_rate)
        n = self.samples_per_frame
        self._next_sample += n
        # Phase from the absolute sample number, so the tone is continuous across frames.
        t = (first + np.arange(n)) / self.sample_rate
        pcm = (self._amplitude * np.sin(2 * np.pi * self.frequency * t)).astype(np.int16)
        frame = AudioFrame.from_ndarray(pcm.reshape(1, n), format="s16", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = first
        frame.time_base = self._time_base
        return frame


@dataclass(frozen=True, slots=True)
class SyntheticMedia:
    """What a headless peer sends; `tracks()` makes a fresh, independent pair each call."""

    width: int = 640
    height: int = 480
    fps: float = 30.0
    tone_hz: float = 440.0

    def __post_init__(self) -> None:
        check_video_format(self.width, self.height, self.fps)

    def tracks(self) -> tuple[SineAudioTrack, SyntheticVideoTrack]:
        return (SineAudioTrack(self.tone_hz),
                SyntheticVideoTrack(self.width, self.height, self.fps))
