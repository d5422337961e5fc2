"""Synthetic tracks and the frame-counting sink, without any network."""

from __future__ import annotations

import asyncio
import fractions
import itertools

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from media import FrameCounter, SineAudioTrack, SyntheticMedia, SyntheticVideoTrack
from media.tracks import read_frame_index

from .media_fixtures import eventually


async def test_video_frames_have_size_kind_pts_and_their_index() -> None:
    track = SyntheticVideoTrack(320, 240, fps=30)
    frames = [await track.recv() for _ in range(4)]
    assert track.kind == "video"
    assert {(f.width, f.height, f.format.name) for f in frames} == {(320, 240, "yuv420p")}
    assert [f.pts for f in frames] == [0, 3000, 6000, 9000]
    assert {f.time_base for f in frames} == {fractions.Fraction(1, 90_000)}
    assert [read_frame_index(f) for f in frames] == [0, 1, 2, 3]
    pictures = [f.to_ndarray() for f in frames]
    assert not any(np.array_equal(a, b) for a, b in itertools.pairwise(pictures))
    track.stop()


async def test_default_video_is_640x480_at_30_fps() -> None:
    track = SyntheticVideoTrack()
    first, second = await track.recv(), await track.recv()
    assert (first.width, first.height) == (640, 480)
    assert (first.pts, second.pts) == (0, 90_000 // 30)
    assert read_frame_index(second) == 1
    track.stop()


def test_frame_index_survives_large_indices_and_small_pictures() -> None:
    for width, height in ((64, 48), (1280, 720)):
        track = SyntheticVideoTrack(width, height)
        for index in (0xBEEF, 0xFFFF, 0x10001):
            frame = VideoFrame.from_ndarray(track.picture(index), format="yuv420p")
            assert read_frame_index(frame) == index & 0xFFFF


async def test_pts_follow_odd_frame_rates() -> None:
    track = SyntheticVideoTrack(64, 48, fps=7)
    frames = [await track.recv() for _ in range(3)]
    assert [f.pts for f in frames] == [0, round(90_000 / 7), round(2 * 90_000 / 7)]
    track.stop()


async def test_video_is_paced_in_real_time() -> None:
    track = SyntheticVideoTrack(64, 48, fps=50)
    loop = asyncio.get_running_loop()
    await track.recv()
    start = loop.time()
    for _ in range(10):
        await track.recv()
    assert 0.18 <= loop.time() - start < 0.4  # ten frame times of 20 ms
    track.stop()


async def test_audio_is_a_continuous_48khz_sine_in_20ms_s16_frames() -> None:
    track = SineAudioTrack(1000.0)
    frames = [await track.recv() for _ in range(5)]
    assert track.kind == "audio"
    assert {(f.samples, f.sample_rate, f.format.name, f.layout.name) for f in frames} == {
        (960, 48_000, "s16", "mono")}
    assert [f.pts for f in frames] == [0, 960, 1920, 2880, 3840]
    assert {f.time_base for f in frames} == {fractions.Fraction(1, 48_000)}
    pcm = np.concatenate([f.to_ndarray()[0] for f in frames]).astype(np.float64)
    expected = 0.25 * 32767 * np.sin(2 * np.pi * 1000.0 * np.arange(pcm.size) / 48_000)
    assert np.abs(pcm - expected).max() <= 1.0  # continuous across frame boundaries
    track.stop()


async def test_audio_is_paced_in_real_time() -> None:
    track = SineAudioTrack()
    loop = asyncio.get_running_loop()
    await track.recv()
    start = loop.time()
    for _ in range(5):
        await track.recv()
    assert 0.09 <= loop.time() - start < 0.3  # five frames of 20 ms
    track.stop()


async def test_stopped_tracks_end() -> None:
    for track in (SyntheticVideoTrack(64, 48), SineAudioTrack()):
        track.stop()
        assert track.readyState == "ended"
        with pytest.raises(MediaStreamError):
            await track.recv()


@pytest.mark.parametrize("size", [(321, 240), (320, 241), (30, 48), (64, 14)])
def test_unusable_video_sizes_are_refused(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        SyntheticVideoTrack(*size)
    with pytest.raises(ValueError):
        SyntheticMedia(*size)


def test_unusable_rates_and_tones_are_refused() -> None:
    with pytest.raises(ValueError):
        SyntheticVideoTrack(fps=0)
    with pytest.raises(ValueError):
        SineAudioTrack(24_000.0)
    with pytest.raises(ValueError):
        SineAudioTrack(amplitude=1.5)


def test_synthetic_media_makes_fresh_tracks_each_time() -> None:
    media = SyntheticMedia(320, 240, fps=15, tone_hz=300.0)
    (audio1, video1), (audio2, video2) = media.tracks(), media.tracks()
    assert (audio1.kind, video1.kind) == ("audio", "video")
    assert len({audio1.id, video1.id, audio2.id, video2.id}) == 4
    assert (video1.width, video1.height, video1.fps, audio1.frequency) == (320, 240, 15, 300.0)


async def test_frame_counter_counts_until_the_track_ends() -> None:
    track = SyntheticVideoTrack(64, 48, fps=100)
    counter = FrameCounter(track)
    counter.start()
    await eventually(lambda: counter.frames >= 5)
    track.stop()
    await eventually(lambda: not counter.running, timeout=1)
    assert counter.kind == "video" and counter.last_size == (64, 48)
    assert counter.last_frame is not None
    assert read_frame_index(counter.last_frame) == counter.frames - 1
    await counter.close()
    await counter.close()


async def test_frame_counter_close_stops_reading_a_live_track() -> None:
    track = SineAudioTrack()
    counter = FrameCounter(track)
    await counter.close()  # never started: nothing to do
    counter.start()
    await asyncio.sleep(0.05)
    await counter.close()
    frames = counter.frames
    assert not counter.running and frames >= 1 and counter.last_size is None
    await asyncio.sleep(0.05)
    assert counter.frames == frames
    track.stop()
