"""Rate-limited delivery: at most one send per interval per key, the latest state always
following, and final states sent at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

Flush = Callable[[str], Coroutine[Any, Any, None]]


class Coalescer:
    def __init__(self, interval: float, flush: Flush,
                 spawn: Callable[[Coroutine[Any, Any, None]], None]) -> None:
        self._interval = interval
        self._flush = flush
        self._spawn = spawn
        self._last: dict[str, float] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    async def changed(self, key: str, final: bool = False) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        last = self._last.get(key)
        if final or last is None or now - last >= self._interval:
            timer = self._timers.pop(key, None)
            if timer is not None:
                timer.cancel()
            if final:
                self._last.pop(key, None)
            else:
                self._last[key] = now
            await self._flush(key)
        elif key not in self._timers:
            # One trailing send carries whatever the state is by then.
            self._timers[key] = loop.call_at(last + self._interval, self._fire, key)

    def _fire(self, key: str) -> None:
        del self._timers[key]
        self._last[key] = asyncio.get_running_loop().time()
        self._spawn(self._flush(key))

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
