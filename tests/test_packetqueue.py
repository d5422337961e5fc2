"""The packet queue engine.io waits on for each client (signaling/packetqueue.py)."""

from __future__ import annotations

import asyncio

import pytest

from signaling.packetqueue import PacketQueue


async def test_items_come_out_in_order_to_a_waiting_or_a_late_getter() -> None:
    queue = PacketQueue()
    waiting = queue.get()
    assert not waiting.done()
    queue.put_nowait("a")
    await queue.put("b")
    assert await waiting == "a"
    assert await queue.get() == "b"
    assert queue.empty()
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


async def test_a_getter_that_timed_out_does_not_swallow_the_next_item() -> None:
    queue = PacketQueue()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.get(), 0.01)  # what engine.io's writer does
    queue.put_nowait("kept")
    assert queue.get_nowait() == "kept"


async def test_join_waits_for_every_item_to_be_done() -> None:
    queue = PacketQueue()
    queue.put_nowait(1)
    queue.put_nowait(2)
    joined = asyncio.ensure_future(queue.join())
    queue.get_nowait()
    queue.task_done()
    await asyncio.sleep(0)
    assert not joined.done()
    queue.get_nowait()
    queue.task_done()
    await asyncio.wait_for(joined, 1)


async def test_drain_takes_everything_and_counts_it_done() -> None:
    queue = PacketQueue()
    for item in "abc":
        queue.put_nowait(item)
    assert queue.drain() == ["a", "b", "c"] and queue.drain() == []
    await asyncio.wait_for(queue.join(), 1)
