"""Media benchmark: encoded passthrough (ours) against stock aiortc, side by side.

    .venv/bin/python bench/media.py [--quick]

One invocation runs both paths on the same synthetic 640x480@30 VP8 + Opus streams:

- recording: N publishers each send audio+video to a worker that records them
  (ours: `enable_passthrough` + one `TrackRecorder` per track; stock: aiortc's
  `MediaRecorder` writing one WebM per publisher from the decoded tracks);
- forwarding: 1 publisher sends to the worker, which forwards its audio+video to N
  subscribers on send-only transceivers (ours: `PassthroughReceiver.subscribe()`
  tracks; stock: `MediaRelay.subscribe()` tracks, which aiortc re-encodes per
  subscriber).

The worker is its own process pinned to CPU 0 and measured from /proc; the load
generator (publishers sending pre-encoded packets, subscribers counting received
frames without decoding, one "probe" subscriber decoding to read the frame index for
latency) is another process pinned to CPU 1. The orchestrator (this process, also on
CPU 1) relays SDP between them over JSON lines on stdin/stdout and checks the
recorded files with PyAV. Media goes over the machine's own interfaces, no ICE
servers. Not part of CI. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import json
import logging
import math
import os
import pickle
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
# This file is called media.py: keep the project's `media` package ahead of it.
sys.path[:] = [str(ROOT), str(BENCH), *(p for p in sys.path
                                        if p and Path(p).resolve() not in (BENCH, ROOT))]

from relay import Procs, cpu_seconds, system_cpu  # noqa: E402  (bench/relay.py)

WORKER_CPU, LOADGEN_CPU = 0, 1
WIDTH, HEIGHT, FPS = 640, 480, 30
LOOP_FRAMES = 300  # 10 s of pre-encoded video, looped
GOP = 60  # a keyframe every 2 s in the loop (and on a PLI, see LoopTrack)
VIDEO_BITRATE = 1_000_000
AUDIO_PTIME = 0.020
MIN_FPS = 29.0  # frame rate every forwarded stream must get and every recorder must keep up with
MIN_FRAMES = 0.95  # a recording is complete with this share of the sent frames ...
MAX_DURATION_ERROR = 0.5  # ... and a duration this close (s) to what was sent
DEFAULT_RECORD_STEPS = (1, 2, 4, 8, 16, 32, 64, 128, 192)
DEFAULT_FORWARD_STEPS = (2, 4, 8, 16, 32, 64, 128, 192, 256)
PATHS = ("passthrough", "stock")


# ============================================================== shared (children)
def raise_fd_limit() -> None:
    """A few UDP sockets per peer connection: hundreds of them need more than 1024 fds."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    except (ImportError, ValueError, OSError):
        pass


def rtc_configuration() -> Any:
    from aiortc import RTCBundlePolicy, RTCConfiguration

    # No ICE servers: aiortc would otherwise use a public STUN server by default.
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def prefer_codec(transceiver: Any) -> None:
    """VP8 (+RTX) for video, Opus for audio: what both paths forward or record."""
    from aiortc import RTCRtpSender

    want = {"video": ("video/vp8", "video/rtx"), "audio": ("audio/opus",)}[transceiver.kind]
    codecs = [c for c in RTCRtpSender.getCapabilities(transceiver.kind).codecs
              if c.mimeType.lower() in want]
    transceiver.setCodecPreferences(codecs)


def receiver_of(pc: Any, track: Any) -> Any:
    return next(t.receiver for t in pc.getTransceivers() if t.receiver.track is track)


def encode_media(path: Path, noise: float = 0.0) -> dict[str, Any]:
    """Encode LOOP_FRAMES of SyntheticVideoTrack pictures (VP8, libvpx) and as much of a
    440 Hz tone (Opus, libopus) once; the publishers loop over these packets.

    The plain picture (a still gradient, a moving bar, the index cells) is very easy to
    encode: about 200 kbit/s whatever the target. `noise` > 0 adds Gaussian luma noise of
    that standard deviation below the index row, different in every frame, as a camera's
    sensor does; the encoder then uses its whole VIDEO_BITRATE."""
    import av
    import numpy as np
    from av import AudioFrame, VideoFrame

    from media.passthrough import is_vp8_keyframe
    from media.tracks import SyntheticVideoTrack

    src = SyntheticVideoTrack(WIDTH, HEIGHT, FPS)
    enc: Any = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    enc.time_base = fractions.Fraction(1, FPS)
    enc.framerate = fractions.Fraction(FPS)
    enc.bit_rate = VIDEO_BITRATE
    enc.gop_size = GOP
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0",
                   "minrate": str(VIDEO_BITRATE), "maxrate": str(VIDEO_BITRATE),
                   "bufsize": str(VIDEO_BITRATE), "drop-threshold": "0"}
    video: list[tuple[bytes, bool]] = []
    rng = np.random.default_rng(1)
    for i in range(LOOP_FRAMES):
        picture = src.picture(i)
        if noise > 0:
            luma = picture[HEIGHT // 8:HEIGHT].astype(np.float32)
            luma += rng.normal(0, noise, luma.shape).astype(np.float32)
            picture[HEIGHT // 8:HEIGHT] = np.clip(luma, 16, 235).astype(np.uint8)
        frame = VideoFrame.from_ndarray(picture, format="yuv420p")
        frame.pts = i
        frame.time_base = enc.time_base
        if i % GOP == 0:
            frame.pict_type = av.video.frame.PictureType.I
        video += [(bytes(p), is_vp8_keyframe(bytes(p))) for p in enc.encode(frame)]
    video += [(bytes(p), is_vp8_keyframe(bytes(p))) for p in enc.encode(None)]
    keys = [i for i, (_, k) in enumerate(video) if k]
    if len(video) != LOOP_FRAMES or keys != list(range(0, LOOP_FRAMES, GOP)):
        raise RuntimeError(f"pre-encoding: {len(video)} frames, keyframes at {keys}")

    rate = 48_000
    n = round(rate * AUDIO_PTIME)
    aenc: Any = av.CodecContext.create("libopus", "w")
    aenc.sample_rate, aenc.layout, aenc.format = rate, "mono", "s16"
    aenc.bit_rate = 32_000
    audio: list[bytes] = []
    for i in range(round(LOOP_FRAMES / FPS / AUDIO_PTIME)):
        t = (i * n + np.arange(n)) / rate
        pcm = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16).reshape(1, n)
        aframe = AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        aframe.sample_rate, aframe.pts = rate, i * n
        aframe.time_base = fractions.Fraction(1, rate)
        audio += [bytes(p) for p in aenc.encode(aframe)]
    audio += [bytes(p) for p in aenc.encode(None)]
    media = {"video": video, "audio": audio}
    path.write_bytes(pickle.dumps(media))
    kbps = sum(len(d) for d, _ in video) * 8 / (LOOP_FRAMES / FPS) / 1000
    return {"video_frames": len(video), "audio_packets": len(audio), "video_kbps": kbps}


def _loop_track_class() -> Any:
    from aiortc import MediaStreamTrack
    from aiortc.mediastreams import MediaStreamError
    from av.packet import Packet

    class _LoopTrack(MediaStreamTrack):
        """Pre-encoded packets, looped and paced in real time: aiortc's sender packetizes
        `av.Packet`s without encoding. A keyframe request (PLI/FIR reaching the sender)
        makes the next video packet the loop's next keyframe, as an encoder would."""

        def __init__(self, kind: str, packets: list[tuple[bytes, bool]]) -> None:
            super().__init__()
            self.kind = kind
            self._packets = packets
            self._period = 1 / FPS if kind == "video" else AUDIO_PTIME
            self._rate = 90_000 if kind == "video" else 48_000
            self._ticks = round(self._period * self._rate)
            self._time_base = fractions.Fraction(1, self._rate)
            self._start: float | None = None
            self._pos = 0
            self._want_key = False
            self.sent = 0
            self.keyframes_requested = 0
            self.send_times: dict[int, float] = {}  # loop position -> monotonic send time

        def request_keyframe(self) -> None:
            self._want_key = True
            self.keyframes_requested += 1

        async def recv(self) -> Any:
            if self.readyState != "live":
                raise MediaStreamError
            loop = asyncio.get_running_loop()
            if self._start is None:
                self._start = loop.time()
            delay = self._start + self.sent * self._period - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if self.readyState != "live":
                raise MediaStreamError
            if self._want_key and not self._packets[self._pos][1]:
                self._pos = (self._pos // GOP + 1) * GOP % len(self._packets)
            self._want_key = False
            data, key = self._packets[self._pos]
            packet = Packet(data)
            packet.pts = packet.dts = self.sent * self._ticks
            packet.time_base = self._time_base
            packet.is_keyframe = key
            if self.kind == "video":
                self.send_times[self._pos] = time.monotonic()
            self._pos = (self._pos + 1) % len(self._packets)
            self.sent += 1
            return packet

    return _LoopTrack


async def _count(track: Any, counter: list[int], index: int) -> None:
    from aiortc.mediastreams import MediaStreamError

    while True:
        try:
            await track.recv()
        except MediaStreamError:
            return
        counter[index] += 1


# ============================================================== the worker process
class Worker:
    """Receives publishers and records or forwards them, the passthrough or the stock way."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pcs: list[Any] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.recorders: list[Any] = []  # ours: TrackRecorder; stock: MediaRecorder
        self.sources: list[Any] = []  # tracks whose end means "drained"
        self.frames: list[int] = []  # video frames recorded, per stream
        self.subscribers: list[Any] = []

    def _pc(self) -> Any:
        from aiortc import RTCPeerConnection

        pc = RTCPeerConnection(rtc_configuration())
        self.pcs.append(pc)
        return pc

    async def cmd_record(self, offers: list[str], dir: str) -> dict[str, Any]:
        from aiortc import RTCSessionDescription

        out = Path(dir)
        answers = []
        self.frames = [0] * len(offers)
        for i, sdp in enumerate(offers):
            pc = self._pc()
            if self.path == "passthrough":
                self._record_ours(pc, i, out)
            else:
                recorder = self._record_stock(pc, i, out)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            if self.path == "stock":
                await recorder.start()
            answers.append(pc.localDescription.sdp)
        return {"answers": answers}

    def _record_ours(self, pc: Any, i: int, out: Path) -> None:
        from media.passthrough import enable_passthrough
        from media.recorder import TrackRecorder

        def on_track(track: Any) -> None:
            handle = enable_passthrough(receiver_of(pc, track))
            rec = TrackRecorder(out / f"s{i:03d}-{track.kind}.webm", handle.subscribe())
            rec.stream_index = i  # type: ignore[attr-defined]
            rec.start()
            self.recorders.append(rec)

        pc.on("track", on_track)

    def _record_stock(self, pc: Any, i: int, out: Path) -> Any:
        from aiortc import MediaStreamTrack
        from aiortc.contrib.media import MediaRecorder

        recorder = MediaRecorder(str(out / f"s{i:03d}.webm"))
        self.recorders.append(recorder)
        frames = self.frames

        class Counted(MediaStreamTrack):
            """Counts the frames MediaRecorder pulls (each is then encoded and muxed)."""

            kind = "video"

            def __init__(self, source: Any) -> None:
                super().__init__()
                self.source = source

            async def recv(self) -> Any:
                frame = await self.source.recv()
                frames[i] += 1
                return frame

        def on_track(track: Any) -> None:
            self.sources.append(track)
            recorder.addTrack(Counted(track) if track.kind == "video" else track)

        pc.on("track", on_track)
        return recorder

    async def cmd_record_wait(self, limit: float) -> dict[str, Any]:
        """Until every stream has recorded a video frame (at most `limit` seconds)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            frames = self._frames()
            if frames and min(frames) > 0:
                return {"ok": True, "frames": frames}
            await asyncio.sleep(0.1)
        return {"ok": False, "frames": self._frames(),
                "states": [pc.connectionState for pc in self.pcs]}

    def _frames(self) -> list[int]:
        if self.path == "passthrough":
            for rec in self.recorders:
                if rec.kind == "video":
                    self.frames[rec.stream_index] = rec.packets
        return list(self.frames)

    async def cmd_snap(self) -> dict[str, Any]:
        return {"frames": self._frames()}

    async def cmd_finish(self, drain: float) -> dict[str, Any]:
        """The publishers have stopped: let recorders take what has arrived (up to `drain`
        seconds), then finalize the files."""
        deadline = time.monotonic() + drain
        if self.path == "passthrough":
            def drained() -> bool:
                return all(r._task is None or r._task.done() for r in self.recorders)
        else:
            def drained() -> bool:
                return all(t.readyState == "ended" for t in self.sources)
        # Polled: the end of a track or a recorder has no awaitable to share.
        while not drained() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        was_drained = drained()
        frames = self._frames()
        for rec in self.recorders:
            if self.path == "passthrough":
                await rec.close()
            else:
                await rec.stop()
        self.recorders = []
        return {"drained": was_drained, "frames": frames}

    async def cmd_forward(self, offer: str, n: int) -> dict[str, Any]:
        from aiortc import RTCSessionDescription
        from aiortc.contrib.media import MediaRelay

        from media.passthrough import enable_passthrough, relay_keyframe_requests

        pc_in = self._pc()
        sources: dict[str, Any] = {}

        def on_track(track: Any) -> None:
            if self.path == "passthrough":
                sources[track.kind] = enable_passthrough(receiver_of(pc_in, track))
            else:
                sources[track.kind] = track

        pc_in.on("track", on_track)
        await pc_in.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc_in.setLocalDescription(await pc_in.createAnswer())
        relay = None
        if self.path == "stock":
            relay = MediaRelay()
            # Something must read each decoded source from the start (aiortc queues it
            # without bound otherwise): an unbuffered proxy that discards.
            for kind, track in sources.items():
                drain = relay.subscribe(track, buffered=False)
                self.tasks.append(asyncio.create_task(_count(drain, [0], 0), name=f"drain-{kind}"))
        offers = []
        for _ in range(n):
            pc = self._pc()
            self.subscribers.append(pc)
            for kind in ("audio", "video"):
                if self.path == "passthrough":
                    track = sources[kind].subscribe()
                else:
                    assert relay is not None
                    track = relay.subscribe(sources[kind])
                transceiver = pc.addTransceiver(track, direction="sendonly")
                prefer_codec(transceiver)
                if self.path == "passthrough":
                    relay_keyframe_requests(transceiver.sender, track)
            await pc.setLocalDescription(await pc.createOffer())
            offers.append(pc.localDescription.sdp)
        return {"answer": pc_in.localDescription.sdp, "offers": offers}

    async def cmd_subscriber_answers(self, answers: list[str]) -> dict[str, Any]:
        from aiortc import RTCSessionDescription

        for pc, sdp in zip(self.subscribers, answers, strict=True):
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        return {}

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for rec in self.recorders:
            try:
                await (rec.close() if self.path == "passthrough" else rec.stop())
            except Exception:
                logging.exception("closing a recorder")
        await asyncio.gather(*(pc.close() for pc in self.pcs), return_exceptions=True)


# ============================================================== the load generator
class Loadgen:
    """Publishers of pre-encoded media, and subscribers that count what they receive."""

    def __init__(self, media_file: str) -> None:
        self.media = pickle.loads(Path(media_file).read_bytes())
        self.media["audio"] = [(d, True) for d in self.media["audio"]]
        self.LoopTrack = _loop_track_class()
        self.pubs: list[tuple[Any, Any, Any]] = []  # (pc, audio track, video track)
        self.subs: list[Any] = []
        self.recv_video: list[int] = []
        self.recv_audio: list[int] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.latencies: list[float] = []
        self.misread = 0
        self.pcs: list[Any] = []

    def _pc(self) -> Any:
        from aiortc import RTCPeerConnection

        pc = RTCPeerConnection(rtc_configuration())
        self.pcs.append(pc)
        return pc

    def _publisher(self) -> tuple[Any, Any, Any]:
        pc = self._pc()
        audio = self.LoopTrack("audio", self.media["audio"])
        video = self.LoopTrack("video", self.media["video"])
        for track in (audio, video):
            transceiver = pc.addTransceiver(track, direction="sendonly")
            prefer_codec(transceiver)
            # aiortc's sender answers PLI/FIR by calling this; for packets it does nothing.
            transceiver.sender._send_keyframe = track.request_keyframe
        return pc, audio, video

    async def cmd_publishers(self, n: int) -> dict[str, Any]:
        offers = []
        for _ in range(n):
            pub = self._publisher()
            self.pubs.append(pub)
            await pub[0].setLocalDescription(await pub[0].createOffer())
            offers.append(pub[0].localDescription.sdp)
        return {"offers": offers}

    async def cmd_publisher_answers(self, answers: list[str]) -> dict[str, Any]:
        from aiortc import RTCSessionDescription

        for (pc, _, _), sdp in zip(self.pubs, answers, strict=True):
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        return {}

    def _subscriber(self, pc: Any, index: int, probe_of: Any | None) -> None:
        """Count each received frame without decoding (media.passthrough on the receiver);
        with `probe_of` (a publisher's video LoopTrack) decode the video instead and time
        each frame against when that publisher sent it."""
        from media.passthrough import enable_passthrough

        def on_track(track: Any) -> None:
            counter = self.recv_video if track.kind == "video" else self.recv_audio
            if track.kind == "video" and probe_of is not None:
                self.tasks.append(asyncio.create_task(self._probe(track, index, probe_of)))
                return
            handle = enable_passthrough(receiver_of(pc, track))
            self.tasks.append(asyncio.create_task(_count(handle.subscribe(), counter, index)))

        pc.on("track", on_track)

    async def _probe(self, track: Any, index: int, source: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        from media.tracks import read_frame_index

        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            self.recv_video[index] += 1
            sent = source.send_times.get(read_frame_index(frame))
            if sent is not None and 0 <= now - sent < 2.0:
                self.latencies.append(now - sent)
            else:
                self.misread += 1

    async def cmd_subscribe(self, offers: list[str], probe: bool) -> dict[str, Any]:
        from aiortc import RTCSessionDescription

        answers = []
        for sdp in offers:
            index = len(self.subs)
            pc = self._pc()
            self.subs.append(pc)
            self.recv_video.append(0)
            self.recv_audio.append(0)
            self._subscriber(pc, index, self.pubs[0][2] if probe and index == 0 else None)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            answers.append(pc.localDescription.sdp)
        return {"answers": answers}

    async def cmd_wait_flow(self, limit: float) -> dict[str, Any]:
        """Until every publisher has sent and every subscriber received audio and video
        (at most `limit` seconds)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if all(v.sent > 0 for _, _, v in self.pubs) and all(self.recv_video) \
                    and all(self.recv_audio):
                return {"ok": True}
            await asyncio.sleep(0.1)
        return {"ok": False, "sent": [v.sent for _, _, v in self.pubs],
                "recv_video": self.recv_video,
                "states": [pc.connectionState for pc in self.pcs]}

    async def cmd_snap(self) -> dict[str, Any]:
        lat, self.latencies = self.latencies, []
        misread, self.misread = self.misread, 0
        return {"sent": [[v.sent, a.sent] for _, a, v in self.pubs],
                "recv": [[v, a] for v, a in zip(self.recv_video, self.recv_audio, strict=True)],
                "lat": lat, "misread": misread}

    async def cmd_stop_publishers(self) -> dict[str, Any]:
        sent = [[v.sent, a.sent] for _, a, v in self.pubs]
        for _, a, v in self.pubs:
            a.stop()
            v.stop()
        await asyncio.gather(*(pc.close() for pc, _, _ in self.pubs), return_exceptions=True)
        return {"sent": sent}

    async def cmd_direct(self, warmup: float, seconds: float) -> dict[str, Any]:
        """Latency of the same media straight from a publisher to a probe subscriber in this
        process, without a worker: the baseline that "added latency" is measured against."""
        from aiortc import RTCSessionDescription

        pub = self._publisher()
        self.pubs.insert(0, pub)
        sub = self._pc()
        self.subs.append(sub)
        self.recv_video.append(0)
        self.recv_audio.append(0)
        self._subscriber(sub, len(self.subs) - 1, pub[2])
        await pub[0].setLocalDescription(await pub[0].createOffer())
        await sub.setRemoteDescription(RTCSessionDescription(
            sdp=pub[0].localDescription.sdp, type="offer"))
        await sub.setLocalDescription(await sub.createAnswer())
        await pub[0].setRemoteDescription(RTCSessionDescription(
            sdp=sub.localDescription.sdp, type="answer"))
        flow = await self.cmd_wait_flow(limit=20)
        if not flow["ok"]:
            return {"error": f"direct call did not start: {flow}"}
        await asyncio.sleep(warmup)
        self.latencies, self.misread = [], 0
        await asyncio.sleep(seconds)
        return await self.cmd_snap()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*(pc.close() for pc in self.pcs), return_exceptions=True)


# ============================================================== child main loop
def child_main(role: str, args: argparse.Namespace) -> int:
    # Pin before anything starts threads: later threads (aiortc's decoder threads, the
    # encoder executor, libvpx's) inherit the affinity.
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {args.cpu})
    raise_fd_limit()
    # Replies go to the original stdout; anything else printing to fd 1 lands in the log.
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    handler: Any = Worker(args.path) if role == "worker" else Loadgen(args.media)

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()

        def read() -> None:
            for line in sys.stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, None)

        threading.Thread(target=read, daemon=True).start()
        deadline = loop.time() + args.max_seconds
        closed: list[bool] = []
        try:
            while True:
                try:
                    line = await asyncio.wait_for(lines.get(), max(0.1, deadline - loop.time()))
                except TimeoutError:
                    print(f"{role}: watchdog: {args.max_seconds}s passed, exiting", file=sys.stderr)
                    return
                if line is None:
                    return  # the orchestrator has gone
                msg = json.loads(line)
                if msg["cmd"] == "quit":
                    closed.append(True)
                    await asyncio.wait_for(handler.close(), 15)
                    replies.write(json.dumps({"id": msg["id"], "bye": True}) + "\n")
                    return
                try:
                    result = await getattr(handler, "cmd_" + msg["cmd"])(**msg.get("args", {}))
                except Exception as exc:
                    traceback.print_exc()
                    result = {"error": f"{type(exc).__name__}: {exc}"}
                replies.write(json.dumps({"id": msg["id"], **result}) + "\n")
        except BaseException:
            traceback.print_exc()
        finally:
            if not closed:
                try:
                    await asyncio.wait_for(handler.close(), 15)
                except BaseException:
                    traceback.print_exc()

    try:
        asyncio.run(serve())
    finally:
        sys.stderr.flush()
        replies.flush()
        os._exit(0)  # aiortc's non-daemon threads must not keep a finished child alive


# ============================================================== orchestrator
class Child:
    """A worker or loadgen process speaking JSON lines; `call()` waits for its reply."""

    def __init__(self, procs: Procs, role: str, cpu: int, log: Path, max_seconds: float,
                 extra: list[str]) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "_child", role,
                "--cpu", str(cpu), "--max-seconds", str(round(max_seconds)), *extra]
        self.role = role
        self.log = log
        with log.open("a") as logf:
            self.proc = procs.spawn(argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=logf, text=True, env=dict(os.environ,
                                                                     PYTHONUNBUFFERED="1"))
        self.pid = self.proc.pid
        self.procs = procs
        self._replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._next = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self._replies.put(json.loads(line))
            except ValueError:
                pass
        self._replies.put(None)

    def call(self, cmd: str, timeout: float = 60, **args: Any) -> dict[str, Any]:
        self._next += 1
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"id": self._next, "cmd": cmd, "args": args}) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise RuntimeError(f"{self.role} is gone ({exc}):\n{tail(self.log)}") from exc
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = self._replies.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise RuntimeError(f"{self.role}: no reply to {cmd} in {timeout}s") from None
            if reply is None:
                raise RuntimeError(f"{self.role} exited during {cmd}:\n{tail(self.log)}")
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{self.role} {cmd}: {reply['error']}")
                return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("quit", timeout=20)
            except RuntimeError:
                pass
        self.procs.stop(self.proc)


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def per_cpu() -> dict[int, list[int]]:
    """The `cpuN` lines of /proc/stat, in clock ticks."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                out[int(name[3:])] = [int(x) for x in fields]
    return out


def _busy(a: list[int], b: list[int]) -> float:
    """Share of the interval a CPU was busy or stolen (not idle, not iowait)."""
    d = [y - x for x, y in zip(a, b, strict=False)]
    total = sum(d[:8]) or 1
    return (total - d[3] - d[4]) / total


class Window:
    """CPU of the worker and loadgen, and of the machine and each pinned core, between two
    instants. `worker_core_other`: what else ran on the worker's core (in cores)."""

    def __init__(self, w: Child, lg: Child) -> None:
        self.w, self.lg = w, lg
        self.t0, self.w0, self.l0 = time.monotonic(), cpu_seconds(w.pid), cpu_seconds(lg.pid)
        self.s0, self.c0 = system_cpu(), per_cpu()

    def end(self) -> dict[str, float]:
        t, wc, lc = time.monotonic(), cpu_seconds(self.w.pid), cpu_seconds(self.lg.pid)
        s1, c1 = system_cpu(), per_cpu()
        wall = t - self.t0
        d = [b - a for a, b in zip(self.s0, s1, strict=False)]
        total = sum(d[:8]) or 1
        ncpu = os.cpu_count() or 1
        tck = os.sysconf("SC_CLK_TCK")
        busy = (total - d[3] - d[4]) / tck  # CPU-seconds busy machine-wide (incl. steal)
        worker, loadgen = wc - self.w0, lc - self.l0
        out = {"wall": wall, "worker_cpu": worker, "loadgen_cpu": loadgen,
               "worker_util": worker / wall, "loadgen_util": loadgen / wall,
               "other_cores": max(0.0, (busy - worker - loadgen) / (total / tck / ncpu)),
               "steal_cores": ncpu * (d[7] if len(d) > 7 else 0) / total}
        if WORKER_CPU in c1 and LOADGEN_CPU in c1:
            out["worker_core_busy"] = _busy(self.c0[WORKER_CPU], c1[WORKER_CPU])
            out["loadgen_core_busy"] = _busy(self.c0[LOADGEN_CPU], c1[LOADGEN_CPU])
            out["worker_core_other"] = max(0.0, out["worker_core_busy"] - out["worker_util"])
        return out


def check_file(path: Path) -> dict[str, Any]:
    """Decode a recorded WebM with PyAV: video frames and span, audio seconds."""
    import av
    from av import VideoFrame

    out: dict[str, Any] = {"video_frames": 0, "video_s": 0.0, "audio_s": 0.0}
    if not path.exists():
        out["error"] = "missing"
        return out
    first = last = None
    samples = 0
    try:
        with av.open(str(path)) as c:
            frame: Any
            for frame in c.decode(*c.streams):
                if isinstance(frame, VideoFrame):
                    out["video_frames"] += 1
                    if frame.time is not None:
                        first = frame.time if first is None else min(first, frame.time)
                        last = frame.time if last is None else max(last, frame.time)
                else:
                    samples += frame.samples
                    out["audio_rate"] = frame.sample_rate
    except av.FFmpegError as exc:
        out["error"] = str(exc)
    if first is not None and last is not None:
        out["video_s"] = last - first + 1 / FPS
    if samples:
        out["audio_s"] = samples / out["audio_rate"]
    return out


def check_recordings(path: str, directory: Path, sent: list[list[int]]) -> list[dict[str, Any]]:
    results = []
    for i, (video_sent, audio_sent) in enumerate(sent):
        if path == "passthrough":
            v = check_file(directory / f"s{i:03d}-video.webm")
            a = check_file(directory / f"s{i:03d}-audio.webm")
            got = {"video_frames": v["video_frames"], "video_s": v["video_s"],
                   "audio_s": a["audio_s"], "error": v.get("error") or a.get("error")}
        else:
            got = check_file(directory / f"s{i:03d}.webm")
        sent_v, sent_a = video_sent / FPS, audio_sent * AUDIO_PTIME
        got["complete"] = (not got.get("error")
                           and got["video_frames"] >= MIN_FRAMES * video_sent
                           and abs(got["video_s"] - sent_v) <= MAX_DURATION_ERROR
                           and abs(got["audio_s"] - sent_a) <= MAX_DURATION_ERROR)
        got["sent_video_frames"], got["sent_s"] = video_sent, sent_v
        results.append(got)
    return results


class Bench:
    def __init__(self, opts: argparse.Namespace, workdir: Path, media_file: Path) -> None:
        self.opts = opts
        self.workdir = workdir
        self.media_file = media_file
        self.procs = Procs()
        self.started = time.monotonic()
        self.steps = 0

    def children(self, path: str, label: str) -> tuple[Child, Child]:
        self.steps += 1
        stem = f"{self.steps:02d}-{label}"
        limit = self.opts.warmup + self.opts.duration + 180
        w = Child(self.procs, "worker", WORKER_CPU, self.workdir / f"{stem}-worker.log", limit,
                  ["--path", path])
        lg = Child(self.procs, "loadgen", LOADGEN_CPU, self.workdir / f"{stem}-loadgen.log",
                   limit, ["--media", str(self.media_file)])
        return w, lg

    def left(self) -> float:
        return float(self.opts.budget) - (time.monotonic() - self.started)

    # ---------------------------------------------------------------- recording
    def record_step(self, path: str, n: int) -> dict[str, Any]:
        o = self.opts
        res: dict[str, Any] = {"kind": "record", "path": path, "n": n, "ok": False}
        directory = self.workdir / f"rec-{path}-{n}"
        directory.mkdir()
        w, lg = self.children(path, f"record-{path}-{n}")
        try:
            offers = lg.call("publishers", n=n)["offers"]
            answers = w.call("record", timeout=60 + n, offers=offers, dir=str(directory))["answers"]
            lg.call("publisher_answers", answers=answers)
            ready = w.call("record_wait", timeout=60 + n, limit=20 + n / 2)
            if not ready["ok"]:
                res["error"] = f"not all streams started: {ready}"
                return res
            time.sleep(o.warmup)
            win = Window(w, lg)
            a_w, a_l = w.call("snap")["frames"], lg.call("snap")
            time.sleep(o.duration)
            b_w, b_l = w.call("snap")["frames"], lg.call("snap")
            cpu = win.end()
            sent = lg.call("stop_publishers")["sent"]
            fin = w.call("finish", timeout=o.drain + 60, drain=o.drain)
            w.close()
            lg.close()
            recorded = [y - x for x, y in zip(a_w, b_w, strict=True)]
            sent_window = [y[0] - x[0] for x, y in zip(a_l["sent"], b_l["sent"], strict=True)]
            media_s = sum(recorded) / FPS
            files = check_recordings(path, directory, sent)
            res.update(cpu)
            res.update({
                "cpu_per_stream": cpu["worker_cpu"] / media_s if media_s else None,
                "record_fps_min": min(recorded) / cpu["wall"],
                "send_fps_min": min(sent_window) / cpu["wall"],
                "drained": fin["drained"],
                "complete": sum(f["complete"] for f in files),
                "files": files,
            })
            # Complete files, and recorders that kept up: one that falls behind holds an
            # ever longer backlog in memory, which a short run would hide in the drain time.
            res["kept_up"] = res["record_fps_min"] >= MIN_FPS
            res["ok"] = res["complete"] == n and res["kept_up"]
            res["send_fps"] = res["send_fps_min"]
            classify(res)
        except Exception as exc:
            res["error"] = str(exc)
        finally:
            w.close()
            lg.close()
            if not self.opts.keep_files:
                shutil.rmtree(directory, ignore_errors=True)
        return res

    # ---------------------------------------------------------------- forwarding
    def forward_step(self, path: str, n: int) -> dict[str, Any]:
        o = self.opts
        res: dict[str, Any] = {"kind": "forward", "path": path, "n": n, "ok": False}
        w, lg = self.children(path, f"forward-{path}-{n}")
        try:
            offer = lg.call("publishers", n=1)["offers"][0]
            fwd = w.call("forward", timeout=60 + n, offer=offer, n=n)
            lg.call("publisher_answers", answers=[fwd["answer"]])
            answers = lg.call("subscribe", timeout=60 + n, offers=fwd["offers"],
                              probe=True)["answers"]
            w.call("subscriber_answers", timeout=60 + n, answers=answers)
            flow = lg.call("wait_flow", timeout=60 + n, limit=20 + n / 2)
            if not flow["ok"]:
                res["error"] = f"not all subscribers received media: {flow}"
                return res
            time.sleep(o.warmup)
            win = Window(w, lg)
            a = lg.call("snap")
            time.sleep(o.duration)
            b = lg.call("snap")
            cpu = win.end()
            wall = cpu["wall"]
            video = [y[0] - x[0] for x, y in zip(a["recv"], b["recv"], strict=True)]
            audio = [y[1] - x[1] for x, y in zip(a["recv"], b["recv"], strict=True)]
            send = b["sent"][0][0] - a["sent"][0][0]
            media_s = sum(video) / FPS
            lat = b["lat"]
            res.update(cpu)
            res.update({
                "cpu_per_stream": cpu["worker_cpu"] / media_s if media_s else None,
                "fps_min": min(video) / wall, "fps_mean": sum(video) / len(video) / wall,
                "audio_pps_min": min(audio[1:] or [0]) / wall if n > 1 else None,
                "send_fps": send / wall,
                "lat_p50": pct(lat, 50), "lat_p95": pct(lat, 95), "lat_n": len(lat),
                "misread": b["misread"],
            })
            res["ok"] = res["fps_min"] >= MIN_FPS
            classify(res)
        except Exception as exc:
            res["error"] = str(exc)
        finally:
            w.close()
            lg.close()
        return res

    def direct_latency(self) -> dict[str, Any]:
        o = self.opts
        self.steps += 1
        lg = Child(self.procs, "loadgen", LOADGEN_CPU,
                   self.workdir / f"{self.steps:02d}-direct-loadgen.log",
                   o.warmup + o.duration + 120, ["--media", str(self.media_file)])
        try:
            snap = lg.call("direct", timeout=60, warmup=o.warmup, seconds=o.duration)
            lat = snap["lat"]
            return {"p50": pct(lat, 50), "p95": pct(lat, 95), "n": len(lat),
                    "misread": snap["misread"]}
        except Exception as exc:
            return {"error": str(exc)}
        finally:
            lg.close()

    # ---------------------------------------------------------------- search
    def search(self, kind: str, path: str, steps: list[int], est: float) -> list[dict[str, Any]]:
        """Run `steps` upward until one fails (or the time budget is spent). A failure the
        neither process's CPU explains (see `classify`) is tried once more."""
        runs: list[dict[str, Any]] = []
        for n in steps:
            for attempt in (1, 2):
                if self.left() < est * (1 + n / 32):
                    runs.append({"kind": kind, "path": path, "n": n, "ok": False,
                                 "skipped": "time budget"})
                    return runs
                r = self.record_step(path, n) if kind == "record" else self.forward_step(path, n)
                r["attempt"] = attempt
                runs.append(r)
                print(step_line(r), file=sys.stderr, flush=True)
                if r["ok"] or r.get("limit") not in ("other load", "unclear"):
                    break
            if not r["ok"]:
                break
        return runs


WORKER_SATURATED = 0.85  # worker CPU (cores) at which a failure is the worker's own
CORE_SATURATED = 0.95  # a pinned core this busy (with everything on it) had no headroom


def classify(r: dict[str, Any]) -> None:
    """Why a step failed, in r["limit"]: "worker" (its process used its core), "loadgen"
    (the publishers fell behind, or the loadgen used its core), "worker+loadgen" (both),
    "other load" (other processes filled a pinned core), or "unclear"."""
    if r["ok"]:
        return
    loadgen = r.get("send_fps", FPS) < MIN_FPS or r["loadgen_util"] >= WORKER_SATURATED
    if r["worker_util"] >= WORKER_SATURATED:
        r["limit"] = "worker+loadgen" if loadgen else "worker"
    elif loadgen:
        r["limit"] = "loadgen"
    elif max(r.get("worker_core_busy", 0), r.get("loadgen_core_busy", 0)) >= CORE_SATURATED:
        r["limit"] = "other load"
    else:
        r["limit"] = "unclear"
    r["loadgen_limited"] = r["limit"] == "loadgen"


def step_line(r: dict[str, Any]) -> str:
    head = f"   {r['kind']:7} {r['path']:11} n={r['n']:<3}"
    if r.get("skipped"):
        return f"{head} skipped ({r['skipped']})"
    if r.get("error") and "worker_util" not in r:
        return f"{head} FAILED: {r['error'][:300]}"
    s = (f"{head} {'pass' if r['ok'] else 'FAIL'}  worker {100 * r['worker_util']:.0f}%"
         f" (core {_f(r.get('worker_core_busy'), 100, 0)}% busy)"
         f"  loadgen {100 * r['loadgen_util']:.0f}%"
         f" (core {_f(r.get('loadgen_core_busy'), 100, 0)}%)"
         f"  other {r['other_cores']:.2f} cores"
         f"  CPU/stream {_f(r.get('cpu_per_stream'), 100, 2)}%")
    if r["kind"] == "record":
        s += (f"  complete {r['complete']}/{r['n']}  recorded fps min {r['record_fps_min']:.1f}"
              f"  sent fps min {r['send_fps_min']:.1f}  drained {r['drained']}")
        bad = [f for f in r["files"] if not f["complete"]][:2]
        for f in bad:
            s += (f"\n      incomplete: {f['video_frames']}/{f['sent_video_frames']} frames,"
                  f" video {f['video_s']:.2f}s audio {f['audio_s']:.2f}s of {f['sent_s']:.2f}s"
                  f"{' ' + str(f['error']) if f.get('error') else ''}")
    else:
        s += (f"  fps min {r['fps_min']:.1f} mean {r['fps_mean']:.1f}  send {r['send_fps']:.1f}"
              f"  latency p50 {_f(r.get('lat_p50'), 1000, 0)} p95 {_f(r.get('lat_p95'), 1000, 0)}"
              f" ms (n={r['lat_n']}, misread {r['misread']})")
    if r.get("limit"):
        s += f"  [limit: {r['limit']}]"
    return s


def _f(x: float | None, scale: float = 1, digits: int = 1) -> str:
    return "-" if x is None else f"{x * scale:,.{digits}f}"


# ---------------------------------------------------------------- summary
def best(runs: list[dict[str, Any]]) -> int:
    return max((r["n"] for r in runs if r["ok"]), default=0)


def common(ours: list[dict[str, Any]], stock: list[dict[str, Any]]
           ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The runs of both paths at the same size: the largest the stock path passed, else its
    first (then saturated: CPU per stream is still per media-second it actually handled)."""
    def measured(r: dict[str, Any]) -> bool:
        return r.get("cpu_per_stream") is not None
    def by_size(runs: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for r in runs:  # a retried size: the passing attempt, else the last
            if measured(r) and not out.get(r["n"], {}).get("ok"):
                out[r["n"]] = r
        return out
    o, s = by_size(ours), by_size(stock)
    both = sorted(set(o) & set(s))
    if not both:
        return None, None
    passed = [n for n in both if s[n]["ok"] and o[n]["ok"]]
    n = passed[-1] if passed else both[0]
    return o[n], s[n]


def stop_reason(runs: list[dict[str, Any]]) -> str:
    """Why the search stopped where it did."""
    if not runs:
        return "not run"
    last = runs[-1]
    if last["ok"]:
        return f"{last['n']} was the largest size tried: the maximum may be higher"
    if last.get("skipped"):
        return f"{last['n']} skipped for the time budget: the maximum may be higher"
    limit = last.get("limit") or "error: " + str(last.get("error", "?"))[:120]
    bound = "" if limit == "worker" else "; so the maximum is a lower bound"
    return f"{last['n']} failed, limit: {limit}{bound}"


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    rec_o, rec_s = common(res["record"]["passthrough"], res["record"]["stock"])
    fwd_o, fwd_s = common(res["forward"]["passthrough"], res["forward"]["stock"])
    direct = res.get("direct", {}).get("p50")

    def added(r: dict[str, Any] | None, key: str) -> float | None:
        if r is None or r.get(key) is None or direct is None:
            return None
        return float(r[key]) - float(direct)

    def get(r: dict[str, Any] | None, key: str) -> float | None:
        return None if r is None else r.get(key)

    return {
        "runs": {"cpu_record": (rec_o, rec_s), "cpu_forward": (fwd_o, fwd_s)},
        "cpu_record": (get(rec_o, "cpu_per_stream"), get(rec_s, "cpu_per_stream"),
                       get(rec_o, "n")),
        "cpu_forward": (get(fwd_o, "cpu_per_stream"), get(fwd_s, "cpu_per_stream"),
                        get(fwd_o, "n")),
        "max_record": (best(res["record"]["passthrough"]), best(res["record"]["stock"])),
        "max_forward": (best(res["forward"]["passthrough"]), best(res["forward"]["stock"])),
        "lat_p50": (added(fwd_o, "lat_p50"), added(fwd_s, "lat_p50")),
        "lat_p95": (added(fwd_o, "lat_p95"), added(fwd_s, "lat_p95")),
    }


def table(sm: dict[str, Any]) -> str:
    rows = []

    def row(label: str, a: float | None, b: float | None, fmt: str, scale: float = 1) -> None:
        ratio = f"{a / b:.3f}" if a is not None and b else "-"
        rows.append((label, "-" if a is None else fmt.format(a * scale),
                     "-" if b is None else fmt.format(b * scale), ratio))

    o, s, n = sm["cpu_record"]
    row(f"CPU per recorded stream (% of a core, n={n})", o, s, "{:.1f}", 100)
    o, s, n = sm["cpu_forward"]
    row(f"CPU per forwarded stream (% of a core, n={n})", o, s, "{:.2f}", 100)
    (o, s), (o2, s2) = sm["max_record"], sm["max_forward"]
    row("max concurrent complete recordings", o, s, "{:.0f}")
    row(f"max forwarded streams at >= {MIN_FPS:g} fps", o2, s2, "{:.0f}")
    n = sm["cpu_forward"][2]
    (o, s), (o2, s2) = sm["lat_p50"], sm["lat_p95"]
    row(f"added latency p50 (ms, forwarding n={n})", o, s, "{:.1f}", 1000)
    row(f"added latency p95 (ms, forwarding n={n})", o2, s2, "{:.1f}", 1000)
    head = ("metric", "passthrough", "stock aiortc", "ratio (passthrough/stock)")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(4)]

    def fmt_row(r: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                                 for i, c in enumerate(r)) + " |"

    return "\n".join([fmt_row(head), "| " + " | ".join("-" * w for w in widths) + " |",
                      *[fmt_row(r) for r in rows]])


def targets(sm: dict[str, Any], res: dict[str, Any]) -> str:
    def cheaper(pair: tuple[Any, ...]) -> float | None:
        o, s = pair[0], pair[1]
        return s / o if o and s else None

    def capped(kind: str) -> str:
        return f" ({stop_reason(res[kind]['passthrough'])})"

    rc, fc = cheaper(sm["cpu_record"]), cheaper(sm["cpu_forward"])
    quick = " [quick run: sizes below the targets, not a test of them]" if res["quick"] else ""

    def verdict(ok: bool, measured: bool) -> str:
        return "not measured" if not measured else "met" if ok else "NOT met"

    ran = {k: bool(res[k]["passthrough"]) for k in ("record", "forward")}
    lines = [
        f"- >= 16 concurrent complete recordings: {sm['max_record'][0]}"
        f" -> {verdict(sm['max_record'][0] >= 16, ran['record'])}{capped('record')}{quick}",
        f"- >= 32 forwarded subscriber streams at full frame rate: {sm['max_forward'][0]}"
        f" -> {verdict(sm['max_forward'][0] >= 32, ran['forward'])}{capped('forward')}"
        f"{quick}",
        f"- recording >= 5x cheaper than stock: {_f(rc, 1, 1)}x"
        f" -> {verdict(bool(rc and rc >= 5), rc is not None)}",
        f"- forwarding >= 5x cheaper than stock: {_f(fc, 1, 1)}x"
        f" -> {verdict(bool(fc and fc >= 5), fc is not None)}",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_child"]:
        cp = argparse.ArgumentParser(prog="media.py _child")
        cp.add_argument("role", choices=["worker", "loadgen"])
        cp.add_argument("--cpu", type=int, default=0)
        cp.add_argument("--max-seconds", type=float, default=600)
        cp.add_argument("--path", choices=PATHS, default="passthrough")
        cp.add_argument("--media", default="")
        cargs = cp.parse_args(argv[1:])
        return child_main(cargs.role, cargs)

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (about 25 s): one small size of each, short windows")
    ap.add_argument("--only", choices=PATHS, help="run one path only")
    ap.add_argument("--record-steps", help="comma-separated recording sizes to try upward"
                    f" (default {','.join(map(str, DEFAULT_RECORD_STEPS))})")
    ap.add_argument("--forward-steps", help="comma-separated forwarding sizes to try upward"
                    f" (default {','.join(map(str, DEFAULT_FORWARD_STEPS))})")
    ap.add_argument("--no-record", action="store_true", help="skip recording")
    ap.add_argument("--no-forward", action="store_true", help="skip forwarding")
    ap.add_argument("--duration", type=float, help="measured seconds per step (default 8,"
                    " quick 3)")
    ap.add_argument("--warmup", type=float, help="seconds before measuring (default 2, quick 1)")
    ap.add_argument("--drain", type=float, default=1.0,
                    help="seconds a recorder may take after the publishers stop (default 1)")
    ap.add_argument("--budget", type=float, help="seconds for the whole run: steps that would"
                    " not fit are skipped (default 570, quick 120)")
    ap.add_argument("--noise", type=float, default=0.0,
                    help="camera-like luma noise (std dev, e.g. 6) in the published video:"
                         " about 1 Mbit/s instead of about 200 kbit/s (default 0: the plain"
                         " synthetic picture)")
    ap.add_argument("--json", type=Path, help="also write the raw results here")
    ap.add_argument("--keep-files", action="store_true", help="keep recordings and logs")
    opts = ap.parse_args(argv)
    opts.duration = opts.duration if opts.duration is not None else (3 if opts.quick else 8)
    opts.warmup = opts.warmup if opts.warmup is not None else (1 if opts.quick else 2)
    opts.budget = opts.budget if opts.budget is not None else (120 if opts.quick else 570)

    def steps(arg: str | None, default: tuple[int, ...], quick: int) -> list[int]:
        if arg:
            return sorted({int(x) for x in arg.split(",") if x.strip()})
        return [quick] if opts.quick else list(default)

    record_steps = [] if opts.no_record else steps(opts.record_steps, DEFAULT_RECORD_STEPS, 2)
    forward_steps = [] if opts.no_forward else steps(opts.forward_steps, DEFAULT_FORWARD_STEPS, 4)
    paths = [opts.only] if opts.only else list(PATHS)

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {LOADGEN_CPU})
    workdir = Path(tempfile.mkdtemp(prefix="mikoto-media-bench-"))

    def on_signal(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    load_before = loadavg()
    print(f"media.py: logs in {workdir}; load average before: {load_before}",
          file=sys.stderr, flush=True)
    bench: Bench | None = None
    ok = False
    try:
        media_file = workdir / "media.pkl"
        info = encode_media(media_file, opts.noise)
        print(f"   media: {WIDTH}x{HEIGHT}@{FPS} VP8 {info['video_kbps']:.0f} kbit/s"
              f"{f' (noise {opts.noise:g})' if opts.noise else ''},"
              f" keyframe every {GOP} frames, {info['audio_packets']} Opus packets of"
              f" {AUDIO_PTIME * 1000:.0f} ms, looped every {LOOP_FRAMES / FPS:g} s",
              file=sys.stderr, flush=True)
        bench = Bench(opts, workdir, media_file)
        res: dict[str, Any] = {"record": {p: [] for p in PATHS},
                               "forward": {p: [] for p in PATHS}, "quick": opts.quick}
        if forward_steps:
            res["direct"] = bench.direct_latency()
            d = res["direct"]
            print(f"   direct publisher->subscriber latency (no worker): p50"
                  f" {_f(d.get('p50'), 1000, 1)} p95 {_f(d.get('p95'), 1000, 1)} ms"
                  f" (n={d.get('n')}){' ' + d['error'] if 'error' in d else ''}",
                  file=sys.stderr, flush=True)
        # Each step is about warmup + duration + setup/teardown; recording also decodes.
        est = opts.warmup + opts.duration + 8
        for kind, kind_steps in (("record", record_steps), ("forward", forward_steps)):
            for path in paths:
                if kind_steps:
                    res[kind][path] = bench.search(kind, path, kind_steps, est)
        sm = summarize(res)
        load_after = loadavg()
        print()
        print(f"media benchmark  {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} CPUs"
              f"  {WIDTH}x{HEIGHT}@{FPS} VP8 + Opus  window {opts.duration:g}s after"
              f" {opts.warmup:g}s{' (quick)' if opts.quick else ''}"
              f"  load average before {load_before}, after {load_after}"
              f"  ({time.monotonic() - bench.started:.0f}s)")
        print(table(sm))
        for key, kind in (("cpu_record", "recording"), ("cpu_forward", "forwarding")):
            for path, r in zip(PATHS, sm["runs"][key], strict=True):
                if r is not None and not r["ok"]:
                    print(f"  note: {kind} {path} at n={r['n']} did not keep up (limit:"
                          f" {r.get('limit')}); its row values are from that saturated run.")
        print(f"  added latency = probe latency through the worker - direct publisher->"
              f"subscriber p50 ({_f(res.get('direct', {}).get('p50'), 1000, 1)} ms)")
        print()
        print("Targets (passthrough):")
        print(targets(sm, res))
        noise = [r.get("other_cores", 0) + r.get("steal_cores", 0)
                 for k in ("record", "forward") for p in PATHS for r in res[k][p]]
        if noise:
            print(f"Noise: other processes and steal took up to {max(noise):.2f} cores"
                  f" (median {statistics.median(noise):.2f}) during measured windows.")
        print("Where each search stopped:")
        for k in ("record", "forward"):
            for p in paths:
                if res[k][p]:
                    print(f"- {k} {p}: max {best(res[k][p])}; {stop_reason(res[k][p])}")
        if opts.json:
            opts.json.write_text(json.dumps({
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "load_before": load_before,
                "load_after": load_after, "options": {
                    k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
                "media": info, "summary": sm, "results": res}, indent=2, default=str) + "\n")
        ok = True
        return 0
    except KeyboardInterrupt:
        print("media.py: interrupted", file=sys.stderr)
        return 130
    finally:
        if bench is not None:
            bench.procs.close()
        if opts.keep_files or not ok:
            print(f"media.py: files kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
