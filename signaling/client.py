"""Python client SDK: an async signaling client over python-socketio's AsyncClient.

    client = SignalingClient("http://127.0.0.1:8080", token)
    client.subscribe(print)                 # typed events, in arrival order
    await client.connect()
    joined = await client.join("standup")
    await client.signal("standup", joined.participants[0].id, description=offer)
    await client.close()

Subscribers are plain callables run in arrival order; they must not block (hand
slow work to a task or queue of your own).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import socketio

from .ids import ParticipantId, RoomId, UserId

log = logging.getLogger(__name__)

_UNSET: Any = object()


class RequestError(Exception):
    """The server refused a request or a connect with a coded error (see docs/protocol.md)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ParticipantInfo:
    id: ParticipantId
    user: UserId
    name: str
    state: dict[str, bool]
    # Our own role toward this peer for perfect negotiation; None when not stated.
    polite: bool | None = None

    @classmethod
    def from_wire(cls, data: dict[str, Any], polite: bool | None = None) -> ParticipantInfo:
        return cls(
            id=ParticipantId(data["id"]), user=UserId(data["user"]), name=data["name"],
            state=dict(data.get("state", {})),
            polite=data.get("polite", polite),
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


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str


Event = ParticipantJoined | ParticipantLeft | ParticipantUpdated | SignalReceived | Disconnected
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
        is_candidate="candidate" in d,
    )


_PARSERS: dict[str, Callable[[dict[str, Any]], Event]] = {
    "participant:joined": _joined,
    "participant:left": _left,
    "participant:updated": _updated,
    "signal": _signal,
}


class SignalingClient:
    """One authenticated connection to a signaling node."""

    def __init__(self, url: str, token: str, *, request_timeout: float = 10.0,
                 transports: tuple[str, ...] = ("websocket",)) -> None:
        self.url = url
        self._token = token
        self._timeout = request_timeout
        self._transports = list(transports)
        self._subscribers: list[Subscriber] = []
        self._refusal: RequestError | None = None
        self._sio = socketio.AsyncClient(reconnection=False)
        for name, parse in _PARSERS.items():
            self._sio.on(name, self._dispatcher(parse))
        self._sio.on("connect_error", self._on_connect_error)
        self._sio.on("disconnect", self._on_disconnect)

    @property
    def connected(self) -> bool:
        return bool(self._sio.connected)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber` with every event; returns a function that unsubscribes."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    async def connect(self) -> None:
        """Connect and authenticate; raises RequestError with the server's code when refused."""
        self._refusal = None
        try:
            await self._sio.connect(
                self.url, auth={"token": self._token}, transports=self._transports,
                wait_timeout=self._timeout,
            )
        except socketio.exceptions.ConnectionError as exc:
            if self._refusal is not None:
                raise self._refusal from exc
            raise RequestError("unavailable", str(exc)) from exc

    async def close(self) -> None:
        await self._sio.disconnect()

    async def request(self, event: str, payload: Any = _UNSET) -> dict[str, Any]:
        """Send an event and return its ack's result; raise RequestError for an error ack."""
        args = () if payload is _UNSET else (payload,)
        try:
            ack = await self._sio.call(event, *args, timeout=self._timeout)
        except socketio.exceptions.TimeoutError as exc:
            raise RequestError("unavailable", f"no ack for {event} in {self._timeout}s") from exc
        except socketio.exceptions.BadNamespaceError as exc:
            raise RequestError("unavailable", "not connected") from exc
        if not isinstance(ack, dict) or "ok" not in ack:
            raise RequestError("internal", f"malformed ack for {event}: {ack!r}")
        if not ack["ok"]:
            err = ack.get("error") or {}
            raise RequestError(str(err.get("code", "internal")), str(err.get("message", "")))
        return ack

    async def join(self, room: str, *, name: str | None = None,
                   meta: dict[str, Any] | None = None) -> JoinedRoom:
        payload: dict[str, Any] = {"room": room}
        if name is not None:
            payload["name"] = name
        if meta is not None:
            payload["meta"] = meta
        ack = await self.request("room:join", payload)
        me = ack["self"]
        return JoinedRoom(
            room=RoomId(ack["room"]), seq=ack["seq"], self_id=ParticipantId(me["id"]),
            user=UserId(me["user"]), name=me["name"],
            participants=[ParticipantInfo.from_wire(p) for p in ack["participants"]],
            ice_servers=ack["iceServers"],
        )

    async def leave(self, room: str) -> None:
        await self.request("room:leave", {"room": room})

    async def signal(self, room: str, to: str, *, description: dict[str, str] | None = None,
                     candidate: dict[str, Any] | None = _UNSET) -> None:
        """Send a description, a candidate, or (candidate=None) end-of-candidates to a peer."""
        payload: dict[str, Any] = {"room": room, "to": to}
        if description is not None:
            payload["description"] = description
        if candidate is not _UNSET:
            payload["candidate"] = candidate
        await self.request("signal", payload)

    async def update(self, room: str, **state: bool) -> int:
        """Change this participant's state (audio, video, screen, hand, speaking); returns seq."""
        ack = await self.request("participant:update", {"room": room, "state": state})
        return int(ack["seq"])

    def _dispatcher(self, parse: Callable[[dict[str, Any]], Event]) -> Callable[[Any], None]:
        def dispatch(data: Any) -> None:
            try:
                event = parse(data)
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring malformed server event: %.200r", data)
                return
            self._publish(event)

        return dispatch

    def _publish(self, event: Event) -> None:
        for subscriber in list(self._subscribers):
            try:
                subscriber(event)
            except Exception:
                log.exception("subscriber failed on %s", type(event).__name__)

    def _on_connect_error(self, data: Any = None) -> None:
        if isinstance(data, dict) and isinstance(data.get("data"), dict):
            data = data["data"]  # python-socketio hands over {message, data}
        if isinstance(data, dict) and "code" in data:
            self._refusal = RequestError(str(data["code"]), str(data.get("message", "")))
        else:
            self._refusal = RequestError("unauthorized", str(data))

    def _on_disconnect(self, reason: Any = None) -> None:
        self._publish(Disconnected(reason=str(reason)))
