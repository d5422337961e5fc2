"""The node's transport choices: no permessage-deflate unless configured (a client
offering it still connects), and a fast JSON codec that refuses nothing the standard
one accepts."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
import socketio

from signaling.fastjson import FastJson, TextPacket, ack_text, event_utf8
from signaling.transport import Message

from .conftest import Node, NodeFactory


async def _offer_deflate(node: Node) -> int:
    """Open an engine.io WebSocket offering permessage-deflate, as browsers do; the
    window bits the node agreed to (0: not negotiated)."""
    url = node.url + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(url, compress=15) as ws:
        opened = await ws.receive_str()
        assert opened.startswith("0{")  # engine.io "open": the connection works
        return ws.compress


async def test_deflate_is_off_by_default_and_a_client_offering_it_connects(node: Node) -> None:
    assert await _offer_deflate(node) == 0


async def test_deflate_can_be_turned_on(make_node: NodeFactory) -> None:
    assert await _offer_deflate(await make_node(ws_deflate=True)) == 15


@pytest.mark.parametrize("transports", [["websocket"], ["polling", "websocket"]])
async def test_with_deflate_on_compressing_clients_call_and_leave(
        make_node: NodeFactory, transports: list[str]) -> None:
    """With deflate on, WebSockets are aiohttp's: connect (or upgrade), relay, leave."""
    from signaling.app import SIO

    node = await make_node(ws_deflate=True)
    ann = await node.client("ann")
    bob = socketio.AsyncClient(reconnection=False)
    got: list[Any] = []
    bob.on("signal", got.append)
    await bob.connect(node.url, auth={"token": node.token("bob")}, transports=transports)
    try:
        joined = await bob.call("room:join", {"room": "lobby"}, timeout=5)
        await ann.join("lobby")
        async with asyncio.timeout(5):
            while bob.transport() != "websocket":
                await asyncio.sleep(0.02)
        await ann.signal("lobby", joined["self"]["id"], description={"type": "offer",
                                                                       "sdp": "v=0\r\n"})
        async with asyncio.timeout(5):
            while not got:
                await asyncio.sleep(0.02)
    finally:
        await bob.disconnect()
    sockets = node.server.app[SIO].eio.sockets
    async with asyncio.timeout(5):
        while len(sockets) > 1:  # bob's is gone; ann's stays
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("value", [
    {"a": [1, 2.5, "é", None, True]}, 2**70, {"n": -(2**80)}, [1e308], "\u2028",
])
def test_fast_json_reads_and_writes_what_json_does(value: Any) -> None:
    text = FastJson.dumps(value, separators=(",", ":"))
    assert json.loads(text) == value
    assert FastJson.loads(text) == value
    assert FastJson.loads(json.dumps(value)) == value


async def test_a_number_beyond_64_bits_gets_an_answer_not_a_dropped_connection(
        node: Node) -> None:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(node.url, auth={"token": node.token("ann")}, transports=["websocket"])
    try:
        ack = await client.call("ping", {"t": 2**70}, timeout=5)
        assert ack["ok"] is False or ack["t"] == 2**70
        assert (await client.call("ping", {"t": 1}, timeout=5))["ok"] is True
    finally:
        await client.disconnect()


async def test_websocket_clients_get_the_lean_socket_and_polling_clients_upgrade(
        node: Node) -> None:
    from signaling.app import SIO
    from signaling.eiosocket import EngineSocket

    ws = await node.client("ann")
    polling = socketio.AsyncClient(reconnection=False)
    got: list[Any] = []
    polling.on("signal", got.append)
    await polling.connect(node.url, auth={"token": node.token("bob")},
                          transports=["polling", "websocket"])
    try:
        joined = await polling.call("room:join", {"room": "lobby"}, timeout=5)
        await ws.join("lobby")
        async with asyncio.timeout(5):
            while polling.transport() != "websocket":  # the upgrade from long-polling
                await asyncio.sleep(0.02)
        sockets = list(node.server.app[SIO].eio.sockets.values())
        assert sockets and all(isinstance(s, EngineSocket) for s in sockets)
        for _ in range(3):
            await ws.signal("lobby", joined["self"]["id"], description={"type": "offer",
                                                                          "sdp": "v=0\r\n"})
        async with asyncio.timeout(5):
            while len(got) < 3:
                await asyncio.sleep(0.02)
    finally:
        await polling.disconnect()


@pytest.mark.parametrize(("owner", "name", "digest"), [
    ("engineio.async_socket.AsyncSocket", "_websocket_handler",
     "27f120df4d717a24478b7b0f7389ce19eea8a881dd07e2c81fb1cf2493e006a5"),
    ("engineio.async_socket.AsyncSocket", "_upgrade_websocket",
     "820b83efe96adb98ee63eef1096dd403c6690bf80aa00c49f3985afd30a4bf95"),
    ("engineio.async_socket.AsyncSocket", "send",
     "0437276ccba7ab091471e29f4bc6a0f178da7b16a590c707d6c69a97609e6d14"),
    ("engineio.async_socket.AsyncSocket", "receive",
     "a91ae36ec2fb5340713ec03be88b1ece9887d2f3116ff09f24dda3a6d965db28"),
    ("engineio.async_socket.AsyncSocket", "close",
     "faa2e93902543244d2a1b772cdf4074d1615532e98fa6ca896739ca54ad64e76"),
    ("engineio.async_socket.AsyncSocket", "schedule_ping",
     "fe316639159cd70d34cdb911a055fc1a0056ff15615b8460a1ab6593c95e9372"),
    ("engineio.async_socket.AsyncSocket", "_send_ping",
     "67db82a704ea49d0ad34e967728cec06020d036431d67c1612162a907526cb43"),
    ("socketio.AsyncServer", "_handle_connect",
     "c97c480cf777de36bd6348c6335ac61b324e6ed16372660100d10223faf79a74"),
    ("socketio.async_pubsub_manager.AsyncPubSubManager", "_handle_emit",
     "4284671be955f644db57572ca19e27c79b0444f89efd4583dac5654650f42c78"),
    ("socketio.async_pubsub_manager.AsyncPubSubManager", "_thread",
     "fa8d075729aac64de1d145663569451888de265e509c3c02dd947a9d54245d15"),
    ("socketio.AsyncServer", "_handle_eio_message",
     "bef50fc0e1635921c922995dba721d05d1c5ccc95d6a6b7647a1db75c4e6032e"),
    ("socketio.AsyncServer", "_handle_event",
     "65178105ef8b593d1ebb63610cbabab0c29654cee50fd669ba0a66590f2e1f54"),
    ("socketio.AsyncServer", "_handle_event_internal",
     "472e8b723a12d507ce3ee3eb8e1643cd326bdd9cc669392e6a636ec7aafdb366"),
    ("socketio.AsyncServer", "_send_packet",
     "a00022b42c1c29e908fd601c32aa1854aeaf2f131b3acc12461f6030e1ab9e9b"),
])
def test_the_library_code_we_follow_is_the_code_we_read(owner: str, name: str,
                                                         digest: str) -> None:
    """signaling/eiosocket.py and sioserver.py stand in for these methods (or follow what
    they do): an upgrade of python-engineio or python-socketio that changes them must be
    read and followed."""
    import hashlib
    import importlib
    import inspect

    module, _, cls = owner.rpartition(".")
    source = inspect.getsource(getattr(getattr(importlib.import_module(module), cls), name))
    assert hashlib.sha256(source.encode()).hexdigest() == digest


async def test_a_websocket_client_that_falls_silent_is_closed(make_node: NodeFactory) -> None:
    """Nothing from a client (not even the pong to the node's ping) for ping interval +
    ping timeout: the node closes its connection, while a client that answers stays."""
    from signaling.app import SIO

    node = await make_node(ping_interval=0.3, ping_timeout=0.3)
    ann = await node.client("ann")
    url = node.url + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        assert (await ws.receive_str()).startswith("0{")
        await ws.send_str("40" + json.dumps({"token": node.token("bob")}))
        got = await ws.receive_str()
        assert got.startswith("40{"), got
        sockets = node.server.app[SIO].eio.sockets
        assert len(sockets) == 2
        async with asyncio.timeout(10):
            message = await ws.receive()
            while message.type == aiohttp.WSMsgType.TEXT:  # the session, the node's ping
                message = await ws.receive()
            while len(sockets) > 1:
                await asyncio.sleep(0.05)
        assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    await ann.ping()  # ann answered the pings all along: still connected


async def test_a_websocket_client_that_answers_pings_keeps_getting_them(
        make_node: NodeFactory) -> None:
    """Each pong sets up the next ping (handled where the WebSocket reads it): a client
    that answers is pinged every interval and stays connected."""
    node = await make_node(ping_interval=0.2, ping_timeout=0.2)
    url = node.url + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        assert (await ws.receive_str()).startswith("0{")
        await ws.send_str("40" + json.dumps({"token": node.token("bob")}))
        pings = 0
        async with asyncio.timeout(10):
            while pings < 4:  # 0.8 s: twice interval + timeout
                message = await ws.receive()
                assert message.type == aiohttp.WSMsgType.TEXT, message
                if message.data == "2":
                    pings += 1
                    await ws.send_str("3")
        assert not ws.closed


@pytest.mark.parametrize("encoded", [
    '2["signal",{"room":"r","sdp":"v=0\\r\\n"}]', '217["ping",{"t":1}]', "3123[{\"ok\":true}]",
    '2[]', '2/admin,4["x"]', '0{"token":"t"}', "1", "41", '451-["x",{"_placeholder":true,"num":0}]',
    '2' + '1' * 99 + '["x"]', '2' + '1' * 100 + '["x"]', '22["x"', '2["big",' + str(2**70) + ']',
])
def test_our_packet_decoder_reads_what_python_socketios_reads(encoded: str) -> None:
    from signaling.fastjson import TextPacket

    def read(cls: type[socketio.packet.Packet]) -> Any:
        try:
            p = cls(encoded_packet=encoded)
        except ValueError:  # a too-long id, or JSON that does not parse
            return "refused"
        return p.packet_type, p.namespace, p.id, p.data, p.attachment_count

    assert read(TextPacket) == read(socketio.packet.Packet)


@pytest.mark.parametrize("payload", [
    {"room": "r", "from": "P1", "description": {"type": "offer", "sdp": "v=0\r\n"}},
    {"n": 2**70, "u": "é\u2028\"", "l": [1.5, None, True]}, "text", 7, None, [],
    "x" * 1000, "é" * 40_000,  # frames with a 16-bit and a 64-bit length
])
def test_event_and_ack_texts_are_what_python_socketio_encodes(payload: Any) -> None:
    event = TextPacket(socketio.packet.EVENT, namespace="/", data=["signal", payload]).encode()
    assert event_utf8("signal", payload).decode() == event
    # framed from those bytes, or from the text, the message is the same
    assert Message.of_utf8(event_utf8("signal", payload)).frame() == Message(event).frame()
    assert Message.of_utf8(event_utf8("signal", payload)).text == event
    for data in ([payload], []):
        assert ack_text(42, data) == TextPacket(
            socketio.packet.ACK, namespace="/", id=42, data=data).encode()
