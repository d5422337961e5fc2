"""A process that records a live in-process call until it is killed, for the SIGKILL test.

`python -m tests.recording_child OUT_DIR` sends synthetic VP8 (or, with `--codec h264`,
H.264) video and Opus audio from one peer connection to another that records both with
passthrough, into OUT_DIR/video.webm (video.mkv for H.264) and OUT_DIR/audio.webm, and
prints a JSON line every 0.1 s with what each recorder has written. It closes the
recorders and exits by itself after `--limit` seconds, so an orphan does not run on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender

from media.passthrough import enable_passthrough
from media.recorder import TrackRecorder
from media.tracks import SineAudioTrack, SyntheticVideoTrack

from .media_fixtures import connect, peer_connections, receiver_of

VIDEO_FPS = 30.0
VIDEO_CODECS = {"vp8": "video/VP8", "h264": "video/H264"}


async def connect_with_codec(offerer: RTCPeerConnection, answerer: RTCPeerConnection,
                             video_codec: str) -> None:
    """`connect`, with the offerer's video limited to `video_codec` (a MIME type)."""
    if video_codec.lower() == "video/vp8":
        await connect(offerer, answerer)
        return
    codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs
              if c.mimeType.lower() == video_codec.lower()]
    for transceiver in offerer.getTransceivers():
        if transceiver.kind == "video":
            transceiver.setCodecPreferences(codecs)
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)


async def record(out_dir: Path, limit: float, codec: str = "vp8") -> None:
    recorders: dict[str, TrackRecorder] = {}
    async with peer_connections() as make_pc:
        publisher, worker = make_pc(), make_pc()
        publisher.addTrack(SyntheticVideoTrack(320, 240, fps=VIDEO_FPS))
        publisher.addTrack(SineAudioTrack())

        @worker.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            handle = enable_passthrough(receiver_of(worker, track))
            recorder = TrackRecorder(out_dir / f"{track.kind}.webm", handle.subscribe())
            recorder.start()
            recorders[track.kind] = recorder

        await connect_with_codec(publisher, worker, VIDEO_CODECS[codec])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        try:
            while loop.time() < deadline:
                progress = {kind: {"packets": r.packets, "duration": r.duration,
                                   "file": r.path.name, "codec": r.codec}
                            for kind, r in recorders.items()}
                print(json.dumps(progress), flush=True)
                await asyncio.sleep(0.1)
        finally:
            for recorder in recorders.values():
                await recorder.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--limit", type=float, default=30.0, help="seconds before exiting")
    parser.add_argument("--codec", choices=sorted(VIDEO_CODECS), default="vp8",
                        help="the video codec sent")
    args = parser.parse_args()
    asyncio.run(record(args.out_dir, args.limit, args.codec))


if __name__ == "__main__":
    main()
