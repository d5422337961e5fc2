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
        self._seen: OrderedDict[str, tuple[float, Ack | asyncio.Future[Ack]]] = OrderedDict()

    async def run(self, cid: str, act: Callable[[], Awaitable[Ack]]) -> Ack:
        now = time.monotonic()
        self._expire(now)
        seen = self._seen.get(cid)
        if seen is not None:
            made = seen[1]
            return made if isinstance(made, dict) else await asyncio.shield(made)
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._keep(cid, now, future)
        try:
            ack = await act()
        except BaseException as exc:
            # Not acted on to the end: let a retry try again.
            self._seen.pop(cid, None)
            future.set_exception(exc)
            future.exception()  # retrieved: a retry waiting on it re-raises, nobody else
            raise
        kept = self._seen.get(cid)
        if _transient(ack):
            self._seen.pop(cid, None)  # a retry should try again, not get this again
        elif kept is not None and kept[1] is future:
            self._seen[cid] = (kept[0], ack)
        future.set_result(ack)
        return ack

    def run_now(self, cid: str, act: Callable[[], Ack | None]) -> Ack | None:
        """`run` for an act done at once, which returns None when it did nothing: None
        too when `cid` is known (`run` answers it with the first ack)."""
        now = time.monotonic()
        self._expire(now)
        if cid in self._seen:
            return None
        ack = act()
        if ack is not None and not _transient(ack):
            # The ack itself, not a Future: making one asks for the running loop, which
            # on Python 3.11 is a system call (getpid) per relayed signal.
            self._keep(cid, now, ack)
        return ack

    def _keep(self, cid: str, now: float, made: Ack | asyncio.Future[Ack]) -> None:
        self._seen[cid] = (now + self._window, made)
        if len(self._seen) > self._limit:
            self._seen.popitem(last=False)

    def _expire(self, now: float) -> None:
        while self._seen:
            cid, (until, _) = next(iter(self._seen.items()))
            if until > now:
                return
            del self._seen[cid]

    def __len__(self) -> int:
        return len(self._seen)

    def export(self, last: int = 64) -> dict[str, Ack]:
        """The latest acks already made (what a retry on another node needs)."""
        self._expire(time.monotonic())
        done = [(cid, made) for cid, (_, made) in self._seen.items() if isinstance(made, dict)]
        return dict(done[-last:])

    def load(self, acks: dict[str, Ack]) -> None:
        """Remember acks made on another node (a session that resumed here)."""
        now = time.monotonic()
        for cid, ack in acks.items():
            if cid not in self._seen:
                self._keep(cid, now, ack)


def _transient(ack: Ack) -> bool:
    error = ack.get("error") if ack.get("ok") is False else None
    return isinstance(error, dict) and error.get("code") in ("unavailable", "internal")
