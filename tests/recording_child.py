"""A process that records a live in-process call until it is killed, for the SIGKILL test.

`python -m tests.recording_child OUT_DIR` sends synthetic VP8 video and Opus audio from
one peer connection to another that records both with passthrough, into
OUT_DIR/video.webm and OUT_DIR/audio.webm, and prints a JSON line every 0.1 s with what
each recorder has written. It closes the recorders and exits by itself after
`--limit` seconds, so an orphan does not run on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

from aiortc import MediaStreamTrack

from media.passthrough import enable_passthrough
from media.recorder import TrackRecorder
from media.tracks import SineAudioTrack, SyntheticVideoTrack

from .media_fixtures import connect, peer_connections, receiver_of

VIDEO_FPS = 30.0


async def record(out_dir: Path, limit: float) -> None:
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

        await connect(publisher, worker)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        try:
            while loop.time() < deadline:
                progress = {kind: {"packets": r.packets, "duration": r.duration}
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
    args = parser.parse_args()
    asyncio.run(record(args.out_dir, args.limit))


if __name__ == "__main__":
    main()
