"""Recording passthrough tracks to WebM: files checked with PyAV, over real peer connections."""

from __future__ import annotations

import asyncio
import fractions
import shutil
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from av import AudioFrame, VideoFrame
from av.packet import Packet

from media.passthrough import (
    RTP_TIMESTAMP_MODULO,
    PassthroughReceiver,
    PassthroughTrack,
    SenderClock,
    enable_passthrough,
)
from media.recorder import DEFAULT_CLUSTER_DURATION, TrackRecorder, opus_head
from media.tracks import SineAudioTrack, SyntheticVideoTrack, read_frame_index

from .media_fixtures import (
    PcFactory,
    Reader,
    check_size_change,
    connect,
    eventually,
    peer_connections,
    receiver_of,
    record_then_kill,
)
from .recording_child import VIDEO_FPS as CHILD_FPS

REPO = Path(__file__).resolve().parents[1]
AUDIO_FRAME = 0.020  # seconds of Opus per packet (aiortc and browsers)


@pytest.fixture
async def make_pc() -> AsyncIterator[PcFactory]:
    async with peer_connections() as make:
        yield make


class StampedReader(Reader):
    """A Reader that also notes the wallclock at which each item arrived."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self.arrivals: list[float] = []
        super().__init__(track)

    async def _run(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                item = await track.recv()
            except MediaStreamError:
                return
            self.arrivals.append(time.time())
            self.items.append(item)


def decode_video(path: Path) -> list[VideoFrame]:
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "vp8"
        return list(container.decode(video=0))


def decode_audio(path: Path) -> list[AudioFrame]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "opus"
        assert stream.codec_context.extradata == opus_head()
        return list(container.decode(stream))


def audio_seconds(frames: list[AudioFrame]) -> float:
    return sum(f.samples for f in frames) / 48_000


def peak_frequency(samples: npt.NDArray[np.float64], rate: int = 48_000) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum))])


def vp8_packets(count: int, fps: float, size: tuple[int, int] = (320, 240)) -> list[Packet[Any]]:
    """`count` VP8 frames of the synthetic pattern, as a passthrough receiver hands them over."""
    source = SyntheticVideoTrack(*size, fps=fps)
    encoder = av.CodecContext.create("libvpx", "w")
    encoder.width, encoder.height, encoder.pix_fmt = size[0], size[1], "yuv420p"
    encoder.time_base = fractions.Fraction(1, 90_000)
    encoder.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    packets: list[Packet[Any]] = []
    for index in range(count):
        frame = VideoFrame.from_ndarray(source.picture(index), format="yuv420p")
        frame.pts, frame.time_base = round(index * 90_000 / fps), encoder.time_base
        for encoded in encoder.encode(frame):
            packet = Packet(bytes(encoded))
            packet.pts, packet.time_base = encoded.pts, encoder.time_base
            packet.is_keyframe = encoded.is_keyframe
            packets.append(packet)
    return packets


def opus_packets(count: int, first_pts: int) -> list[Packet[Any]]:
    """`count` 20 ms Opus packets of a 440 Hz tone, with (wrapping) 32-bit RTP timestamps."""
    encoder = av.CodecContext.create("libopus", "w")
    encoder.sample_rate, encoder.layout, encoder.format = 48_000, "stereo", "s16"
    encoder.open()
    packets: list[Packet[Any]] = []
    for index in range(count + 5):  # the encoder lags a few frames behind
        t = np.arange(index * 960, (index + 1) * 960) / 48_000
        pcm = (8000 * np.sin(2 * np.pi * 440.0 * t)).astype(np.int16)
        frame = AudioFrame.from_ndarray(np.repeat(pcm, 2).reshape(1, -1), format="s16",
                                        layout="stereo")
        frame.sample_rate, frame.pts = 48_000, index * 960
        for encoded in encoder.encode(frame):
            packet = Packet(bytes(encoded))
            packet.pts = (first_pts + len(packets) * 960) % RTP_TIMESTAMP_MODULO
            packet.time_base = fractions.Fraction(1, 48_000)
            packet.is_keyframe = True
            packets.append(packet)
    return packets[:count]


# --- without network ---------------------------------------------------------------------

async def test_opus_across_an_rtp_wrap_placed_on_the_sender_clock(tmp_path: Path) -> None:
    first = RTP_TIMESTAMP_MODULO - 48_000  # one second before the 32-bit timestamp wraps
    packets = opus_packets(100, first)
    clock = SenderClock(ntp_time=1_700_000_000.0, rtp_timestamp=(first + 48_000) % (1 << 32),
                        clock_rate=48_000, pts=first + 48_000)
    recorder = TrackRecorder(tmp_path / "a.webm",
                             PassthroughTrack("audio", sender_clock=lambda: clock))
    for packet in packets[:60]:
        recorder.write(packet)
    recorder.write(packets[10])  # a step back in time cannot be muxed: dropped
    for packet in packets[60:]:
        recorder.write(packet)
    await recorder.close()
    await recorder.close()

    assert (recorder.packets, recorder.dropped, recorder.keyframes) == (100, 1, 100)
    assert recorder.duration == pytest.approx(99 * AUDIO_FRAME)
    assert recorder.first_pts == pytest.approx(first / 48_000)
    assert recorder.sender_start == pytest.approx(1_700_000_000.0 - 1.0)
    assert recorder.sizes == [] and recorder.error is None
    frames = decode_audio(tmp_path / "a.webm")
    assert {(f.sample_rate, f.layout.name) for f in frames} == {(48_000, "stereo")}
    assert audio_seconds(frames) == pytest.approx(100 * AUDIO_FRAME, abs=0.021)
    assert frames[-1].time == pytest.approx(99 * AUDIO_FRAME, abs=0.001)  # no jump at the wrap
    pcm = np.concatenate([f.to_ndarray()[0] for f in frames[10:]]).astype(np.float64)
    assert peak_frequency(pcm) == pytest.approx(440, abs=3)


async def test_a_crash_at_any_packet_leaves_a_decodable_file(tmp_path: Path) -> None:
    """What a SIGKILL leaves is what the OS has: a copy of the file after each packet."""
    fps = 30.0
    packets = vp8_packets(45, fps)
    path = tmp_path / "v.webm"
    recorder = TrackRecorder(path, PassthroughTrack("video"))
    # Packets a crash may lose: the open cluster, and the one that has not closed it yet.
    at_risk = round(DEFAULT_CLUSTER_DURATION * fps) + 2
    decoded = []
    for index, packet in enumerate(packets):
        recorder.write(packet)
        snapshot = tmp_path / f"crash-{index}.webm"
        shutil.copyfile(path, snapshot)
        if index < at_risk:
            continue  # the first cluster may not be out yet
        frames = decode_video(snapshot)
        decoded.append(len(frames))
        assert len(frames) >= index + 1 - at_risk, f"after packet {index}"
        assert [read_frame_index(f) for f in frames] == list(range(len(frames)))
    await recorder.close()
    assert len(decode_video(path)) == len(packets) == recorder.packets
    lost = [i + 1 - n for i, n in enumerate(decoded, at_risk)]

    # The cost of writing out short clusters, against FFmpeg's default for files (5 s).
    costs, packets = {}, vp8_packets(300, fps)
    for cluster in (DEFAULT_CLUSTER_DURATION, 5.0):
        timed = TrackRecorder(tmp_path / f"cost-{cluster}.webm", PassthroughTrack("video"),
                              cluster_duration=cluster)
        timed.write(packets[0])  # opens the file
        started = time.process_time()
        for packet in packets[1:]:
            timed.write(packet)
        costs[cluster] = (time.process_time() - started) / (len(packets) - 1) * 1e6
        await timed.close()
        assert timed.packets == len(packets)
    print(f"\nlost at a crash: {min(lost)}..{max(lost)} packets; CPU per packet "
          f"({statistics.mean(len(bytes(p)) for p in packets):.0f} B): "
          f"{costs[DEFAULT_CLUSTER_DURATION]:.1f} us, {costs[5.0]:.1f} us with 5 s clusters")
    assert costs[DEFAULT_CLUSTER_DURATION] < 200


def test_recorder_refuses_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        TrackRecorder(tmp_path / "x.webm", PassthroughTrack("video"), cluster_duration=-1)


# --- real peer connections -----------------------------------------------------------------

def record_on_track(worker: RTCPeerConnection, directory: Path,
                    recorders: dict[str, TrackRecorder],
                    handles: dict[str, PassthroughReceiver] | None = None) -> None:
    """Record each track `worker` receives, from before its first packet."""

    @worker.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        handle = enable_passthrough(receiver_of(worker, track))
        recorder = TrackRecorder(directory / f"{track.kind}.webm", handle.subscribe())
        recorder.start()
        recorders[track.kind] = recorder
        if handles is not None:
            handles[track.kind] = handle


async def stop_sending(publisher: RTCPeerConnection, *sources: MediaStreamTrack) -> None:
    """Stop the sources and wait until their senders have sent their last frame."""
    for source in sources:
        source.stop()
    await eventually(lambda: all(s.track is None for s in publisher.getSenders()), timeout=5)


@pytest.mark.media
async def test_records_vp8_and_opus_aligned_on_the_sender_clock(
        make_pc: PcFactory, tmp_path: Path) -> None:
    fps = 30.0
    video, audio = SyntheticVideoTrack(320, 240, fps=fps), SineAudioTrack()
    publisher, worker = make_pc(), make_pc()
    publisher.addTrack(video)
    publisher.addTrack(audio)
    recorders: dict[str, TrackRecorder] = {}
    handles: dict[str, PassthroughReceiver] = {}
    record_on_track(worker, tmp_path, recorders, handles)
    await connect(publisher, worker)
    probes = {kind: StampedReader(handle.subscribe()) for kind, handle in handles.items()}

    await eventually(lambda: video.frame_count >= 4 * fps, timeout=20)
    await stop_sending(publisher, video, audio)
    sent = {"video": video.frame_count, "audio": audio.frame_count}
    sent_seconds = {"video": sent["video"] / fps, "audio": sent["audio"] * AUDIO_FRAME}
    await eventually(lambda: all(recorders[k].packets >= 0.95 * sent[k] for k in sent), timeout=5)
    await eventually(lambda: all(r.sender_start is not None for r in recorders.values()))
    for recorder in recorders.values():
        await recorder.close()
        assert recorder.error is None

    rec_video, rec_audio = recorders["video"], recorders["audio"]
    frames = decode_video(tmp_path / "video.webm")
    indices = [read_frame_index(f) for f in frames]
    sounds = decode_audio(tmp_path / "audio.webm")
    assert rec_video.sender_start is not None and rec_audio.sender_start is not None
    skew = rec_video.sender_start - rec_audio.sender_start
    print(f"\nsent {sent}, recorded {rec_video.packets} video / {rec_audio.packets} audio "
          f"packets; decoded {len(frames)} frames, {audio_seconds(sounds):.2f} s of audio "
          f"for {sent_seconds['audio']:.2f} s sent; start skew video-audio {skew * 1000:.1f} ms")

    assert abs(len(frames) - sent["video"]) <= 0.05 * sent["video"]
    assert rec_video.keyframes >= 1 and rec_video.sizes == [(320, 240)]
    assert {(f.width, f.height) for f in frames} == {(320, 240)}
    assert indices[0] == 0 and indices == sorted(indices)
    assert frames[-1].time == pytest.approx(indices[-1] / fps, abs=0.01)
    assert rec_video.duration + 1 / fps == pytest.approx(sent_seconds["video"], abs=0.5)
    assert rec_audio.duration + AUDIO_FRAME == pytest.approx(sent_seconds["audio"], abs=0.5)
    assert audio_seconds(sounds) == pytest.approx(sent_seconds["audio"], abs=0.5)
    assert abs(skew) < 0.1

    # Each SR places packets on the sender's wallclock (here also ours): a little before
    # they arrived, by the sending, the network and the jitter buffer. On a loaded machine
    # the synthetic sender's own frames run late too, which shifts its SR mapping by tens
    # of milliseconds either way (a clean-clone run once saw a median of -54 ms).
    for kind, handle in handles.items():
        clock = handle.sender_clock
        assert clock is not None and handle.sender_reports >= 2
        lags = [arrival - clock.time_at(p.pts)
                for arrival, p in zip(probes[kind].arrivals, probes[kind].items, strict=True)]
        print(f"{kind}: {handle.sender_reports} SRs, arrival - sending time: median "
              f"{statistics.median(lags) * 1000:.0f} ms, max {max(lags) * 1000:.0f} ms")
        assert -0.1 <= statistics.median(lags) < 0.2 and max(lags) < 0.5
        await probes[kind].close()


@pytest.mark.media
async def test_recording_survives_a_resolution_change(make_pc: PcFactory, tmp_path: Path) -> None:
    fps = 15.0
    source = SyntheticVideoTrack(320, 240, fps=fps)
    publisher, worker = make_pc(), make_pc()
    publisher.addTrack(source)
    recorders: dict[str, TrackRecorder] = {}
    record_on_track(worker, tmp_path, recorders)
    await connect(publisher, worker)
    await eventually(lambda: "video" in recorders and recorders["video"].packets >= 15, timeout=15)
    source.resize(160, 120)  # aiortc's encoder restarts with a keyframe of the new size
    resized_at = source.frame_count
    await eventually(lambda: recorders["video"].packets >= resized_at + 15, timeout=10)
    recorder = recorders["video"]
    await recorder.close()
    source.stop()

    check_size_change(decode_video(tmp_path / "video.webm"), recorder, resized_at)


@pytest.mark.media
async def test_forwards_and_records_opus_without_decoding(
        make_pc: PcFactory, tmp_path: Path) -> None:
    source = SineAudioTrack(440.0)
    publisher, worker_in = make_pc(), make_pc()
    publisher.addTrack(source)
    recorders: dict[str, TrackRecorder] = {}
    handles: dict[str, PassthroughReceiver] = {}
    record_on_track(worker_in, tmp_path, recorders, handles)
    await connect(publisher, worker_in)

    worker_out, subscriber = make_pc(), make_pc()
    forwarded = handles["audio"].subscribe()
    worker_out.addTrack(forwarded)
    heard: list[Reader] = []
    subscriber.on("track", lambda track: heard.append(Reader(track)))
    await connect(worker_out, subscriber)
    await eventually(lambda: bool(heard) and len(heard[0].items) >= 100, timeout=15)
    await stop_sending(publisher, source)
    sent_seconds = source.frame_count * AUDIO_FRAME
    recorder = recorders["audio"]
    await eventually(lambda: recorder.packets >= 0.95 * source.frame_count, timeout=5)
    await recorder.close()
    await heard[0].close()

    received = heard[0].items
    assert all(isinstance(f, AudioFrame) for f in received)
    assert {(f.sample_rate, f.samples) for f in received} == {(48_000, 960)}
    pcm = np.concatenate([f.to_ndarray()[0][::2] for f in received[-50:]]).astype(np.float64)
    assert peak_frequency(pcm) == pytest.approx(440, abs=3)  # the tone, through two hops
    sounds = decode_audio(tmp_path / "audio.webm")
    recorded = np.concatenate([f.to_ndarray()[0] for f in sounds[-50:]]).astype(np.float64)
    print(f"\nforwarded {handles['audio'].packets} Opus packets, subscriber decoded "
          f"{len(received)} frames; recorded {audio_seconds(sounds):.2f} s for "
          f"{sent_seconds:.2f} s sent")
    assert peak_frequency(recorded) == pytest.approx(440, abs=3)
    assert audio_seconds(sounds) == pytest.approx(sent_seconds, abs=0.5)
    assert forwarded.forwarded >= len(received)


@pytest.mark.media
async def test_files_are_readable_after_the_worker_is_killed(tmp_path: Path) -> None:
    written = await record_then_kill(tmp_path)

    frames = decode_video(tmp_path / "video.webm")
    sounds = decode_audio(tmp_path / "audio.webm")
    video_seconds = frames[-1].time - frames[0].time + 1 / CHILD_FPS
    print(f"\nwritten before the kill (last report): video {written['video']}, "
          f"audio {written['audio']}; decoded {len(frames)} frames ({video_seconds:.2f} s), "
          f"{audio_seconds(sounds):.2f} s of audio")
    assert len(frames) >= 2 * CHILD_FPS and audio_seconds(sounds) >= 2
    # Lost at most the open cluster (and what was written after the last report).
    assert video_seconds >= written["video"]["duration"] - 0.3
    assert audio_seconds(sounds) >= written["audio"]["duration"] - 0.3
    indices = [read_frame_index(f) for f in frames]
    assert indices == sorted(indices)


async def test_close_stops_a_recorder_waiting_for_packets(tmp_path: Path) -> None:
    track = PassthroughTrack("video")
    recorder = TrackRecorder(tmp_path / "never.webm", track)
    recorder.start()
    await asyncio.sleep(0)
    await recorder.close()
    assert track.readyState == "ended" and recorder.packets == 0
    assert not (tmp_path / "never.webm").exists() and recorder.sender_start is None
