"""Deadlines (signaling/deadlines.py): many on one timer, fired in order, on time."""

from __future__ import annotations

import asyncio

from signaling.deadlines import Deadlines


async def test_deadlines_fire_in_order_on_one_timer() -> None:
    fired: list[str] = []
    deadlines: Deadlines[str] = Deadlines(fired.append)
    deadlines.add(0.15, "late")
    deadlines.add(0.05, "early")  # earlier than the armed one: the timer moves
    deadlines.add(0.05, "early too")
    deadlines.add(-1, "overdue")  # due at once
    await asyncio.sleep(0.01)
    assert fired == ["overdue"]
    await asyncio.sleep(0.08)
    assert fired == ["overdue", "early", "early too"]
    await asyncio.sleep(0.1)
    assert fired == ["overdue", "early", "early too", "late"] and len(deadlines) == 0


async def test_closed_deadlines_fire_nothing() -> None:
    fired: list[int] = []
    deadlines: Deadlines[int] = Deadlines(fired.append)
    for i in range(100):
        deadlines.add(0.01 * (i % 5), i)
    deadlines.close()
    await asyncio.sleep(0.1)
    assert fired == [] and len(deadlines) == 0
