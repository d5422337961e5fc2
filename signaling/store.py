"""The store: where a node keeps rooms, sessions, calls, transfers and workers.

One interface, two implementations: `memstore.MemoryStore` (one node, the embedded
default) and `redisstore.RedisStore` (several nodes sharing state). Services write
their state as documents inside transactions: a transaction function gets the
documents it declared, changes them, records room events and timers, and either all
of it happens or, when another node changed a document meanwhile, the function runs
again on fresh copies. So a transaction function must be pure apart from its `Tx`:
it may run more than once, and what it raises aborts it with nothing written.

Room events are appended to the room's log (for replay) and published to every node,
in seq order, by the same commit that assigned their seq.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Self, TypeVar

from .ids import ParticipantId, RoomId
from .protocol import ServerEvent


class Doc(Protocol):
    """A stored document: converts to and from a JSON-able dict."""

    def to_dict(self) -> dict[str, Any]: ...

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self: ...


D = TypeVar("D", bound=Doc)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """One room event as sent on the wire, and who caused it by a request (not sent to them)."""

    room: RoomId
    seq: int
    name: ServerEvent
    payload: dict[str, Any]
    actor: ParticipantId | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"room": self.room, "seq": self.seq, "name": self.name.value,
                "payload": self.payload, "actor": self.actor}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoomEvent:
        return cls(RoomId(data["room"]), int(data["seq"]), ServerEvent(data["name"]),
                   data["payload"], data.get("actor"))


class MoreKeys(Exception):
    """A transaction function read a key it did not declare: run it again with it."""

    def __init__(self, keys: Iterable[str]) -> None:
        super().__init__(*keys)
        self.keys = list(keys)


class Tx(abc.ABC):
    """What a transaction function may do. Nothing is written unless the function returns."""

    @abc.abstractmethod
    def get(self, key: str, kind: type[D]) -> D | None:
        """The document under `key` (declared or read before); the same object on every get."""

    @abc.abstractmethod
    def put(self, key: str, doc: Doc, ttl: float | None = None) -> None:
        """Write `doc` (a changed document must be put again); gone after `ttl` seconds."""

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def add(self, key: str, member: str) -> None:
        """Add to a set (sets need no declaration: adding and removing do not conflict)."""

    @abc.abstractmethod
    def discard(self, key: str, member: str) -> None: ...

    @abc.abstractmethod
    def record(self, event: RoomEvent) -> None:
        """Append to the room's log and publish to every node once committed."""

    @abc.abstractmethod
    def drop_log(self, room: RoomId) -> None:
        """Forget a room's log (the room is gone; a new one starts at seq 1)."""

    @abc.abstractmethod
    def schedule(self, timer: str, delay: float) -> None:
        """Fire `timer` once after `delay` seconds, on exactly one node (replaces a pending one)."""

    @abc.abstractmethod
    def cancel(self, timer: str) -> None: ...


EventListener = Callable[[RoomEvent], Awaitable[None]]
TimerHandler = Callable[[str], Awaitable[None]]
ResyncListener = Callable[[], Awaitable[None]]


class Store(abc.ABC):
    """Shared state. Every method may raise `errors.Unavailable` when the backend is down."""

    # Its commands need a current task (`asyncio.timeout`, as redis-py's do): a client's
    # input is then handled in a Task from the start (`eager.start`).
    needs_task = True

    @abc.abstractmethod
    async def transact(self, keys: Iterable[str], fn: Callable[[Tx], T]) -> T:
        """Run `fn` atomically over the documents under `keys` and commit what it did."""

    @abc.abstractmethod
    async def get(self, key: str, kind: type[D]) -> D | None:
        """A snapshot of a document: change it only inside a transaction."""

    # Its documents are in this process: `get_now` reads one without waiting.
    at_hand = False

    def get_now(self, key: str, kind: type[D]) -> D | None:
        """`get`, without waiting: only where `at_hand`."""
        raise NotImplementedError(f"{type(self).__name__} keeps its documents elsewhere")

    @abc.abstractmethod
    async def get_many(self, keys: list[str], kind: type[D]) -> list[D | None]: ...

    @abc.abstractmethod
    async def members(self, key: str) -> set[str]: ...

    @abc.abstractmethod
    async def events(self, room: RoomId, after: int) -> list[RoomEvent] | None:
        """The room's logged events with seq > `after`, oldest first; None when the log no
        longer reaches back that far."""

    @abc.abstractmethod
    async def append(self, lists: Mapping[str, list[str]], keep: int, ttl: float) -> None:
        """Append to capped lists outside any transaction (timelines): each keeps its last
        `keep` items and is forgotten `ttl` seconds after its last append."""

    @abc.abstractmethod
    async def items(self, key: str) -> list[str]:
        """A capped list's items, oldest first ([] when there is none)."""

    @abc.abstractmethod
    def on_event(self, listener: EventListener) -> None:
        """Be told of every committed room event, on every node, in seq order per room."""

    @abc.abstractmethod
    def on_resync(self, listener: ResyncListener) -> None:
        """Be told when this node may have missed events (its feed was interrupted)."""

    @abc.abstractmethod
    def on_timer(self, prefix: str, handler: TimerHandler) -> None:
        """Handle timers named `prefix` + id: `handler(id)` runs when one fires."""

    @property
    @abc.abstractmethod
    def healthy(self) -> bool:
        """Whether the backend answered lately (readiness)."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def aclose(self) -> None: ...


def key(*parts: str) -> str:
    return ":".join(parts)
