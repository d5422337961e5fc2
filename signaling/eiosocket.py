"""engine.io's per-client socket with a cheaper WebSocket loop.

python-engineio's WebSocket handler starts a Task and a `wait_for` timer for every
packet it reads, and a `wait_for` for every wait of its writer: at signaling rates
those were a fifth of what a relayed message cost. This is the same handler (python-
engineio 4.x's `AsyncSocket._websocket_handler`, kept in step with it) reading and
waiting without them: the reader awaits the WebSocket directly (aiohttp applies the
idle timeout), and the writer takes whatever is queued without waiting at all and
sends it in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from engineio import async_socket, exceptions, packet

from .packetqueue import PacketQueue


class EngineSocket(async_socket.AsyncSocket):  # type: ignore[misc]
    connected: bool
    upgraded: bool
    upgrading: bool

    async def _websocket_handler(self, ws: Any) -> None:
        server = self.server
        idle = server.ping_interval + server.ping_timeout

        async def websocket_wait() -> Any:
            data = await ws.wait(idle)
            if data and len(data) > server.max_http_buffer_size:
                raise ValueError("packet is too large")
            return data

        if self.connected:
            # An upgrade from long-polling: the probe, then the upgrade packet.
            self.upgrading = True
            try:
                pkt = await websocket_wait()
            except (TimeoutError, OSError):
                return
            decoded = packet.Packet(encoded_packet=pkt)
            if decoded.packet_type != packet.PING or decoded.data != "probe":
                server.logger.info("%s: Failed websocket upgrade, no PING packet", self.sid)
                self.upgrading = False
                return
            await ws.send(packet.Packet(packet.PONG, data="probe").encode())
            await self.queue.put(packet.Packet(packet.NOOP))  # end poll
            try:
                pkt = await websocket_wait()
            except (TimeoutError, OSError):
                self.upgrading = False
                return
            decoded = packet.Packet(encoded_packet=pkt)
            if decoded.packet_type != packet.UPGRADE:
                self.upgraded = False
                server.logger.info("%s: Failed websocket upgrade, expected UPGRADE packet, "
                                   "received %s instead.", self.sid, pkt)
                self.upgrading = False
                return
            self.upgraded = True
            self.upgrading = False
        else:
            self.connected = True
            self.upgraded = True

        queue: PacketQueue = self.queue

        async def writer() -> None:
            while True:
                packets = queue.drain()
                if not packets:
                    try:
                        packets = [await asyncio.wait_for(queue.get(), idle)]
                    except (TimeoutError, asyncio.CancelledError):
                        break
                    queue.task_done()
                    packets += queue.drain()
                done = None in packets  # the reader is done: send what came before, stop
                if done:
                    packets = packets[:packets.index(None)]
                try:
                    if packets:
                        await ws.send_many([pkt.encode() for pkt in packets])
                except Exception:
                    break
                if done:
                    await ws.close()
                    return
            await ws.close()

        writer_task = asyncio.ensure_future(writer())
        server.logger.info("%s: Upgrade to websocket successful", self.sid)
        while True:
            try:
                p = await websocket_wait()
            except (Exception, asyncio.CancelledError):
                # As engine.io does: a failed or cancelled read ends the connection,
                # cleanly, below.
                break
            if p is None:  # closed by the client
                break
            try:
                await self.receive(packet.Packet(encoded_packet=p))
            except exceptions.UnknownPacketError:  # pragma: no cover
                pass
            except exceptions.SocketIsClosedError:  # pragma: no cover
                server.logger.info("Receive error -- socket is closed")
                break
            except Exception:  # pragma: no cover
                server.logger.exception("Unknown receive error")
        await self.queue.put(None)  # unlock the writer so it can exit
        with contextlib.suppress(Exception):
            await writer_task
        await self.close(wait=False, abort=True, reason=server.reason.TRANSPORT_CLOSE)
