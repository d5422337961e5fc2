"""Protocol v1: event names, payload parsing and validation (docs/protocol.md is its document).

Parsers are pure functions from an untrusted JSON value to a typed request; each
raises BadRequest saying what is wrong. They run on every event, so they check
exactly what the contract states and copy only the fields it names.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from .errors import BadRequest
from .ids import CallId, ParticipantId, RoomId, UserId

PROTOCOL_VERSION = 1


class ClientEvent(StrEnum):
    """Events a client sends; every one takes an ack."""

    ROOM_JOIN = "room:join"
    ROOM_LEAVE = "room:leave"
    SIGNAL = "signal"
    PARTICIPANT_UPDATE = "participant:update"
    PING = "ping"
    SESSION_END = "session:end"
    AUTH_REFRESH = "auth:refresh"
    CALL_INVITE = "call:invite"
    CALL_ACCEPT = "call:accept"
    CALL_DECLINE = "call:decline"
    CALL_CANCEL = "call:cancel"
    CALL_HANGUP = "call:hangup"
    FILE_OFFER = "file:offer"
    FILE_ACCEPT = "file:accept"
    FILE_REJECT = "file:reject"
    FILE_PROGRESS = "file:progress"
    FILE_DONE = "file:done"
    FILE_CANCEL = "file:cancel"
    FILE_SUBSCRIBE = "file:subscribe"
    FILE_UNSUBSCRIBE = "file:unsubscribe"
    MEDIA_REQUEST = "media:request"
    MEDIA_RELEASE = "media:release"
    RECORDING_START = "recording:start"
    RECORDING_STOP = "recording:stop"
    # Media workers only (grant `service`):
    WORKER_REGISTER = "worker:register"
    WORKER_LOAD = "worker:load"
    MEDIA_REPORT = "media:report"


class ServerEvent(StrEnum):
    """Events the server emits."""

    PARTICIPANT_JOINED = "participant:joined"
    PARTICIPANT_LEFT = "participant:left"
    PARTICIPANT_UPDATED = "participant:updated"
    SIGNAL = "signal"
    SESSION = "session"
    SERVER_DRAINING = "server:draining"
    AUTH_EXPIRING = "auth:expiring"
    AUTH_EXPIRED = "auth:expired"
    CALL_INCOMING = "call:incoming"
    CALL_STATE = "call:state"
    FILE_STATE = "file:state"
    MEDIA_REPORT = "media:report"
    MEDIA_ENDED = "media:ended"
    RECORDING_STATE = "recording:state"
    ROOM_MODE = "room:mode"
    ROOM_DATA = "room:data"
    MUTE_REQUEST = "mute:request"
    # To media workers only, with an ack:
    MEDIA_ASSIGN = "media:assign"


class LeaveReason(StrEnum):
    LEAVE = "leave"
    DISCONNECT = "disconnect"
    TIMEOUT = "timeout"
    # Removed by an operator (the admin API): one participant, or everyone when the room
    # is closed.
    KICKED = "kicked"
    CLOSED = "closed"


class RoomMode(StrEnum):
    """How a room's media flows: peer to peer, or through a media worker."""

    MESH = "mesh"
    FORWARD = "forward"


class MediaKind(StrEnum):
    """What a media worker does for a `media:request`."""

    ECHO = "echo"
    RECORD = "record"
    FORWARD = "forward"


class MediaEndReason(StrEnum):
    RELEASED = "released"
    WORKER_LOST = "worker_lost"
    REQUESTER_LEFT = "requester_left"
    FINISHED = "finished"


class ConnectionState(StrEnum):
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"


STATE_KEYS = ("audio", "video", "screen", "hand", "speaking")
DESCRIPTION_TYPES = frozenset({"offer", "answer", "pranswer", "rollback"})
ROOM_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")
MAX_NAME_LEN = 64
MAX_ID_LEN = 64
MAX_CANDIDATE_LEN = 1024
MAX_MID_LEN = 64
MAX_MLINE_INDEX = 1024
# A session description's lines: far more than a forwarded room of hundreds of tracks
# has, far fewer than the size cap allows (a parser's cost grows with them).
MAX_SDP_LINES = 10_000


@dataclass(frozen=True, slots=True)
class JoinRequest:
    room: RoomId
    name: str | None
    meta: dict[str, Any] | None
    hidden: bool = False


@dataclass(frozen=True, slots=True)
class LeaveRequest:
    room: RoomId


class SignalRequest(NamedTuple):  # not a frozen dataclass: made for every relayed signal
    room: RoomId
    to: ParticipantId
    # The normalized body forwarded to the target: {"description": ...} or {"candidate": ...}.
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class UpdateRequest:
    room: RoomId
    state: dict[str, bool]


def _object(data: object, fields: frozenset[str]) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise BadRequest("payload must be an object")
    if not data.keys() <= fields:
        unknown = data.keys() - fields
        raise BadRequest(f"unknown field(s): {', '.join(sorted(map(str, unknown)))}")
    return data


def _room(data: dict[str, Any]) -> RoomId:
    room = data.get("room")
    if not isinstance(room, str) or not ROOM_RE.fullmatch(room):
        raise BadRequest("room must be 1-128 characters of A-Z a-z 0-9 . _ : @ -")
    return RoomId(room)


_JOIN_FIELDS = frozenset({"room", "name", "meta", "hidden"})
_ROOM_FIELDS = frozenset({"room"})
_SIGNAL_FIELDS = frozenset({"room", "to", "description", "candidate", "restart", "pc"})
# Which of several peer connections between the same two participants a signal is for.
SIGNAL_PCS = frozenset({"up", "down", "record"})
_UPDATE_FIELDS = frozenset({"room", "state"})
_DESCRIPTION_FIELDS = frozenset({"type", "sdp"})
_CANDIDATE_FIELDS = frozenset({"candidate", "sdpMid", "sdpMLineIndex", "usernameFragment"})


def parse_join(data: object, max_meta_bytes: int) -> JoinRequest:
    obj = _object(data, _JOIN_FIELDS)
    room = _room(obj)
    name = obj.get("name")
    if name is not None and (not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LEN):
        raise BadRequest(f"name must be a string of 1-{MAX_NAME_LEN} characters")
    meta = obj.get("meta")
    if meta is not None:
        if not isinstance(meta, dict):
            raise BadRequest("meta must be an object")
        if len(json.dumps(meta, separators=(",", ":"))) > max_meta_bytes:
            raise BadRequest(f"meta exceeds {max_meta_bytes} bytes")
    hidden = obj.get("hidden", False)
    if not isinstance(hidden, bool):
        raise BadRequest("hidden must be a boolean")
    return JoinRequest(room=room, name=name, meta=meta, hidden=hidden)


def parse_leave(data: object) -> LeaveRequest:
    return LeaveRequest(room=_room(_object(data, _ROOM_FIELDS)))


def parse_signal(data: object, max_sdp_bytes: int) -> SignalRequest:
    obj = _object(data, _SIGNAL_FIELDS)
    room = _room(obj)
    to = obj.get("to")
    if not isinstance(to, str) or not 0 < len(to) <= MAX_ID_LEN:
        raise BadRequest("to must be a participant id")
    if ("description" in obj) + ("candidate" in obj) + ("restart" in obj) != 1:
        raise BadRequest("exactly one of description, candidate and restart is required")
    body: dict[str, Any]
    if "description" in obj:
        body = {"description": _description(obj["description"], max_sdp_bytes)}
    elif "candidate" in obj:
        body = {"candidate": _candidate(obj["candidate"])}
    elif obj["restart"] is True:
        body = {"restart": True}
    else:
        raise BadRequest("restart must be true")
    if "pc" in obj:
        if obj["pc"] not in SIGNAL_PCS:
            raise BadRequest("pc must be up, down or record")
        body["pc"] = obj["pc"]
    return SignalRequest(room=room, to=ParticipantId(to), body=body)


def _description(value: object, max_sdp_bytes: int) -> dict[str, str]:
    desc = _object(value, _DESCRIPTION_FIELDS)
    kind = desc.get("type")
    if kind not in DESCRIPTION_TYPES:
        raise BadRequest("description.type must be offer, answer, pranswer or rollback")
    sdp = desc.get("sdp", "")
    if not isinstance(sdp, str):
        raise BadRequest("description.sdp must be a string")
    # Characters bound bytes from below; encode only when the cheap check is inconclusive.
    if len(sdp) > max_sdp_bytes or (len(sdp) * 4 > max_sdp_bytes
                                    and len(sdp.encode()) > max_sdp_bytes):
        raise BadRequest(f"description.sdp exceeds {max_sdp_bytes} bytes")
    if kind != "rollback" and not sdp:
        raise BadRequest("description.sdp is required")
    # Counting lines is a scan: only a description longer than the cap in characters
    # can have more lines than it.
    if len(sdp) > MAX_SDP_LINES and sdp.count("\n") > MAX_SDP_LINES:
        raise BadRequest(f"description.sdp has more than {MAX_SDP_LINES} lines")
    return {"type": kind, "sdp": sdp}


def _candidate(value: object) -> dict[str, Any] | None:
    if value is None:  # end-of-candidates
        return None
    cand = _object(value, _CANDIDATE_FIELDS)
    text = cand.get("candidate")
    if not isinstance(text, str) or len(text) > MAX_CANDIDATE_LEN:
        raise BadRequest(f"candidate.candidate must be a string of at most {MAX_CANDIDATE_LEN}")
    mid = cand.get("sdpMid")
    if mid is not None and (not isinstance(mid, str) or len(mid) > MAX_MID_LEN):
        raise BadRequest("candidate.sdpMid must be a short string or null")
    index = cand.get("sdpMLineIndex")
    if index is not None and (
        not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= MAX_MLINE_INDEX
    ):
        raise BadRequest("candidate.sdpMLineIndex must be a small non-negative integer or null")
    ufrag = cand.get("usernameFragment")
    if ufrag is not None and (not isinstance(ufrag, str) or len(ufrag) > MAX_ID_LEN * 4):
        raise BadRequest("candidate.usernameFragment must be a short string or null")
    if mid is None and index is None and text:
        raise BadRequest("candidate needs sdpMid or sdpMLineIndex")
    out: dict[str, Any] = {"candidate": text, "sdpMid": mid, "sdpMLineIndex": index}
    if ufrag is not None:
        out["usernameFragment"] = ufrag
    return out


def parse_update(data: object) -> UpdateRequest:
    obj = _object(data, _UPDATE_FIELDS)
    room = _room(obj)
    state = obj.get("state")
    if not isinstance(state, dict) or not state:
        raise BadRequest("state must be a non-empty object")
    for key, value in state.items():
        if key not in STATE_KEYS:
            raise BadRequest(f"state.{key} is not one of {', '.join(STATE_KEYS)}")
        if not isinstance(value, bool):
            raise BadRequest(f"state.{key} must be a boolean")
    return UpdateRequest(room=room, state=dict(state))


MAX_CID_LEN = 64
MAX_USER_LEN = 128
MAX_REASON_LEN = 128


@dataclass(frozen=True, slots=True)
class InviteRequest:
    to: list[UserId]
    media: dict[str, bool]
    room: RoomId | None


@dataclass(frozen=True, slots=True)
class CallRequest:
    call_id: CallId
    reason: str | None = None


_INVITE_FIELDS = frozenset({"to", "media", "room"})
_CALL_FIELDS = frozenset({"callId"})
_DECLINE_FIELDS = frozenset({"callId", "reason"})


def _user(value: object) -> UserId:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_USER_LEN:
        raise BadRequest(f"user ids are strings of 1-{MAX_USER_LEN} characters")
    return UserId(value)


def parse_invite(data: object) -> InviteRequest:
    obj = _object(data, _INVITE_FIELDS)
    to = obj.get("to")
    users = [_user(u) for u in (to if isinstance(to, list) else [to])]
    media = obj.get("media")
    if not isinstance(media, dict) or set(media) - {"audio", "video"} or not all(
        isinstance(v, bool) for v in media.values()
    ):
        raise BadRequest("media must be {audio: bool, video: bool}")
    media = {"audio": media.get("audio", False), "video": media.get("video", False)}
    room = _room(obj) if "room" in obj else None
    return InviteRequest(to=users, media=media, room=room)


def parse_call(data: object) -> CallRequest:
    obj = _object(data, _CALL_FIELDS)
    return CallRequest(call_id=_call_id(obj))


def parse_decline(data: object) -> CallRequest:
    obj = _object(data, _DECLINE_FIELDS)
    reason = obj.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_LEN):
        raise BadRequest(f"reason must be a string of at most {MAX_REASON_LEN} characters")
    return CallRequest(call_id=_call_id(obj), reason=reason)


def _call_id(obj: dict[str, Any]) -> CallId:
    call_id = obj.get("callId")
    if not isinstance(call_id, str) or not 0 < len(call_id) <= MAX_ID_LEN:
        raise BadRequest("callId must be a call id")
    return CallId(call_id)


def split_cid(data: object) -> tuple[str | None, object]:
    """Take the optional request id off a payload (copying only when there is one)."""
    if not isinstance(data, dict) or "cid" not in data:
        return None, data
    rest = dict(data)
    cid = rest.pop("cid")
    if not isinstance(cid, str) or not 0 < len(cid) <= MAX_CID_LEN:
        raise BadRequest(f"cid must be a string of 1-{MAX_CID_LEN} characters")
    return cid, rest


def parse_ping(data: object) -> float | None:
    obj = _object(data if data is not None else {}, frozenset({"t"}))
    t = obj.get("t")
    if t is not None and (not isinstance(t, int | float) or isinstance(t, bool)):
        raise BadRequest("t must be a number")
    return t


def ok(**result: Any) -> dict[str, Any]:
    return {"ok": True, **result}


def error(code: str, message: str) -> dict[str, Any]:
    return {"ok": False, "error": {"code": code, "message": message}}


# -- file transfers ----------------------------------------------------------------------

FILE_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
MIME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,62}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
MAX_FILE_NAME = 255
_BAD_NAME_CHARS = re.compile(r"[/\\\x00-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class FileOffer:
    room: RoomId
    to: ParticipantId | None
    id: str
    name: str
    size: int
    mime: str
    sha256: str | None


@dataclass(frozen=True, slots=True)
class FileRequest:
    id: str
    bytes: int = 0
    sha256: str | None = None
    reason: str | None = None


_OFFER_FIELDS = frozenset({"room", "to", "id", "name", "size", "mime", "sha256"})


def _file_id(value: object) -> str:
    if not isinstance(value, str) or not FILE_ID_RE.fullmatch(value):
        raise BadRequest("id must be 1-64 characters of A-Z a-z 0-9 _ -")
    return value


def _sha256(value: object) -> str:
    if not isinstance(value, str) or not SHA256_RE.fullmatch(value):
        raise BadRequest("sha256 must be 64 lowercase hex digits")
    return value


def _int(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest(f"{name} must be a non-negative integer")
    return value


def parse_file_offer(data: object, max_bytes: int) -> FileOffer:
    obj = _object(data, _OFFER_FIELDS)
    room = _room(obj)
    to = obj.get("to")
    if to is not None and (not isinstance(to, str) or not 0 < len(to) <= MAX_ID_LEN):
        raise BadRequest("to must be a participant id or null")
    name = obj.get("name")
    if (not isinstance(name, str) or not 0 < len(name) <= MAX_FILE_NAME
            or _BAD_NAME_CHARS.search(name) or name in (".", "..")):
        raise BadRequest("name must be 1-255 characters without / \\ or control characters")
    size = _int(obj.get("size"), "size")
    if size > max_bytes:
        raise BadRequest(f"size exceeds {max_bytes} bytes")
    mime = obj.get("mime")
    if not isinstance(mime, str) or not MIME_RE.fullmatch(mime):
        raise BadRequest("mime must be type/subtype")
    sha = obj.get("sha256")
    return FileOffer(room=room, to=ParticipantId(to) if to else None, id=_file_id(obj.get("id")),
                     name=name, size=size, mime=mime,
                     sha256=_sha256(sha) if sha is not None else None)


def parse_file_id(data: object) -> FileRequest:
    return FileRequest(id=_file_id(_object(data, frozenset({"id"})).get("id")))


def parse_file_progress(data: object) -> FileRequest:
    obj = _object(data, frozenset({"id", "bytes"}))
    return FileRequest(id=_file_id(obj.get("id")), bytes=_int(obj.get("bytes"), "bytes"))


def parse_file_done(data: object) -> FileRequest:
    obj = _object(data, frozenset({"id", "sha256"}))
    return FileRequest(id=_file_id(obj.get("id")), sha256=_sha256(obj.get("sha256")))


def parse_file_cancel(data: object) -> FileRequest:
    obj = _object(data, frozenset({"id", "reason"}))
    reason = obj.get("reason")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON_LEN):
        raise BadRequest(f"reason must be a string of at most {MAX_REASON_LEN} characters")
    return FileRequest(id=_file_id(obj.get("id")), reason=reason)


def parse_room_only(data: object) -> RoomId:
    return _room(_object(data, _ROOM_FIELDS))


# -- media workers -----------------------------------------------------------------------

JOB_ID_RE = re.compile(r"J[0-9a-f]{16}")
MAX_WORKER_CAPACITY = 100_000
MAX_ECHO_DURATION = 60.0
MAX_REPORT_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class MediaRequest:
    room: RoomId
    kind: MediaKind
    duration: float | None


@dataclass(frozen=True, slots=True)
class WorkerRegistration:
    capacity: int
    kinds: frozenset[MediaKind]


@dataclass(frozen=True, slots=True)
class MediaReportRequest:
    job: str
    report: dict[str, Any]


def _kind(value: object) -> MediaKind:
    if isinstance(value, str) and value in MediaKind.__members__.values():
        return MediaKind(value)
    raise BadRequest(f"kind must be one of {', '.join(MediaKind)}")


def _number(value: object, name: str, low: float, high: float) -> float:
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or not low <= value <= high):
        raise BadRequest(f"{name} must be a number from {low:g} to {high:g}")
    return float(value)


def parse_media_request(data: object) -> MediaRequest:
    obj = _object(data, frozenset({"room", "kind", "duration"}))
    duration = obj.get("duration")
    return MediaRequest(room=_room(obj), kind=_kind(obj.get("kind")),
                        duration=None if duration is None
                        else _number(duration, "duration", 1, MAX_ECHO_DURATION))


def parse_job(data: object) -> str:
    job = _object(data, frozenset({"job"})).get("job")
    if not isinstance(job, str) or not JOB_ID_RE.fullmatch(job):
        raise BadRequest("job must be a job id")
    return job


def parse_worker_register(data: object) -> WorkerRegistration:
    obj = _object(data, frozenset({"capacity", "kinds"}))
    capacity = obj.get("capacity")
    if (not isinstance(capacity, int) or isinstance(capacity, bool)
            or not 0 < capacity <= MAX_WORKER_CAPACITY):
        raise BadRequest(f"capacity must be an integer from 1 to {MAX_WORKER_CAPACITY}")
    kinds = obj.get("kinds")
    if not isinstance(kinds, list) or not kinds:
        raise BadRequest("kinds must be a non-empty list")
    return WorkerRegistration(capacity=capacity, kinds=frozenset(_kind(k) for k in kinds))


def parse_worker_load(data: object) -> float:
    obj = _object(data, frozenset({"load"}))
    return _number(obj.get("load"), "load", 0, MAX_WORKER_CAPACITY)


def parse_media_report(data: object) -> MediaReportRequest:
    obj = _object(data, frozenset({"job", "report"}))
    job = parse_job({"job": obj.get("job")})
    report = obj.get("report")
    if not isinstance(report, dict):
        raise BadRequest("report must be an object")
    if len(json.dumps(report, separators=(",", ":"))) > MAX_REPORT_BYTES:
        raise BadRequest(f"report exceeds {MAX_REPORT_BYTES} bytes")
    return MediaReportRequest(job=job, report=report)
