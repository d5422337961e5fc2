"""How the node's engine.io speaks WebSocket: with or without permessage-deflate.

python-engineio's aiohttp driver always accepts permessage-deflate, which every browser
offers: about 100 kB per connection and one compression per recipient of every
message (bench/README.md). The driver has no option for it, so the node gives its
server a copy of the driver's WebSocket class that sets aiohttp's `compress`. A client
that offers deflate to a node with it off simply connects uncompressed.
"""

from __future__ import annotations

import struct
from typing import Any

import socketio
from aiohttp.web import WebSocketResponse
from engineio import packet as eio_packet
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

    async def wait(self) -> str | bytes:
        """The next message. No timeout: aiohttp's is a timeout context per message,
        which was a tenth of a relayed message's cost, and engine.io's service task
        already closes a client that stops answering its pings."""
        msg = await self._sock.receive()
        if not isinstance(msg.data, bytes | str):
            raise OSError()
        return msg.data

    async def send(self, message: str | bytes) -> None:
        # The driver's send asks inspect whether aiohttp's send is a coroutine, per packet.
        if isinstance(message, str):
            await self._sock.send_str(message)
        else:
            await self._sock.send_bytes(message)

    def writable(self) -> bool:
        """Whether `write` may be used now: uncompressed, open, and the peer keeps up."""
        writer = self._sock._writer
        return not (self.deflate or writer is None or writer.transport.is_closing()
                    or writer.protocol._paused)

    def write(self, packets: list[Any]) -> None:
        """Write packets at once, without waiting (only when `writable`)."""
        writer = self._sock._writer
        assert writer is not None
        writer.transport.write(_frames(packets))

    def buffered(self) -> bool:
        """Whether messages that arrived are waiting to be read."""
        reader = self._sock._reader
        return reader is not None and bool(reader._buffer)

    async def send_many(self, packets: list[Any]) -> None:
        """Send engine.io packets as one write to the socket, not one per frame.

        A `write` per frame was a quarter of a relayed message's cost; a connection
        that gets several packets in one turn of the loop (the acks of a burst, the
        signals one peer sends another) now costs one. Compressed frames go one by one
        through aiohttp, which keeps the compressor's state.
        """
        writer = self._sock._writer
        if self.deflate or writer is None:
            for pkt in packets:
                await self.send(pkt.encode())
            return
        if writer.transport.is_closing():
            raise ConnectionResetError("the WebSocket is closing")
        writer.transport.write(_frames(packets))
        if writer.protocol._paused:  # as aiohttp's writer does: wait while the peer is slow
            await writer.protocol._drain_helper()


class Message:
    """An engine.io MESSAGE packet around Socket.IO text that is already encoded.

    engine.io's `send` builds a Packet for every message, which checks the data's type
    and whether it is binary; this is all its queue and its writers ask of a packet. One
    Message can go to many connections (a room event): its WebSocket frame is made once.
    """

    __slots__ = ("_frame", "text")
    packet_type = eio_packet.MESSAGE

    def __init__(self, text: str) -> None:
        self.text = text
        self._frame: bytes | None = None

    def encode(self, b64: bool = False) -> str:
        return "4" + self.text

    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = _frame(self.encode())
        return self._frame


def _frames(packets: list[Any]) -> bytes:
    return b"".join([
        pkt.frame() if type(pkt) is Message else _frame(pkt.encode()) for pkt in packets])


_TEXT, _BINARY = 0x81, 0x82  # FIN + opcode: a whole text or binary frame


def _frame(message: str | bytes) -> bytes:
    """An unmasked, uncompressed WebSocket frame (RFC 6455 5.2), as a server sends."""
    if isinstance(message, str):
        payload, first = message.encode(), _TEXT
    else:
        payload, first = message, _BINARY
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", first, 126, size) + payload
    return struct.pack("!BBQ", first, 127, size) + payload


def configure(sio: socketio.AsyncServer, *, deflate: bool) -> None:
    websocket = type("WebSocket", (_WebSocket,), {"deflate": deflate})
    # A copy: the driver's table is shared by every server in the process.
    sio.eio._async = {**sio.eio._async, "websocket": websocket}
