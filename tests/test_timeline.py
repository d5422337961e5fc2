"""Call timelines (signaling/timeline.py) on the embedded store: a big flush does not hold
the loop, and closing in the middle of one loses nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from signaling.ids import RoomId
from signaling.memstore import MemoryStore
from signaling.timeline import FLUSH_CHUNK, Timelines, room_key

CALLS = 10 * FLUSH_CHUNK
CANDIDATE = {"candidate": {"candidate": "candidate:1 1 udp 2122260223 192.0.2.7 50000 typ host",
                           "sdpMid": "0", "sdpMLineIndex": 0}}


@pytest.fixture
async def timelines() -> AsyncIterator[tuple[MemoryStore, Timelines]]:
    store = MemoryStore()
    timelines = Timelines(store, keep=100, age=60)
    # One signal in each of many rooms: as many entries as calls, in one flush.
    for i in range(CALLS):
        timelines.signal(f"r{i}", f"P{i}a", f"P{i}b", CANDIDATE)
        timelines.signal(f"r{i}", f"P{i}a", f"P{i}b", CANDIDATE)
    yield store, timelines
    await timelines.aclose()


async def _entries(store: MemoryStore) -> list[dict[str, Any]]:
    return [entry for i in range(CALLS) for entry in
            await Timelines(store, keep=100, age=60).read(room_key(RoomId(f"r{i}")))]


async def test_a_big_flush_lets_the_loop_run_between_its_chunks(
        timelines: tuple[MemoryStore, Timelines]) -> None:
    store, timeline = timelines
    turns = 0

    async def tick() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    turns = 0
    try:
        await timeline.read(room_key(RoomId("r0")))  # flushes everything first
    finally:
        ticker.cancel()
    # Written at once, the flush would have left the ticker no turn until it ended.
    assert turns >= CALLS // FLUSH_CHUNK - 1
    entries = await _entries(store)
    assert len(entries) == CALLS
    assert {(e["room"], e["kind"], e["count"]) for e in entries} == {
        (f"r{i}", "candidate", 2) for i in range(CALLS)}


async def test_closing_in_the_middle_of_a_flush_writes_the_rest(
        timelines: tuple[MemoryStore, Timelines]) -> None:
    store, timeline = timelines
    timeline.start()
    for _ in range(3):  # the flush starts and writes its first chunks
        await asyncio.sleep(0)
    assert 0 < len(await store.items(room_key(RoomId("r0")))), "the flush has begun"
    assert not await store.items(room_key(RoomId(f"r{CALLS - 1}"))), "and has not ended"
    await timeline.aclose()
    assert len(await _entries(store)) == CALLS
