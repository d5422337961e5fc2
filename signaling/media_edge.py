"""The media-worker events: workers register and report, clients request media jobs.

A worker is an ordinary Socket.IO client with grant `service`. The node hands it a
job with `media:assign` (a server-to-client call whose ack carries the worker's hidden
participant in the room); from then on the requester and the worker negotiate with
plain `signal` events. Jobs end when either side releases them, when the requester
leaves the room, or when the worker's connection goes (its session ends with its
transport, see `Session.ends_with_transport`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import socketio

from .config import Config
from .edge import Ack, SignalingEdge
from .errors import Conflict, Forbidden, NotFound, Unavailable
from .ids import ParticipantId, SessionId
from .protocol import (
    ClientEvent,
    LeaveReason,
    MediaEndReason,
    MediaKind,
    ServerEvent,
    ok,
    parse_job,
    parse_media_report,
    parse_media_request,
    parse_worker_load,
    parse_worker_register,
)
from .rooms import Participant
from .sessions import Session
from .workers import Job, WorkerRegistry

log = logging.getLogger(__name__)

RequestHandler = Callable[[Session, Participant], Awaitable[Ack]]

# How long a worker has to join the room and accept a job.
ASSIGN_TIMEOUT = 5.0


class MediaEdge:
    """Registers the media events on a SignalingEdge."""

    def __init__(self, edge: SignalingEdge, workers: WorkerRegistry, config: Config) -> None:
        self._edge = edge
        self._workers = workers
        self._config = config
        self._lost_handlers: dict[MediaKind, Callable[[Job], Awaitable[None]]] = {}
        self._request_handlers: dict[MediaKind, RequestHandler] = {}
        edge.handle(ClientEvent.WORKER_REGISTER, self._register)
        edge.handle(ClientEvent.WORKER_LOAD, self._load)
        edge.handle(ClientEvent.MEDIA_REPORT, self._report)
        edge.handle(ClientEvent.MEDIA_REQUEST, self._request)
        edge.handle(ClientEvent.MEDIA_RELEASE, self._release)
        edge.on_participant_left(self._participant_left)
        edge.on_session_ended(self._session_ended)

    # -- workers ------------------------------------------------------------------------

    async def _register(self, session: Session, data: object) -> Ack:
        reg = parse_worker_register(data)
        if not session.identity.grants.service:
            raise Forbidden("registering a media worker needs grant service")
        await self._workers.register(session.id, reg)
        await self._edge.sessions.mark_ends_with_transport(session.id)
        log.info("media worker %s registered: capacity %d, %s", session.id, reg.capacity,
                 ", ".join(sorted(reg.kinds)))
        return ok(worker=session.id)

    async def _load(self, session: Session, data: object) -> Ack:
        await self._workers.report_load(session.id, parse_worker_load(data))
        return ok()

    async def _report(self, session: Session, data: object) -> Ack:
        req = parse_media_report(data)
        job = await self._own_job(session, req.job)
        delivered = await self._edge.send(job.requester, ServerEvent.MEDIA_REPORT,
                                          {"room": job.room, "job": job.id, "report": req.report})
        log.info("media report for job %s (%s): %s", job.id, job.kind,
                 req.report.get("verdict", "-"))
        return ok(delivered=delivered)

    async def _own_job(self, session: Session, job_id: str) -> Job:
        job = await self._workers.job(job_id)
        await self._workers.worker(session.id)  # Forbidden unless a worker
        if job.worker != session.id:
            raise NotFound(f"no media job {job_id!r}")
        return job

    # -- requesters ---------------------------------------------------------------------

    async def _request(self, session: Session, data: object) -> Ack:
        req = parse_media_request(data)
        me = await self._edge.rooms.member(session.id, req.room)
        if req.kind is MediaKind.RECORD and not session.identity.grants.record:
            raise Forbidden("recording needs grant record")
        if req.kind is not MediaKind.RECORD and not session.identity.grants.publish:
            raise Forbidden("media jobs need grant publish")
        handler = self._request_handlers.get(req.kind)
        if handler is not None:
            return await handler(session, me)
        if any(job.kind is req.kind for job in await self._workers.jobs_of(me.id)):
            # One at a time: each one holds a connection and media on a worker.
            raise Conflict(f"a {req.kind.value} job of yours is running in {req.room!r}")
        duration = req.duration if req.duration is not None else self._config.echo_duration
        job = await self.start_job(req.kind, session, me, {"duration": duration})
        return ok(job=job.id, kind=job.kind.value, worker=job.worker_participant)

    async def start_job(self, kind: MediaKind, session: Session, requester: Participant,
                        params: dict[str, Any], prefer: Job | None = None) -> Job:
        """Give a job to the least-loaded worker that takes it (Unavailable if none does),
        or first to the worker running `prefer`. `params` go with `media:assign`."""
        candidates = [w.session for w in await self._workers.candidates(kind)]
        if prefer is not None and prefer.worker in candidates:
            candidates.remove(prefer.worker)
            candidates.insert(0, prefer.worker)
        for worker in candidates:
            try:
                job = await self._workers.start(worker, kind, requester.room, session.id,
                                                requester.id)
            except Unavailable:
                continue  # gone meanwhile
            accepted = await self._assign(job, requester, params)
            if accepted is not None:
                job = await self._workers.accepted(job.id, *accepted)
                log.info("media job %s (%s) in %s for %s on worker %s", job.id, job.kind,
                         job.room, requester.id, worker)
                return job
            await self._workers.end(job.id)
        raise Unavailable(f"no media worker accepted the {kind.value} job")

    def on_request(self, kind: MediaKind, handler: RequestHandler) -> None:
        """Serve `media:request` of `kind` with `handler` (a room-wide job, not a private one)."""
        self._request_handlers[kind] = handler

    def on_job_lost(self, kind: MediaKind, handler: Callable[[Job], Awaitable[None]]) -> None:
        """Handle `kind` jobs whose worker is gone (instead of telling their requester)."""
        self._lost_handlers[kind] = handler

    async def job(self, job_id: str) -> Job:
        return await self._workers.job(job_id)

    async def end_job(self, job: Job, reason: MediaEndReason) -> None:
        await self._end(job, reason, tell_requester=False)

    async def _assign(self, job: Job, requester: Participant,
                      params: dict[str, Any]) -> tuple[ParticipantId, bool] | None:
        """Ask the worker to take the job: its hidden participant id and whether it tapped
        the room's forwarding, or None if it did not take it."""
        worker = await self._edge.sessions.get(job.worker)
        if worker is None or worker.connection is None:
            return None
        payload = {**params, "job": job.id, "room": job.room, "kind": job.kind.value,
                   "requester": {"id": requester.id, "user": requester.user}}
        try:
            ack: Any = await self._edge.sio.call(ServerEvent.MEDIA_ASSIGN, payload,
                                                 to=worker.connection, timeout=ASSIGN_TIMEOUT)
        except socketio.exceptions.SocketIOError as exc:
            log.warning("worker %s did not take job %s: %r", job.worker, job.id, exc)
            return None
        if not isinstance(ack, dict) or ack.get("ok") is not True:
            log.warning("worker %s refused job %s: %.200r", job.worker, job.id, ack)
            return None
        # Trust only what the node knows: the worker's own hidden participant in the room.
        try:
            mine = await self._edge.rooms.member(job.worker, job.room)
        except NotFound:
            mine = None
        if mine is None or not mine.hidden or mine.id != ack.get("participant"):
            log.warning("worker %s acked job %s without joining %s hidden",
                        job.worker, job.id, job.room)
            return None
        return mine.id, ack.get("tapped") is True

    async def _release(self, session: Session, data: object) -> Ack:
        job = await self._workers.job(parse_job(data))
        if job.requester == session.id:
            await self._end(job, MediaEndReason.RELEASED, tell_requester=False)
        elif job.worker == session.id:
            await self._end(job, MediaEndReason.FINISHED, tell_worker=False)
        else:
            raise NotFound(f"no media job {job.id!r}")
        return ok()

    # -- endings ------------------------------------------------------------------------

    async def _participant_left(self, participant: Participant, reason: LeaveReason) -> None:
        for job in await self._workers.jobs_of(participant.id):
            if job.kind is MediaKind.ECHO:  # recordings and forwarding are the room's
                await self._end(job, MediaEndReason.REQUESTER_LEFT, tell_requester=False)

    async def _session_ended(self, session: Session) -> None:
        for job in await self._workers.unregister(session.id):
            log.warning("media worker %s is gone: job %s (%s) in %s fails", session.id, job.id,
                        job.kind, job.room)
            handler = self._lost_handlers.get(job.kind)
            if handler is not None:
                await handler(job)
            else:
                await self._tell(job, job.requester, MediaEndReason.WORKER_LOST)

    async def _end(self, job: Job, reason: MediaEndReason, *, tell_requester: bool = True,
                   tell_worker: bool = True) -> None:
        if await self._workers.end(job.id) is None:
            return
        log.info("media job %s (%s) ended: %s", job.id, job.kind, reason)
        if tell_requester:
            await self._tell(job, job.requester, reason)
        if tell_worker:
            await self._tell(job, job.worker, reason)

    async def _tell(self, job: Job, to: SessionId, reason: MediaEndReason) -> None:
        payload: dict[str, Any] = {"room": job.room, "job": job.id, "kind": job.kind.value,
                                   "reason": reason.value}
        if reason is MediaEndReason.WORKER_LOST:
            payload["error"] = {"code": "unavailable", "message": "the media worker is gone"}
        await self._edge.send(to, ServerEvent.MEDIA_ENDED, payload)
