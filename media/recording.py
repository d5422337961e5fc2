"""A record job: every participant's upstream connection, each track to its own file.

In a mesh room each participant's SDK opens one extra connection to the worker
(`recording:state` names it) and offers its tracks; the worker answers receive-only
and records each received track with a `TrackRecorder` (encoded passthrough, no
decoding). The job keeps `catalog.json` current: it is rewritten on every new or
ended track and every few seconds while recording, so a killed worker leaves a
catalog at most that old next to files readable up to the crash.

A recording that moves to another worker (its first one died) continues in the same
directory: the new job reads the catalog, keeps its tracks, and numbers new files on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection

from signaling.client import ParticipantInfo, SignalReceived
from signaling.ids import ParticipantId, RoomId
from signaling.recordings import CATALOG, write_catalog

from .forward import ForwardJob
from .link import PeerLink, SendSignal
from .passthrough import PassthroughReceiver, enable_passthrough
from .recorder import TrackRecorder
from .taskutil import cancel_and_wait

log = logging.getLogger(__name__)

CATALOG_INTERVAL = 2.0  # seconds between catalog rewrites while recording


@dataclass(eq=False)
class _Track:
    participant: ParticipantId
    user: str
    kind: str
    recorder: TrackRecorder
    arrived: float  # worker wallclock (Unix seconds) at the track's start
    ended: bool = False

    def wire(self, started_at: float) -> dict[str, Any]:
        r = self.recorder
        return {
            "participant": self.participant, "user": self.user, "kind": self.kind,
            # "vp8", "h264" or "opus"; None until the track's first packet. The recorder
            # gives the file its codec's extension (.webm, or .mkv for H.264).
            "codec": r.codec,
            # None until the first packet (the first keyframe for video) opens the file.
            "file": r.path.name if r.path.exists() else None,
            # Seconds from the recording's start to this track's first packet, as the
            # worker saw it arrive; `senderStart` is the same instant on the sender's
            # clock (RTCP), which aligns one participant's audio and video exactly.
            "start": round(self.arrived - started_at, 3),
            "senderStart": r.sender_start, "duration": round(r.duration, 3),
            "packets": r.packets, "keyframes": r.keyframes,
            "sizes": [list(s) for s in r.sizes], "complete": self.ended and r.error is None,
        }


class RecordJob:
    """Records the room's participants into `<directory>/<recording>/`; `close()` finalizes."""

    def __init__(self, job: str, recording: str, room: RoomId, *, directory: Path,
                 started_at: float, by: str, configuration: RTCConfiguration,
                 sender: Callable[[ParticipantId], SendSignal],
                 roster: Mapping[ParticipantId, ParticipantInfo],
                 source: ForwardJob | None = None) -> None:
        """With `source`, record what that forward job receives (no upstream connections)."""
        self.id = job
        self.recording = recording
        self.room = room
        self.dir = directory / recording
        self.dir.mkdir(parents=True, exist_ok=True)
        self._configuration = configuration
        self._sender = sender
        self._roster = roster
        self._links: dict[ParticipantId, PeerLink] = {}
        self._tracks: list[_Track] = []
        self._catalog = self._load(started_at, by)
        self._started_at = float(self._catalog["startedAt"]) / 1000
        self._closed = False
        self._save()
        self._saver = asyncio.create_task(self._save_forever(), name=f"media-record:{job}")
        self._untap = source.tap(self._record) if source is not None else None

    @property
    def load(self) -> int:
        return max(1, sum(not t.ended for t in self._tracks))

    @property
    def tapped(self) -> bool:
        """Recording what the room's forwarding receives (no upstream connections)."""
        return self._untap is not None

    @property
    def tracks(self) -> list[_Track]:
        return list(self._tracks)

    def deliver(self, signal: SignalReceived) -> None:
        if self.tapped:
            return  # recording what the forwarding receives: an upstream would record twice
        link = self._links.get(signal.sender)
        if link is None:
            link = self._links[signal.sender] = PeerLink(
                signal.sender, polite=True, configuration=self._configuration,
                media=lambda pc: self._attach(pc, signal.sender),
                send=self._sender(signal.sender))
        link.deliver(signal)

    async def participant_left(self, participant: ParticipantId) -> None:
        link = self._links.pop(participant, None)
        if link is not None:
            await link.close()
        for track in self._tracks:
            if track.participant == participant and not track.ended:
                await self._finish(track)
        self._save()

    async def close(self) -> None:
        """Stop recording: close every connection and file, mark the catalog complete."""
        if self._closed:
            return
        self._closed = True
        if self._untap is not None:
            self._untap()
        await cancel_and_wait(self._saver)
        for link in list(self._links.values()):
            await link.close()
        self._links.clear()
        for track in self._tracks:
            await self._finish(track)
        self._catalog["stoppedAt"] = int(time.time() * 1000)
        self._catalog["state"] = "complete"
        self._save()
        log.info("recording %s: %d tracks written to %s", self.recording, len(self._tracks),
                 self.dir)

    # -- media ---------------------------------------------------------------------------

    def _attach(self, pc: RTCPeerConnection, participant: ParticipantId) -> None:
        pc.on("track", lambda track: self._on_track(pc, track, participant))

    def _on_track(self, pc: RTCPeerConnection, track: MediaStreamTrack,
                  participant: ParticipantId) -> None:
        receiver = next(t.receiver for t in pc.getTransceivers() if t.receiver.track is track)
        self._record(participant, track.kind, enable_passthrough(receiver))

    def _record(self, participant: ParticipantId, kind: str,
                handle: PassthroughReceiver) -> None:
        if self._closed:
            return
        who = self._roster.get(participant)
        n = sum(t.participant == participant and t.kind == kind for t in self._tracks)
        path = self.dir / f"{participant}-{kind}-{n + self._segment_offset()}.webm"
        recorder = TrackRecorder(path, handle.subscribe())
        recorder.start()
        self._tracks.append(_Track(participant, who.user if who else "", kind, recorder,
                                   arrived=time.time()))
        if who is not None and not any(p["id"] == participant
                                       for p in self._catalog["participants"]):
            self._catalog["participants"].append(
                {"id": participant, "user": who.user, "name": who.name})
        self._save()

    def _segment_offset(self) -> int:
        # Files a previous worker wrote for this recording keep their names.
        return len(self._catalog.get("previousTracks", []))

    async def _finish(self, track: _Track) -> None:
        await track.recorder.close()
        track.ended = True

    # -- catalog -------------------------------------------------------------------------

    def _load(self, started_at: float, by: str) -> dict[str, Any]:
        path = self.dir / CATALOG
        if path.is_file():
            try:
                old = json.loads(path.read_text())
                old["previousTracks"] = old.get("tracks", [])
                old["state"] = "recording"
                old["moves"] = old.get("moves", 0) + 1
                return dict(old)
            except (OSError, ValueError):
                log.warning("recording %s: unreadable catalog, starting a new one", path)
        return {"id": self.recording, "room": self.room, "by": by,
                "startedAt": int(started_at * 1000), "stoppedAt": None, "state": "recording",
                "participants": [], "tracks": [], "files": []}

    def _save(self) -> None:
        tracks = [*self._catalog.get("previousTracks", []),
                  *(t.wire(self._started_at) for t in self._tracks)]
        catalog = {k: v for k, v in self._catalog.items() if k != "previousTracks"}
        catalog["tracks"] = tracks
        catalog["files"] = [t["file"] for t in tracks if t["file"]]
        try:
            write_catalog(self.dir, catalog)
        except OSError:
            log.exception("recording %s: writing the catalog failed", self.recording)

    async def _save_forever(self) -> None:
        while True:
            await asyncio.sleep(CATALOG_INTERVAL)
            self._save()
