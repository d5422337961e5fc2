"""Helpers shared by the media tests: joining peers, polling for a condition, media tasks,
and bare aiortc peer connections wired in-process."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpReceiver, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from media import HeadlessPeer, SyntheticMedia, read_frame_index
from media.recorder import TrackRecorder
from media.taskutil import cancel_and_wait
from media.worker import MediaWorker

from .conftest import Node


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0,
                     interval: float = 0.02) -> None:
    """Poll `check` (a function or a coroutine function) until it holds; TimeoutError
    after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            held = check()
            if held if isinstance(held, bool) else await held:
                return
            await asyncio.sleep(interval)


def media_tasks() -> list[asyncio.Task[Any]]:
    """The live tasks of the media package (all named "media-...")."""
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("media-") and not t.done()]


JoinPeer = Callable[..., Awaitable[HeadlessPeer]]


@asynccontextmanager
async def peer_joiner(node: Node, *, media: SyntheticMedia, room: str) -> AsyncIterator[JoinPeer]:
    """Join HeadlessPeers (`await join(user, room=..., grants={...}, **options)`: token
    grants, HeadlessPeer options); all closed on exit."""
    peers: list[HeadlessPeer] = []

    async def join(user: str, room: str = room, *, grants: dict[str, bool] | None = None,
                   **options: Any) -> HeadlessPeer:
        peer = HeadlessPeer(await node.client(user, **(grants or {})), media=media, **options)
        peers.append(peer)
        await peer.join(room)
        return peer

    try:
        yield join
    finally:
        for peer in peers:
            await peer.close()


PcFactory = Callable[[], RTCPeerConnection]


@asynccontextmanager
async def peer_connections() -> AsyncIterator[PcFactory]:
    """Make RTCPeerConnections (`make()`); all closed on exit."""
    pcs: list[RTCPeerConnection] = []

    def make() -> RTCPeerConnection:
        pc = RTCPeerConnection()
        pcs.append(pc)
        return pc

    try:
        yield make
    finally:
        for pc in pcs:
            await pc.close()


def prefer_vp8(pc: RTCPeerConnection) -> None:
    caps = RTCRtpSender.getCapabilities("video")
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "video":
            transceiver.setCodecPreferences(
                [c for c in caps.codecs if c.mimeType == "video/VP8"])


async def connect(offerer: RTCPeerConnection, answerer: RTCPeerConnection) -> None:
    """Offer/answer in-process (aiortc gathers all candidates before returning a description)."""
    prefer_vp8(offerer)
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)


def receiver_of(pc: RTCPeerConnection, track: MediaStreamTrack) -> RTCRtpReceiver:
    return next(t.receiver for t in pc.getTransceivers() if t.receiver.track is track)


class Reader:
    """Reads a track until it ends, keeping everything it returned."""

    def __init__(self, track: MediaStreamTrack) -> None:
        self.items: list[Any] = []
        self.task = asyncio.create_task(self._run(track), name="media-test-reader")

    async def _run(self, track: MediaStreamTrack) -> None:
        while True:
            try:
                self.items.append(await track.recv())
            except MediaStreamError:
                return

    async def close(self) -> None:
        await cancel_and_wait(self.task)


@asynccontextmanager
async def media_worker(node: Node, name: str = "worker",
                       **options: Any) -> AsyncIterator[MediaWorker]:
    """An in-process MediaWorker for `node` (recording into its recordings_dir), closed on exit."""
    options.setdefault("recordings_dir", node.config.recordings_dir)
    worker = MediaWorker(node.url, node.token(name, service=True), **options)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.close()


async def record_then_kill(directory: Path, *args: str) -> dict[str, Any]:
    """Run tests.recording_child (a live call recorded to `directory`), SIGKILL it once
    both files hold 3 s, and return its last progress report."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.recording_child", str(directory), "--limit", "60", *args,
        cwd=Path(__file__).parent.parent, stdout=asyncio.subprocess.PIPE)
    assert child.stdout is not None
    written: dict[str, Any] = {}
    try:
        async with asyncio.timeout(30):
            while not (len(written) == 2 and all(p["duration"] >= 3 for p in written.values())):
                line = await child.stdout.readline()
                assert line, f"the recording process exited early: {child.returncode}"
                written = json.loads(line)
        child.send_signal(signal.SIGKILL)
        await child.wait()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    assert child.returncode == -signal.SIGKILL
    return written


def check_size_change(frames: list[VideoFrame], recorder: TrackRecorder, resized_at: int) -> None:
    """A recording of a SyntheticVideoTrack resized from 320x240 to 160x120 at frame
    `resized_at`: every frame decoded, in order, each at its size, the switch in place."""
    sizes = [(f.width, f.height) for f in frames]
    indices = [read_frame_index(f) for f in frames]
    assert recorder.sizes == [(320, 240), (160, 120)] and recorder.keyframes >= 2
    switch = sizes.index((160, 120))
    assert sizes == [(320, 240)] * switch + [(160, 120)] * (len(sizes) - switch)
    assert switch >= 15 and len(sizes) - switch >= 14
    assert len(frames) >= 0.95 * recorder.packets
    assert indices == sorted(indices) and abs(indices[switch] - resized_at) <= 1
