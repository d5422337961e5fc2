"""The store interface, run against every implementation (memory and a real redis-server)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from signaling.errors import Conflict
from signaling.ids import RoomId
from signaling.memstore import MemoryStore
from signaling.protocol import ServerEvent
from signaling.store import RoomEvent, Store, Tx

from .conftest import StoreFactory

R = RoomId("r")


@dataclass
class Counter:
    n: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Counter:
        return cls(d["n"])


def event(seq: int, room: RoomId = R) -> RoomEvent:
    return RoomEvent(room, seq, ServerEvent.PARTICIPANT_UPDATED, {"room": room, "seq": seq})


def increment(key: str) -> Any:
    def inc(tx: Tx) -> int:
        counter = tx.get(key, Counter) or Counter()
        counter.n += 1
        tx.put(key, counter)
        return counter.n
    return inc


async def test_documents_round_trip_and_expire(store: Store) -> None:
    assert await store.get("c", Counter) is None
    await store.transact(["c"], lambda tx: tx.put("c", Counter(3)))
    assert (await store.get("c", Counter)) == Counter(3)
    await store.transact([], lambda tx: tx.put("t", Counter(1), ttl=0.2))
    assert await store.get_many(["c", "t", "none"], Counter) == [Counter(3), Counter(1), None]
    await asyncio.sleep(0.3)
    assert await store.get("t", Counter) is None
    await store.transact(["c"], lambda tx: tx.delete("c"))
    assert await store.get("c", Counter) is None


async def test_a_failing_transaction_writes_nothing(store: Store) -> None:
    heard: list[RoomEvent] = []

    async def listen(e: RoomEvent) -> None:
        heard.append(e)

    store.on_event(listen)

    def fail(tx: Tx) -> None:
        tx.put("c", Counter(1))
        tx.add("s", "x")
        tx.record(event(1))
        raise Conflict("no")

    with pytest.raises(Conflict):
        await store.transact(["c"], fail)
    await asyncio.sleep(0.1)
    assert await store.get("c", Counter) is None
    assert await store.members("s") == set()
    assert await store.events(R, 0) is None and heard == []


async def test_concurrent_transactions_never_lose_an_update(make_store: StoreFactory) -> None:
    # Two stores on one backend: for Redis, two nodes racing on one document.
    a, b = await make_store(), await make_store()
    if isinstance(a, MemoryStore):
        b = a
    results = await asyncio.gather(*(s.transact(["c"], increment("c"))
                                     for _ in range(40) for s in (a, b)))
    assert sorted(results) == list(range(1, 81))
    assert await a.get("c", Counter) == Counter(80)


async def test_a_key_read_without_declaring_it_is_still_read_atomically(store: Store) -> None:
    await store.transact([], lambda tx: tx.put("late", Counter(5)))
    assert await asyncio.gather(*(store.transact([], increment("late"))
                                  for _ in range(10))) is not None
    assert await store.get("late", Counter) == Counter(15)


async def test_sets(store: Store) -> None:
    await store.transact([], lambda tx: (tx.add("s", "a"), tx.add("s", "b")))
    await store.transact([], lambda tx: tx.discard("s", "a"))
    assert await store.members("s") == {"b"}
    await store.transact([], lambda tx: tx.discard("s", "b"))
    assert await store.members("s") == set()


async def test_room_logs_keep_the_last_events_in_order(make_store: StoreFactory) -> None:
    store = await make_store(log_size=4)
    for seq in range(1, 8):
        await store.transact([], lambda tx, s=seq: tx.record(event(s)))
    assert [e.seq for e in await store.events(R, 3) or []] == [4, 5, 6, 7]
    assert [e.seq for e in await store.events(R, 5) or []] == [6, 7]
    assert await store.events(R, 7) == []
    assert await store.events(R, 2) is None  # 3 fell out of the log
    assert (await store.events(R, 6) or [None])[0] == event(7)
    await store.transact([], lambda tx: tx.drop_log(R))
    assert await store.events(R, 0) is None


async def test_room_logs_forget_old_events(make_store: StoreFactory) -> None:
    store = await make_store(log_size=100, log_age=0.3)
    for seq in (1, 2):
        await store.transact([], lambda tx, s=seq: tx.record(event(s)))
    await asyncio.sleep(0.4)
    await store.transact([], lambda tx: tx.record(event(3)))
    assert await store.events(R, 0) is None
    assert [e.seq for e in await store.events(R, 2) or []] == [3]


async def test_every_store_on_the_backend_hears_events_in_commit_order(
        make_store: StoreFactory) -> None:
    a, b = await make_store(), await make_store()
    heard: dict[int, list[int]] = {id(a): [], id(b): []}
    for s in (a, b):
        async def listen(e: RoomEvent, s: Store = s) -> None:
            heard[id(s)].append(e.seq)
        s.on_event(listen)
    writers = [a, b] if not isinstance(a, MemoryStore) else [a]
    seq = 0

    def next_event(tx: Tx) -> None:
        nonlocal seq
        counter = tx.get("seq", Counter) or Counter()
        counter.n += 1
        tx.put("seq", counter)
        tx.record(event(counter.n))
        seq = counter.n

    await asyncio.gather(*(w.transact(["seq"], next_event) for _ in range(30) for w in writers))
    expected = list(range(1, 30 * len(writers) + 1))
    for s in writers:
        async with asyncio.timeout(5):
            while heard[id(s)] != expected:
                await asyncio.sleep(0.01)


async def test_timers_fire_once_even_with_several_stores(make_store: StoreFactory) -> None:
    a, b = await make_store(), await make_store()
    fired: list[tuple[str, str]] = []
    for name, s in (("a", a), ("b", b)):
        async def handle(timer: str, name: str = name) -> None:
            fired.append((name, timer))
        s.on_timer("t:", handle)
    await a.transact([], lambda tx: tx.schedule("t:1", 0.2))
    await a.transact([], lambda tx: tx.schedule("t:2", 0.2))
    await a.transact([], lambda tx: tx.cancel("t:2"))
    await a.transact([], lambda tx: tx.schedule("t:3", 5))
    await a.transact([], lambda tx: tx.schedule("t:3", 0.3))  # replaces the first
    await asyncio.sleep(0.8)
    assert sorted(t for _, t in fired) == ["1", "3"]


async def test_memory_lists_expire_oldest_first_and_are_forgotten() -> None:
    now = [1000.0]
    store = MemoryStore(clock=lambda: now[0])
    await store.append({"kept": ["a", "b"]}, keep=3, ttl=10)
    for i in range(50):
        await store.append({f"old{i}": ["x"]}, keep=3, ttl=10)
    now[0] += 5
    await store.append({"kept": ["c", "d"]}, keep=3, ttl=10)  # refreshed: lives to 1015
    assert await store.items("kept") == ["b", "c", "d"]
    now[0] += 6  # 1011: the 50 old lists expired at 1010
    await store.append({"new": ["e"]}, keep=3, ttl=10)
    assert await store.items("old0") == [] and await store.items("kept") == ["b", "c", "d"]
    assert sorted(store._lists) == ["kept", "new"]  # the expired are gone, not only hidden
    now[0] += 5  # 1016
    await store.append({"new": ["f"]}, keep=3, ttl=10)
    assert await store.items("kept") == [] and await store.items("new") == ["e", "f"]
    assert list(store._lists) == ["new"]
