"""`recording:start` / `recording:stop`, `recording:state`, and the recordings REST API.

A recording is a `record` job on a media worker. Every participant is told with a
`recording:state` room event (it has a seq, so a resumed client replays it) and the
join ack carries the current one; the SDKs then open one upstream connection to the
worker (`worker` in the state). A recording belongs to the room: it ends on
`recording:stop` or when the last visible participant leaves, not when its starter
goes. If its worker dies it moves to another worker (the state names the new one;
the SDKs reconnect) and ends with `unavailable` when there is none.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from .auth import Identity
from .edge import Ack, SignalingEdge
from .errors import Conflict, Forbidden, NotFound, RtcError, Unavailable
from .forward_edge import ForwardEdge
from .front import route
from .httputil import ascii_filename, error_response, identity
from .ids import RoomId, UserId
from .media_edge import MediaEdge
from .observe import Seen
from .protocol import (
    ClientEvent,
    LeaveReason,
    MediaEndReason,
    MediaKind,
    ServerEvent,
    ok,
    parse_room_only,
)
from .recordings import Recording, RecordingStore, new_recording_id
from .rooms import Participant
from .sessions import Session
from .store import Tx
from .workers import Job

log = logging.getLogger(__name__)


def _key(room: RoomId) -> str:
    return "recording:" + room


class RecordingEdge:
    def __init__(self, edge: SignalingEdge, media: MediaEdge, files: RecordingStore,
                 secret: str, forwarding: ForwardEdge) -> None:
        self._edge = edge
        self._state = edge.store
        self._media = media
        self._forwarding = forwarding
        self._store = files
        self._secret = secret
        edge.handle(ClientEvent.RECORDING_START, self._start)
        edge.handle(ClientEvent.RECORDING_STOP, self._stop)
        edge.on_participant_left(self._participant_left)
        edge.add_to_join_ack(self._join_fields)
        media.on_job_lost(MediaKind.RECORD, self._worker_lost)
        media.on_request(MediaKind.RECORD, self._requested)

    async def active(self, room: RoomId) -> Recording | None:
        return await self._state.get(_key(room), Recording)

    async def active_count(self, rooms: list[RoomId]) -> int:
        """How many of `rooms` are being recorded (one read)."""
        found = await self._state.get_many([_key(r) for r in rooms], Recording)
        return sum(1 for rec in found if rec is not None)

    async def _save(self, rec: Recording) -> None:
        await self._state.transact([], lambda tx: tx.put(_key(rec.room), rec))

    async def _drop(self, rec: Recording) -> bool:
        """Forget a room's recording; False when it was no longer `rec`."""

        def drop(tx: Tx) -> bool:
            found = tx.get(_key(rec.room), Recording)
            if found is None or found.id != rec.id:
                return False
            tx.delete(_key(rec.room))
            return True

        return await self._state.transact([_key(rec.room)], drop)

    # -- events --------------------------------------------------------------------------

    async def _start(self, session: Session, data: object) -> Ack:
        room = parse_room_only(data)
        return await self._requested(session, await self._edge.rooms.member(session.id, room))

    async def _requested(self, session: Session, me: Participant) -> Ack:
        """`recording:start`, or `media:request {kind: "record"}`, which is the same."""
        if not session.identity.grants.record:
            raise Forbidden("recording needs grant record")
        return await self._begin(session, me, by=session.user)

    async def start_for(self, room: RoomId, by: str) -> Ack:
        """An operator starts recording (the admin API): a participant of the room stands
        in as the job's requester, as when a recording moves to another worker."""
        found = await self._edge.rooms.room(room)
        for requester in found.participants.values() if found is not None else ():
            session = await self._edge.sessions.get(requester.session)
            if session is not None:
                return await self._begin(session, requester, by=by)
        raise NotFound(f"no room {room!r} with participants to record")

    async def stop_for(self, room: RoomId, by: str) -> Ack:
        rec = await self.active(room)
        if rec is None:
            raise NotFound(f"room {room!r} is not being recorded")
        seq = await self._end(rec, by=by, reason="stopped")
        self._edge.audit.record("recording_stop", user=by, room=room, recording=rec.id)
        return ok(seq=seq, recording=rec.id)

    async def _begin(self, session: Session, me: Participant, by: str) -> Ack:
        room = me.room
        rec = Recording(new_recording_id(), room, UserId(by), time.time())

        def claim(tx: Tx) -> None:
            if tx.get(_key(room), Recording) is not None:
                raise Conflict(f"room {room!r} is being recorded already")
            tx.put(_key(room), rec)

        await self._state.transact([_key(room)], claim)
        try:
            await self._give_to_worker(rec, session, me)
        except BaseException:
            await self._drop(rec)
            raise
        await self._save(rec)
        seq = await self._announce(rec, rec.wire())
        log.info("recording %s of %s started by %s on worker %s", rec.id, room, by, rec.worker)
        self._edge.audit.record("recording_start", user=by, room=room, recording=rec.id)
        self._edge.observers.emit(Seen.RECORDING_STARTED, room=room, recording=rec.id, by=by)
        return ok(seq=seq, **rec.wire())

    async def _give_to_worker(self, rec: Recording, session: Session,
                              requester: Participant) -> None:
        params: dict[str, Any] = {"recording": rec.id, "startedAt": int(rec.started_at * 1000),
                                  "by": rec.by}
        forwarding = await self._forwarding.job(rec.room)
        if forwarding is not None:
            # Its worker already receives everyone: it can record without upstreams.
            params["tap"] = forwarding.id
        job = await self._media.start_job(MediaKind.RECORD, session, requester, params,
                                          prefer=forwarding)
        rec.job, rec.worker, rec.upstream = job.id, job.worker_participant, not job.tapped

    async def _stop(self, session: Session, data: object) -> Ack:
        room = parse_room_only(data)
        await self._edge.rooms.member(session.id, room)
        if not session.identity.grants.record:
            raise Forbidden("recording needs grant record")
        return await self.stop_for(room, by=session.user)

    async def _end(self, rec: Recording, *, by: str | None, reason: str,
                   error: dict[str, str] | None = None) -> int:
        if not await self._drop(rec):
            return 0  # ended already, maybe on another node
        if rec.job is not None:
            try:
                await self._media.end_job(await self._media.job(rec.job),
                                          MediaEndReason.RELEASED)
            except NotFound:
                pass  # its worker is gone already
        state: dict[str, Any] = {"recording": rec.id, "active": False, "by": by,
                                 "startedAt": int(rec.started_at * 1000),
                                 "stoppedAt": int(time.time() * 1000), "reason": reason}
        if error is not None:
            state["error"] = error
        log.info("recording %s of %s ended: %s", rec.id, rec.room, reason)
        self._edge.observers.emit(Seen.RECORDING_FINISHED, room=rec.room, recording=rec.id,
                                  by=by, reason=reason, startedAt=state["startedAt"],
                                  stoppedAt=state["stoppedAt"], error=error)
        return await self._announce(rec, state)

    async def _announce(self, rec: Recording, state: dict[str, Any]) -> int:
        try:
            event = await self._edge.rooms.announce(rec.room, ServerEvent.RECORDING_STATE, state)
        except NotFound:
            return 0  # nobody left to tell
        return event.seq

    async def _join_fields(self, room: RoomId) -> Ack:
        rec = await self.active(room)
        return {"recording": rec.wire() if rec is not None and rec.job is not None else None}

    async def _participant_left(self, participant: Participant, reason: LeaveReason) -> None:
        if participant.hidden:
            return
        rec = await self.active(participant.room)
        if rec is not None and not await self._edge.rooms.visible(rec.room):
            await self._end(rec, by=None, reason="room_empty")

    async def _worker_lost(self, job: Job) -> None:
        rec = await self.active(job.room)
        if rec is None or rec.job != job.id:
            return
        room = await self._edge.rooms.room(rec.room)
        others = list(room.participants.values()) if room is not None else []
        for requester in others:
            session = await self._edge.sessions.get(requester.session)
            if session is None:
                continue
            try:
                await self._give_to_worker(rec, session, requester)
            except Unavailable:
                break
            await self._save(rec)
            log.warning("recording %s of %s moved to worker %s", rec.id, rec.room, rec.worker)
            await self._announce(rec, {**rec.wire(), "moved": True})
            return
        await self._end(rec, by=None, reason="worker_lost",
                        error={"code": "unavailable", "message": "no media worker can record"})

    # -- REST ----------------------------------------------------------------------------

    def add_routes(self, app: web.Application) -> None:
        route(app, "GET", "/api/recordings", self._list)
        route(app, "GET", "/api/recordings/{id}", self._get)
        route(app, "GET", "/api/recordings/{id}/files/{name}", self._download)
        route(app, "DELETE", "/api/recordings/{id}", self._delete)

    def _caller(self, request: web.Request) -> Identity:
        who = identity(request, self._secret)
        if not (who.grants.record or who.grants.admin):
            raise Forbidden("the recordings API needs grant record or admin")
        return who

    def _visible(self, who: Identity, catalog: dict[str, Any]) -> bool:
        room = catalog.get("room")
        return who.grants.admin or (isinstance(room, str)
                                    and who.grants.allows_room(RoomId(room)))

    def _catalog(self, request: web.Request) -> tuple[Identity, dict[str, Any]]:
        who = self._caller(request)
        catalog = self._store.catalog(request.match_info["id"])
        if not self._visible(who, catalog):
            raise NotFound(f"no recording {request.match_info['id']!r}")
        return who, catalog

    async def _list(self, request: web.Request) -> web.Response:
        try:
            who = self._caller(request)
        except RtcError as exc:
            return error_response(exc)
        return web.json_response({"ok": True, "recordings": [
            c for c in self._store.list() if self._visible(who, c)]})

    async def _get(self, request: web.Request) -> web.Response:
        try:
            _, catalog = self._catalog(request)
        except RtcError as exc:
            return error_response(exc)
        return web.json_response({"ok": True, "recording": catalog})

    async def _download(self, request: web.Request) -> web.StreamResponse:
        try:
            _, catalog = self._catalog(request)
            path = self._store.file(str(catalog["id"]), request.match_info["name"])
        except RtcError as exc:
            return error_response(exc)
        return web.FileResponse(path, headers={
            "Content-Type": _content_type(path.name),
            "Content-Disposition": f'attachment; filename="{ascii_filename(path.name)}"'})

    async def _delete(self, request: web.Request) -> web.Response:
        try:
            _, catalog = self._catalog(request)
            rec = await self.active(RoomId(str(catalog.get("room"))))
            if rec is not None and rec.id == catalog["id"]:
                raise Conflict("the recording is still running; stop it first")
            self._store.delete(str(catalog["id"]))
        except RtcError as exc:
            return error_response(exc)
        log.info("recording %s deleted", catalog["id"])
        return web.json_response({"ok": True})


def _content_type(name: str) -> str:
    if name.endswith(".webm"):
        return "video/webm"
    if name.endswith(".mkv"):
        return "video/x-matroska"
    if name.endswith(".json"):
        return "application/json"
    return "application/octet-stream"
