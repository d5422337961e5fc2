"""python-socketio's Redis client manager, with three changes:

- its listener reconnects with a backoff capped at two seconds (the stock one doubles
  up to a minute, so cross-node emits stayed lost long after Redis was back);
- it closes its connections: on a reconnect, and when the app stops (the stock one
  never stops its listener and leaves old connections to the garbage collector);
- `post` carries a packet already encoded for one connection on another node, which
  that node queues as it is: no encoding on either side of Redis but the sender's
  one, and no task per recipient (a relayed signal across nodes cost both).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import socketio

from .transport import Message

RETRY_MIN, RETRY_MAX = 0.1, 2.0


class RedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    subscribed = False

    async def _redis_listen_with_retries(self) -> AsyncIterator[Any]:
        delay = RETRY_MIN
        while True:
            try:
                await self._close_connections()
                self._redis_connect()
                await self.pubsub.subscribe(self.channel)
                self.subscribed = True
                delay = RETRY_MIN
                async for message in self.pubsub.listen():
                    yield message
            except Exception as exc:
                if self.subscribed:
                    self._get_logger().error("Redis client manager lost its feed: %r", exc)
                self.subscribed = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX)

    async def _close_connections(self) -> None:
        """Close the previous connection before making a new one (the stock manager
        drops it, leaking its sockets)."""
        for name in ("pubsub", "redis"):
            conn: Any = getattr(self, name, None)
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.aclose(), 2)

    async def post(self, sid: str, text: str) -> None:
        """Send an encoded Socket.IO packet to a connection of another node."""
        await self._publish({"method": "emit", "encoded": text, "room": sid,
                             "namespace": "/", "host_id": self.host_id})

    async def _handle_emit(self, message: dict[str, Any]) -> None:
        text = message.get("encoded")
        if text is None:
            await super()._handle_emit(message)
            return
        eio_sid = self.eio_sid_from_sid(message["room"], "/")
        if eio_sid is not None:  # else it is on another node, or gone
            self.server.post(eio_sid, Message(text))

    async def aclose(self) -> None:
        task: Any = getattr(self, "thread", None)
        if isinstance(task, asyncio.Task):
            task.cancel()
            # Bounded: redis-py cancelled mid-read may not finish until its socket closes.
            await asyncio.wait([task], timeout=2)
        await self._close_connections()
