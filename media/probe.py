"""`mikoto-rtc probe`: the echo test from a headless peer with synthetic media.

Usable as synthetic monitoring: it joins a room, runs the echo test against the
node's media workers, prints the report as JSON and exits with a status a monitor
can alert on (see `exit_status`).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from dataclasses import dataclass
from typing import Any

from signaling.client import RequestError, SignalingClient

from .peer import EchoResult, HeadlessPeer
from .tracks import SyntheticMedia

# Exit statuses: 0 good or degraded, 1 failed, 3 the test could not run at all.
EXIT_FAILED = 1
EXIT_NOT_RUN = 3


@dataclass(frozen=True)
class ProbeOptions:
    url: str
    token: str
    room: str | None = None
    duration: float | None = None
    relay_only: bool = False
    timeout: float = 90.0
    width: int = 640
    height: int = 480
    fps: int = 30


def exit_status(report: dict[str, Any] | None) -> int:
    if report is None:
        return EXIT_NOT_RUN
    return EXIT_FAILED if report.get("verdict") == "failed" else 0


def summary(result: EchoResult) -> dict[str, Any]:
    """The report plus what came back to the probe (frames it decoded from the echo)."""
    return {"job": result.job, "report": result.report,
            "echoed": {"audioFrames": result.returned.audio_frames,
                       "videoFrames": result.returned.video_frames,
                       "videoSize": result.returned.video_size}}


async def probe(options: ProbeOptions) -> EchoResult:
    """Run one echo test; raises RequestError when it cannot start."""
    client = SignalingClient(options.url, options.token, reconnect=False)
    await client.connect()
    media = SyntheticMedia(options.width, options.height, fps=options.fps)
    peer = HeadlessPeer(client, media=media, relay_only=options.relay_only)
    try:
        await peer.join(options.room or "probe-" + secrets.token_hex(6), name="probe")
        return await peer.echo_test(duration=options.duration, timeout=options.timeout)
    finally:
        await peer.close()
        await client.close()


def run(options: ProbeOptions) -> int:
    """Print the outcome as JSON on stdout; return the exit status."""
    try:
        result = asyncio.run(probe(options))
    except (RequestError, TimeoutError) as exc:
        code, message = ((exc.code, exc.message) if isinstance(exc, RequestError)
                         else ("timeout", "no report in time"))
        print(json.dumps({"error": {"code": code, "message": message}}, indent=2))
        print(f"mikoto-rtc probe: the echo test could not run: {exc}", file=sys.stderr)
        return EXIT_NOT_RUN
    print(json.dumps(summary(result), indent=2))
    if result.report is None:
        reason = result.ended.reason if result.ended else "unknown"
        print(f"mikoto-rtc probe: the echo job ended before its report ({reason})",
              file=sys.stderr)
    return exit_status(result.report)
