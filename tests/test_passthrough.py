"""Encoded passthrough: publisher -> worker (no decode) -> subscriber, over real peer connections."""

from __future__ import annotations

import asyncio
import fractions
import itertools
import time
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiortc.codecs
import aiortc.rtcrtpreceiver
import pytest
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError
from aiortc.rtcrtpreceiver import TimestampMapper
from aiortc.rtp import RtcpSenderInfo, RtcpSrPacket
from av import VideoFrame
from av.packet import Packet

from media.passthrough import (
    PassthroughReceiver,
    PassthroughTrack,
    PassthroughUnsupported,
    SenderClock,
    check_aiortc_version,
    enable_passthrough,
    is_vp8_keyframe,
    ntp_to_unix,
    relay_keyframe_requests,
    rtp_timestamp_delta,
    vp8_frame_size,
)
from media.tracks import SyntheticVideoTrack, read_frame_index

from .media_fixtures import PcFactory, Reader, connect, eventually, peer_connections, receiver_of


@pytest.fixture
async def make_pc() -> AsyncIterator[PcFactory]:
    async with peer_connections() as make:
        yield make


def packet(data: bytes, keyframe: bool) -> Packet[Any]:
    p = Packet(data)
    p.is_keyframe = keyframe
    return p


# --- without network ---------------------------------------------------------------------

def test_version_guard() -> None:
    check_aiortc_version()  # the installed one is tested
    check_aiortc_version("1.16.3")
    for bad in ("1.17.0", "1.8.0", "2.0.0", "garbage"):
        with pytest.raises(PassthroughUnsupported):
            check_aiortc_version(bad)


def test_vp8_keyframe_header() -> None:
    key = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00])
    assert is_vp8_keyframe(key) and vp8_frame_size(key) == (320, 240)
    assert not is_vp8_keyframe(b"\x31\x02\x00") and vp8_frame_size(b"\x31\x02\x00") is None


def test_rtp_timestamps_and_sender_clocks() -> None:
    assert rtp_timestamp_delta(10, 2**32 - 5) == 15  # across the wrap
    assert rtp_timestamp_delta(2**32 - 5, 10) == -15
    assert rtp_timestamp_delta(2**33 + 7, 2**32 + 4) == 3  # already unwrapped values too
    assert ntp_to_unix((2_208_988_800 + 1_700_000_000) << 32 | 1 << 31) == 1_700_000_000.5
    clock = SenderClock(ntp_time=100.0, rtp_timestamp=5, clock_rate=90_000, pts=90_000)
    assert clock.time_at(0) == 99.0 and clock.time_at(135_000) == 100.5
    with pytest.raises(ValueError):
        SenderClock(ntp_time=0.0, rtp_timestamp=0, clock_rate=0, pts=0)
    with pytest.raises(ValueError):
        SenderClock(ntp_time=0.0, rtp_timestamp=2**32, clock_rate=1, pts=0)
    track = PassthroughTrack("audio", sender_clock=lambda: clock)
    assert track.sender_clock is clock and PassthroughTrack("audio").sender_clock is None


def test_sender_reports_become_a_clock_on_the_packet_timeline() -> None:
    # What the hooks see: frames with timestamps aiortc's mapper rebased, SRs with raw ones.
    mapper = TimestampMapper()
    receiver: Any = SimpleNamespace(_RTCRtpReceiver__kind="audio",
                                    _RTCRtpReceiver__timestamp_mapper=mapper)
    handle = PassthroughReceiver(receiver, keyframe_interval=1.0)
    opus = SimpleNamespace(mimeType="audio/opus", clockRate=48_000)

    def frame(rtp: int) -> None:
        handle._on_frame(opus, SimpleNamespace(data=b"\xfc", timestamp=mapper.map(rtp)))

    def report(unix: float, rtp: int) -> None:
        ntp = round((unix + 2_208_988_800) * 2**32) if unix else 0
        handle._on_rtcp(RtcpSrPacket(ssrc=1, sender_info=RtcpSenderInfo(
            ntp_timestamp=ntp, rtp_timestamp=rtp, packet_count=1, octet_count=1)))

    def clock() -> SenderClock:
        assert handle.sender_clock is not None
        return handle.sender_clock

    first = 2**32 - 960  # the stream wraps after one 20 ms frame
    report(0, 0)  # aiortc's SR before it has sent anything: ignored
    report(999.98, first - 960)  # before any frame: waits for one to place it
    assert handle.sender_clock is None and handle.sender_reports == 1
    frame(first)
    assert clock().pts == -960 and clock().time_at(0) == pytest.approx(1000.0)
    frame(0)  # wrapped: pts 960
    report(1000.04, 960)
    assert (clock().rtp_timestamp, clock().pts, handle.sender_reports) == (960, 1920, 2)
    assert clock().time_at(0) == pytest.approx(1000.0)


async def test_new_video_subscriber_waits_for_keyframe_and_asks_for_one() -> None:
    requests: list[None] = []
    track = PassthroughTrack("video", request_keyframe=lambda: requests.append(None))
    track.push(packet(b"d1", False))
    track.push(packet(b"d2", False))
    assert track.dropped == 2 and len(requests) == 2 and track.waiting_for_keyframe
    track.push(packet(b"k", True))
    track.push(packet(b"d3", False))
    assert [bytes(await track.recv()) for _ in range(2)] == [b"k", b"d3"]
    track.end()
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_overflow_drops_oldest_up_to_the_next_keyframe() -> None:
    requests: list[None] = []
    track = PassthroughTrack("video", request_keyframe=lambda: requests.append(None),
                             max_queue=3)
    for data, key in ((b"k1", True), (b"d1", False), (b"k2", True), (b"d2", False)):
        track.push(packet(data, key))
    # k1 dropped for room; d1 depended on it, so the queue restarts at k2.
    assert [bytes(p) for p in track._packets] == [b"k2", b"d2"] and track.dropped == 2
    for data in (b"d3", b"d4"):
        track.push(packet(data, False))
    # No keyframe left after the overflow: wait for one, and ask for it.
    assert not track._packets and track.waiting_for_keyframe and requests

    audio = PassthroughTrack("audio", max_queue=2)
    for data in (b"a1", b"a2", b"a3"):
        audio.push(packet(data, True))
    assert [bytes(p) for p in audio._packets] == [b"a2", b"a3"] and audio.dropped == 1
    track.stop()
    audio.stop()


# --- real peer connections -----------------------------------------------------------------

@pytest.mark.media
async def test_worker_forwards_vp8_without_decoding(make_pc: PcFactory) -> None:
    started, cpu_started = time.monotonic(), time.process_time()
    source = SyntheticVideoTrack(320, 240, fps=15)
    publisher, worker_in = make_pc(), make_pc()
    publisher.addTrack(source)

    hooked: list[PassthroughReceiver] = []
    plain_tracks: list[MediaStreamTrack] = []

    @worker_in.on("track")
    def on_worker_track(track: MediaStreamTrack) -> None:
        hooked.append(enable_passthrough(receiver_of(worker_in, track)))
        plain_tracks.append(track)

    await connect(publisher, worker_in)
    (handle,) = hooked
    probe = Reader(handle.subscribe())  # what a recorder would see
    remote_track = Reader(plain_tracks[0])  # the receiver's own track: must stay silent
    await eventually(lambda: len(probe.items) >= 15, timeout=15)
    assert handle.keyframes == 1  # libvpx in aiortc: keyframe at start, then only on request

    # A subscriber joins a second later: held until a keyframe it asked the publisher for.
    worker_out, subscriber = make_pc(), make_pc()
    forwarded = handle.subscribe()
    relay_keyframe_requests(worker_out.addTrack(forwarded), forwarded)
    decoded: list[Reader] = []
    subscriber.on("track", lambda track: decoded.append(Reader(track)))
    await connect(worker_out, subscriber)
    await eventually(lambda: bool(decoded) and len(decoded[0].items) >= 20, timeout=20)
    assert handle.plis_sent >= 1 and handle.keyframes >= 2

    # The subscriber's own PLI (from its far end) is relayed to the publisher.
    await asyncio.sleep(handle.keyframe_interval)
    keyframes, plis = handle.keyframes, handle.plis_sent
    sub_receiver = subscriber.getReceivers()[0]
    ssrc = sub_receiver.getSynchronizationSources()[0].source
    await sub_receiver._send_rtcp_pli(ssrc)
    await eventually(lambda: handle.keyframes > keyframes, timeout=5)
    assert handle.plis_sent == plis + 1

    packets = probe.items
    assert all(isinstance(p, Packet) for p in packets)
    assert {p.time_base for p in packets} == {fractions.Fraction(1, 90_000)}
    assert packets[0].is_keyframe and vp8_frame_size(bytes(packets[0])) == (320, 240)
    assert all(b.pts > a.pts for a, b in itertools.pairwise(packets))
    assert not remote_track.items  # the hooked receiver decoded nothing

    # Scoped: aiortc's globals untouched, and the subscriber's ordinary receiver decodes.
    assert vars(aiortc.rtcrtpreceiver)["get_decoder"] is aiortc.codecs.get_decoder
    frames = decoded[0].items
    assert all(isinstance(f, VideoFrame) for f in frames)
    assert {(f.width, f.height) for f in frames} == {(320, 240)}
    indices = [read_frame_index(f) for f in frames]
    assert indices[0] >= 15 and indices == sorted(indices)  # started late, at a fresh keyframe
    print(f"\nforwarded {len(frames)} frames, worker got {handle.packets} packets, "
          f"{handle.keyframes} keyframes, {handle.plis_sent} PLIs; "
          f"{time.monotonic() - started:.1f} s wall, {time.process_time() - cpu_started:.2f} s CPU")

    for reader in (probe, remote_track, *decoded):
        await reader.close()
    source.stop()


@pytest.mark.media
async def test_hook_refuses_started_or_hooked_receivers(make_pc: PcFactory) -> None:
    publisher, worker = make_pc(), make_pc()
    publisher.addTrack(SyntheticVideoTrack(64, 48, fps=5))
    await publisher.setLocalDescription(await publisher.createOffer())
    await worker.setRemoteDescription(publisher.localDescription)
    receiver = worker.getReceivers()[0]
    enable_passthrough(receiver)
    with pytest.raises(PassthroughUnsupported, match="already enabled"):
        enable_passthrough(receiver)
    other = worker.addTransceiver("video").receiver
    other._RTCRtpReceiver__started = True  # type: ignore[attr-defined]  # as receive() does
    try:
        with pytest.raises(PassthroughUnsupported, match="has started"):
            enable_passthrough(other)
    finally:
        other._RTCRtpReceiver__started = False  # type: ignore[attr-defined]  # or close() hangs
