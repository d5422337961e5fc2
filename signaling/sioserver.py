"""python-socketio's server with the hot events handled in the connection's own reader.

python-socketio starts a task for every incoming event, so one handler that waits
does not hold up the client's next events. For the events that are relayed at high
rates and never wait for long (`signal`, presence, file progress, ping) that task is
most of the cost of the event; they run inline instead, in order, in the task that
reads the client's packets. Everything else keeps its own task (a `media:request`
may wait seconds for a media worker). Its engine.io server keeps each client's
outgoing packets in a `PacketQueue`, which is cheaper to wait on.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import Any

import engineio
import socketio

from .deadlines import Deadlines
from .eiosocket import EngineSocket
from .fastjson import FastJson, ack_text, plain_event
from .packetqueue import PacketQueue
from .transport import Message, WebSockets

# A client's event in the default namespace, its name plain: `2<ack id>["name",`.
_NAMED_EVENT = re.compile(r'2(\d{0,99})\["([^"\\]{1,64})",')

NowHandler = Callable[..., "dict[str, Any] | None"]

# Names python-socketio routes to handlers of its own events, not a client's.
_NOT_CLIENT_EVENTS = frozenset({"connect", "disconnect", "*"})

_ENVIRON_KEPT = ("REMOTE_ADDR", "HTTP_X_FORWARDED_FOR", "HTTP_ORIGIN", "HTTP_USER_AGENT")


class _EngineServer(engineio.AsyncServer):  # type: ignore[misc]
    """engine.io's server, whose sockets hold packets back to write them together."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._holding: list[EngineSocket] = []
        self._loop: asyncio.AbstractEventLoop | None = None  # known from the first post
        # Set while the last input a reader has is handled: packets go out as posted.
        self.eager = False
        self.websockets: WebSockets  # set by SignalingServer
        # Every socket's next ping (a closed socket's comes due and is skipped).
        self.pings: Deadlines[EngineSocket] = Deadlines(EngineSocket.send_ping_now)
        # A client's message handled at once: False when it takes the usual way.
        self.message_now: Callable[[str, str], bool] = lambda eio_sid, text: False

    def create_queue(self, *args: Any, **kwargs: Any) -> PacketQueue:
        return PacketQueue()

    def post(self, eio_sid: str, message: Message) -> None:
        sock = self.sockets.get(eio_sid)
        if sock is None or sock.closed or (self.eager and sock.write_now(message)):
            return
        if not sock.hold(message):
            return
        if not self._holding:  # whoever comes first: a reader running dry, or the loop
            if self._loop is None:  # asking for it each time costs a system call
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self.release)
        self._holding.append(sock)

    def release(self) -> None:
        """Write every packet sockets hold."""
        holding, self._holding = self._holding, []
        for sock in holding:
            try:
                sock.release()
            except Exception:  # one client's failure must not keep the others' packets
                self.logger.exception("sending packets to %s failed", sock.sid)


class SignalingServer(socketio.AsyncServer):  # type: ignore[misc]
    def __init__(self, *, inline_events: frozenset[str], ws_deflate: bool, tasks: bool,
                 **options: Any) -> None:
        super().__init__(**options)
        self._inline = inline_events
        self._now: dict[str, NowHandler] = {}
        self.eio.message_now = self._message_now
        self.eio.websockets = WebSockets(deflate=ws_deflate, tasks=tasks,
                                         max_size=self.eio.max_http_buffer_size)

    def on_now(self, event: str, handler: NowHandler) -> None:
        """Let `handler(sid, *args)` answer `event` (in the default namespace) at once,
        where its WebSocket reads it: with the ack, or None to leave the event to its
        handler (`on`), as if the other had not seen it."""
        self._now[event] = handler

    def _message_now(self, eio_sid: str, text: str) -> bool:
        """Handle a client's Socket.IO message at once if a handler `on_now` takes it."""
        named = _NAMED_EVENT.match(text)
        if named is None or (handler := self._now.get(named[2])) is None:
            return False
        sid = self.manager.sid_from_eio_sid(eio_sid, "/")
        if sid is None or eio_sid in self._binary_packet or not self.manager.is_connected(sid, "/"):
            return False
        try:
            data = FastJson.loads(text[named.end(1):])
        except ValueError:  # refused the usual way
            return False
        result = handler(sid, *data[1:])
        if result is None:
            return False
        if named[1]:
            self.post(eio_sid, Message(ack_text(int(named[1]), [result])))
        return True

    async def shutdown(self) -> None:
        await super().shutdown()
        self.eio.websockets.close()  # what engine.io's shutdown left open

    def _engineio_server_class(self) -> type[engineio.AsyncServer]:
        return _EngineServer

    async def _handle_eio_connect(self, eio_sid: str, environ: dict[str, Any]) -> Any:
        # engine.io made the client's socket just before this: give it the cheaper loop
        # before its WebSocket handler starts.
        with contextlib.suppress(KeyError):
            self.eio._get_socket(eio_sid).__class__ = EngineSocket
        return await super()._handle_eio_connect(eio_sid, environ)

    def post(self, eio_sid: str, message: Message) -> None:
        """Send an encoded packet to a client; nothing if it is gone.

        Not awaited, and without engine.io's ping check per packet (its service task
        closes a client that stopped answering pings). Packets to a client whose writer
        is idle are held, and written together (one `write` for all of them) when the
        reader that caused them has no more input, or at the loop's next turn: what one
        TCP read brings in goes out in one write to each recipient, without waiting for
        a task switch.
        """
        self.eio.post(eio_sid, message)

    async def post_remote(self, sid: str, message: Message) -> None:
        """Send an encoded packet to a connection on another node (through Redis)."""
        post = getattr(self.manager, "post", None)
        if post is None:  # one node on its own: there is no other node
            self.logger.warning("no other node to send to %s", sid)
            return
        await post(sid, message.text)

    async def _handle_eio_message(self, eio_sid: str, data: Any) -> None:
        # python-socketio builds a Packet for every message; a plain event (nearly all
        # of them) goes straight to its handler. A malformed one raises as before.
        event = None if eio_sid in self._binary_packet else plain_event(data)
        if event is None:
            await super()._handle_eio_message(eio_sid, data)
        else:
            await self._handle_event(eio_sid, None, *event)

    async def _handle_connect(self, eio_sid: str, namespace: str | None, data: Any) -> None:
        await super()._handle_connect(eio_sid, namespace, data)
        # The connection's environ holds every request header for as long as it lives
        # (a kilobyte and a half); once connected, the node reads only these.
        environ = self.environ.get(eio_sid)
        if environ is not None:
            kept = {k: environ[k] for k in _ENVIRON_KEPT if k in environ}
            environ.clear()
            environ.update(kept)

    async def _send_packet(self, eio_sid: str, pkt: socketio.packet.Packet) -> None:
        encoded = pkt.encode()
        if isinstance(encoded, str):
            self.post(eio_sid, Message(encoded))
        else:  # with binary attachments, which the node never sends
            await super()._send_packet(eio_sid, pkt)

    async def _handle_event(self, eio_sid: str, namespace: str | None, id: int | None,
                            data: list[Any]) -> None:
        if not data or type(data[0]) is not str or data[0] in _NOT_CLIENT_EVENTS:
            # python-socketio would hand these to the connect, disconnect or catch-all
            # handler as if the server had raised them (a client's "disconnect" event
            # detached its own session; a name that is not a string raised in a task).
            # Renamed, they reach the catch-all as unknown events: refused, and counted
            # against the sender's rate limits like any other nonsense.
            name = (data[0] if data and type(data[0]) is str
                    else type(data[0]).__name__ if data else "nothing")
            data = [f"(not a client event: {name})", *data[1:]]
        if data[0] not in self._inline:
            await super()._handle_event(eio_sid, namespace, id, data)
            return
        # python-socketio's own dispatch (`_handle_event_internal`, `_trigger_event`) looks
        # the handler up through catch-all and namespace-class cases and asks `inspect`
        # about it, per event; ours are plain coroutines registered by name.
        namespace = namespace or "/"
        sid = self.manager.sid_from_eio_sid(eio_sid, namespace)
        if not self.manager.is_connected(sid, namespace):
            return
        result = await self.handlers[namespace][data[0]](sid, *data[1:])
        if id is not None:
            if namespace == "/":
                self.post(eio_sid, Message(ack_text(id, [] if result is None else [result])))
            else:
                await self._send_packet(eio_sid, self.packet_class(
                    socketio.packet.ACK, namespace=namespace, id=id,
                    data=[] if result is None else [result]))
