"""How the node's engine.io speaks WebSocket: its own, or aiohttp's with permessage-deflate.

Without deflate (the default) a WebSocket is the node's own (`websocket.py`): aiohttp
hands the connection over after the handshake, and an idle connection keeps none of
aiohttp's per-request machinery. python-engineio's aiohttp driver always accepts
permessage-deflate, which every browser offers: about 100 kB per connection and one
compression per recipient of every message (bench/README.md). With
`MIKOTO_RTC_WS_DEFLATE` on, the node uses aiohttp's WebSocket with compression, read
by a task for the connection's life. A client that offers deflate to a node with it
off simply connects uncompressed.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

from aiohttp import WSMsgType, web
from engineio import packet as eio_packet

from . import websocket
from .websocket import HandedOff, Sink, accept_key, take_over


class WebSockets:
    """Accepts engine.io's WebSockets, and owns those it took over from aiohttp: what
    is still open when the node shuts down is cut."""

    def __init__(self, *, deflate: bool, max_size: int, tasks: bool) -> None:
        """`tasks`: input is handled in a Task from its first step on, for a store whose
        commands need one (`eager.start`)."""
        self.deflate = deflate
        self._max = max_size
        self._tasks = tasks
        self._open: set[websocket.WebSocket] = set()

    async def accept(self, environ: dict[str, Any], sink: Sink) -> web.StreamResponse:
        request = environ["aiohttp.request"]
        if self.deflate:
            return await _serve_deflated(request, sink, self._max)
        accept = accept_key(request)
        if accept is None:
            return web.Response(status=400, text="not a version-13 WebSocket handshake\n")
        if take_over(request, accept, sink, self._max, self._open, EngineWebSocket,
                     tasks=self._tasks) is None:
            return web.Response(status=400, text="the connection is gone\n")
        return HandedOff()

    def __len__(self) -> int:
        return len(self._open)

    def close(self) -> None:
        for ws in list(self._open):
            ws.abort()


class EngineWebSocket(websocket.WebSocket):
    """The node's WebSocket, sending engine.io packets."""

    __slots__ = ()

    def write_packets(self, packets: list[Any]) -> None:
        """Write packets at once, without waiting (only when `writable`)."""
        self.write(_frames(packets))

    def write_packet(self, pkt: Any) -> None:
        """`write_packets` of one."""
        self.write(pkt.frame() if type(pkt) is Message else _frame(pkt.encode()))

    async def send_packets(self, packets: list[Any]) -> None:
        """Send packets as one write, not one per frame, waiting while the peer is slow.

        A `write` per frame was a quarter of a relayed message's cost; a connection
        that gets several packets in one turn of the loop (the acks of a burst, the
        signals one peer sends another) now costs one.
        """
        await self.send(_frames(packets))

    async def aclose(self) -> None:
        self.close()


class _DeflatedWebSocket:
    """aiohttp's WebSocket, compressing, with the node's WebSocket's methods."""

    def __init__(self, sock: web.WebSocketResponse) -> None:
        self._sock = sock
        self.state: object = None

    def writable(self) -> bool:
        return False  # compressed frames go one by one through aiohttp (its zlib state)

    def write_packets(self, packets: list[Any]) -> None:  # pragma: no cover - not writable
        raise NotImplementedError

    def write_packet(self, pkt: Any) -> None:  # pragma: no cover - not writable
        raise NotImplementedError

    async def send_packets(self, packets: list[Any]) -> None:
        for pkt in packets:
            await self._sock.send_str(pkt.encode())

    async def aclose(self) -> None:
        await self._sock.close()


async def _serve_deflated(request: web.Request, sink: Sink,
                          max_size: int) -> web.WebSocketResponse:
    sock = web.WebSocketResponse(max_msg_size=max_size, compress=True)
    await sock.prepare(request)
    ws = _DeflatedWebSocket(sock)
    sink.ws_opened(ws)
    try:
        while True:
            # No timeout: engine.io's pings find a client that fell silent.
            msg = await sock.receive()
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                break
            await sink.ws_message(ws, msg.data, False)
            sink.ws_dry()
    finally:
        with contextlib.suppress(Exception):
            await asyncio.shield(sink.ws_ended(ws))
    return sock


class Message:
    """An engine.io MESSAGE packet around Socket.IO text that is already encoded.

    engine.io's `send` builds a Packet for every message, which checks the data's type
    and whether it is binary; this is all its queue and its writers ask of a packet. One
    Message can go to many connections (a room event): its WebSocket frame is made once.
    """

    __slots__ = ("_frame", "_text", "_utf8")
    packet_type = eio_packet.MESSAGE

    def __init__(self, text: str) -> None:
        self._text: str | None = text
        self._utf8: bytes | None = None
        self._frame: bytes | None = None

    @classmethod
    def of_utf8(cls, data: bytes) -> Message:
        """The Message of Socket.IO text encoded as UTF-8 (as orjson makes it): framed
        for a WebSocket without going through a str and back."""
        message = cls.__new__(cls)
        message._text, message._utf8, message._frame = None, data, None
        return message

    @property
    def text(self) -> str:
        if self._text is None:
            assert self._utf8 is not None
            self._text = self._utf8.decode()
        return self._text

    def encode(self, b64: bool = False) -> str:
        return "4" + self.text

    def frame(self) -> bytes:
        if self._frame is None:
            self._frame = (_frame(self.encode()) if self._utf8 is None
                           else _framed(b"4" + self._utf8, _TEXT))
        return self._frame


def _frames(packets: list[Any]) -> bytes:
    return b"".join([
        pkt.frame() if type(pkt) is Message else _frame(pkt.encode()) for pkt in packets])


_TEXT, _BINARY = 0x81, 0x82  # FIN + opcode: a whole text or binary frame


def _frame(message: str | bytes) -> bytes:
    """An unmasked, uncompressed WebSocket frame (RFC 6455 5.2), as a server sends."""
    if isinstance(message, str):
        return _framed(message.encode(), _TEXT)
    return _framed(message, _BINARY)


def _framed(payload: bytes, first: int) -> bytes:
    size = len(payload)
    if size < 126:
        return bytes((first, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", first, 126, size) + payload
    return struct.pack("!BBQ", first, 127, size) + payload
