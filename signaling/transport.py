"""How the node's engine.io speaks WebSocket: with or without permessage-deflate.

python-engineio's aiohttp driver always accepts permessage-deflate, which every browser
offers: about 100 kB per connection and one compression per recipient of every
message (bench/README.md). The driver has no option for it, so the node gives its
server a copy of the driver's WebSocket class that sets aiohttp's `compress`. A client
that offers deflate to a node with it off simply connects uncompressed.
"""

from __future__ import annotations

from typing import Any

import socketio
from aiohttp.web import WebSocketResponse
from engineio.async_drivers import aiohttp as eio_aiohttp


class _WebSocket(eio_aiohttp.WebSocket):  # type: ignore[misc]
    deflate = False

    async def __call__(self, environ: dict[str, Any]) -> WebSocketResponse:
        request = environ["aiohttp.request"]
        self._sock = WebSocketResponse(max_msg_size=self.server.max_http_buffer_size,
                                       compress=self.deflate)
        await self._sock.prepare(request)
        self.environ = environ
        await self.handler(self)
        return self._sock

    async def wait(self, idle: float | None = None) -> str | bytes:
        """The next message; `asyncio.TimeoutError` after `idle` seconds without one."""
        msg = await self._sock.receive(timeout=idle)
        if not isinstance(msg.data, bytes | str):
            raise OSError()
        return msg.data

    async def send(self, message: str | bytes) -> None:
        # The driver's send asks inspect whether aiohttp's send is a coroutine, per packet.
        if isinstance(message, str):
            await self._sock.send_str(message)
        else:
            await self._sock.send_bytes(message)


def configure(sio: socketio.AsyncServer, *, deflate: bool) -> None:
    websocket = type("WebSocket", (_WebSocket,), {"deflate": deflate})
    # A copy: the driver's table is shared by every server in the process.
    sio.eio._async = {**sio.eio._async, "websocket": websocket}
