"""The node's own WebSocket (signaling/websocket.py), on the wire: the handshake, frames as
RFC 6455 has them (fragments, control frames, masks, limits), closing, and that an open
WebSocket is no longer aiohttp's (no request handler or task per idle connection)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from signaling import websocket
from signaling.app import SIO
from signaling.client import SignalReceived

from .conftest import Node, NodeFactory
from .helpers import EventLog

PATH = "/socket.io/?EIO=4&transport=websocket"


class RawWs:
    """A WebSocket client written out by hand, to send what libraries will not."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, node: Node, *, key: str | None = None, version: str = "13",
                   rcvbuf: int | None = None) -> tuple[RawWs, int, dict[str, str]]:
        url = URL(node.url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connecting: the window is agreed at the handshake
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (url.host, url.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        key = key if key is not None else base64.b64encode(os.urandom(16)).decode()
        writer.write((f"GET {PATH} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
                      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                      f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n"
                      "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                      "\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        status_line, *lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines
                                                          if line)}
        return cls(reader, writer), int(status_line.split()[1]), headers

    @classmethod
    async def connect(cls, node: Node, rcvbuf: int | None = None) -> RawWs:
        ws, status, _ = await cls.open(node, rcvbuf=rcvbuf)
        assert status == 101
        opened = await ws.recv()
        assert opened[0] == 0x1 and opened[1].startswith(b"0{")
        return ws

    def frame(self, opcode: int, payload: bytes, *, fin: bool = True, masked: bool = True,
              rsv: int = 0) -> bytes:
        first = (0x80 if fin else 0) | rsv | opcode
        size = len(payload)
        if size < 126:
            head = bytes((first, (0x80 if masked else 0) | size))
        elif size < 65536:
            head = struct.pack("!BBH", first, (0x80 if masked else 0) | 126, size)
        else:
            head = struct.pack("!BBQ", first, (0x80 if masked else 0) | 127, size)
        if not masked:
            return head + payload
        mask = os.urandom(4)
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    def text(self, message: str) -> None:
        self.send(self.frame(0x1, message.encode()))

    async def recv(self) -> tuple[int, bytes]:
        """The next frame from the node: (opcode, payload); (-1, b"") when it closed TCP."""
        try:
            first, second = await asyncio.wait_for(self.reader.readexactly(2), 5)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", await self.reader.readexactly(8))
            assert not second & 0x80, "a server's frames are not masked"
            return first & 0x0F, await self.reader.readexactly(size)
        except asyncio.IncompleteReadError:
            return -1, b""

    async def recv_text(self) -> str:
        """The next text message, answering the node's engine.io pings on the way."""
        while True:
            opcode, payload = await self.recv()
            assert opcode == 0x1, (opcode, payload)
            if payload != b"2":
                return payload.decode()
            self.text("3")

    async def closed_with(self) -> int:
        """The code of the node's close frame, after which it ends the connection."""
        while True:
            opcode, payload = await self.recv()
            assert opcode != -1, "TCP closed without a close frame"
            if opcode == 0x8:
                code: int = struct.unpack("!H", payload[:2])[0]
                self.send(self.frame(0x8, payload[:2]))  # the answer the node waits for
                assert await asyncio.wait_for(self.reader.read(), 5) == b""  # then TCP ends
                return code

    async def ack(self) -> str:
        """The next Socket.IO ack, past the events the node sends on its own."""
        while not (text := await self.recv_text()).startswith("43"):
            pass
        return text

    def close(self) -> None:
        self.writer.close()


@contextlib.asynccontextmanager
async def _session(node: Node, user: str = "ann",
                   rcvbuf: int | None = None) -> AsyncIterator[RawWs]:
    """A hand-written client with a Socket.IO session; closed on exit."""
    ws = await RawWs.connect(node, rcvbuf=rcvbuf)
    try:
        await _socketio_connect(ws, node, user)
        yield ws
    finally:
        ws.close()


async def _socketio_connect(ws: RawWs, node: Node, user: str = "ann") -> None:
    ws.text("40" + json.dumps({"token": node.token(user)}))
    assert (await ws.recv_text()).startswith("40{")


async def test_the_handshake_answers_with_the_key_and_no_extension(node: Node) -> None:
    key = base64.b64encode(os.urandom(16)).decode()
    ws, status, headers = await RawWs.open(node, key=key)
    try:
        assert status == 101
        assert headers["upgrade"].lower() == "websocket"
        assert headers["sec-websocket-accept"] == base64.b64encode(hashlib.sha1(
            key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()).decode()
        assert "sec-websocket-extensions" not in headers  # deflate offered, not taken
    finally:
        ws.close()


async def test_a_client_that_reads_slowly_gets_everything_in_order(node: Node) -> None:
    """The node writes faster than the client reads (a small receive window, nothing
    read for a while): the WebSocket pauses, queues, and resumes; nothing is lost or
    reordered, and the sender is not held up."""
    async with _session(node, "slow", rcvbuf=4096) as ws:
        ws.text('421["room:join",{"room":"lobby"}]')
        joined = json.loads((await ws.ack())[3:])[0]
        sender = await node.client("fast")
        await sender.join("lobby")
        sdp = "v=0\r\n" + "a=x-pad:" + "x" * 40_000 + "\r\n"
        count = 250  # 10 MB: beyond what the kernel's socket buffers take
        for i in range(count):
            await sender.signal("lobby", joined["self"]["id"],
                                description={"type": "offer", "sdp": f"{sdp}a=x-n:{i}\r\n"})
        got = []
        while len(got) < count:
            text = await ws.recv_text()
            if text.startswith('42["signal"'):
                got.append(int(text.rsplit("a=x-n:", 1)[1].split("\\r", 1)[0]))
        assert got == list(range(count))


@pytest.mark.parametrize(("key", "version"), [
    ("not base64!", "13"), (base64.b64encode(b"short").decode(), "13"), ("", "13"),
    (None, "8"),
])
async def test_a_bad_handshake_is_refused_and_the_node_keeps_serving(
        node: Node, key: str | None, version: str) -> None:
    ws, status, _ = await RawWs.open(node, key=key, version=version)
    ws.close()
    assert status == 400
    assert not node.server.app[SIO].eio.sockets  # engine.io's socket for it is gone too
    client = await node.client("bob")
    assert await client.ping() >= 0


async def test_fragments_make_one_message_and_control_frames_may_come_between(
        node: Node) -> None:
    ws = await RawWs.connect(node)
    try:
        connect = ("40" + json.dumps({"token": node.token("ann")})).encode()
        ws.send(ws.frame(0x1, connect[:5], fin=False))
        ws.send(ws.frame(0x9, b"are you there"))  # a ping between fragments
        ws.send(ws.frame(0x0, connect[5:20], fin=False))
        ws.send(ws.frame(0x0, connect[20:]))
        assert await ws.recv() == (0xA, b"are you there")  # answered with its payload
        assert (await ws.recv_text()).startswith("40{")
    finally:
        ws.close()


async def test_frames_split_anywhere_and_many_in_one_write_are_all_read(node: Node) -> None:
    async with _session(node) as ws:
        frames = b"".join(ws.frame(0x1, f'42{i}["ping",{{}}]'.encode()) for i in range(20))
        for i in range(0, len(frames), 7):  # seven bytes at a time
            ws.send(frames[i:i + 7])
            await ws.writer.drain()
            await asyncio.sleep(0)
        acks = [await ws.ack() for _ in range(20)]
        assert [a[:a.index("[")] for a in acks] == [f"43{i}" for i in range(20)]
        ws.send(frames)  # and all in one write
        assert len([await ws.ack() for _ in range(20)]) == 20


async def test_a_burst_beyond_the_high_water_mark_is_read_in_full(node: Node) -> None:
    """Input beyond 64 kB waiting to be handled pauses reading; handled, it resumes."""
    async with _session(node) as ws:
        pad = "x" * 100
        count = 2000  # about 250 kB in one write
        ws.send(b"".join(ws.frame(0x1, f'42{i}["ping",{{"pad":"{pad}"}}]'.encode())
                         for i in range(count)))
        acks = [await ws.ack() for _ in range(count)]
        assert [int(a[2:a.index("[")]) for a in acks] == list(range(count))


async def test_signals_read_together_are_relayed_and_acked_in_order(node: Node) -> None:
    """Signals handled where they are read, and those that take the reader (a ping, a
    refused signal), in one TCP read: every ack and relay in the order sent."""
    async with _session(node, "ann") as ann, _session(node, "bob") as bob:
        ids = []
        for ws in (ann, bob):
            ws.text('420["room:join",{"room":"lobby"}]')
            ids.append(json.loads((await ws.ack())[3:])[0]["self"]["id"])

        def signal(i: int, to: str) -> bytes:
            cid = f',"cid":"c{i}"' if i % 2 else ""
            cand = f'{{"candidate":"candidate:{i} 1 udp 1 192.0.2.1 9 typ host","sdpMid":"0"}}'
            body = f'{{"room":"lobby","to":"{to}","candidate":{cand}{cid}}}'
            return ann.frame(0x1, f'42{i}["signal",{body}]'.encode())

        frames = [signal(i, ids[1]) for i in range(1, 9)]
        frames[3] = ann.frame(0x1, b'424["ping",{}]')
        frames[5] = signal(6, "nobody")
        ann.send(b"".join(frames))
        acks = [await ann.ack() for _ in range(8)]
        assert [a[:a.index("[")] for a in acks] == [f"43{i}" for i in range(1, 9)]
        assert [json.loads(a[a.index("["):])[0].get("ok") for a in acks] == [
            True, True, True, True, True, False, True, True]
        relayed = []
        while len(relayed) < 6:
            if (text := await bob.recv_text()).startswith('42["signal",'):
                relayed.append(json.loads(text[2:])[1])
        assert [r["candidate"]["candidate"].split()[0] for r in relayed] == [
            f"candidate:{i}" for i in (1, 2, 3, 5, 7, 8)]


@pytest.mark.parametrize(("frame", "code"), [
    (lambda ws: ws.frame(0x1, b"40", masked=False), websocket.PROTOCOL_ERROR),
    (lambda ws: ws.frame(0x1, b"40", rsv=0x40), websocket.PROTOCOL_ERROR),  # deflate bit
    (lambda ws: ws.frame(0x0, b"40"), websocket.PROTOCOL_ERROR),  # continues nothing
    (lambda ws: ws.frame(0x3, b"40"), websocket.PROTOCOL_ERROR),  # no such opcode
    (lambda ws: ws.frame(0x9, b"p", fin=False), websocket.PROTOCOL_ERROR),
    (lambda ws: ws.frame(0x9, b"p" * 126), websocket.PROTOCOL_ERROR),
    (lambda ws: ws.frame(0x1, b"4\xff\xfe"), websocket.INVALID_DATA),  # not UTF-8
    (lambda ws: ws.frame(0x1, b"4" * 2_000_000)[:2048], websocket.TOO_BIG),  # by its header
    (lambda ws: ws.frame(0x1, b"4" * 60_000, fin=False) + ws.frame(0x0, b"4" * 60_000),
     websocket.TOO_BIG),
    (lambda ws: ws.frame(0x8, struct.pack("!H", 4001) + b"bye"), 4001),  # echoed
    (lambda ws: ws.frame(0x8, b""), websocket.NORMAL),
    (lambda ws: ws.frame(0x8, struct.pack("!H", 1005)), websocket.PROTOCOL_ERROR),
])
async def test_a_frame_against_the_rules_closes_with_its_code_and_no_one_else_notices(
        node: Node, frame: Any, code: int) -> None:
    bob = await node.client("bob")
    carol = await node.client("carol")
    carol_log = EventLog(carol)
    await bob.join("lobby")
    joined = await carol.join("lobby")
    async with _session(node) as ws:
        ws.send(frame(ws))
        assert await ws.closed_with() == code
    await bob.signal("lobby", joined.self_id, description={"type": "offer", "sdp": "v=0\r\n"})
    await carol_log.wait_for(SignalReceived)
    sockets = node.server.app[SIO].eio.sockets
    async with asyncio.timeout(5):
        while len(sockets) > 2 or len(node.server.app[SIO].eio.websockets) > 2:
            await asyncio.sleep(0.02)


async def test_an_open_websocket_is_not_aiohttps_and_holds_no_task(node: Node) -> None:
    """20 idle WebSockets: none is left among aiohttp's connections, no task reads or
    writes any of them, and each answers when spoken to."""
    sockets = [await RawWs.connect(node) for _ in range(20)]
    try:
        for i, ws in enumerate(sockets):
            await _socketio_connect(ws, node, f"user{i}")
        assert len(node.server.app[SIO].eio.websockets) == 20
        async with asyncio.timeout(5):
            while node.server.runner.server.connections:  # type: ignore[union-attr]
                await asyncio.sleep(0.02)
        names = [task.get_coro().__qualname__ for task in asyncio.all_tasks()]
        assert not [n for n in names if n.startswith(("RequestHandler", "WebSocket", "Engine"))]
        for ws in sockets:
            ws.text('421["ping",{}]')
            assert (await ws.ack()).startswith("431[")
    finally:
        for ws in sockets:
            ws.close()


async def test_the_node_closing_a_client_sends_a_close_frame_and_ends_tcp(
        node: Node) -> None:
    async with _session(node) as ws:
        eio = node.server.app[SIO].eio
        (sid,) = eio.sockets
        await eio.disconnect(sid)  # as when a client stops answering pings
        while await ws.recv_text() != "1":  # engine.io's close packet
            pass
        assert await ws.closed_with() == websocket.NORMAL
    async with asyncio.timeout(5):
        while node.server.app[SIO].eio.websockets or node.server.app[SIO].eio.sockets:
            await asyncio.sleep(0.02)


async def test_a_client_that_never_answers_the_close_frame_is_cut(
        node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(websocket, "CLOSE_TIMEOUT", 0.5)
    async with _session(node) as ws:
        eio = node.server.app[SIO].eio
        (sid,) = eio.sockets
        await eio.disconnect(sid)
        while (await ws.recv())[0] != 0x8:  # the close frame, left unanswered
            pass
        async with asyncio.timeout(5):
            assert await ws.reader.read() == b""  # cut
        assert not eio.websockets


async def test_shutdown_closes_every_websocket(make_node: NodeFactory) -> None:
    node = await make_node(drain_timeout=0.2)
    sockets = [await RawWs.connect(node) for _ in range(3)]
    for i, ws in enumerate(sockets):
        await _socketio_connect(ws, node, f"user{i}")
    await node.server.close()
    for ws in sockets:
        async with asyncio.timeout(10):
            while (await ws.recv())[0] not in (-1, 0x8):
                pass
        ws.close()
    assert not node.server.app[SIO].eio.websockets


def test_unmasking_in_python_matches_aiohttps() -> None:
    for size in (0, 1, 3, 4, 5, 125, 1157, 70_000):
        payload, mask = os.urandom(size), os.urandom(4)
        expected = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert websocket._unmask_python(payload, mask) == expected
        assert websocket._unmask(payload, mask) == expected


async def test_a_library_client_sees_the_nodes_close_as_a_websocket_close(node: Node) -> None:
    url = node.url + PATH
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        assert (await ws.receive_str()).startswith("0{")
        eio = node.server.app[SIO].eio
        (sid,) = eio.sockets
        await eio.disconnect(sid)
        assert await ws.receive_str() == "1"
        message = await ws.receive(timeout=5)
        assert (message.type, message.data) == (aiohttp.WSMsgType.CLOSE, websocket.NORMAL)
    async with asyncio.timeout(5):  # aiohttp answered the close: the node lets go at once
        while eio.websockets:
            await asyncio.sleep(0.02)
