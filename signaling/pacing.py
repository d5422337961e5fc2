"""Work that comes due all at once, started a few at a time.

Timers set together come due together: the pings of connections that connected in the
same second, the grace periods of sessions whose network dropped at once. All started
in one turn of the loop, 500 session expiries held every relay read behind them for
tens of milliseconds (bench/README.md, session 10). A Pacer runs at most `per_turn`
calls per turn of the loop, and the loop reads its sockets between turns.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)


class Pacer:
    def __init__(self, per_turn: int) -> None:
        self._per_turn = per_turn
        self._waiting: deque[Callable[[], object]] = deque()
        self._turn: asyncio.Handle | None = None

    def call(self, fn: Callable[[], object]) -> None:
        """Call `fn` at a coming turn of the running loop, after those called before it."""
        self._waiting.append(fn)
        if self._turn is None:
            self._turn = asyncio.get_running_loop().call_soon(self._run)

    def close(self) -> None:
        """Drop what has not run."""
        if self._turn is not None:
            self._turn.cancel()
            self._turn = None
        self._waiting.clear()

    def __len__(self) -> int:
        return len(self._waiting)

    def _run(self) -> None:
        waiting = self._waiting
        for _ in range(min(self._per_turn, len(waiting))):
            fn = waiting.popleft()
            try:
                fn()
            except Exception:  # one failing call must not stop the others
                log.exception("paced call %r failed", fn)
        # Called soon, not at a time: the loop polls its sockets before it runs it.
        self._turn = asyncio.get_running_loop().call_soon(self._run) if waiting else None
