"""The Socket.IO edge: authenticate connects, validate events, call the room service, ack.

Nothing here decides anything: rules live in `rooms`, payload shapes in
`protocol`. Each handler turns an RtcError into a coded ack and a log line, so a
client's bad input never reaches another client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import socketio

from .auth import Identity, verify_token
from .config import Config
from .errors import BadRequest, ErrorCode, RtcError
from .ice import ice_servers
from .ids import ConnectionId, RoomId
from .protocol import (
    ClientEvent,
    LeaveReason,
    ServerEvent,
    error,
    ok,
    parse_join,
    parse_leave,
    parse_signal,
    parse_update,
)
from .rooms import Left, RoomService

log = logging.getLogger(__name__)

Handler = Callable[[ConnectionId, Identity, object], Awaitable[dict[str, Any]]]


def _channel(room: RoomId) -> str:
    """The Socket.IO room carrying one room's broadcasts (kept apart from sids by its prefix)."""
    return "room:" + room


class SignalingEdge:
    """Registers the protocol's handlers on a python-socketio AsyncServer."""

    def __init__(self, sio: socketio.AsyncServer, config: Config, rooms: RoomService) -> None:
        assert config.secret is not None
        self._sio = sio
        self._config = config
        self._secret = config.secret
        self._rooms = rooms
        self._identities: dict[ConnectionId, Identity] = {}
        handlers: dict[ClientEvent, Handler] = {
            ClientEvent.ROOM_JOIN: self._join,
            ClientEvent.ROOM_LEAVE: self._leave,
            ClientEvent.SIGNAL: self._signal,
            ClientEvent.PARTICIPANT_UPDATE: self._update,
        }
        sio.on("connect", self._connect)
        sio.on("disconnect", self._disconnect)
        for event, handler in handlers.items():
            sio.on(event.value, self._guarded(event.value, handler))
        sio.on("*", self._unknown)

    def connections(self) -> list[ConnectionId]:
        return list(self._identities)

    async def _connect(self, sid: str, environ: dict[str, Any], auth: object = None) -> None:
        if auth is None:
            auth = {}
        if not isinstance(auth, dict):
            self._refuse(sid, BadRequest("auth must be an object"), environ)
        try:
            who = verify_token(self._secret, auth.get("token"))
        except RtcError as exc:
            self._refuse(sid, exc, environ)
        self._identities[ConnectionId(sid)] = who
        log.info("connect sid=%s user=%s", sid, who.user)

    @staticmethod
    def _refuse(sid: str, exc: RtcError, environ: dict[str, Any]) -> NoReturn:
        log.info("connect refused sid=%s peer=%s code=%s: %s",
                 sid, environ.get("REMOTE_ADDR"), exc.code, exc.message)
        raise socketio.exceptions.ConnectionRefusedError(exc.message, exc.to_wire())

    async def _disconnect(self, sid: str, reason: object = None) -> None:
        conn = ConnectionId(sid)
        if self._identities.pop(conn, None) is None:
            return
        # One room at a time: each seq is assigned right before its emit is queued,
        # so no other event of that room can be queued between them.
        for room in self._rooms.joined_rooms(conn):
            await self._emit_left(self._rooms.leave(conn, room, LeaveReason.DISCONNECT))
        log.info("disconnect sid=%s reason=%s", sid, reason)

    def _guarded(self, event: str, handler: Handler) -> Callable[..., Awaitable[dict[str, Any]]]:
        async def handle(sid: str, *args: Any) -> dict[str, Any]:
            conn = ConnectionId(sid)
            who = self._identities.get(conn)
            try:
                if who is None:  # an event racing its own disconnect
                    raise BadRequest("not connected")
                if len(args) != 1:
                    raise BadRequest("expected exactly one payload argument")
                return await handler(conn, who, args[0])
            except RtcError as exc:
                log.info("refused %s sid=%s code=%s: %s", event, sid, exc.code, exc.message)
                return error(exc.code, exc.message)
            except Exception:
                log.exception("internal error handling %s sid=%s", event, sid)
                return error(ErrorCode.INTERNAL, "internal error")

        return handle

    async def _unknown(self, event: str, sid: str, *args: Any) -> dict[str, Any]:
        log.info("unknown event %.64r sid=%s", event, sid)
        return error(ErrorCode.BAD_REQUEST, f"unknown event {event[:64]!r}")

    async def _join(self, conn: ConnectionId, who: Identity, data: object) -> dict[str, Any]:
        req = parse_join(data, self._config.max_meta_bytes)
        joined = self._rooms.join(conn, who, req.room, req.name, req.meta)
        me = joined.participant
        # Enter the channel before broadcasting: any later room event must reach the joiner.
        await self._sio.enter_room(conn, _channel(req.room))
        await self._sio.emit(
            ServerEvent.PARTICIPANT_JOINED,
            {"room": req.room, "seq": joined.seq, "participant": me.public(), "polite": False},
            to=_channel(req.room),
            skip_sid=conn,
        )
        log.info("join room=%s participant=%s user=%s seq=%d",
                 req.room, me.id, me.user, joined.seq)
        return ok(
            room=req.room,
            seq=joined.seq,
            self={"id": me.id, "user": me.user, "name": me.name},
            participants=[{**p.public(), "polite": True} for p in joined.others],
            iceServers=ice_servers(self._config, who.user),
        )

    async def _leave(self, conn: ConnectionId, who: Identity, data: object) -> dict[str, Any]:
        req = parse_leave(data)
        await self._emit_left(self._rooms.leave(conn, req.room, LeaveReason.LEAVE))
        return ok()

    async def _emit_left(self, left: Left) -> None:
        p = left.participant
        await self._sio.leave_room(p.connection, _channel(p.room))
        await self._sio.emit(
            ServerEvent.PARTICIPANT_LEFT,
            {"room": p.room, "seq": left.seq, "id": p.id, "reason": left.reason.value},
            to=_channel(p.room),
        )
        log.info("leave room=%s participant=%s reason=%s seq=%d",
                 p.room, p.id, left.reason, left.seq)

    async def _signal(self, conn: ConnectionId, who: Identity, data: object) -> dict[str, Any]:
        req = parse_signal(data, self._config.max_sdp_bytes)
        sender, target = self._rooms.route(conn, req.room, req.to)
        await self._sio.emit(
            ServerEvent.SIGNAL, {"room": req.room, "from": sender.id, **req.body},
            to=target.connection,
        )
        return ok()

    async def _update(self, conn: ConnectionId, who: Identity, data: object) -> dict[str, Any]:
        req = parse_update(data)
        updated = self._rooms.update(conn, req.room, req.state)
        await self._sio.emit(
            ServerEvent.PARTICIPANT_UPDATED,
            {"room": req.room, "seq": updated.seq, "participant": updated.participant.public()},
            to=_channel(req.room),
            skip_sid=conn,
        )
        return ok(seq=updated.seq)
