"""Node liveness: each node keeps pushing back a store timer named after itself.

When a node dies (or loses the store for longer than `node_timeout`) its timer fires on
another node, which treats every session attached to the dead node as disconnected:
its participants show `reconnecting` and resume elsewhere or leave with `timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from .errors import RtcError
from .store import Store

log = logging.getLogger(__name__)

NODE = "node:"


class Heartbeat:
    def __init__(self, store: Store, node: str, interval: float, timeout: float) -> None:
        self._store = store
        self._node = node
        self._interval = interval
        self._timeout = timeout
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._beat()
        self._task = asyncio.create_task(self._run(), name=f"heartbeat:{self._node}")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            await self._beat()

    async def _beat(self) -> None:
        try:
            await self._store.transact(
                [], lambda tx: tx.schedule(NODE + self._node, self._timeout))
        except RtcError as exc:
            log.warning("heartbeat of node %s failed: %s", self._node, exc.message)

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RtcError):
            # Leaving cleanly: the node's sessions were detached one by one already.
            await self._store.transact([], lambda tx: tx.cancel(NODE + self._node))
