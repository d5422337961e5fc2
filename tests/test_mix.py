"""`mikoto-rtc mix`: a recording directory written here with PyAV (no network), mixed, and
the result decoded and checked: grid, black cells, frame rate, tones, duration."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from media.mix import CatalogError, MixOptions, MixResult, mix, place, read_catalog

from .processes import cli_env

FPS = 15
TILE = (320, 240)
P1, P2, P3 = "P00000000000000a1", "P00000000000000b2", "P00000000000000c3"
LOW, HIGH = 440.0, 1000.0  # P1's tone, P2's tone
END = 3.5  # the last track ends here (P2's files after its move)


def write_video(path: Path, parts: list[tuple[int, int, float, int]]) -> None:
    """VP8 in WebM: for each part (width, height, seconds, luma), that many seconds of a
    flat picture; each part comes from its own encoder, so the size changes mid-file at a
    keyframe, as when a browser lowers its resolution."""
    with av.open(str(path), "w", format="webm") as out:
        stream = out.add_mux_stream("vp8", width=parts[0][0], height=parts[0][1])
        n = 0
        for width, height, seconds, luma in parts:
            encoder: Any = av.CodecContext.create("libvpx", "w")
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            encoder.time_base = Fraction(1, FPS)
            encoder.options = {"deadline": "realtime", "cpu-used": "8"}
            planes = np.full((height * 3 // 2, width), 128, np.uint8)
            planes[:height] = luma
            packets = []
            for i in range(round(seconds * FPS)):
                frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
                frame.pts, frame.time_base = i, Fraction(1, FPS)
                packets += encoder.encode(frame)
            packets += encoder.encode(None)
            for packet in packets:
                assert packet.pts is not None
                packet.pts = packet.dts = packet.pts + n
                packet.time_base = Fraction(1, FPS)
                packet.stream = stream
                out.mux(packet)
            n += round(seconds * FPS)


def write_audio(path: Path, freq: float, seconds: float, layout: str = "mono") -> None:
    """Opus in WebM: a sine tone."""
    with av.open(str(path), "w", format="webm") as out:
        stream: Any = out.add_stream("libopus", rate=48_000, layout=layout)
        for i in range(round(seconds * 50)):
            t0 = np.arange(i * 960, (i + 1) * 960) / 48_000
            tone = (0.3 * np.sin(2 * np.pi * freq * t0)).astype(np.float32)
            if layout == "stereo":
                tone = np.repeat(tone, 2)  # packed: left, right, left, ...
            frame = av.AudioFrame.from_ndarray(tone.reshape(1, -1), format="flt", layout=layout)
            frame.sample_rate, frame.pts = 48_000, i * 960
            frame.time_base = Fraction(1, 48_000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def track(participant: str, kind: str, file: str | None, start: float,
          sender_start: float | None, duration: float, **extra: Any) -> dict[str, Any]:
    return {"participant": participant, "user": participant.lower(), "kind": kind,
            "codec": "vp8" if kind == "video" else "opus", "file": file, "start": start,
            "senderStart": sender_start, "duration": duration, "packets": 0, "keyframes": 0,
            "sizes": [], "complete": True, **extra}


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two participants and a third whose files are lost:

    - P1 from 0 s: a 440 Hz tone (stereo) and 3 s of video, 320x240 then 160x120 from 1.5 s;
      no sender report yet (senderStart null), so placed by `start`;
    - P2 from 1 s: a 1000 Hz tone (mono) and brighter video whose first packet arrived
      0.25 s after its audio's (`start` 1.25) but was sent at the same instant
      (`senderStart`): mixed from 1 s. The recording moved to another worker at 2 s; P2's
      files on the new one start at 2.3 s and end at 3.5 s;
    - P3: a video track that never had a file, an audio file that is not WebM.
    """
    directory = tmp_path_factory.mktemp("R0123456789abcdef")
    write_audio(directory / f"{P1}-audio-0.webm", LOW, 3.0, layout="stereo")
    write_video(directory / f"{P1}-video-0.webm", [(320, 240, 1.5, 110), (160, 120, 1.5, 110)])
    write_audio(directory / f"{P2}-audio-0.webm", HIGH, 1.0)
    write_video(directory / f"{P2}-video-0.webm", [(320, 240, 1.0, 200)])
    write_audio(directory / f"{P2}-audio-6.webm", HIGH, 1.2)
    write_video(directory / f"{P2}-video-6.webm", [(160, 120, 1.2, 200)])
    (directory / f"{P3}-audio-0.webm").write_bytes(b"not a webm file at all" * 10)
    tracks = [
        track(P1, "audio", f"{P1}-audio-0.webm", 0.0, None, 3.0),
        track(P1, "video", f"{P1}-video-0.webm", 0.0, None, 3.0,
              sizes=[[320, 240], [160, 120]]),
        track(P2, "audio", f"{P2}-audio-0.webm", 1.0, 1700000000.5, 1.0),
        track(P2, "video", f"{P2}-video-0.webm", 1.25, 1700000000.5, 1.0),
        track(P3, "video", None, 1.0, None, 0.0),
        track(P3, "audio", f"{P3}-audio-0.webm", 1.0, None, 2.0),
        track(P2, "audio", f"{P2}-audio-6.webm", 2.3, 1700000001.8, 1.2),
        track(P2, "video", f"{P2}-video-6.webm", 2.3, 1700000001.8, 1.2),
    ]
    catalog = {
        "id": directory.name, "room": "mix-room", "by": "p1", "startedAt": 1700000000000,
        "stoppedAt": 1700000004000, "state": "complete",
        "participants": [{"id": p, "user": p.lower(), "name": p} for p in (P1, P2, P3)],
        "tracks": tracks, "files": [t["file"] for t in tracks if t["file"]], "moves": 1,
    }
    (directory / "catalog.json").write_text(json.dumps(catalog))
    return directory


@pytest.fixture(scope="module")
def mixed(recording: Path, tmp_path_factory: pytest.TempPathFactory) -> MixResult:
    out = tmp_path_factory.mktemp("out") / "mixed.webm"
    return mix(recording, out, MixOptions(tile_width=TILE[0], tile_height=TILE[1], fps=FPS))


def video_frames(path: Path) -> Iterator[tuple[float, npt.NDArray[np.uint8]]]:
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield float(frame.time), frame.to_ndarray(format="rgb24")


def cell_mean(picture: npt.NDArray[np.uint8], cell: int) -> float:
    return float(picture[:, cell * TILE[0]:(cell + 1) * TILE[0]].mean())


def test_place_aligns_video_to_audio_by_sender_time(recording: Path) -> None:
    segments = {s.path.name: s.offset for s in place(read_catalog(recording), recording)}
    assert segments[f"{P1}-video-0.webm"] == 0.0  # no senderStart: its own start
    assert segments[f"{P2}-video-0.webm"] == pytest.approx(1.0)  # not 1.25
    assert segments[f"{P2}-video-6.webm"] == pytest.approx(2.3)
    assert f"{P3}-video-0.webm" not in segments


def test_the_mix_has_the_grid_frame_rate_and_duration(mixed: MixResult) -> None:
    assert mixed.participants == (P1, P2) and mixed.skipped == (f"{P3}-audio-0.webm",)
    assert (mixed.width, mixed.height) == (2 * TILE[0], TILE[1])
    assert mixed.duration == pytest.approx(END, abs=0.2)
    with av.open(str(mixed.path)) as container:
        assert container.format.name.startswith("matroska")
        assert container.duration is not None
        assert container.duration / 1e6 == pytest.approx(END, abs=0.2)
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert (video.codec_context.name, audio.codec_context.name) == ("vp8", "opus")
        assert (video.width, video.height) == (2 * TILE[0], TILE[1])
        assert (audio.sample_rate, audio.channels) == (48_000, 2)
    times = [t for t, _ in video_frames(mixed.path)]
    assert len(times) == pytest.approx(END * FPS, abs=2)
    assert np.allclose(np.diff(times), 1 / FPS, atol=0.002)


def test_each_participant_keeps_its_cell_and_is_black_without_a_picture(
        mixed: MixResult) -> None:
    def expect_p2(t: float) -> bool | None:  # None: too near a change to tell
        for lo, hi in ((1.0, 2.0), (2.3, END)):
            if lo - 0.05 < t < lo + 0.05 or hi - 0.05 < t < hi + 0.05:
                return None
            if lo < t < hi:
                return True
        return False

    seen = {True: 0, False: 0}
    for t, picture in video_frames(mixed.path):
        p1, p2 = cell_mean(picture, 0), cell_mean(picture, 1)
        if t < 2.95:
            assert 90 < p1 < 140, (t, p1)  # 320x240, then 160x120 scaled up to fill the cell
        elif t > 3.05:
            assert p1 < 5, (t, p1)
        shown = expect_p2(t)
        if shown is not None:
            assert (p2 > 180) if shown else (p2 < 5), (t, p2)
            seen[shown] += 1
    assert seen[True] > 20 and seen[False] > 15


def tone_share(samples: npt.NDArray[np.float32], freq: float) -> float:
    """The share of the signal's energy within 25 Hz of `freq`."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
    bins = np.fft.rfftfreq(len(samples), 1 / 48_000)
    return float(spectrum[np.abs(bins - freq) < 25].sum() / spectrum.sum())


def test_the_audio_is_both_tones_where_they_were(mixed: MixResult) -> None:
    with av.open(str(mixed.path)) as container:
        chunks = [f.to_ndarray() for f in container.decode(audio=0)]
    left = np.concatenate([c[0] for c in chunks])  # fltp: one row per channel
    assert len(left) / 48_000 == pytest.approx(END, abs=0.2)
    assert np.abs(left).max() <= 1.01

    def window(lo: float, hi: float) -> npt.NDArray[np.float32]:
        return left[round(lo * 48_000):round(hi * 48_000)]

    for (lo, hi), low, high in [((0.2, 0.9), True, False), ((1.1, 1.9), True, True),
                                ((2.08, 2.22), True, False), ((2.4, 2.9), True, True),
                                ((3.1, 3.45), False, True)]:
        shares = tone_share(window(lo, hi), LOW), tone_share(window(lo, hi), HIGH)
        assert (shares[0] > 0.2, shares[1] > 0.2) == (low, high), (lo, hi, shares)
        assert (shares[0] < 0.02, shares[1] < 0.02) == (not low, not high), (lo, hi, shares)
    assert np.abs(window(0.0, 0.0 + 0.02)).max() > 0.1  # P1 from the recording's start


def test_unreadable_files_are_skipped_with_a_warning(recording: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="media.mix"):
        result = mix(recording, tmp_path / "out.mkv",
                     MixOptions(tile_width=64, tile_height=48, fps=5))
    assert f"skipping {P3}-audio-0.webm" in caplog.text
    with av.open(str(result.path)) as container:
        assert container.format.name.startswith("matroska")
        assert (container.streams.video[0].width, container.streams.video[0].height) == (128, 48)
    assert not list(tmp_path.glob(".*.part"))


def test_a_missing_or_invalid_catalog_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"no catalog\.json"):
        mix(tmp_path)
    for bad in ("{", "[]", '{"tracks": [{"kind": "screen", "participant": "P1"}]}',
                '{"tracks": [{"kind": "audio", "participant": "P1", "file": "../x.webm", '
                '"start": 0}]}'):
        (tmp_path / "catalog.json").write_text(bad)
        with pytest.raises(CatalogError):
            mix(tmp_path)
    assert not list(tmp_path.glob("*.webm"))


def run_mix(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "signaling", "mix", *args], env=cli_env(),
                          capture_output=True, text=True, timeout=120)


def test_the_cli_writes_mixed_webm_next_to_the_catalog(recording: Path) -> None:
    out = run_mix(str(recording))
    assert out.returncode == 0, out.stderr
    path = recording / "mixed.webm"
    assert str(path) in out.stdout and "3.5" in out.stdout
    assert "skipping" in out.stderr  # P3's file
    defaults = MixOptions()
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        assert (video.width, video.height) == (2 * defaults.tile_width, defaults.tile_height)
        assert container.duration is not None
        assert container.duration / 1e6 == pytest.approx(END, abs=0.2)
    path.unlink()


def test_the_cli_exits_2_on_a_missing_or_invalid_catalog(tmp_path: Path) -> None:
    out = run_mix(str(tmp_path / "nope"))
    assert out.returncode == 2 and "catalog.json" in out.stderr and not out.stdout
    (tmp_path / "catalog.json").write_text("not json")
    out = run_mix(str(tmp_path), "-o", str(tmp_path / "m.webm"))
    assert out.returncode == 2 and "cannot read" in out.stderr
    assert not (tmp_path / "m.webm").exists()
