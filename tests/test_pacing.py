"""Work that comes due at once runs a few at a time (signaling/pacing.py), with the loop
free between: the Pacer itself, the embedded store's timers and the connections'
deadlines (pings, token notices)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from signaling.deadlines import Deadlines
from signaling.memstore import TIMERS_PER_TURN, MemoryStore
from signaling.pacing import Pacer


class Turns:
    """Counts the loop's turns, and marks each call made with the turn it ran in."""

    def __init__(self) -> None:
        self.now = 0
        self.ran: list[tuple[int, object]] = []
        self._task = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            self.now += 1
            await asyncio.sleep(0)

    def mark(self, item: object) -> None:
        self.ran.append((self.now, item))

    def per_turn(self) -> int:
        """The most calls made in one turn."""
        counts: dict[int, int] = {}
        for turn, _ in self.ran:
            counts[turn] = counts.get(turn, 0) + 1
        return max(counts.values())

    def items(self) -> list[object]:
        return [item for _, item in self.ran]

    def close(self) -> None:
        self._task.cancel()


@pytest.fixture
async def turns() -> AsyncIterator[Turns]:
    turns = Turns()
    await asyncio.sleep(0)
    yield turns
    turns.close()


async def _until(done: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not done():
            await asyncio.sleep(0.005)


async def test_a_pacer_runs_a_few_calls_a_turn_in_order(
        turns: Turns, caplog: pytest.LogCaptureFixture) -> None:
    pacer = Pacer(per_turn=8)

    def boom() -> None:
        raise RuntimeError("boom")

    for i in range(100):
        pacer.call(boom if i == 3 else lambda i=i: turns.mark(i))  # type: ignore[misc]
    await _until(lambda: len(turns.ran) == 99)
    assert turns.items() == [i for i in range(100) if i != 3]
    assert turns.per_turn() == 8  # and the ticker ran between them
    assert "paced call" in caplog.text and "boom" in caplog.text  # logged, the rest ran


async def test_a_closed_pacer_drops_what_has_not_run(turns: Turns) -> None:
    pacer = Pacer(per_turn=8)
    for i in range(100):
        pacer.call(lambda i=i: turns.mark(i))  # type: ignore[misc]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    pacer.close()
    ran = len(turns.ran)
    await asyncio.sleep(0.05)
    assert 0 < ran < 100 and len(turns.ran) == ran and len(pacer) == 0


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    store = MemoryStore()
    yield store
    await store.aclose()


async def test_the_stores_timers_due_together_start_a_few_a_turn(
        store: MemoryStore, turns: Turns) -> None:
    async def handle(name: str) -> None:
        turns.mark(name)

    store.on_timer("t:", handle)
    await store.transact([], lambda tx: [tx.schedule(f"t:{i}", 0.01) for i in range(100)])
    time.sleep(0.03)  # noqa: ASYNC251 - the loop held, so every timer is overdue at once
    await _until(lambda: len(turns.ran) == 100)
    assert sorted(turns.items()) == sorted(str(i) for i in range(100))
    assert turns.per_turn() <= TIMERS_PER_TURN


async def test_a_timer_cancelled_or_moved_while_waiting_its_turn_does_not_run(
        store: MemoryStore, turns: Turns, caplog: pytest.LogCaptureFixture) -> None:
    async def handle(name: str) -> None:
        turns.mark(name)

    store.on_timer("t:", handle)
    await store.transact([], lambda tx: [tx.schedule(f"t:{i}", 0.01) for i in range(100)])
    time.sleep(0.03)  # noqa: ASYNC251 - the loop held, so every timer is overdue at once
    async with asyncio.timeout(5):
        while not turns.ran:  # due, all of them; the first few have run
            await asyncio.sleep(0)
    assert len(turns.ran) < 100
    # A session resumed (its expiry cancelled) or moved again, before its expiry's turn.
    await store.transact([], lambda tx: tx.cancel("t:99"))
    await store.transact([], lambda tx: tx.schedule("t:98", 0.2))
    await _until(lambda: len(turns.ran) == 98)
    await asyncio.sleep(0.05)
    assert "99" not in turns.items() and "98" not in turns.items()
    await _until(lambda: "98" in turns.items())  # at its new time, once
    assert turns.items().count("98") == 1 and len(turns.ran) == 99


async def test_deadlines_due_together_fire_a_few_a_turn(turns: Turns) -> None:
    deadlines: Deadlines[int] = Deadlines(turns.mark, per_turn=16)
    for i in range(200):
        deadlines.add(0.01, i)
    await _until(lambda: len(turns.ran) == 200)
    assert turns.items() == list(range(200))
    assert turns.per_turn() == 16
    assert len(deadlines) == 0
