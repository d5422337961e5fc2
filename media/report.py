"""The echo test's report: what the worker observed, and a verdict a user can act on.

Pure data and rules (no aiortc here), so the thresholds are tested directly; `echo.py`
measures, this module judges. The wire shape is documented in docs/protocol.md,
"The echo report".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# Above these a call is noticeably worse than it should be.
MAX_LOSS_PERCENT = 3.0
MAX_RTT_MS = 300.0
MAX_JITTER_MS = 50.0
MIN_FRAME_RATE = 10.0


class Verdict(StrEnum):
    GOOD = "good"
    DEGRADED = "degraded"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class StreamObservation:
    """One received track over the measured window."""

    kind: str
    packets: int
    packets_lost: int
    jitter_ms: float
    bitrate_kbps: float
    # Video only:
    frames: int = 0
    frame_rate: float = 0.0
    keyframes: int = 0
    size: tuple[int, int] | None = None

    @property
    def loss_percent(self) -> float:
        expected = self.packets + max(self.packets_lost, 0)
        return 100.0 * max(self.packets_lost, 0) / expected if expected else 0.0

    def wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "packets": self.packets, "packetsLost": self.packets_lost,
            "lossPercent": round(self.loss_percent, 2), "jitterMs": round(self.jitter_ms, 1),
            "bitrateKbps": round(self.bitrate_kbps, 1),
        }
        if self.kind == "video":
            out.update(frames=self.frames, frameRate=round(self.frame_rate, 1),
                       keyframes=self.keyframes,
                       width=self.size[0] if self.size else None,
                       height=self.size[1] if self.size else None)
        return out


@dataclass(frozen=True, slots=True)
class ConnectionObservation:
    state: str  # the worker's RTCPeerConnection.connectionState at report time
    connected: bool  # it was connected at some point
    local: str | None = None  # selected candidate pair types, from the worker's side
    remote: str | None = None
    protocol: str | None = None
    remote_candidates: int = 0  # candidates the client offered

    @property
    def turn(self) -> bool:
        return "relay" in (self.local, self.remote)

    def wire(self) -> dict[str, Any]:
        return {"state": self.state, "local": self.local, "remote": self.remote,
                "turn": self.turn, "protocol": self.protocol}


@dataclass(frozen=True, slots=True)
class EchoObservation:
    duration: float
    connection: ConnectionObservation
    rtt_ms: float | None = None
    audio: StreamObservation | None = None
    video: StreamObservation | None = None
    notes: tuple[str, ...] = field(default=())


def judge(obs: EchoObservation) -> tuple[Verdict, list[str]]:
    """The verdict and, unless good, the reasons for it."""
    conn = obs.connection
    if not conn.connected:
        if conn.remote_candidates == 0:
            return Verdict.FAILED, [
                "No media connection: your device offered no network candidates. If you "
                "must use a TURN relay, its credentials were refused or it is unreachable."]
        return Verdict.FAILED, [
            f"No media connection: none of the {conn.remote_candidates} network paths your "
            "device offered reached the server (a firewall may block UDP; a TURN relay "
            "would help)."]
    streams = [s for s in (obs.audio, obs.video) if s is not None]
    if not any(s.packets for s in streams):
        return Verdict.FAILED, ["Connected, but no audio or video arrived from your device."]
    reasons: list[str] = list(obs.notes)
    for s in streams:
        if s.loss_percent > MAX_LOSS_PERCENT:
            reasons.append(f"{s.loss_percent:.1f}% of {s.kind} packets were lost on the way "
                           f"(more than {MAX_LOSS_PERCENT:g}%): expect choppy {s.kind}.")
        if s.jitter_ms > MAX_JITTER_MS:
            reasons.append(f"{s.kind.capitalize()} arrival varies by {s.jitter_ms:.0f} ms "
                           f"(jitter above {MAX_JITTER_MS:g} ms).")
    if obs.rtt_ms is not None and obs.rtt_ms > MAX_RTT_MS:
        reasons.append(f"Round-trip time is {obs.rtt_ms:.0f} ms (above {MAX_RTT_MS:g} ms): "
                       "conversations will lag.")
    video = obs.video
    if video is not None and video.packets and video.frame_rate < MIN_FRAME_RATE:
        reasons.append(f"Video arrives at {video.frame_rate:.1f} frames per second "
                       f"(below {MIN_FRAME_RATE:g}).")
    return (Verdict.DEGRADED if reasons else Verdict.GOOD), reasons


def report(obs: EchoObservation) -> dict[str, Any]:
    """The `media:report` payload's `report`."""
    verdict, reasons = judge(obs)
    return {
        "verdict": verdict.value,
        "reasons": reasons,
        "duration": round(obs.duration, 2),
        "connection": obs.connection.wire(),
        "rttMs": None if obs.rtt_ms is None else round(obs.rtt_ms, 1),
        "audio": obs.audio.wire() if obs.audio else None,
        "video": obs.video.wire() if obs.video else None,
    }
