"""The in-memory store of a single node (the embedded default).

Documents are kept as the objects themselves, so a transaction changes them in place
and a snapshot from `get` is the live object: callers treat both as read-only outside
a transaction, as they must with the Redis store. Transaction functions run without
awaiting, so they are atomic; their writes, events and timers apply when they return.
"""

from __future__ import annotations

import asyncio
import logging
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from functools import partial
from typing import Any

from .ids import RoomId
from .pacing import Pacer
from .store import D, Doc, EventListener, ResyncListener, RoomEvent, Store, T, TimerHandler, Tx

log = logging.getLogger(__name__)

TIMERS_PER_TURN = 8  # a session's expiry is about 100 µs: a millisecond per turn at most


class MemoryStore(Store):
    needs_task = False  # nothing here waits on I/O
    at_hand = True

    def __init__(self, log_size: int = 1024, log_age: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._log_size = log_size
        self._log_age = log_age
        self._clock = clock
        self._docs: dict[str, Doc] = {}
        self._expiry: dict[str, float] = {}
        self._sets: dict[str, set[str]] = {}
        # capped lists (timelines): key -> (forgotten at, items)
        self._lists: dict[str, tuple[float, list[str]]] = {}
        # room -> its recent events, each with the time it was recorded
        self._logs: dict[RoomId, list[tuple[float, RoomEvent]]] = {}
        self._listeners: list[EventListener] = []
        self._handlers: dict[str, TimerHandler] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        # Timers set together (the sessions of a network that dropped) come due together:
        # their handlers start a few per turn of the loop, not all in one.
        self._pacer = Pacer(TIMERS_PER_TURN)
        self._due: set[str] = set()  # fired, waiting for their turn
        self._tasks: set[asyncio.Task[None]] = set()

    async def transact(self, keys: Iterable[str], fn: Callable[[Tx], T]) -> T:
        tx = _MemoryTx(self)
        result = fn(tx)
        events = tx.commit()
        for event in events:
            for listener in self._listeners:
                await listener(event)
        return result

    async def get(self, key: str, kind: type[D]) -> D | None:
        return self.get_now(key, kind)

    async def get_many(self, keys: list[str], kind: type[D]) -> list[D | None]:
        return [self.get_now(k, kind) for k in keys]

    def get_now(self, key: str, kind: type[D]) -> D | None:
        until = self._expiry.get(key)
        if until is not None and until <= self._clock():
            self._docs.pop(key, None)
            del self._expiry[key]
        doc = self._docs.get(key)
        assert doc is None or isinstance(doc, kind), (key, doc)
        return doc

    async def members(self, key: str) -> set[str]:
        return set(self._sets.get(key, ()))

    async def append(self, lists: Mapping[str, list[str]], keep: int, ttl: float) -> None:
        now = self._clock()
        for key, items in lists.items():
            entry = self._lists.pop(key, None)  # back in last: the oldest lists come first
            kept = entry[1] if entry is not None and entry[0] > now else []
            kept.extend(items)
            if len(kept) > keep:
                del kept[:-keep]
            self._lists[key] = (now + ttl, kept)
        # Only the expired ones at the front are walked: a day of timelines (every room
        # a node saw) was walked a few times a second, on the loop, as the node relayed.
        # With one `ttl` for every list (the timelines' age) that is all of them; a
        # shorter-lived one behind a longer-lived one is hidden by `items` until then.
        expired = []
        for key, (until, _) in self._lists.items():
            if until > now:
                break
            expired.append(key)
        for key in expired:
            del self._lists[key]

    async def items(self, key: str) -> list[str]:
        entry = self._lists.get(key)
        return list(entry[1]) if entry is not None and entry[0] > self._clock() else []

    async def events(self, room: RoomId, after: int) -> list[RoomEvent] | None:
        entries = self._logs.get(room)
        if entries is not None:
            self._trim(entries)
            entries = entries[-self._log_size:]  # the log keeps this many (trimmed lazily)
        if not entries or entries[0][1].seq > after + 1:
            return None
        return [e for _, e in entries if e.seq > after]

    def _trim(self, entries: list[tuple[float, RoomEvent]]) -> None:
        horizon = self._clock() - self._log_age
        if entries and entries[0][0] < horizon:
            del entries[:bisect_left(entries, horizon, key=lambda e: e[0])]

    def on_event(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def on_resync(self, listener: ResyncListener) -> None:
        pass  # one node, no feed to lose

    def on_timer(self, prefix: str, handler: TimerHandler) -> None:
        self._handlers[prefix] = handler

    @property
    def healthy(self) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        self._pacer.close()
        self._due.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- applied by a committed transaction ---------------------------------------------

    def _put(self, key: str, doc: Doc, ttl: float | None) -> None:
        self._docs[key] = doc
        if ttl is None:
            self._expiry.pop(key, None)
        else:
            self._expiry[key] = self._clock() + ttl
            if len(self._expiry) > 4096 and len(self._expiry) % 1024 == 0:
                self._sweep()

    def _sweep(self) -> None:
        now = self._clock()
        for key, until in list(self._expiry.items()):
            if until <= now:
                self._docs.pop(key, None)
                del self._expiry[key]

    def _delete(self, key: str) -> None:
        self._docs.pop(key, None)
        self._expiry.pop(key, None)

    def _add(self, key: str, member: str) -> None:
        self._sets.setdefault(key, set()).add(member)

    def _discard(self, key: str, member: str) -> None:
        members = self._sets.get(key)
        if members is not None:
            members.discard(member)
            if not members:
                del self._sets[key]

    def _record(self, event: RoomEvent) -> None:
        entries = self._logs.get(event.room)
        if entries is None:
            # Lists, not deques: a deque allocates a 600-byte block at once, for each
            # room, and most rooms log a handful of events.
            entries = self._logs[event.room] = []
        entries.append((self._clock(), event))
        if len(entries) > 2 * self._log_size:  # trimmed in batches: amortized O(1)
            del entries[:-self._log_size]

    def _drop_log(self, room: RoomId) -> None:
        self._logs.pop(room, None)

    def _schedule(self, timer: str, delay: float) -> None:
        self._cancel(timer)
        self._timers[timer] = asyncio.get_running_loop().call_later(delay, self._fire, timer)

    def _cancel(self, timer: str) -> None:
        handle = self._timers.pop(timer, None)
        if handle is not None:
            handle.cancel()
        self._due.discard(timer)  # fired, but its turn had not come: it does not run

    def _fire(self, timer: str) -> None:
        del self._timers[timer]
        self._due.add(timer)
        self._pacer.call(partial(self._run_due, timer))

    def _run_due(self, timer: str) -> None:
        if timer not in self._due:
            return
        self._due.remove(timer)
        for prefix, handler in self._handlers.items():
            if timer.startswith(prefix):
                self._spawn(_guard(timer, handler(timer[len(prefix):])))
                return
        log.warning("no handler for timer %s", timer)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def _guard(timer: str, coro: Awaitable[None]) -> None:
    try:
        await coro
    except Exception:
        log.exception("timer %s failed", timer)


class _MemoryTx(Tx):
    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._ops: list[Callable[[], None]] = []
        self._events: list[RoomEvent] = []
        self._docs: dict[str, Doc | None] = {}

    def get(self, key: str, kind: type[D]) -> D | None:
        if key in self._docs:
            doc = self._docs[key]
            assert doc is None or isinstance(doc, kind)
            return doc
        return self._store.get_now(key, kind)

    def put(self, key: str, doc: Doc, ttl: float | None = None) -> None:
        self._docs[key] = doc
        self._ops.append(lambda: self._store._put(key, doc, ttl))

    def delete(self, key: str) -> None:
        self._docs[key] = None
        self._ops.append(lambda: self._store._delete(key))

    def add(self, key: str, member: str) -> None:
        self._ops.append(lambda: self._store._add(key, member))

    def discard(self, key: str, member: str) -> None:
        self._ops.append(lambda: self._store._discard(key, member))

    def record(self, event: RoomEvent) -> None:
        self._events.append(event)
        self._ops.append(lambda: self._store._record(event))

    def drop_log(self, room: RoomId) -> None:
        self._ops.append(lambda: self._store._drop_log(room))

    def schedule(self, timer: str, delay: float) -> None:
        self._ops.append(lambda: self._store._schedule(timer, delay))

    def cancel(self, timer: str) -> None:
        self._ops.append(lambda: self._store._cancel(timer))

    def commit(self) -> list[RoomEvent]:
        for op in self._ops:
            op()
        return self._events
