"""Many deadlines on one timer.

Every connection has two (its token's notice and expiry): an asyncio TimerHandle each
costs about 600 bytes with its arguments, per idle connection. Here a deadline is a
heap entry, and one TimerHandle waits for the earliest. Entries are never cancelled:
whoever fires checks whether the deadline still holds (the connection may be gone, or
its token refreshed).
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from functools import partial
from typing import Generic, TypeVar

from .pacing import Pacer

T = TypeVar("T")


class Deadlines(Generic[T]):
    def __init__(self, fire: Callable[[T], None], per_turn: int = 32) -> None:
        self._fire = fire
        # Connections that came together have their deadlines together (a node's clients
        # reconnect within a second after it restarts): `per_turn` fire per turn of the loop.
        self._pacer = Pacer(per_turn)
        self._heap: list[tuple[float, int, T]] = []
        self._count = 0  # a tiebreak, so entries never compare their items
        self._timer: asyncio.TimerHandle | None = None

    def add(self, delay: float, item: T) -> None:
        """Fire `item` after `delay` seconds (from the running loop's clock)."""
        loop = asyncio.get_running_loop()
        at = loop.time() + max(0.0, delay)
        self._count += 1
        heapq.heappush(self._heap, (at, self._count, item))
        if self._heap[0][2] is item:  # the new earliest
            self._arm(loop)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._heap.clear()
        self._pacer.close()

    def __len__(self) -> int:
        return len(self._heap) + len(self._pacer)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(self._heap[0][0], self._run) if self._heap else None

    def _run(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._heap and self._heap[0][0] <= now:
            self._pacer.call(partial(self._fire, heapq.heappop(self._heap)[2]))
        self._timer = None
        self._arm(loop)
