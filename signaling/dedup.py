"""Request ids (`cid`): a retried request gets its first ack instead of acting twice."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

Ack = dict[str, Any]


class Dedup:
    """Remembers the acks of recent request ids for `window` seconds (at most `limit` of them)."""

    def __init__(self, window: float, limit: int = 1024) -> None:
        self._window = window
        self._limit = limit
        # cid -> (remembered until, the ack, or the future of an ack still being made)
        self._seen: OrderedDict[str, tuple[float, asyncio.Future[Ack]]] = OrderedDict()

    async def run(self, cid: str, act: Callable[[], Awaitable[Ack]]) -> Ack:
        now = time.monotonic()
        self._expire(now)
        seen = self._seen.get(cid)
        if seen is not None:
            return await asyncio.shield(seen[1])
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._seen[cid] = (now + self._window, future)
        if len(self._seen) > self._limit:
            self._seen.popitem(last=False)
        try:
            ack = await act()
        except BaseException as exc:
            # Not acted on to the end: let a retry try again.
            self._seen.pop(cid, None)
            future.set_exception(exc)
            future.exception()  # retrieved: a retry waiting on it re-raises, nobody else
            raise
        future.set_result(ack)
        return ack

    def _expire(self, now: float) -> None:
        while self._seen:
            cid, (until, _) = next(iter(self._seen.items()))
            if until > now:
                return
            del self._seen[cid]

    def __len__(self) -> int:
        return len(self._seen)
