"""A signal relayed at once where its WebSocket reads it (`SignalingEdge._signal_now`), and
the usual way for everything that path leaves alone: the same acks, the same deliveries.

Which way a signal took is read off the stack when the node's signal watcher sees it:
the usual way is a stack of coroutines (dispatch, guard, handler), the direct one none.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import socketio

from signaling.app import EDGE

from .conftest import Node

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}


def _coroutines_on_the_stack() -> int:
    frame = sys._getframe(1)
    count = 0
    while frame is not None:
        count += bool(frame.f_code.co_flags & inspect.CO_COROUTINE)
        frame = frame.f_back  # type: ignore[assignment]
    return count


class Raw:
    """A bare python-socketio client: sends payloads as they are (no `cid` added)."""

    def __init__(self, client: socketio.AsyncClient) -> None:
        self.client = client
        self.signals: asyncio.Queue[Any] = asyncio.Queue()
        self.id = ""
        client.on("signal", self.signals.put_nowait)

    async def join(self, room: str = "lobby") -> None:
        ack = await self.client.call("room:join", {"room": room}, timeout=5)
        assert ack["ok"], ack
        self.id = ack["self"]["id"]

    async def signal(self, to: Raw, **fields: Any) -> dict[str, Any]:
        ack: dict[str, Any] = await self.client.call(
            "signal", {"room": "lobby", "to": to.id, **fields}, timeout=5)
        return ack

    async def received(self) -> Any:
        return await asyncio.wait_for(self.signals.get(), 5)


async def _member(node: Node, http: aiohttp.ClientSession, user: str) -> Raw:
    """A bare client of `user`, joined to the lobby."""
    client = socketio.AsyncClient(reconnection=False, http_session=http)
    await client.connect(node.url, auth={"token": node.token(user)}, transports=["websocket"])
    member = Raw(client)
    await member.join()
    return member


@pytest.fixture
async def raw(node: Node) -> AsyncIterator[Any]:
    made: list[Raw] = []
    http = aiohttp.ClientSession()

    async def connect(user: str) -> Raw:
        made.append(await _member(node, http, user))
        return made[-1]

    yield connect
    for member in made:
        await member.client.disconnect()
    await http.close()


@pytest.fixture
def ways(node: Node) -> list[int]:
    """For each signal the node relays, how many coroutines its handling was inside."""
    seen: list[int] = []
    node.server.app[EDGE].observers.subscribe_signals(
        lambda *_: seen.append(_coroutines_on_the_stack()))
    return seen


@pytest.mark.parametrize("cid", [None, "c-1"])
async def test_a_signal_is_relayed_where_it_is_read(raw: Any, ways: list[int],
                                                    cid: str | None) -> None:
    ann, bob = await raw("ann"), await raw("bob")
    extra = {} if cid is None else {"cid": cid}
    assert await ann.signal(bob, description=OFFER, **extra) == {"ok": True}
    assert await bob.received() == {"room": "lobby", "from": ann.id, "description": OFFER}
    assert ways == [0]


async def test_a_signal_sent_again_with_its_cid_gets_its_ack_and_is_relayed_once(
        raw: Any, ways: list[int]) -> None:
    ann, bob = await raw("ann"), await raw("bob")
    candidate = {"candidate": "candidate:1 1 udp 1 192.0.2.1 9 typ host", "sdpMid": "0"}
    first = await ann.signal(bob, candidate=candidate, cid="again")
    assert await ann.signal(bob, candidate=candidate, cid="again") == first == {"ok": True}
    assert await ann.signal(bob, candidate=None, cid="next") == {"ok": True}
    assert (await bob.received())["candidate"]["candidate"] == candidate["candidate"]
    assert (await bob.received())["candidate"] is None, "the resent signal was relayed again"
    assert ways == [0, 0]


async def test_refusals_are_the_usual_ones(raw: Any, ways: list[int],
                                           caplog: pytest.LogCaptureFixture) -> None:
    ann, bob = await raw("ann"), await raw("bob")
    stranger = await raw("cat")
    await stranger.client.call("room:leave", {"room": "lobby"}, timeout=5)
    caplog.set_level("INFO", logger="signaling.edge")
    bad = await ann.signal(bob, description={"type": "hello", "sdp": "v=0"})
    assert bad["error"]["code"] == "bad_request"
    gone = await ann.signal(stranger, description=OFFER)
    assert gone["error"]["code"] == "not_found"
    assert [r.message.split(" sid=")[0] for r in caplog.records
            if r.message.startswith("refused")] == ["refused signal", "refused signal"]
    assert await ann.signal(bob, description=OFFER) == {"ok": True}
    assert (await bob.received())["from"] == ann.id
    assert ways == [0]


async def test_a_signal_over_the_rate_limit_is_refused_as_usual(make_node: Any) -> None:
    node = await make_node(rate_signal="1/3")
    async with aiohttp.ClientSession() as http:
        ann, bob = await _member(node, http, "ann"), await _member(node, http, "bob")
        try:
            acks = [await ann.signal(bob, candidate=None) for _ in range(5)]
            assert [a["ok"] for a in acks[:3]] == [True, True, True]
            assert {a["error"]["code"] for a in acks[3:]} == {"rate_limited"}
            assert [await bob.received() for _ in range(3)]
            assert bob.signals.empty()
        finally:
            for member in (ann, bob):
                await member.client.disconnect()


async def test_a_signal_to_a_detached_target_takes_the_usual_way_and_is_held(
        node: Node, raw: Any, ways: list[int]) -> None:
    ann, bob = await raw("ann"), await raw("bob")
    edge = node.server.app[EDGE]
    await bob.client.eio.disconnect(abort=True)  # a lost network: bob's session is kept
    async with asyncio.timeout(5):
        while len(edge.sessions.connections()) > 1:
            await asyncio.sleep(0.01)
    assert await ann.signal(bob, description=OFFER) == {"ok": True}
    assert len(ways) == 1 and ways[0] > 0
    [bob_session] = await edge.sessions.of_user("bob")
    assert bob_session.connection is None
    assert bob_session.held == [{"room": "lobby", "from": ann.id, "description": OFFER}]


async def test_a_failure_after_the_relay_gets_an_internal_error_as_usual(
        node: Node, raw: Any, caplog: pytest.LogCaptureFixture) -> None:
    ways: list[int] = []

    def broken(*_: Any) -> None:
        ways.append(_coroutines_on_the_stack())
        raise RuntimeError("a signal watcher that raises")

    node.server.app[EDGE].observers.subscribe_signals(broken)
    ann, bob = await raw("ann"), await raw("bob")
    ack = await ann.signal(bob, description=OFFER, cid="c-2")
    assert ack["error"]["code"] == "internal"
    assert ways == [0]
    assert "internal error handling signal" in caplog.text
    # not remembered as the answer to that cid: sent again, it is acted on again
    assert (await ann.signal(bob, description=OFFER, cid="c-2"))["error"]["code"] == "internal"
    assert ways == [0, 0]
