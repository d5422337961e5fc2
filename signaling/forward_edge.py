"""Forwarding for group calls: rooms above the mesh limit send media through a worker.

A mesh costs every participant an upload per other participant. When a join takes a
room above `mesh_max_participants`, the node gives the room a `forward` job on a
media worker and announces `room:mode {mode: "forward", worker}`; from then on each
participant publishes once to the worker and receives the others from it (two peer
connections, `pc: "up"` and `pc: "down"`, see docs/protocol.md). A room stays
forwarded until it empties (switching back and forth as people come and go would
interrupt everyone's media each time). If the worker dies the room moves to another
one, or falls back to mesh when there is none; without any worker a room stays mesh.
"""

from __future__ import annotations

import logging
from typing import Any

from .edge import Ack, SignalingEdge
from .errors import NotFound, Unavailable
from .ids import ParticipantId, RoomId
from .media_edge import MediaEdge
from .protocol import LeaveReason, MediaEndReason, MediaKind, RoomMode, ServerEvent, ok
from .rooms import Participant
from .sessions import Session
from .workers import Job

log = logging.getLogger(__name__)


class ForwardEdge:
    def __init__(self, edge: SignalingEdge, media: MediaEdge, mesh_max: int) -> None:
        self._edge = edge
        self._media = media
        self._mesh_max = mesh_max
        # Forwarded rooms: their job and the worker's participant id.
        self._forwarded: dict[RoomId, tuple[str, ParticipantId]] = {}
        edge.on_participant_joined(self._joined)
        edge.on_participant_left(self._left)
        edge.add_to_join_ack(self._join_fields)
        media.on_job_lost(MediaKind.FORWARD, self._worker_lost)
        media.on_request(MediaKind.FORWARD, self._requested)

    def job(self, room: RoomId) -> Job | None:
        """The room's forward job, if it forwards."""
        forwarded = self._forwarded.get(room)
        if forwarded is None:
            return None
        try:
            return self._media.job(forwarded[0])
        except NotFound:
            return None

    def _join_fields(self, room: RoomId) -> Ack:
        forwarded = self._forwarded.get(room)
        if forwarded is None:
            return {"mode": RoomMode.MESH.value}
        return {"mode": RoomMode.FORWARD.value, "worker": forwarded[1]}

    async def _requested(self, session: Session, me: Participant) -> Ack:
        """`media:request {kind: "forward"}`: forward this room now, whatever its size."""
        if me.room not in self._forwarded:
            await self._forward(me.room, session, me)
        job, worker = self._forwarded[me.room]
        return ok(job=job, kind=MediaKind.FORWARD.value, worker=worker)

    async def _joined(self, session: Session, me: Participant) -> None:
        if me.room in self._forwarded or self._edge.rooms.visible(me.room) <= self._mesh_max:
            return
        try:
            await self._forward(me.room, session, me)
        except Unavailable as exc:
            log.warning("room %s has %d participants but stays mesh: %s", me.room,
                        self._edge.rooms.visible(me.room), exc.message)

    async def _forward(self, room: RoomId, session: Session, requester: Participant,
                       moved: bool = False) -> None:
        job = await self._media.start_job(MediaKind.FORWARD, session, requester, {})
        assert job.worker_participant is not None
        self._forwarded[room] = (job.id, job.worker_participant)
        state: dict[str, Any] = {"mode": RoomMode.FORWARD.value, "worker": job.worker_participant}
        if moved:
            state["moved"] = True
        await self._announce(room, state)
        log.info("room %s forwards through worker %s (job %s)", room, job.worker_participant,
                 job.id)

    async def _announce(self, room: RoomId, state: dict[str, Any]) -> None:
        if self._edge.rooms.room(room) is not None:
            await self._edge.emit_room(self._edge.rooms.announce(room, ServerEvent.ROOM_MODE,
                                                                 state))

    async def _left(self, participant: Participant, reason: LeaveReason) -> None:
        forwarded = self._forwarded.get(participant.room)
        if forwarded is None or participant.hidden or self._edge.rooms.visible(participant.room):
            return
        del self._forwarded[participant.room]
        try:
            await self._media.end_job(self._media.job(forwarded[0]), MediaEndReason.RELEASED)
        except NotFound:
            pass

    async def _worker_lost(self, job: Job) -> None:
        forwarded = self._forwarded.get(job.room)
        if forwarded is None or forwarded[0] != job.id:
            return
        del self._forwarded[job.room]
        room = self._edge.rooms.room(job.room)
        for requester in list(room.participants.values()) if room is not None else []:
            session = self._edge.sessions.get(requester.session)
            if session is None:
                continue
            try:
                await self._forward(job.room, session, requester, moved=True)
                return
            except Unavailable:
                break
        log.warning("room %s lost its forwarding worker and falls back to mesh", job.room)
        await self._announce(job.room, {"mode": RoomMode.MESH.value})
