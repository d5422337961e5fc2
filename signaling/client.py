"""Python client SDK: an async signaling client over python-socketio's AsyncClient.

    client = SignalingClient("http://127.0.0.1:8080", token)
    client.subscribe(print)                 # typed events, in arrival order
    await client.connect()
    joined = await client.join("standup")
    await client.signal("standup", joined.participants[0].id, description=offer)
    await client.close()

Subscribers are plain callables run in arrival order; they must not block (hand
slow work to a task or queue of your own).

A lost transport is not the end: the client reconnects by itself (capped
exponential backoff with jitter) and resumes its session, so its participants
and rooms survive and missed room events arrive in order, exactly once.
Requests made meanwhile wait and are sent in order after the resume; each
carries a `cid`, so one resent after a lost ack is acted on once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import socketio

from .ids import CallId, ParticipantId, RoomId, UserId

log = logging.getLogger(__name__)

_UNSET: Any = object()


class RequestError(Exception):
    """The server refused a request or a connect with a coded error (see docs/protocol.md)."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        # Seconds until a `rate_limited` request would be accepted (the wire's retryAfter).
        self.retry_after = retry_after

    @classmethod
    def from_wire(cls, err: dict[str, Any]) -> RequestError:
        retry = err.get("retryAfter")
        return cls(str(err.get("code", "internal")), str(err.get("message", "")),
                   retry / 1000 if isinstance(retry, int | float) else None)


@dataclass(frozen=True, slots=True)
class ParticipantInfo:
    id: ParticipantId
    user: UserId
    name: str
    state: dict[str, bool]
    # Our own role toward this peer for perfect negotiation; None when not stated.
    polite: bool | None = None
    connection: str = "connected"

    @classmethod
    def from_wire(cls, data: dict[str, Any], polite: bool | None = None) -> ParticipantInfo:
        return cls(
            id=ParticipantId(data["id"]), user=UserId(data["user"]), name=data["name"],
            state=dict(data.get("state", {})),
            polite=data.get("polite", polite), connection=data.get("connection", "connected"),
        )


@dataclass(frozen=True, slots=True)
class JoinedRoom:
    room: RoomId
    seq: int
    self_id: ParticipantId
    user: UserId
    name: str
    participants: list[ParticipantInfo]
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    # The room's running recording (a `recording:state` payload without room and seq).
    recording: dict[str, Any] | None = None
    # `mesh`, or `forward` through `worker` (docs/protocol.md, "Forwarding").
    mode: str = "mesh"
    worker: ParticipantId | None = None


@dataclass(frozen=True, slots=True)
class ParticipantJoined:
    room: RoomId
    seq: int
    participant: ParticipantInfo
    polite: bool


@dataclass(frozen=True, slots=True)
class ParticipantLeft:
    room: RoomId
    seq: int
    id: ParticipantId
    reason: str


@dataclass(frozen=True, slots=True)
class ParticipantUpdated:
    room: RoomId
    seq: int
    participant: ParticipantInfo


@dataclass(frozen=True, slots=True)
class SignalReceived:
    room: RoomId
    sender: ParticipantId
    description: dict[str, str] | None = None
    # A candidate dict; None with `is_candidate` means end-of-candidates.
    candidate: dict[str, Any] | None = None
    is_candidate: bool = False
    restart: bool = False
    # `up` or `down` in a forwarded room (docs/protocol.md, "Forwarding"), else None.
    pc: str | None = None


@dataclass(frozen=True, slots=True)
class ConnectionChanged:
    """The client's connection state: `connected`, `reconnecting` or `disconnected`."""

    state: str


@dataclass(frozen=True, slots=True)
class SessionStarted:
    """A `session` event: `resumed` False after a reconnect means the rooms were lost."""

    session: str
    resumed: bool
    rooms: list[RoomId]


@dataclass(frozen=True, slots=True)
class Draining:
    reconnect_in: int


@dataclass(frozen=True, slots=True)
class CallIncoming:
    call_id: CallId
    caller: UserId
    caller_name: str
    media: dict[str, bool]
    room: RoomId


@dataclass(frozen=True, slots=True)
class CallStateChanged:
    call_id: CallId
    state: str
    by: UserId | None = None
    device: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class FileState:
    """A transfer's state (docs/protocol.md, "File transfers"); `data` is the whole payload."""

    id: str
    room: RoomId
    state: str
    bytes: int
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RecordingState:
    """A room's recording started, moved to another worker, or stopped (a room event)."""

    room: RoomId
    seq: int
    recording: str
    active: bool
    by: str | None
    started_at: int
    # The worker to send our media to while active (docs/protocol.md, "Recording").
    worker: ParticipantId | None = None
    reason: str | None = None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RoomModeChanged:
    """The room switched between mesh and forwarding through `worker` (a room event)."""

    room: RoomId
    seq: int
    mode: str
    worker: ParticipantId | None = None
    moved: bool = False


@dataclass(frozen=True, slots=True)
class RoomData:
    """A data message an operator sent to the room (the admin API; a room event)."""

    room: RoomId
    seq: int
    data: Any
    by: str
    topic: str | None = None


@dataclass(frozen=True, slots=True)
class MuteRequested:
    """An operator asks us to mute our audio and/or video in `room` (the admin API); the
    app decides what to do."""

    room: RoomId
    audio: bool
    video: bool
    by: str


@dataclass(frozen=True, slots=True)
class MediaJob:
    """A media job the node gave to a worker; negotiate with `worker` by `signal`."""

    job: str
    kind: str
    room: RoomId
    worker: ParticipantId


@dataclass(frozen=True, slots=True)
class MediaReport:
    room: RoomId
    job: str
    report: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MediaEnded:
    room: RoomId
    job: str
    kind: str
    reason: str
    error: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The client is disconnected for good (closed, or reconnecting gave up)."""

    reason: str


Event = (ParticipantJoined | ParticipantLeft | ParticipantUpdated | SignalReceived
         | ConnectionChanged | SessionStarted | Draining | CallIncoming | CallStateChanged
         | FileState | MediaReport | MediaEnded | RecordingState | RoomModeChanged | RoomData
         | MuteRequested | Disconnected)
Subscriber = Callable[[Event], None]


def _joined(d: dict[str, Any]) -> ParticipantJoined:
    return ParticipantJoined(
        room=RoomId(d["room"]), seq=d["seq"],
        participant=ParticipantInfo.from_wire(d["participant"], d["polite"]), polite=d["polite"],
    )


def _left(d: dict[str, Any]) -> ParticipantLeft:
    return ParticipantLeft(room=RoomId(d["room"]), seq=d["seq"], id=ParticipantId(d["id"]),
                           reason=d["reason"])


def _updated(d: dict[str, Any]) -> ParticipantUpdated:
    return ParticipantUpdated(room=RoomId(d["room"]), seq=d["seq"],
                              participant=ParticipantInfo.from_wire(d["participant"]))


def _signal(d: dict[str, Any]) -> SignalReceived:
    return SignalReceived(
        room=RoomId(d["room"]), sender=ParticipantId(d["from"]),
        description=d.get("description"), candidate=d.get("candidate"),
        is_candidate="candidate" in d, restart=bool(d.get("restart", False)),
        pc=d.get("pc"),
    )


def _incoming(d: dict[str, Any]) -> CallIncoming:
    return CallIncoming(call_id=CallId(d["callId"]), caller=UserId(d["from"]["user"]),
                        caller_name=d["from"]["name"], media=dict(d["media"]),
                        room=RoomId(d["room"]))


def _call_state(d: dict[str, Any]) -> CallStateChanged:
    return CallStateChanged(call_id=CallId(d["callId"]), state=d["state"], by=d.get("by"),
                            device=d.get("device"), reason=d.get("reason"))


def _file_state(d: dict[str, Any]) -> FileState:
    return FileState(id=d["id"], room=RoomId(d["room"]), state=d["state"], bytes=int(d["bytes"]),
                     data=d)


def _media_report(d: dict[str, Any]) -> MediaReport:
    return MediaReport(room=RoomId(d["room"]), job=str(d["job"]), report=dict(d["report"]))


def _media_ended(d: dict[str, Any]) -> MediaEnded:
    return MediaEnded(room=RoomId(d["room"]), job=str(d["job"]), kind=str(d["kind"]),
                      reason=str(d["reason"]), error=d.get("error"))


def _recording(d: dict[str, Any]) -> RecordingState:
    return RecordingState(room=RoomId(d["room"]), seq=d["seq"], recording=str(d["recording"]),
                          active=bool(d["active"]), by=d.get("by"), started_at=d["startedAt"],
                          worker=d.get("worker"), reason=d.get("reason"), data=d)


def _room_mode(d: dict[str, Any]) -> RoomModeChanged:
    return RoomModeChanged(room=RoomId(d["room"]), seq=d["seq"], mode=str(d["mode"]),
                           worker=d.get("worker"), moved=bool(d.get("moved", False)))


def _room_data(d: dict[str, Any]) -> RoomData:
    return RoomData(room=RoomId(d["room"]), seq=d["seq"], data=d["data"], by=str(d["by"]),
                    topic=d.get("topic"))


def _mute(d: dict[str, Any]) -> MuteRequested:
    return MuteRequested(room=RoomId(d["room"]), audio=bool(d["audio"]), video=bool(d["video"]),
                         by=str(d["by"]))


def _draining(d: dict[str, Any]) -> Draining:
    return Draining(reconnect_in=int(d["reconnectIn"]))


_PARSERS: dict[str, Callable[[dict[str, Any]], Event]] = {
    "participant:joined": _joined,
    "participant:left": _left,
    "participant:updated": _updated,
    "signal": _signal,
    "call:incoming": _incoming,
    "call:state": _call_state,
    "server:draining": _draining,
    "file:state": _file_state,
    "media:report": _media_report,
    "media:ended": _media_ended,
    "recording:state": _recording,
    "room:mode": _room_mode,
    "room:data": _room_data,
    "mute:request": _mute,
}


_ROOM_EVENTS = (ParticipantJoined, ParticipantLeft, ParticipantUpdated, RecordingState,
                RoomModeChanged, RoomData)
_MAX_SENDS = 3
_SESSION_LOST = frozenset({"not_found", "forbidden", "conflict"})


class SignalingClient:
    """One authenticated signaling session, surviving lost transports."""

    def __init__(self, url: str, token: str | Callable[[], str], *,
                 request_timeout: float = 10.0, transports: tuple[str, ...] = ("websocket",),
                 reconnect: bool = True, backoff: float = 0.25, max_backoff: float = 5.0,
                 max_attempts: int | None = None) -> None:
        """`token` may be a function, called for a fresh token on every (re)connect."""
        self.url = url
        self._token = token
        self._timeout = request_timeout
        self._transports = list(transports)
        self._reconnect = reconnect
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._max_attempts = max_attempts
        self._subscribers: list[Subscriber] = []
        self._refusal: RequestError | None = None
        self._session: str | None = None
        self._resume: str | None = None
        self._rooms: set[RoomId] = set()
        self._last_seq: dict[RoomId, int] = {}
        self._state = "disconnected"
        self._online = asyncio.Event()
        self._lost = asyncio.Event()  # set while the transport is down
        self._gave_up = asyncio.Event()  # set once reconnecting stopped for good
        self._closing = False
        self._reconnector: asyncio.Task[None] | None = None
        self._drain_delay = 0.0
        # Our own HTTP session, so that close() releases it even after a refused connect.
        self._http: aiohttp.ClientSession | None = None
        self._sio = socketio.AsyncClient(reconnection=False)
        for name, parse in _PARSERS.items():
            self._sio.on(name, self._dispatcher(parse))
        self._sio.on("session", self._on_session)
        self._sio.on("auth:expiring", self._on_expiring)
        self._sio.on("connect_error", self._on_connect_error)
        self._sio.on("disconnect", self._on_disconnect)

    @property
    def connected(self) -> bool:
        return self._state == "connected"

    @property
    def state(self) -> str:
        """`connected`, `reconnecting` or `disconnected`."""
        return self._state

    @property
    def session(self) -> str | None:
        return self._session

    def last_seq(self, room: str) -> int:
        """The last seq of `room` this client has seen, as an event or in an ack."""
        return self._last_seq.get(RoomId(room), 0)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber` with every event; returns a function that unsubscribes."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    async def connect(self) -> None:
        """Connect and authenticate; raises RequestError with the server's code when refused."""
        self._closing = False
        self._gave_up.clear()
        await self._open(resume=False)

    async def close(self) -> None:
        """Leave for good: no reconnect; the server ends the session at once."""
        if self._online.is_set():
            try:
                await self._sio.call("session:end", {}, timeout=min(self._timeout, 2.0))
            except (socketio.exceptions.SocketIOError, TimeoutError):
                pass  # the grace period ends it instead
        self._closing = True
        if self._reconnector is not None:
            self._reconnector.cancel()
            await asyncio.gather(self._reconnector, return_exceptions=True)
        await self._sio.disconnect()
        if self._http is not None:
            await self._http.close()
            self._http = None
        self._online.clear()
        self._lost.set()
        self._set_state("disconnected")

    async def drop_transport(self) -> None:
        """Close the transport as a network loss would (for tests and demos of resume)."""
        eio = self._sio.eio
        if eio.ws is not None:
            await eio.ws.close()

    async def _open(self, *, resume: bool) -> None:
        self._refusal = None
        if self._sio.eio.state != "disconnected":
            # The server ended our Socket.IO session (an expired token, a rate-limit drop)
            # and engine.io's connection lingers: python-socketio would refuse to connect.
            await self._sio.eio.disconnect(abort=True)
        auth: dict[str, Any] = {"token": self._token() if callable(self._token) else self._token}
        if resume and self._session is not None:
            auth.update(session=self._session, resume=self._resume,
                        lastSeq={r: self._last_seq.get(r, 0) for r in self._rooms})
        if self._http is None:
            self._http = aiohttp.ClientSession()
            self._sio.eio.http = self._http
            self._sio.eio.external_http = True
        try:
            await self._sio.connect(self.url, auth=auth, transports=self._transports,
                                    wait_timeout=self._timeout)
        except socketio.exceptions.ConnectionError as exc:
            if self._refusal is not None:
                raise self._refusal from exc
            raise RequestError("unavailable", str(exc)) from exc
        try:  # connected means the session is known: it is the first event
            await asyncio.wait_for(self._online.wait(), self._timeout)
        except TimeoutError as exc:
            await self._sio.disconnect()
            raise RequestError("unavailable", "no session from the server") from exc

    async def request(self, event: str, payload: Any = _UNSET) -> dict[str, Any]:
        """Send an event and return its ack's result; raise RequestError for an error ack.

        While reconnecting, the request waits; if the connection drops before its ack,
        it is sent again with the same `cid` after the resume.
        """
        if isinstance(payload, dict):
            payload = {**payload, "cid": secrets.token_urlsafe(12)}
        args = () if payload is _UNSET else (payload,)
        for _ in range(_MAX_SENDS):
            if not self._online.is_set():
                if self._closing or not self._reconnect or self._state == "disconnected":
                    raise RequestError("unavailable", "not connected")
                await self._until_online()
            ack = await self._call(event, args)
            if ack is not None:
                break
        else:
            # A request that keeps killing its connection (e.g. over the size cap) is not
            # worth another resend.
            raise RequestError("unavailable", f"connection lost {_MAX_SENDS} times before the ack")
        if not isinstance(ack, dict) or "ok" not in ack:
            raise RequestError("internal", f"malformed ack for {event}: {ack!r}")
        if not ack["ok"]:
            err = ack.get("error")
            raise RequestError.from_wire(err if isinstance(err, dict) else {})
        if isinstance(ack.get("seq"), int) and isinstance(payload, dict) and "room" in payload:
            self._saw(RoomId(payload["room"]), ack["seq"])
        return ack

    async def _call(self, event: str, args: tuple[Any, ...]) -> Any:
        """The ack, or None when the transport went down first (then the caller retries)."""
        call = asyncio.ensure_future(self._sio.call(event, *args, timeout=self._timeout))
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            await asyncio.wait({call, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
        if not call.done():
            call.cancel()
            return None
        try:
            return call.result()
        except socketio.exceptions.TimeoutError as exc:
            raise RequestError("unavailable", f"no ack for {event} in {self._timeout}s") from exc
        except socketio.exceptions.BadNamespaceError:
            return None

    async def join(self, room: str, *, name: str | None = None,
                   meta: dict[str, Any] | None = None, hidden: bool = False) -> JoinedRoom:
        """Join `room`; `hidden` is for media workers (grant `service`)."""
        payload: dict[str, Any] = {"room": room}
        if hidden:
            payload["hidden"] = True
        if name is not None:
            payload["name"] = name
        if meta is not None:
            payload["meta"] = meta
        ack = await self.request("room:join", payload)
        me = ack["self"]
        self._rooms.add(RoomId(ack["room"]))
        return JoinedRoom(
            room=RoomId(ack["room"]), seq=ack["seq"], self_id=ParticipantId(me["id"]),
            user=UserId(me["user"]), name=me["name"],
            participants=[ParticipantInfo.from_wire(p) for p in ack["participants"]],
            ice_servers=ack["iceServers"], recording=ack.get("recording"),
            mode=ack.get("mode", "mesh"), worker=ack.get("worker"),
        )

    async def leave(self, room: str) -> None:
        await self.request("room:leave", {"room": room})
        self._rooms.discard(RoomId(room))
        self._last_seq.pop(RoomId(room), None)

    async def signal(self, room: str, to: str, *, description: dict[str, str] | None = None,
                     candidate: dict[str, Any] | None = _UNSET, restart: bool = False,
                     pc: str | None = None) -> None:
        """Send a description, a candidate, (candidate=None) end-of-candidates, or a restart
        request to a peer; `pc` tags which connection to a media worker it is for."""
        payload: dict[str, Any] = {"room": room, "to": to}
        if pc is not None:
            payload["pc"] = pc
        if description is not None:
            payload["description"] = description
        if candidate is not _UNSET:
            payload["candidate"] = candidate
        if restart:
            payload["restart"] = True
        await self.request("signal", payload)

    async def update(self, room: str, **state: bool) -> int:
        """Change this participant's state (audio, video, screen, hand, speaking); returns seq."""
        ack = await self.request("participant:update", {"room": room, "state": state})
        return int(ack["seq"])

    async def ping(self) -> float:
        """Round-trip time to the node, in seconds."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self.request("ping", {"t": start})
        return loop.time() - start

    async def invite(self, to: str | list[str], *, audio: bool = True, video: bool = True,
                     room: str | None = None) -> dict[str, Any]:
        """Ring `to`; returns the ack `{callId, room, state}`."""
        payload: dict[str, Any] = {"to": to, "media": {"audio": audio, "video": video}}
        if room is not None:
            payload["room"] = room
        return await self.request("call:invite", payload)

    async def call_action(self, action: str, call_id: str, reason: str | None = None) -> str:
        """`accept`, `decline`, `cancel` or `hangup` a call; returns the resulting state."""
        payload: dict[str, Any] = {"callId": call_id}
        if reason is not None:
            payload["reason"] = reason
        ack = await self.request(f"call:{action}", payload)
        return str(ack.get("state", ""))

    async def offer_file(self, room: str, file_id: str, name: str, size: int, *,
                         mime: str = "application/octet-stream", to: str | None = None,
                         sha256: str | None = None) -> dict[str, Any]:
        """Offer a file to one participant (`to`) or everyone else in the room; returns its
        state. The bytes go over a data channel (media.files) or the HTTP relay."""
        payload: dict[str, Any] = {"room": room, "id": file_id, "name": name, "size": size,
                                   "mime": mime, "to": to}
        if sha256 is not None:
            payload["sha256"] = sha256
        return dict((await self.request("file:offer", payload))["transfer"])

    async def file_action(self, action: str, file_id: str, **fields: Any) -> dict[str, Any]:
        """`accept`, `reject`, `progress` (bytes=), `done` (sha256=) or `cancel` (reason=)."""
        return await self.request(f"file:{action}", {"id": file_id, **fields})

    async def watch_files(self, room: str) -> list[dict[str, Any]]:
        """Follow every transfer of a room (FileState events); returns the current ones."""
        return list((await self.request("file:subscribe", {"room": room}))["transfers"])

    async def request_media(self, room: str, kind: str, *,
                            duration: float | None = None) -> MediaJob:
        """Ask for a media job (`echo`, `record`, `forward`) in a room this client is in."""
        payload: dict[str, Any] = {"room": room, "kind": kind}
        if duration is not None:
            payload["duration"] = duration
        ack = await self.request("media:request", payload)
        return MediaJob(job=str(ack["job"]), kind=str(ack["kind"]), room=RoomId(room),
                        worker=ParticipantId(ack["worker"]))

    async def release_media(self, job: str) -> None:
        await self.request("media:release", {"job": job})

    async def start_recording(self, room: str) -> dict[str, Any]:
        """Start recording a room (grant `record`); returns the state (`recording` is its id)."""
        return await self.request("recording:start", {"room": room})

    async def stop_recording(self, room: str) -> dict[str, Any]:
        return await self.request("recording:stop", {"room": room})

    def serve(self, event: str, handler: Callable[[Any], Awaitable[dict[str, Any]]]) -> None:
        """Answer the server's calls of `event` (e.g. `media:assign`): the dict `handler`
        returns is the ack; an exception becomes an `internal` error ack."""
        async def answer(data: Any) -> dict[str, Any]:
            try:
                return await handler(data)
            except Exception as exc:
                log.exception("serving %s failed", event)
                return {"ok": False, "error": {"code": "internal", "message": str(exc)}}

        self._sio.on(event, answer)

    # -- incoming ---------------------------------------------------------------------

    def _saw(self, room: RoomId, seq: int) -> bool:
        """Record a room seq; False when it was already seen (a duplicate)."""
        if seq <= self._last_seq.get(room, 0):
            return False
        self._last_seq[room] = seq
        return True

    def _dispatcher(self, parse: Callable[[dict[str, Any]], Event]) -> Callable[[Any], None]:
        def dispatch(data: Any) -> None:
            try:
                event = parse(data)
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring malformed server event: %.200r", data)
                return
            if isinstance(event, _ROOM_EVENTS) and not self._saw(event.room, event.seq):
                return
            if isinstance(event, Draining):
                self._drain_delay = event.reconnect_in / 1000
            self._publish(event)

        return dispatch

    async def _on_expiring(self, data: Any) -> None:
        """The token expires soon: send a fresh one, when there is a token function
        (with a fixed token the connection ends at its expiry)."""
        if not callable(self._token):
            log.warning("the token expires at %s and cannot be refreshed", data)
            return
        try:
            await self.request("auth:refresh", {"token": self._token()})
        except RequestError as exc:
            log.warning("token refresh refused: %s", exc)

    def _on_session(self, data: Any) -> None:
        try:
            session, resume, resumed = data["session"], data["resume"], bool(data["resumed"])
        except (KeyError, TypeError):
            log.warning("ignoring malformed session event: %.200r", data)
            return
        lost = [] if resumed else sorted(self._rooms)
        if not resumed:
            self._rooms.clear()
            self._last_seq.clear()
        self._session, self._resume = session, resume
        self._lost.clear()
        self._online.set()
        self._set_state("connected")
        self._publish(SessionStarted(session=session, resumed=resumed, rooms=lost))

    def _publish(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                log.exception("subscriber failed on %s", type(event).__name__)

    def _give_up(self, reason: str) -> None:
        self._set_state("disconnected")
        self._gave_up.set()  # requests waiting for the connection fail now
        self._publish(Disconnected(reason=reason))

    async def _until_online(self) -> None:
        """Wait for the connection; RequestError once the client stopped reconnecting."""
        waits = [asyncio.ensure_future(self._online.wait()),
                 asyncio.ensure_future(self._gave_up.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if not self._online.is_set():
            raise RequestError("unavailable", "not connected (gave up reconnecting)")

    def _set_state(self, state: str) -> None:
        if state != self._state:
            self._state = state
            self._publish(ConnectionChanged(state))

    def _on_connect_error(self, data: Any = None) -> None:
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            data = data["data"]  # python-socketio hands over {message, data}
        if isinstance(data, dict) and "code" in data:
            self._refusal = RequestError.from_wire(data)
        else:
            self._refusal = RequestError("unauthorized", str(data))

    def _on_disconnect(self, reason: Any = None) -> None:
        self._online.clear()
        self._lost.set()
        if self._closing or not self._reconnect:
            self._set_state("disconnected")
            self._publish(Disconnected(reason=str(reason)))
            return
        self._set_state("reconnecting")
        if self._reconnector is None or self._reconnector.done():
            self._reconnector = asyncio.create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        attempt = 0
        delay = self._drain_delay
        self._drain_delay = 0.0
        while not self._closing:
            # Capped exponential backoff with full jitter, so clients of a dead node spread out.
            await asyncio.sleep(delay)
            attempt += 1
            try:
                await self._open(resume=self._session is not None)
                return
            except RequestError as exc:
                if exc.code in _SESSION_LOST and self._session is not None:
                    log.info("session %s cannot resume (%s): starting a new one",
                             self._session, exc.code)
                    self._session = self._resume = None
                    delay = 0.0
                    continue
                log.info("reconnect attempt %d failed: %s", attempt, exc)
                if exc.code == "unauthorized" and not callable(self._token):
                    # A fixed token that expired (or was revoked) will not get better.
                    self._give_up(f"the token was refused: {exc.message}")
                    return
            if self._max_attempts is not None and attempt >= self._max_attempts:
                self._give_up("gave up reconnecting")
                return
            delay = random.uniform(0, min(self._max_backoff, self._backoff * 2 ** attempt))
