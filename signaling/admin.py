"""The admin REST API, for the platform's backend and operators (docs/admin.md; the
OpenAPI document is served at /api/openapi.json).

Callers present a token with grant `admin` (`Authorization: Bearer`); its `rooms` grant
bounds what they see and act on. A room outside it looks like a room that does not
exist. Minting tokens needs an admin token for every room (`rooms: ["*"]`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .auth import Grants, Identity, issue_token
from .config import Config
from .edge import SignalingEdge
from .errors import BadRequest, Forbidden, NotFound, RtcError
from .front import route
from .httputil import error_response, identity
from .ids import CallId, ParticipantId, RoomId
from .protocol import MAX_NAME_LEN, ROOM_RE, LeaveReason, ServerEvent
from .recording_edge import RecordingEdge
from .rooms import Participant
from .timeline import Timelines, call_key, room_key

log = logging.getLogger(__name__)

MAX_DATA_BYTES = 16 * 1024
MAX_TOPIC_LEN = 64
MAX_TOKEN_TTL = 7 * 24 * 3600
_USER_RE = re.compile(r"[^\x00-\x1f]{1,128}")

Handler = Callable[[web.Request, Identity], Awaitable[dict[str, Any]]]


class AdminApi:
    def __init__(self, config: Config, edge: SignalingEdge, recordings: RecordingEdge,
                 timelines: Timelines) -> None:
        assert config.secret is not None
        self._config = config
        self._secret = config.secret
        self._edge = edge
        self._recordings = recordings
        self._timelines = timelines

    def add_routes(self, app: web.Application) -> None:
        def add(method: str, path: str, handler: Handler) -> None:
            route(app, method, "/api/admin" + path, self._route(handler))

        add("GET", "/rooms", self._rooms)
        add("GET", "/rooms/{room}", self._room)
        add("DELETE", "/rooms/{room}", self._close)
        add("DELETE", "/rooms/{room}/participants/{id}", self._kick)
        add("POST", "/rooms/{room}/participants/{id}/mute", self._mute)
        add("POST", "/rooms/{room}/data", self._data)
        add("POST", "/rooms/{room}/recording", self._record)
        add("DELETE", "/rooms/{room}/recording", self._stop_recording)
        add("GET", "/rooms/{room}/timeline", self._room_timeline)
        add("GET", "/calls/{id}/timeline", self._call_timeline)
        add("POST", "/tokens", self._mint)

    def _route(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def route(request: web.Request) -> web.Response:
            try:
                who = identity(request, self._secret)
                if not who.grants.admin:
                    raise Forbidden("the admin API needs grant admin")
                result = await handler(request, who)
            except RtcError as exc:
                log.info("admin %s %s refused: %s %s", request.method, request.path,
                         exc.code, exc.message)
                return error_response(exc)
            return web.json_response({"ok": True, **result})

        return route

    # -- rooms -------------------------------------------------------------------------

    async def _rooms(self, request: web.Request, who: Identity) -> dict[str, Any]:
        rooms = []
        for name in await self._edge.rooms.names():
            room = await self._edge.rooms.room(name) if who.grants.allows_room(name) else None
            if room is not None:
                rooms.append({"room": name, "participants": len(room.participants),
                              "seq": room.seq})
        return {"rooms": rooms}

    async def _room(self, request: web.Request, who: Identity) -> dict[str, Any]:
        name = _room_of(request, who)
        room = await self._edge.rooms.room(name)
        if room is None:
            raise NotFound(f"no room {name!r}")
        recording = await self._recordings.active(name)
        return {"room": name, "seq": room.seq,
                "participants": [_described(p, hidden=False)
                                 for p in room.participants.values()],
                "hidden": [_described(p, hidden=True) for p in room.hidden.values()],
                "recording": recording.wire() if recording is not None else None}

    async def _close(self, request: web.Request, who: Identity) -> dict[str, Any]:
        name = _room_of(request, who)
        room = await self._edge.rooms.room(name)
        if room is None:
            raise NotFound(f"no room {name!r}")
        removed = []
        for participant in list(room.participants):
            try:
                await self._edge.remove(name, participant, LeaveReason.CLOSED, by=who.user)
            except NotFound:
                continue  # left meanwhile
            removed.append(participant)
        return {"removed": removed}

    async def _kick(self, request: web.Request, who: Identity) -> dict[str, Any]:
        name = _room_of(request, who)
        target = await self._edge.remove(name, ParticipantId(request.match_info["id"]),
                                         LeaveReason.KICKED, by=who.user)
        return {"removed": target.id}

    async def _mute(self, request: web.Request, who: Identity) -> dict[str, Any]:
        name = _room_of(request, who)
        body = await _body(request, {"audio", "video"})
        kinds = {k: body.get(k, False) for k in ("audio", "video")}
        if not all(isinstance(v, bool) for v in kinds.values()) or not any(kinds.values()):
            raise BadRequest("give audio: true and/or video: true")
        target = await self._participant(name, ParticipantId(request.match_info["id"]))
        delivered = await self._edge.send(target.session, ServerEvent.MUTE_REQUEST,
                                          {"room": name, **kinds, "by": who.user})
        return {"delivered": delivered}

    async def _data(self, request: web.Request, who: Identity) -> dict[str, Any]:
        name = _room_of(request, who)
        body = await _body(request, {"data", "topic"})
        if "data" not in body:
            raise BadRequest("data is required")
        if len(json.dumps(body["data"], separators=(",", ":"))) > MAX_DATA_BYTES:
            raise BadRequest(f"data exceeds {MAX_DATA_BYTES} bytes")
        topic = body.get("topic")
        if topic is not None and (not isinstance(topic, str)
                                  or not 0 < len(topic) <= MAX_TOPIC_LEN):
            raise BadRequest(f"topic must be a string of 1-{MAX_TOPIC_LEN} characters")
        payload: dict[str, Any] = {"data": body["data"], "by": who.user}
        if topic is not None:
            payload["topic"] = topic
        event = await self._edge.rooms.announce(name, ServerEvent.ROOM_DATA, payload)
        return {"seq": event.seq}

    async def _record(self, request: web.Request, who: Identity) -> dict[str, Any]:
        return await self._recordings.start_for(_room_of(request, who), by=who.user)

    async def _stop_recording(self, request: web.Request, who: Identity) -> dict[str, Any]:
        return await self._recordings.stop_for(_room_of(request, who), by=who.user)

    async def _participant(self, name: RoomId, participant: ParticipantId) -> Participant:
        room = await self._edge.rooms.room(name)
        target = room.participants.get(participant) if room is not None else None
        if target is None:
            raise NotFound(f"no participant {participant!r} in room {name!r}")
        return target

    # -- timelines ---------------------------------------------------------------------

    async def _room_timeline(self, request: web.Request, who: Identity) -> dict[str, Any]:
        name = _room_of(request, who)
        return {"room": name, "events": await self._timelines.read(room_key(name))}

    async def _call_timeline(self, request: web.Request, who: Identity) -> dict[str, Any]:
        _every_room(who, "call timelines")
        call = CallId(request.match_info["id"])
        return {"call": call, "events": await self._timelines.read(call_key(call))}

    # -- tokens ------------------------------------------------------------------------

    async def _mint(self, request: web.Request, who: Identity) -> dict[str, Any]:
        _every_room(who, "minting tokens")
        body = await _body(request, {"user", "name", "grants", "ttl"})
        user, name = body.get("user"), body.get("name")
        if not isinstance(user, str) or not _USER_RE.fullmatch(user):
            raise BadRequest("user must be a string of 1-128 printable characters")
        if name is not None and (not isinstance(name, str)
                                 or not 0 < len(name) <= MAX_NAME_LEN):
            raise BadRequest(f"name must be a string of 1-{MAX_NAME_LEN} characters")
        try:
            grants = Grants.from_claim(body.get("grants", {"rooms": ["*"], "publish": True,
                                                            "subscribe": True}))
        except RtcError as exc:
            raise BadRequest(exc.message) from None
        if grants.service:
            raise Forbidden("service tokens are minted with the node's secret only")
        ttl = body.get("ttl", self._config.token_ttl)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 0 < ttl <= MAX_TOKEN_TTL:
            raise BadRequest(f"ttl must be 1-{MAX_TOKEN_TTL} seconds")
        token = issue_token(self._secret, user, name=name, grants=grants, ttl=ttl)
        log.info("admin %s minted a token for %s (%d s)", who.user, user, ttl)
        self._edge.audit.record("token_minted", user=user, by=who.user,
                                admin=grants.admin or None)
        return {"token": token, "ttl": ttl}


def _room_of(request: web.Request, who: Identity) -> RoomId:
    name = request.match_info["room"]
    if not ROOM_RE.fullmatch(name):
        raise BadRequest("not a room name")
    room = RoomId(name)
    if not who.grants.allows_room(room):
        raise NotFound(f"no room {room!r}")  # as if it did not exist
    return room


def _every_room(who: Identity, what: str) -> None:
    if "*" not in who.grants.rooms:
        raise Forbidden(f"{what} needs an admin token for every room (rooms: [\"*\"])")


async def _body(request: web.Request, fields: set[str]) -> dict[str, Any]:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body must be JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    unknown = set(body) - fields
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    return body


def _described(p: Participant, *, hidden: bool) -> dict[str, Any]:
    return {**p.public(), "hidden": hidden, "meta": p.meta}
