"""python-socketio's Redis client manager, closable: the stock one never stops its
listener or closes its connections, which outlive the app (and leak in tests)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import socketio


class RedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    async def aclose(self) -> None:
        task: Any = getattr(self, "thread", None)
        if isinstance(task, asyncio.Task):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for name in ("pubsub", "redis"):
            conn: Any = getattr(self, name, None)
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.aclose()
