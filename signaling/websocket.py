"""The node's own WebSocket (RFC 6455, no extensions) on the connection aiohttp accepted.

For every open WebSocket, aiohttp keeps the parsed upgrade request, its request
handler with its parser and queues, two tasks, and the frames of every layer between
them: about 12 kB of an idle connection's 22 (bench/README.md). After the handshake
the node takes the transport from aiohttp instead: frames are parsed as they arrive
and handled at once (`eager.start`), a task runs only while a handler waits, and an
idle connection is this object and engine.io's socket. permessage-deflate is not
spoken here; with it on, the node uses aiohttp's WebSocket (`transport.py`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import struct
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from . import eager

log = logging.getLogger(__name__)

try:  # aiohttp's compiled unmasking: ten times faster than Python's on a 1 kB message
    from aiohttp._websocket.helpers import websocket_mask as _mask_in_place
except ImportError:  # pragma: no cover - only without aiohttp's compiled helpers
    _mask_in_place = None  # type: ignore[assignment]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TEXT, _BINARY, _CONTINUATION = 0x1, 0x2, 0x0
_CLOSE, _PING, _PONG = 0x8, 0x9, 0xA
# Close codes (RFC 6455 7.4.1).
NORMAL, GOING_AWAY, PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1000, 1001, 1002, 1007, 1009

# Input waiting to be handled beyond this pauses reading from the socket (as aiohttp's
# queue does), so a client that sends faster than its events are handled is held back
# by TCP, not buffered without bound.
_HIGH_WATER = 64 * 1024
# After the node's close frame, how long the client has to answer before the
# connection is cut.
CLOSE_TIMEOUT = 5.0

_END = object()  # in the inbox: the connection has ended
_STARTING: Any = object()  # the reader's first step is running


class Sink(Protocol):
    """What a WebSocket's input is for (engine.io's socket)."""

    def ws_opened(self, ws: Any) -> None: ...

    async def ws_message(self, ws: Any, data: str | bytes, last: bool) -> None:
        """A message; `last`: nothing more has arrived behind it."""

    def ws_message_now(self, ws: Any, data: str, last: bool) -> bool:
        """A text message handled at once, without waiting, when nothing is ahead of it;
        False when it is not (nothing done): it goes to `ws_message`."""

    def ws_dry(self) -> None:
        """Everything that arrived has been handled."""

    async def ws_ended(self, ws: Any) -> None: ...


def accept_key(request: web.BaseRequest) -> str | None:
    """The `Sec-WebSocket-Accept` answering a valid version-13 handshake, or None."""
    headers = request.headers
    if headers.get("Sec-WebSocket-Version", "") != "13":
        return None
    key = headers.get("Sec-WebSocket-Key", "")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            return None
    except (binascii.Error, ValueError):
        return None
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


class HandedOff(web.StreamResponse):
    """What the handler returns to aiohttp once the connection is no longer aiohttp's:
    nothing to send, nothing to finish."""

    def __init__(self) -> None:
        super().__init__(status=101)

    async def prepare(self, request: web.BaseRequest) -> None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def take_over(request: web.BaseRequest, accept: str, sink: Sink, max_size: int,
              owner: set[WebSocket], cls: type[WebSocket], *,
              tasks: bool) -> WebSocket | None:
    """Answer the upgrade and make the connection a `WebSocket`; None if it is gone.

    aiohttp has no API to hand a connection over. Its request handler is told the
    connection was lost after it has let go of the transport (so it closes nothing),
    which drops the connection from its server; whatever arrived after the upgrade
    request (its `_message_tail`) is this WebSocket's first input.
    """
    handler = request.protocol
    transport = request.transport
    if transport is None or transport.is_closing() or handler is None:
        return None
    ws = cls(transport, sink, max_size, owner, tasks=tasks)
    transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                    + accept.encode() + b"\r\n\r\n")
    tail = bytes(getattr(handler, "_message_tail", b""))
    transport.set_protocol(ws)
    handler.transport = None
    handler.connection_lost(None)
    sink.ws_opened(ws)
    if tail:
        ws.data_received(tail)
    return ws


class WebSocket(asyncio.Protocol):
    """A server's end of a WebSocket: input to its sink, whole frames out."""

    __slots__ = ("_buf", "_closer", "_drain", "_held", "_inbox", "_loop", "_max", "_owner",
                 "_parts", "_pending", "_reader", "_sink", "_tasks", "_transport", "closing",
                 "paused", "state")

    def __init__(self, transport: asyncio.Transport, sink: Sink, max_size: int,
                 owner: set[WebSocket], *, tasks: bool) -> None:
        """`tasks`: the sink's handling needs a current task from its first step on
        (`eager.start`), as redis-py's commands do."""
        self._transport: asyncio.Transport | None = transport
        # Kept: finding the running loop costs a system call (getpid) on Python 3.11.
        self._loop = asyncio.get_running_loop()
        self._sink = sink
        self._tasks = tasks
        self._max = max_size
        self._owner = owner
        owner.add(self)
        self._buf: bytearray | None = None  # a frame not yet whole
        self._parts: bytearray | None = None  # a fragmented message: its opcode, its data
        self._inbox: list[Any] = []
        self._pending = 0  # bytes in the inbox
        self._held = False  # reading paused until the inbox is handled
        self._reader: asyncio.Task[None] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._closer: asyncio.TimerHandle | None = None
        self.closing = False  # the node's close frame is sent: nothing more goes out
        self.paused = False  # the peer does not keep up: wait before writing more
        self.state: object = None  # the sink's, for its own use

    # -- input ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buf: bytes | bytearray = data
        if self._buf is not None:
            self._buf += data
            buf = self._buf
        size, pos = len(buf), 0
        while (header := _header(buf, pos)) is not None:
            head, length = header
            first, second = buf[pos], buf[pos + 1]
            if first & 0x70 or not second & 0x80:  # extension bits; an unmasked frame
                self._fail(PROTOCOL_ERROR)
                return
            if length > self._max:
                self._fail(TOO_BIG)
                return
            end = head + 4 + length
            if end > size:
                break
            payload = _unmask(buf[head + 4:end], buf[head:head + 4])
            pos = end
            following = _header(buf, end)
            if not self._frame(first, payload,
                               following is None or sum(following) + 4 > size):
                return
        if pos == size:
            self._buf = None
        elif self._buf is None:
            self._buf = bytearray(buf[pos:])
        else:
            del self._buf[:pos]
        self._start_reader()

    def _frame(self, first: int, payload: bytes, last: bool) -> bool:
        """Handle one frame (`last`: no whole frame behind it); False once the connection
        is failed or closed."""
        opcode, fin = first & 0x0F, first & 0x80
        if opcode >= _CLOSE:
            if not fin or len(payload) > 125:
                return self._fail(PROTOCOL_ERROR)
            if opcode == _PING:
                self._send_frame(0x80 | _PONG, payload)
            elif opcode == _CLOSE:
                code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else NORMAL
                return self._fail(code if len(payload) != 1 else PROTOCOL_ERROR)
            elif opcode != _PONG:
                return self._fail(PROTOCOL_ERROR)
            return True
        parts = self._parts
        if opcode == _CONTINUATION:
            if parts is None:
                return self._fail(PROTOCOL_ERROR)
            parts += payload
            if len(parts) - 1 > self._max:
                return self._fail(TOO_BIG)
            if not fin:
                return True
            self._parts = None
            opcode, payload = parts[0], bytes(parts[1:])
        elif opcode not in (_TEXT, _BINARY) or parts is not None:
            return self._fail(PROTOCOL_ERROR)
        elif not fin:
            self._parts = bytearray((opcode,)) + payload
            return True
        if self.closing:  # after the node's close frame, input is only awaited, not read
            return True
        if opcode == _TEXT:
            try:
                text = payload.decode()
            except UnicodeDecodeError:
                return self._fail(INVALID_DATA)
            # With nothing ahead of it, a message may be handled right here (no reader, no
            # coroutine), in order; what was not goes to the reader.
            if self._reader is None and not self._inbox and self._sink.ws_message_now(
                    self, text, last):
                if last:
                    self._sink.ws_dry()
            else:
                self._deliver(text)
        else:
            self._deliver(payload)
        return True

    def _deliver(self, item: Any) -> None:
        self._inbox.append(item)
        if item is not _END:
            self._pending += len(item)
            if self._pending > _HIGH_WATER and not self._held and self._transport is not None:
                self._held = True
                self._transport.pause_reading()

    def _start_reader(self) -> None:
        """Hand what came in to a reader, once every frame of this read is in the inbox
        (it knows which message is the last, and writes what the others cause together)."""
        if self._reader is None and self._inbox:
            # Handled now, as far as it goes without waiting (`eager`); the reader's
            # Task goes on with whatever waits, and with what comes meanwhile.
            self._reader = _STARTING
            reader = eager.start(self._loop, self._read(), task=self._tasks)
            if self._reader is _STARTING:
                self._reader = reader

    async def _read(self) -> None:
        """Hand the inbox to the sink, in order; ends when it is empty."""
        inbox, sink = self._inbox, self._sink
        try:
            while inbox:
                item = inbox.pop(0)
                if item is _END:
                    inbox.clear()
                    try:
                        await sink.ws_ended(self)
                    except Exception:
                        log.exception("ending a WebSocket's session failed")
                    return
                self._pending -= len(item)
                try:
                    await sink.ws_message(self, item, not inbox)
                except Exception:
                    log.exception("handling a WebSocket message failed")
                if not inbox:
                    sink.ws_dry()
                    if self._held and self._transport is not None:
                        self._held = False
                        self._transport.resume_reading()
        finally:
            self._reader = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._owner.discard(self)
        if self._closer is not None:
            self._closer.cancel()
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_exception(ConnectionResetError("the WebSocket closed"))
        self._buf = self._parts = None
        self._deliver(_END)
        self._start_reader()

    def _fail(self, code: int) -> bool:
        """Close: a protocol error, an oversized message, or the client's close frame
        (answered with its own code)."""
        self._start_close(code)
        if self._transport is not None:
            self._transport.close()
        return False

    # -- output --------------------------------------------------------------------

    def writable(self) -> bool:
        """Whether `write` may be used now: open, and the peer keeps up."""
        return not (self.closing or self.paused or self._transport is None)

    def write(self, data: bytes) -> None:
        """Whole frames (`transport.frames`), at once (only when `writable`)."""
        assert self._transport is not None
        self._transport.write(data)

    async def send(self, data: bytes) -> None:
        """Whole frames, waiting while the peer does not keep up."""
        if self.closing or self._transport is None or self._transport.is_closing():
            raise ConnectionResetError("the WebSocket is closing")
        self._transport.write(data)
        if self.paused:
            if self._drain is None:
                self._drain = self._loop.create_future()
            await self._drain

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    def close(self, code: int = NORMAL) -> None:
        """Send a close frame; the connection ends when the client answers, or after
        `CLOSE_TIMEOUT`."""
        if self._start_close(code) and self._transport is not None:
            self._closer = self._loop.call_later(
                CLOSE_TIMEOUT, self.abort)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _start_close(self, code: int) -> bool:
        if self.closing:
            return False
        self.closing = True
        self._send_frame(0x80 | _CLOSE, struct.pack("!H", _reply_code(code)))
        return True

    def _send_frame(self, first: int, payload: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(bytes((first, len(payload))) + payload)


def _header(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """Where the mask of the frame at `pos` starts and its payload's length; None while
    its header has not all arrived."""
    size = len(buf)
    if size - pos < 2:
        return None
    length, head = buf[pos + 1] & 0x7F, pos + 2
    if length == 126:
        if size - head < 2:
            return None
        return head + 2, struct.unpack_from("!H", buf, head)[0]
    if length == 127:
        if size - head < 8:
            return None
        return head + 8, struct.unpack_from("!Q", buf, head)[0]
    return head, length


def _reply_code(code: int) -> int:
    # Codes a client may send but an endpoint must not put in a close frame (1005,
    # 1006, 1015) or that are not codes (RFC 6455 7.4).
    if code < 1000 or code in (1004, 1005, 1006, 1015) or 1016 <= code < 3000 or code > 4999:
        return PROTOCOL_ERROR
    return code


def _unmask_python(payload: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    size = len(payload)
    key = (bytes(mask) * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        size, "little")


def _unmask_compiled(payload: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    data = bytearray(payload)
    _mask_in_place(bytes(mask), data)
    return bytes(data)


_unmask: Callable[[bytes | bytearray, bytes | bytearray], bytes] = (
    _unmask_python if _mask_in_place is None else _unmask_compiled)
