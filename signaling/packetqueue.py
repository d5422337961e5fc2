"""The queue of packets engine.io keeps for each client, made cheaper to wait on and to
keep.

engine.io's writer waits for the next packet with `asyncio.wait_for(queue.get(), ...)`.
With asyncio's Queue, `get()` is a coroutine, so every wait wraps it in a new Task: at
signaling rates that was a tenth of a relayed message's cost. Here `get()` returns a
Future, which `wait_for` awaits as it is. The queue has the methods engine.io uses.
Items are in a list, not a deque: a deque takes 760 bytes even when empty, for every
idle connection, and the queue is nearly always empty or taken whole (`drain`).
"""

from __future__ import annotations

import asyncio
from typing import Any


class PacketQueue:
    __slots__ = ("_finished", "_getter", "_items", "_loop", "_unfinished")

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._items: list[Any] = []
        # engine.io has one reader of the queue at a time: the writer, or a long-poll.
        self._getter: asyncio.Future[Any] | None = None
        self._unfinished = 0
        self._finished: asyncio.Event | None = None  # made by `join`, which is rare

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        self._unfinished += 1
        getter, self._getter = self._getter, None
        if getter is not None and not getter.done():  # a getter that timed out is cancelled
            getter.set_result(item)
        else:
            self._items.append(item)

    async def put(self, item: Any) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> Any:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.pop(0)

    def drain(self) -> list[Any]:
        """Everything queued, at once (without waiting)."""
        items, self._items = self._items, []
        self._unfinished -= len(items)
        if self._unfinished <= 0:
            self._done()
        return items

    def get(self) -> asyncio.Future[Any]:
        got: asyncio.Future[Any] = self._loop.create_future()
        if self._items:
            got.set_result(self._items.pop(0))
        else:
            assert self._getter is None or self._getter.done(), "one reader at a time"
            self._getter = got
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
