"""The Redis store: state shared by several nodes (redis-py's `redis.asyncio`).

- Documents are JSON strings; a transaction WATCHes the keys it reads and commits
  with MULTI/EXEC, running again when another node got there first.
- Room logs are streams (`XADD ... MAXLEN`, trimmed by age too). The commit that
  assigns an event's seq also PUBLISHes it, and Redis runs a MULTI block as one, so
  every node hears a room's events in seq order. Pub/sub drops what a disconnected
  subscriber misses: after a reconnect the listeners are told to catch up from the logs.
- Timers are a sorted set by due time; every node polls it and whoever removes a due
  timer first runs it, so each fires exactly once even when the node that set it died.
- Sets (indexes such as a user's sessions) are Redis sets: adding and removing
  members never conflicts, so they are written without WATCH.

A lost connection makes every call raise `Unavailable` (a coded ack for the client)
and `healthy` false until an operation succeeds again; the listener reconnects by
itself with capped backoff.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as redis
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, WatchError

from .errors import Unavailable
from .ids import RoomId
from .store import (
    D,
    Doc,
    EventListener,
    MoreKeys,
    ResyncListener,
    RoomEvent,
    Store,
    T,
    TimerHandler,
    Tx,
)

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 64
TIMER_POLL = 0.1
RECONNECT_MIN, RECONNECT_MAX = 0.1, 2.0


class RedisStore(Store):
    def __init__(self, url: str, prefix: str = "mikoto", log_size: int = 1024,
                 log_age: float = 600.0, timeout: float = 2.0) -> None:
        self._prefix = prefix + ":"
        self._log_size = log_size
        self._log_age = log_age
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1), health_check_interval=5)
        self._channel = self._prefix + "events"
        self._timers_key = self._prefix + "timers"
        self._listeners: list[EventListener] = []
        self._resync: list[ResyncListener] = []
        self._handlers: dict[str, TimerHandler] = {}
        self._healthy = False
        self._subscribed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._locks = _KeyLocks()
        self._pubsub: PubSub | None = None
        self._closing = False

    # -- the interface ------------------------------------------------------------------

    async def transact(self, keys: Iterable[str], fn: Callable[[Tx], T]) -> T:
        names = list(dict.fromkeys(keys))
        for attempt in range(MAX_ATTEMPTS):
            # Transactions of this node on the same documents take turns, so optimistic
            # retries are only ever against other nodes (a busy room would starve else).
            async with self._locks.hold(names):
                async with self._call():
                    async with self._redis.pipeline(transaction=True) as pipe:
                        raws: list[Any] = []
                        if names:
                            full = [self._prefix + k for k in names]
                            await pipe.watch(*full)
                            raws = await pipe.mget(full)
                        tx = _RedisTx(self, dict(zip(names, raws, strict=True)))
                        try:
                            result = fn(tx)
                        except MoreKeys as more:
                            names += [k for k in more.keys if k not in names]
                            continue
                        pipe.multi()  # type: ignore[no-untyped-call]
                        tx.write(pipe)
                        try:
                            await pipe.execute()
                        except WatchError:
                            pass
                        else:
                            return result
            await asyncio.sleep(random.uniform(0, min(0.002 * attempt, 0.05)))
        raise Unavailable("the store is too busy; try again")

    async def get(self, key: str, kind: type[D]) -> D | None:
        async with self._call():
            raw: Any = await self._redis.get(self._prefix + key)
        return _decode(raw, kind)

    async def get_many(self, keys: list[str], kind: type[D]) -> list[D | None]:
        if not keys:
            return []
        async with self._call():
            raws: list[Any] = await self._redis.mget([self._prefix + k for k in keys])
        return [_decode(raw, kind) for raw in raws]

    async def members(self, key: str) -> set[str]:
        async with self._call():
            raw: Any = await self._redis.smembers(self._prefix + key)
        return {m.decode() for m in raw}

    async def append(self, lists: Mapping[str, list[str]], keep: int, ttl: float) -> None:
        if not lists:
            return
        async with self._call():
            pipe = self._redis.pipeline(transaction=False)
            for key, items in lists.items():
                full = self._prefix + key
                pipe.rpush(full, *items)
                pipe.ltrim(full, -keep, -1)
                pipe.expire(full, max(1, round(ttl)))
            await pipe.execute()

    async def items(self, key: str) -> list[str]:
        async with self._call():
            raw: Any = await self._redis.lrange(self._prefix + key, 0, -1)
        return [item.decode() for item in raw]

    async def events(self, room: RoomId, after: int) -> list[RoomEvent] | None:
        async with self._call():
            entries: Any = await self._redis.xrange(self._log_key(room))
        if not entries or int(entries[0][1][b"s"]) > after + 1:
            return None
        return [RoomEvent.from_dict(json.loads(fields[b"e"])) for _, fields in entries
                if int(fields[b"s"]) > after]

    def on_event(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def on_resync(self, listener: ResyncListener) -> None:
        self._resync.append(listener)

    def on_timer(self, prefix: str, handler: TimerHandler) -> None:
        self._handlers[prefix] = handler

    @property
    def healthy(self) -> bool:
        return self._healthy and self._subscribed.is_set()

    async def start(self) -> None:
        """Start listening; waits (bounded) for the first subscription so a node that
        starts while Redis is down still comes up, not ready, and recovers by itself."""
        self._loops = [asyncio.create_task(self._listen(), name="store-events"),
                       asyncio.create_task(self._poll_timers(), name="store-timers")]
        try:
            await asyncio.wait_for(self._subscribed.wait(), 5)
        except TimeoutError:
            log.error("Redis is unreachable; the node starts not ready")

    async def aclose(self) -> None:
        # The loops stop by themselves at their next turn: cancelling redis-py in the
        # middle of a command can leave it waiting forever on its connection's lock.
        self._closing = True
        tasks = [*self._loops, *self._tasks]
        for task in self._tasks:
            task.cancel()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=5)
            for task in pending:
                task.cancel()
        if self._pubsub is not None:
            await _close(self._pubsub)
        await self._redis.aclose()
        await self._redis.connection_pool.disconnect()

    # -- internals ----------------------------------------------------------------------

    def _call(self) -> _Call:
        return _Call(self)

    def _log_key(self, room: RoomId) -> str:
        return self._prefix + "log:" + room

    async def _listen(self) -> None:
        delay = RECONNECT_MIN
        missed = False
        while not self._closing:
            pubsub = self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                self._subscribed.set()
                self._healthy = True
                delay = RECONNECT_MIN
                if missed:
                    log.info("store event feed is back; catching up")
                    for resync in self._resync:
                        await _guarded("resync", resync())
                while not self._closing:
                    message = await pubsub.get_message(timeout=0.25)
                    if message is None or message["type"] != "message":
                        continue
                    event = RoomEvent.from_dict(json.loads(message["data"]))
                    for listener in self._listeners:
                        await _guarded("event listener", listener(event))
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self._subscribed.is_set():
                    log.error("store event feed lost: %r; retrying", exc)
                self._subscribed.clear()
                self._healthy = False
                missed = True
            await _close(pubsub)
            self._pubsub = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

    async def _poll_timers(self) -> None:
        while not self._closing:
            await asyncio.sleep(TIMER_POLL)
            try:
                due: Any = await self._redis.zrangebyscore(self._timers_key, "-inf", time.time(),
                                                      start=0, num=100)
                for raw in due:
                    if await self._redis.zrem(self._timers_key, raw):
                        self._fire(raw.decode())
            except (RedisError, OSError):
                continue  # the feed's loop logs and tracks health

    def _fire(self, timer: str) -> None:
        for prefix, handler in self._handlers.items():
            if timer.startswith(prefix):
                task = asyncio.create_task(_guarded(f"timer {timer}",
                                                    handler(timer[len(prefix):])))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return
        log.warning("no handler for timer %s", timer)


class _KeyLocks:
    """Per-document locks of one node, taken in key order (so never deadlocking)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, keys: list[str]) -> AsyncIterator[None]:
        ordered = sorted(keys)
        for key in ordered:
            lock, users = self._locks.get(key, (None, 0))
            self._locks[key] = (lock or asyncio.Lock(), users + 1)
        taken: list[asyncio.Lock] = []
        try:
            for key in ordered:
                lock = self._locks[key][0]
                await lock.acquire()
                taken.append(lock)
            yield
        finally:
            for lock in taken:
                lock.release()
            for key in ordered:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


class _Call:
    """Maps backend failures to `Unavailable` and keeps `healthy` current."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: object) -> bool:
        if exc is None:
            return False
        if isinstance(exc, (RedisError, OSError)) and not isinstance(exc, WatchError):
            self._store._healthy = False
            raise Unavailable("the store is unreachable; try again shortly") from exc
        return False


async def _close(pubsub: PubSub) -> None:
    # Bounded: closing a pubsub whose reader was cancelled mid-read can wait forever.
    try:
        await asyncio.wait_for(pubsub.aclose(), 2)  # type: ignore[no-untyped-call]
    except (RedisError, OSError, TimeoutError):
        pass


async def _guarded(what: str, coro: Coroutine[Any, Any, None] | Awaitable[None]) -> None:
    try:
        await coro
    except Exception:
        log.exception("%s failed", what)


def _decode(raw: bytes | None, kind: type[D]) -> D | None:
    return None if raw is None else kind.from_dict(json.loads(raw))


class _RedisTx(Tx):
    def __init__(self, store: RedisStore, raws: dict[str, bytes | None]) -> None:
        self._store = store
        self._raws = raws
        self._docs: dict[str, Doc | None] = {}
        self._ops: list[Callable[[Pipeline], object]] = []

    def get(self, key: str, kind: type[D]) -> D | None:
        if key in self._docs:
            doc = self._docs[key]
            assert doc is None or isinstance(doc, kind)
            return doc
        if key not in self._raws:
            raise MoreKeys([key])
        decoded = _decode(self._raws[key], kind)
        self._docs[key] = decoded
        return decoded

    def put(self, key: str, doc: Doc, ttl: float | None = None) -> None:
        self._docs[key] = doc
        data = json.dumps(doc.to_dict(), separators=(",", ":"))
        px = None if ttl is None else max(1, int(ttl * 1000))
        self._ops.append(lambda p: p.set(self._store._prefix + key, data, px=px))

    def delete(self, key: str) -> None:
        self._docs[key] = None
        self._ops.append(lambda p: p.delete(self._store._prefix + key))

    def add(self, key: str, member: str) -> None:
        self._ops.append(lambda p: p.sadd(self._store._prefix + key, member))

    def discard(self, key: str, member: str) -> None:
        self._ops.append(lambda p: p.srem(self._store._prefix + key, member))

    def record(self, event: RoomEvent) -> None:
        store = self._store
        data = json.dumps(event.to_dict(), separators=(",", ":"))
        horizon = int((time.time() - store._log_age) * 1000)

        def write(p: Pipeline) -> None:
            log_key = store._log_key(event.room)
            # Exact trimming: both bounds are promises to clients (what a resume finds).
            p.xadd(log_key, {"s": event.seq, "e": data}, maxlen=store._log_size,
                   approximate=False)
            p.xtrim(log_key, minid=horizon, approximate=False)
            p.publish(store._channel, data)

        self._ops.append(write)

    def drop_log(self, room: RoomId) -> None:
        self._ops.append(lambda p: p.delete(self._store._log_key(room)))

    def schedule(self, timer: str, delay: float) -> None:
        due = time.time() + delay
        self._ops.append(lambda p: p.zadd(self._store._timers_key, {timer: due}))

    def cancel(self, timer: str) -> None:
        self._ops.append(lambda p: p.zrem(self._store._timers_key, timer))

    def write(self, pipe: Pipeline) -> None:
        for op in self._ops:
            op(pipe)
