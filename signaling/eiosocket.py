"""engine.io's per-client socket, fed by its WebSocket instead of reading it in a loop.

python-engineio's WebSocket handler reads in a loop for the connection's life, starts
a Task and a `wait_for` timer for every packet it reads, keeps a writer task per client
waiting with a timer, and a sleeping ping task: at signaling rates the first two were a
fifth of what a relayed message cost, and together they were kilobytes per idle
connection. Here the WebSocket hands over its input as it comes (`ws_message`, called
from `data_received` and, once a handler waits, from a task that runs only while there
is input), and the packets are handled as engine.io's
handler does (python-engineio 4.x's `AsyncSocket._websocket_handler`, kept in step with
it), upgrades from long-polling included. There is no read timeout: engine.io's
service task closes a client that stops answering pings. Packets to an idle socket are
held and written together once the input that caused them is handled (`hold`,
`release`); a writer task runs only while something must wait (a slow peer,
compression), and sends everything queued in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from engineio import async_socket, exceptions, packet

from .packetqueue import PacketQueue


class EngineSocket(async_socket.AsyncSocket):  # type: ignore[misc]
    connected: bool
    upgraded: bool
    upgrading: bool
    last_ping: float | None

    _ws: Any = None  # the WebSocket, while this socket's handler runs on one
    _held: list[Any] | None = None
    _writing: asyncio.Future[None] | None = None

    def hold(self, message: Any) -> bool:
        """Keep a packet to write with others (`release`), when nothing is ahead of it;
        else queue it. True when this is the first one held."""
        if self._held is not None:
            self._held.append(message)
            return False
        if not self._idle():
            self._put(message)
            return False
        self._held = [message]
        return True

    def write_now(self, message: Any) -> bool:
        """Write a packet at once if nothing is ahead of it and the WebSocket takes it."""
        ws = self._ws  # `_idle`, spelled out: this runs for nearly every packet
        if (self._held is None and ws is not None and self._writing is None
                and self.queue.empty() and ws.writable()):
            ws.write_packet(message)
            return True
        return False

    def release(self) -> None:
        """Write the packets held: at once when the WebSocket takes them, else through a
        writer."""
        held, self._held = self._held, None
        if not held:
            return
        if self._idle() and self._ws.writable():
            self._ws.write_packets(held)
        else:
            for message in held:
                self._put(message)

    def _idle(self) -> bool:
        """On a WebSocket, with nothing queued or being written."""
        return self._ws is not None and self._writing is None and self.queue.empty()

    def _put(self, pkt: Any) -> None:
        """Queue a packet; on a WebSocket, a writer sends the queue until it is empty.
        Writers come and go: an idle connection has none (a Task each was a kilobyte
        and a half)."""
        self.queue.put_nowait(pkt)
        if self._ws is not None and self._writing is None:
            self._start_writer(self._ws)

    def _start_writer(self, ws: Any) -> None:
        self._writing = writing = asyncio.ensure_future(self._write(ws))

        def written(_: object) -> None:  # even if cancelled before it ran
            if self._writing is writing:
                self._writing = None

        writing.add_done_callback(written)

    async def _write(self, ws: Any) -> None:
        queue: PacketQueue = self.queue
        done = False
        try:
            while packets := queue.drain():
                done = None in packets  # the reader is done, or `close`: stop
                if done:
                    packets = packets[:packets.index(None)]
                if packets:
                    await ws.send_packets(packets)
                if done:
                    break
        except Exception:  # as engine.io's writer: a failed send ends the connection
            done = True
        self._writing = None
        if done:
            self._ws = None  # no writer after this one
            await ws.aclose()

    def schedule_ping(self) -> None:
        # engine.io starts a task that sleeps until the next ping, for every client: about
        # a kilobyte each while idle. A deadline on the server's one timer does the same.
        if self.last_ping:
            self.last_ping = None
            self.server.pings.add(self.server.ping_interval, self)

    def send_ping_now(self) -> None:
        if not self.closing and not self.closed:
            self.last_ping = time.time()
            self.release()
            ping = packet.Packet(packet.PING)
            if not self.write_now(ping):  # not a writer task for every idle connection
                self._put(ping)

    async def receive(self, pkt: packet.Packet) -> None:
        if pkt.packet_type == packet.MESSAGE:
            await self._message(pkt.data)
        else:
            await super().receive(pkt)

    async def _message(self, data: str | bytes) -> None:
        # engine.io's own dispatch asks `inspect` about the handler and builds a closure
        # for every message; python-socketio's handler is a coroutine and runs inline.
        try:
            await self.server.handlers["message"](self.sid, data)
        except Exception:
            self.server.logger.exception("message async handler error")

    async def send(self, pkt: packet.Packet) -> None:
        # engine.io's send, without its log line (formatted for every packet).
        if self.closed:
            raise exceptions.SocketIsClosedError()
        last_ping = self.last_ping
        if last_ping and time.time() - last_ping > self.server.ping_timeout:
            await self.check_ping_timeout()  # closes the socket
            return
        self.release()  # what is held goes first (a DISCONNECT before engine.io's CLOSE)
        self._put(pkt)

    async def close(self, wait: bool = True, abort: bool = False, reason: Any = None) -> None:
        await super().close(wait=False, abort=abort, reason=reason)
        if self.upgraded:
            self._put(None)  # the writer sends what is queued, then closes the WebSocket
        if wait:
            await self.queue.join()

    async def _upgrade_websocket(self, environ: dict[str, Any]) -> Any:
        # engine.io's handler reads the WebSocket in a loop for the connection's life;
        # here the WebSocket hands its input over as it comes (`ws_message`).
        if self.upgraded:
            raise OSError("Socket has been upgraded already")
        try:
            return await self.server.websockets.accept(environ, self)
        finally:
            if not self.connected and not self.closed:  # its handshake was refused
                await self.close(wait=False, abort=True,
                                 reason=self.server.reason.TRANSPORT_ERROR)
                if self.server.sockets.get(self.sid) is self:
                    del self.server.sockets[self.sid]

    def ws_opened(self, ws: Any) -> None:
        if self.connected:  # an upgrade from long-polling: the probe, then the upgrade packet
            self.upgrading = True
            ws.state = _PROBE
            return
        self.connected = True
        self.upgraded = True
        self._open(ws)

    def _open(self, ws: Any) -> None:
        ws.state = _OPEN
        self._ws = ws
        if not self.queue.empty():  # engine.io's OPEN, or what came during an upgrade
            self._start_writer(ws)
        self.server.logger.info("%s: Upgrade to websocket successful", self.sid)

    async def ws_message(self, ws: Any, data: str | bytes, last: bool) -> None:
        if ws.state is not _OPEN:
            await self._upgrade_step(ws, data)
            return
        # Nothing more to read behind it: what it causes goes out as it is posted (a
        # relayed message before its sender's ack), not when the handling ends.
        server = self.server
        server.eager = last
        try:
            if type(data) is str and data.startswith("4"):  # a text message, most of them
                await server.handlers["message"](self.sid, data[1:])
            else:
                await self.receive(packet.Packet(encoded_packet=data))
        except exceptions.UnknownPacketError:  # pragma: no cover
            pass
        except exceptions.SocketIsClosedError:  # pragma: no cover
            server.logger.info("Receive error -- socket is closed")
            await ws.aclose()
        except Exception:
            server.logger.exception("%s: handling a message failed", self.sid)
        finally:
            server.eager = False

    def ws_message_now(self, ws: Any, data: str, last: bool) -> bool:
        """`ws_message` at once, without waiting, when the server's `message_now` takes
        it; False (nothing done) when it must take the usual way."""
        if ws.state is not _OPEN:
            return False
        if data == "3":  # a pong (engine.io's `receive`): the next ping, without a task
            self.schedule_ping()
            return True
        if not data.startswith("4"):
            return False
        server = self.server
        server.eager = last
        try:
            return bool(server.message_now(self.sid, data[1:]))
        except Exception:
            server.logger.exception("%s: handling a message failed", self.sid)
            return True  # as `ws_message`: logged, and the next message goes on
        finally:
            server.eager = False

    def ws_dry(self) -> None:
        """The input ran dry: send what it caused."""
        self.server.release()

    async def _upgrade_step(self, ws: Any, data: str | bytes) -> None:
        """engine.io's upgrade from long-polling (as its `_websocket_handler` does)."""
        server = self.server
        if ws.state is None:  # a failed upgrade: the client closes this WebSocket
            return
        try:
            decoded = packet.Packet(encoded_packet=data)
        except Exception:
            decoded = None
        if ws.state is _PROBE:
            if decoded is None or decoded.packet_type != packet.PING or decoded.data != "probe":
                server.logger.info("%s: Failed websocket upgrade, no PING packet", self.sid)
                await self._upgrade_failed(ws)
                return
            await ws.send_packets([packet.Packet(packet.PONG, data="probe")])
            await self.queue.put(packet.Packet(packet.NOOP))  # end the pending poll
            ws.state = _UPGRADE
            return
        if decoded is None or decoded.packet_type != packet.UPGRADE:
            server.logger.info("%s: Failed websocket upgrade, expected UPGRADE packet, "
                               "received %s instead.", self.sid, data)
            self.upgraded = False
            await self._upgrade_failed(ws)
            return
        self.upgraded = True
        self.upgrading = False
        self._open(ws)

    async def _upgrade_failed(self, ws: Any) -> None:
        ws.state = None
        self.upgrading = False
        await ws.aclose()

    async def ws_ended(self, ws: Any) -> None:
        if ws.state is not _OPEN:  # an upgrade that never finished: polling goes on
            if ws.state is not None:
                self.upgrading = False
            return
        ws.state = None
        self.release()
        self._put(None)  # the writer sends what is queued, then closes the WebSocket
        writing, self._ws = self._writing, None
        try:
            if writing is not None:
                with contextlib.suppress(Exception):
                    # Shielded: a cancelled reader must not cancel the writer's close.
                    await asyncio.shield(writing)
        finally:
            await self.close(wait=False, abort=True, reason=self.server.reason.TRANSPORT_CLOSE)
            if self.server.sockets.get(self.sid) is self:  # as engine.io does when its
                del self.server.sockets[self.sid]  # WebSocket handler returns


# Where a WebSocket is in engine.io's handshake (its `state`); None: a failed upgrade.
_PROBE, _UPGRADE, _OPEN = "probe", "upgrade", "open"
