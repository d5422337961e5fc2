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
from dataclasses import dataclass
from typing import Any

from .edge import Ack, SignalingEdge
from .errors import NotFound, Unavailable
from .ids import ParticipantId, RoomId
from .media_edge import MediaEdge
from .protocol import LeaveReason, MediaEndReason, MediaKind, RoomMode, ServerEvent, ok
from .rooms import Participant
from .sessions import Session
from .store import Tx
from .workers import Job

log = logging.getLogger(__name__)

# A claim to start forwarding a room lapses after this, should its node die meanwhile.
CLAIM_TTL = 30.0


@dataclass(slots=True)
class Forwarded:
    """A forwarded room: its job and the worker's participant (None while starting)."""

    job: str | None = None
    worker: ParticipantId | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.job, "worker": self.worker}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Forwarded:
        return cls(job=d["job"], worker=d["worker"])


def _key(room: RoomId) -> str:
    return "forward:" + room


class ForwardEdge:
    def __init__(self, edge: SignalingEdge, media: MediaEdge, mesh_max: int) -> None:
        self._edge = edge
        self._store = edge.store
        self._media = media
        self._mesh_max = mesh_max
        edge.on_participant_joined(self._joined)
        edge.on_participant_left(self._left)
        edge.add_to_join_ack(self._join_fields)
        media.on_job_lost(MediaKind.FORWARD, self._worker_lost)
        media.on_request(MediaKind.FORWARD, self._requested)

    async def _forwarded(self, room: RoomId) -> Forwarded | None:
        return await self._store.get(_key(room), Forwarded)

    async def job(self, room: RoomId) -> Job | None:
        """The room's forward job, if it forwards."""
        forwarded = await self._forwarded(room)
        if forwarded is None or forwarded.job is None:
            return None
        try:
            return await self._media.job(forwarded.job)
        except NotFound:
            return None

    async def _join_fields(self, room: RoomId) -> Ack:
        forwarded = await self._forwarded(room)
        if forwarded is None or forwarded.worker is None:
            return {"mode": RoomMode.MESH.value}
        return {"mode": RoomMode.FORWARD.value, "worker": forwarded.worker}

    async def _requested(self, session: Session, me: Participant) -> Ack:
        """`media:request {kind: "forward"}`: forward this room now, whatever its size."""
        forwarded = await self._forwarded(me.room)
        if forwarded is None:
            forwarded = await self._forward(me.room, session, me)
        if forwarded is None or forwarded.worker is None:
            raise Unavailable("the room is switching to forwarding; try again shortly")
        return ok(job=forwarded.job, kind=MediaKind.FORWARD.value, worker=forwarded.worker)

    async def _joined(self, session: Session, me: Participant) -> None:
        if (await self._forwarded(me.room) is not None
                or await self._edge.rooms.visible(me.room) <= self._mesh_max):
            return
        try:
            await self._forward(me.room, session, me)
        except Unavailable as exc:
            log.warning("room %s has %d participants but stays mesh: %s", me.room,
                        await self._edge.rooms.visible(me.room), exc.message)

    async def _forward(self, room: RoomId, session: Session, requester: Participant,
                       moved: bool = False) -> Forwarded | None:
        """Start forwarding `room`; None when another request (on any node) is at it."""

        def claim(tx: Tx) -> bool:
            found = tx.get(_key(room), Forwarded)
            if found is not None and not moved:
                return False
            tx.put(_key(room), Forwarded(), ttl=CLAIM_TTL)
            return True

        if not await self._store.transact([_key(room)], claim):
            return None
        try:
            job = await self._media.start_job(MediaKind.FORWARD, session, requester, {})
        except BaseException:
            await self._store.transact([_key(room)], lambda tx: tx.delete(_key(room)))
            raise
        assert job.worker_participant is not None
        forwarded = Forwarded(job.id, job.worker_participant)
        await self._store.transact([_key(room)], lambda tx: tx.put(_key(room), forwarded))
        state: dict[str, Any] = {"mode": RoomMode.FORWARD.value, "worker": job.worker_participant}
        if moved:
            state["moved"] = True
        await self._announce(room, state)
        log.info("room %s forwards through worker %s (job %s)", room, job.worker_participant,
                 job.id)
        return forwarded

    async def _announce(self, room: RoomId, state: dict[str, Any]) -> None:
        try:
            await self._edge.rooms.announce(room, ServerEvent.ROOM_MODE, state)
        except NotFound:
            pass  # nobody left to tell

    async def _left(self, participant: Participant, reason: LeaveReason) -> None:
        if participant.hidden or await self._edge.rooms.visible(participant.room):
            return
        forwarded = await self._store.transact([_key(participant.room)],
                                               lambda tx: _take(tx, participant.room))
        if forwarded is None or forwarded.job is None:
            return
        try:
            await self._media.end_job(await self._media.job(forwarded.job),
                                      MediaEndReason.RELEASED)
        except NotFound:
            pass

    async def _worker_lost(self, job: Job) -> None:
        forwarded = await self._forwarded(job.room)
        if forwarded is None or forwarded.job != job.id:
            return
        room = await self._edge.rooms.room(job.room)
        for requester in list(room.participants.values()) if room is not None else []:
            session = await self._edge.sessions.get(requester.session)
            if session is None:
                continue
            try:
                await self._forward(job.room, session, requester, moved=True)
                return
            except Unavailable:
                break
        await self._store.transact([_key(job.room)], lambda tx: _take(tx, job.room))
        log.warning("room %s lost its forwarding worker and falls back to mesh", job.room)
        await self._announce(job.room, {"mode": RoomMode.MESH.value})


def _take(tx: Tx, room: RoomId) -> Forwarded | None:
    found = tx.get(_key(room), Forwarded)
    if found is not None:
        tx.delete(_key(room))
    return found
