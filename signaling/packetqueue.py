"""The queue of packets engine.io keeps for each client, made cheaper to wait on.

engine.io's writer waits for the next packet with `asyncio.wait_for(queue.get(), ...)`.
With asyncio's Queue, `get()` is a coroutine, so every wait wraps it in a new Task: at
signaling rates that was a tenth of a relayed message's cost. Here `get()` returns a
Future, which `wait_for` awaits as it is. The queue has the methods engine.io uses.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any


class PacketQueue:
    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._items: deque[Any] = deque()
        self._getters: deque[asyncio.Future[Any]] = deque()
        self._unfinished = 0
        self._finished: asyncio.Event | None = None  # made by `join`, which is rare

    def empty(self) -> bool:
        return not self._items

    def waiting(self) -> bool:
        """Whether a getter waits for the next item (so nothing is queued)."""
        return any(not getter.done() for getter in self._getters)

    def put_nowait(self, item: Any) -> None:
        self._unfinished += 1
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():  # a getter that timed out is cancelled: skip it
                getter.set_result(item)
                return
        self._items.append(item)

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    def drain(self) -> list[Any]:
        """Everything queued, at once (without waiting)."""
        items = list(self._items)
        self._items.clear()
        self._unfinished -= len(items)
        if self._unfinished <= 0:
            self._done()
        return items

    def get(self) -> asyncio.Future[Any]:
        got: asyncio.Future[Any] = self._loop.create_future()
        if self._items:
            got.set_result(self._items.popleft())
        else:
            self._getters.append(got)
        return got

    def task_done(self) -> None:
        if self._unfinished > 0:
            self._unfinished -= 1
        if self._unfinished == 0:
            self._done()

    def _done(self) -> None:
        self._unfinished = 0
        if self._finished is not None:
            self._finished.set()
            self._finished = None

    async def join(self) -> None:
        if self._unfinished:
            if self._finished is None:
                self._finished = asyncio.Event()
            await self._finished.wait()
