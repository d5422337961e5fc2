"""H.264 passthrough and recording to Matroska: bitstream parsing, files checked with PyAV,
real aiortc peer connections (aiortc encodes H.264 with libx264)."""

from __future__ import annotations

import fractions
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import av
import numpy as np
import pytest
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.rtcrtpreceiver import TimestampMapper
from av import VideoFrame
from av.packet import Packet

from media.passthrough import (
    H264ParameterSets,
    PassthroughReceiver,
    PassthroughTrack,
    enable_passthrough,
    h264_frame_size,
    h264_nal_units,
    h264_sps_frame_size,
    is_h264_keyframe,
    relay_keyframe_requests,
)
from media.recorder import DEFAULT_CLUSTER_DURATION, TrackRecorder, extension_for
from media.recording import _Track
from media.tracks import SyntheticVideoTrack, read_frame_index

from .media_fixtures import (
    PcFactory,
    Reader,
    check_size_change,
    eventually,
    peer_connections,
    receiver_of,
    record_then_kill,
)
from .recording_child import VIDEO_FPS as CHILD_FPS
from .recording_child import connect_with_codec

REPO = Path(__file__).resolve().parents[1]
H264 = "video/H264"


@pytest.fixture
async def make_pc() -> AsyncIterator[PcFactory]:
    async with peer_connections() as make:
        yield make


def x264_packets(count: int, size: tuple[int, int], *, first: int = 0, fps: float = 30.0,
                 pix_fmt: str = "yuv420p", profile: str | None = "Baseline",
                 params: str | None = None, keyframes: tuple[int, ...] = ()
                 ) -> list[Packet[Any]]:
    """`count` frames encoded as aiortc's H264Encoder does (libx264, zerolatency), as the
    passthrough receiver hands them over: Annex-B access units with 90 kHz timestamps.
    Frames `first`.. of the synthetic pattern, or plain ones if it does not fit `size`;
    the frame indices in `keyframes` are forced to be IDRs."""
    source = SyntheticVideoTrack(*size, fps=fps) if pix_fmt == "yuv420p" else None
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = size[0], size[1], pix_fmt
    encoder.time_base = fractions.Fraction(1, 90_000)
    encoder.framerate = fractions.Fraction(round(fps), 1)
    encoder.options = {"tune": "zerolatency", **({"x264-params": params} if params else {})}
    if profile is not None:
        encoder.profile = profile
    packets: list[Packet[Any]] = []
    for index in range(first, first + count):
        if source is not None:
            frame = VideoFrame.from_ndarray(source.picture(index), format="yuv420p")
        else:
            rgb = np.full((size[1], size[0], 3), index % 256, dtype=np.uint8)
            frame = VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format=pix_fmt)
        frame.pts, frame.time_base = round(index * 90_000 / fps), encoder.time_base
        frame.pict_type = (av.video.frame.PictureType.I if index in keyframes
                           else av.video.frame.PictureType.NONE)
        for encoded in encoder.encode(frame):
            packet = Packet(bytes(encoded))
            packet.pts, packet.time_base = encoded.pts, encoder.time_base
            packet.is_keyframe = encoded.is_keyframe
            packets.append(packet)
    return packets


def decode_h264(path: Path) -> list[VideoFrame]:
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        return list(container.decode(video=0))


def nal_types(data: bytes) -> list[int]:
    return [unit[0] & 0x1F for unit in h264_nal_units(data)]


# --- without network ---------------------------------------------------------------------

@pytest.mark.parametrize(("size", "pix_fmt", "profile", "params"), [
    ((320, 240), "yuv420p", "Baseline", None),  # what aiortc sends
    ((160, 120), "yuv420p", "Baseline", None),  # 7.5 macroblocks high: cropped
    ((100, 50), "yuv420p", "High", "cqm=jvt"),  # High profile fields and scaling lists
    ((320, 240), "yuv420p", "High", "interlaced=1"),  # field coding: map units, crop units
    ((161, 97), "yuv444p", None, None),  # High 4:4:4: odd sizes, crop unit 1
])
def test_sps_gives_the_picture_size(size: tuple[int, int], pix_fmt: str, profile: str | None,
                                    params: str | None) -> None:
    packets = x264_packets(3, size, pix_fmt=pix_fmt, profile=profile, params=params)
    first = bytes(packets[0])
    assert {5, 7, 8} <= set(nal_types(first))
    assert is_h264_keyframe(first) and h264_frame_size(first) == size
    for later in packets[1:]:
        assert not is_h264_keyframe(bytes(later)) and h264_frame_size(bytes(later)) is None
    decoder = av.CodecContext.create("h264", "r")  # what a decoder makes of it
    [frame] = [*decoder.decode(Packet(first)), *decoder.decode(None)]
    assert (frame.width, frame.height) == size


class _Bits:
    """Writes an RBSP bit by bit, for SPS values libx264 would not produce."""

    def __init__(self) -> None:
        self.bits: list[int] = []

    def u(self, n: int, value: int) -> None:
        self.bits += [(value >> i) & 1 for i in range(n - 1, -1, -1)]

    def ue(self, value: int) -> None:
        code = value + 1
        self.u(2 * code.bit_length() - 1, code)

    def nal(self, header: int) -> bytes:
        bits = [*self.bits, 1]  # rbsp_stop_one_bit, then zeros to a byte boundary
        bits += [0] * (-len(bits) % 8)
        rbsp = bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))
        escaped, zeros = bytearray([header]), 0
        for byte in rbsp:  # emulation prevention (7.4.1)
            if zeros >= 2 and byte <= 3:
                escaped.append(3)
                zeros = 0
            escaped.append(byte)
            zeros = zeros + 1 if byte == 0 else 0
        return bytes(escaped)


def test_sps_parser_undoes_emulation_prevention_and_poc_type_1() -> None:
    sps = _Bits()
    sps.u(8, 66)  # Baseline
    sps.u(16, 0)  # constraint flags, level 0: two zero bytes already
    for value in (0, 0, 1):  # sps id, log2_max_frame_num - 4, pic_order_cnt_type 1
        sps.ue(value)
    sps.u(1, 0)
    sps.ue(0)  # offset_for_non_ref_pic (se 0)
    sps.ue(0)  # offset_for_top_to_bottom_field
    sps.ue(2)  # two offsets for ref frames:
    sps.ue(3)  # se -2 (ue 4 is -2; 3 is +2)
    sps.ue(4)
    sps.ue(1)  # max_num_ref_frames
    sps.u(1, 0)
    sps.ue(19)  # 320 wide
    sps.ue((1 << 30) - 1)  # 2**30 macroblocks high: 30 zero bits in a row, escaped
    sps.u(2, 0b11)  # frame_mbs_only, direct_8x8_inference
    sps.u(1, 1)  # cropping:
    for value in (0, 2, 0, 8):
        sps.ue(value)
    nal = sps.nal(0x67)
    assert b"\x00\x00\x03" in nal  # the escapes are there to be undone
    assert h264_sps_frame_size(nal) == (320 - 2 * 2, (1 << 30) * 16 - 2 * 8)
    assert h264_sps_frame_size(nal[:12]) is None  # truncated


def test_an_idr_gets_the_parameter_sets_it_lacks() -> None:
    """A sender that sends SPS/PPS only once: each IDR still starts a subscriber or a file."""
    packets = x264_packets(10, (160, 120), keyframes=(6,))
    assert [p.is_keyframe for p in packets] == [i in (0, 6) for i in range(10)]
    bare = bytes(packets[6])
    units = h264_nal_units(bare)
    assert nal_types(bare)[-1] == 5
    stripped = b"".join(b"\x00\x00\x00\x01" + u for u in units if u[0] & 0x1F not in (7, 8))

    sets = H264ParameterSets()
    assert sets.complete(stripped) == (stripped, False)  # never saw an SPS: cannot start here
    assert sets.complete(bytes(packets[0])) == (bytes(packets[0]), True)
    assert sets.complete(bytes(packets[1])) == (bytes(packets[1]), False)
    completed, keyframe = sets.complete(stripped)
    assert keyframe and nal_types(completed)[:2] == [7, 8]
    assert h264_frame_size(completed) == (160, 120)

    # Through a receiver, as the depayloaded frames of a passthrough hook arrive.
    mapper = TimestampMapper()
    receiver: Any = SimpleNamespace(_RTCRtpReceiver__kind="video",
                                    _RTCRtpReceiver__timestamp_mapper=mapper,
                                    getSynchronizationSources=list)
    handle = PassthroughReceiver(receiver, keyframe_interval=1.0)
    h264 = SimpleNamespace(mimeType="video/H264", clockRate=90_000)
    early = handle.subscribe()
    assert early.codec is None
    frames = [bytes(p) for p in packets[:6]] + [stripped] + [bytes(p) for p in packets[7:]]
    late: PassthroughTrack | None = None
    for index, (data, packet) in enumerate(zip(frames, packets, strict=True)):
        if index == 3:
            late = handle.subscribe()  # starts at the next IDR, the stripped one
        assert packet.pts is not None
        handle._on_frame(h264, SimpleNamespace(data=data, timestamp=mapper.map(packet.pts)))
    assert late is not None and (handle.codec, early.codec, late.codec) == ("video/h264",) * 3
    assert handle.keyframes == 2 and late.dropped == 3
    got = list(late._packets)
    assert got[0].is_keyframe and bytes(got[0]) == completed and len(got) == 4
    decoder = av.CodecContext.create("h264", "r")
    decoded = [f for p in got for f in decoder.decode(Packet(bytes(p)))]
    decoded += decoder.decode(None)
    assert len(decoded) == 4 and {(f.width, f.height) for f in decoded} == {(160, 120)}
    early.stop()
    late.stop()


async def test_h264_goes_to_matroska_crash_safe_across_a_size_change(tmp_path: Path) -> None:
    """What a SIGKILL leaves is what the OS has: a copy of the file after each packet."""
    fps = 30.0
    packets = x264_packets(30, (320, 240)) + x264_packets(30, (160, 120), first=30)
    recorder = TrackRecorder(tmp_path / "v.webm", PassthroughTrack("video", codec="video/h264"))
    assert extension_for(H264) == ".mkv" and recorder.codec == "h264"
    at_risk = round(DEFAULT_CLUSTER_DURATION * fps) + 2  # the open cluster, and one more
    for index, packet in enumerate(packets):
        recorder.write(packet)
        if index < at_risk or index % 3:
            continue
        snapshot = tmp_path / f"crash-{index}.mkv"
        shutil.copyfile(recorder.path, snapshot)
        frames = decode_h264(snapshot)
        assert len(frames) >= index + 1 - at_risk, f"after packet {index}"
        assert [read_frame_index(f) for f in frames] == list(range(len(frames)))
        if index >= 30 + at_risk:
            assert {(f.width, f.height) for f in frames} == {(320, 240), (160, 120)}
    await recorder.close()

    assert recorder.path == tmp_path / "v.mkv" and not (tmp_path / "v.webm").exists()
    assert (recorder.packets, recorder.keyframes, recorder.dropped) == (60, 2, 0)
    assert recorder.sizes == [(320, 240), (160, 120)] and recorder.error is None
    frames = decode_h264(recorder.path)
    assert [(f.width, f.height) for f in frames] == [(320, 240)] * 30 + [(160, 120)] * 30
    assert [read_frame_index(f) for f in frames] == list(range(60))
    assert frames[-1].time == pytest.approx(59 / fps, abs=0.002)
    with av.open(str(recorder.path)) as container:
        stream = container.streams.video[0]
        # CodecPrivate is an avcC record (version 1, Baseline) and the blocks hold
        # length-prefixed NAL units: the muxer converted the Annex-B access units.
        assert stream.codec_context.extradata[:2] == b"\x01\x42"
        assert (stream.codec_context.width, stream.codec_context.height) == (320, 240)
        first = next(container.demux(stream))
        assert int.from_bytes(bytes(first)[:4], "big") + 4 < first.size

    # The record job's catalog entry names the codec and the .mkv file.
    entry = _Track("P1", "alice", "video", recorder, arrived=time.time()).wire(time.time())
    assert (entry["codec"], entry["file"]) == ("h264", "v.mkv")


async def test_recorder_waits_for_an_idr_and_refuses_a_codec_of_the_wrong_kind(
        tmp_path: Path) -> None:
    packets = x264_packets(8, (160, 120), keyframes=(5,))
    recorder = TrackRecorder(tmp_path / "v.webm", PassthroughTrack("video", codec="video/h264"))
    # A delta frame with an SPS (as some senders repeat it) does not start a file either.
    sps = next(u for u in h264_nal_units(bytes(packets[0])) if u[0] & 0x1F == 7)
    delta = Packet(b"\x00\x00\x00\x01" + sps + bytes(packets[1]))
    delta.pts, delta.time_base = packets[1].pts, packets[1].time_base
    recorder.write(delta)
    for packet in packets[2:]:
        recorder.write(packet)
    await recorder.close()
    assert (recorder.dropped, recorder.packets, recorder.keyframes) == (4, 3, 1)
    assert [read_frame_index(f) for f in decode_h264(tmp_path / "v.mkv")] == [5, 6, 7]

    wrong = TrackRecorder(tmp_path / "a.webm", PassthroughTrack("audio", codec="video/h264"))
    with pytest.raises(ValueError, match="cannot record"):
        wrong.write(packets[0])
    await wrong.close()
    with pytest.raises(ValueError):
        extension_for("video/vp9")


# --- real peer connections -----------------------------------------------------------------

def record_video(worker: RTCPeerConnection, directory: Path, recorders: list[TrackRecorder],
                 handles: list[PassthroughReceiver]) -> None:
    """Record the video track `worker` receives, from before its first packet."""

    @worker.on("track")
    def on_track(track: MediaStreamTrack) -> None:
        handle = enable_passthrough(receiver_of(worker, track))
        recorder = TrackRecorder(directory / "video.webm", handle.subscribe())
        recorder.start()
        recorders.append(recorder)
        handles.append(handle)


@pytest.mark.media
async def test_records_and_forwards_h264_from_a_call(make_pc: PcFactory, tmp_path: Path) -> None:
    fps = 30.0
    source = SyntheticVideoTrack(320, 240, fps=fps)
    publisher, worker_in = make_pc(), make_pc()
    publisher.addTrack(source)
    recorders: list[TrackRecorder] = []
    handles: list[PassthroughReceiver] = []
    record_video(worker_in, tmp_path, recorders, handles)
    await connect_with_codec(publisher, worker_in, H264)
    await eventually(lambda: bool(recorders) and recorders[0].packets >= fps, timeout=15)
    [recorder], [handle] = recorders, handles
    assert handle.codec == "video/h264" and recorder.codec == "h264"

    # A subscriber a second in: held until an IDR its keyframe request brings.
    worker_out, subscriber = make_pc(), make_pc()
    forwarded = handle.subscribe()
    relay_keyframe_requests(worker_out.addTrack(forwarded), forwarded)
    decoded: list[Reader] = []
    subscriber.on("track", lambda track: decoded.append(Reader(track)))
    keyframes_before = handle.keyframes
    await connect_with_codec(worker_out, subscriber, H264)
    await eventually(lambda: bool(decoded) and len(decoded[0].items) >= 2 * fps, timeout=20)
    assert handle.plis_sent >= 1 and handle.keyframes > keyframes_before

    await eventually(lambda: source.frame_count >= 4 * fps, timeout=20)
    source.stop()
    await eventually(lambda: all(s.track is None for s in publisher.getSenders()), timeout=5)
    sent = source.frame_count
    await eventually(lambda: recorder.packets >= 0.95 * sent, timeout=5)
    await recorder.close()
    for reader in decoded:
        await reader.close()

    frames = decode_h264(recorder.path)
    indices = [read_frame_index(f) for f in frames]
    forwarded_indices = [read_frame_index(f) for f in decoded[0].items]
    print(f"\nsent {sent} frames; recorded {recorder.packets} packets, {recorder.keyframes} "
          f"keyframes, decoded {len(frames)} frames from {recorder.path.name}; forwarded "
          f"{len(forwarded_indices)} frames from #{forwarded_indices[0]}, "
          f"{handle.plis_sent} PLIs")
    assert recorder.path.name == "video.mkv" and recorder.error is None
    assert abs(len(frames) - sent) <= 0.05 * sent
    assert recorder.sizes == [(320, 240)] and {(f.width, f.height) for f in frames} == {(320, 240)}
    assert indices[0] == 0 and indices == sorted(indices)
    assert frames[-1].time == pytest.approx(indices[-1] / fps, abs=0.01)
    assert forwarded_indices[0] >= fps and forwarded_indices == sorted(forwarded_indices)
    assert {(f.width, f.height) for f in decoded[0].items} == {(320, 240)}


@pytest.mark.media
async def test_h264_recording_survives_a_resolution_change(make_pc: PcFactory,
                                                          tmp_path: Path) -> None:
    fps = 15.0
    source = SyntheticVideoTrack(320, 240, fps=fps)
    publisher, worker = make_pc(), make_pc()
    publisher.addTrack(source)
    recorders: list[TrackRecorder] = []
    record_video(worker, tmp_path, recorders, [])
    await connect_with_codec(publisher, worker, H264)
    await eventually(lambda: bool(recorders) and recorders[0].packets >= 15, timeout=15)
    source.resize(160, 120)  # aiortc's encoder starts again: an IDR with a new SPS
    resized_at = source.frame_count
    recorder = recorders[0]
    await eventually(lambda: recorder.packets >= resized_at + 15, timeout=10)
    await recorder.close()
    source.stop()

    check_size_change(decode_h264(recorder.path), recorder, resized_at)


@pytest.mark.media
async def test_h264_file_is_readable_after_the_worker_is_killed(tmp_path: Path) -> None:
    written = await record_then_kill(tmp_path, "--codec", "h264")

    video = written["video"]
    assert (video["file"], video["codec"]) == ("video.mkv", "h264")
    frames = decode_h264(tmp_path / "video.mkv")
    seconds = frames[-1].time - frames[0].time + 1 / CHILD_FPS
    indices = [read_frame_index(f) for f in frames]
    print(f"\nwritten before the kill (last report): {video}; decoded {len(frames)} frames "
          f"({seconds:.2f} s)")
    assert len(frames) >= 2 * CHILD_FPS and {(f.width, f.height) for f in frames} == {(320, 240)}
    assert seconds >= video["duration"] - 0.3  # lost at most the open cluster
    assert indices[0] == 0 and indices == sorted(indices)
