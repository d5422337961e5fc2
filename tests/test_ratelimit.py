"""Rate limits (signaling/ratelimit.py): token buckets per connection and class of event,
per address for connects, and dropping a connection that keeps going over."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
import socketio

from signaling.client import RequestError, SignalReceived
from signaling.config import Config
from signaling.errors import ConfigError
from signaling.ratelimit import Bucket, Rate

from .conftest import Node, NodeFactory
from .helpers import EventLog

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}


def test_a_bucket_lets_a_burst_through_then_one_event_per_interval() -> None:
    bucket = Bucket(Rate.parse("10/3"), now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.1)  # one token back in 1/10 s
    assert bucket.take(100.05) == pytest.approx(0.05)
    assert bucket.take(100.1) == 0.0
    assert [bucket.take(200.0) for _ in range(4)][-1] > 0  # refills to the burst only


@pytest.mark.parametrize("text", ["", "10", "0/5", "10/0", "-1/5", "ten/5", "10/5/1"])
def test_a_bad_rate_is_a_configuration_error(text: str) -> None:
    with pytest.raises(ValueError):
        Rate.parse(text)
    with pytest.raises(ConfigError, match="rate_signal"):
        dataclasses.replace(Config(secret="s" * 32), rate_signal=text)


async def _raw_client(node: Node, user: str) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    await client.connect(node.url, auth={"token": node.token(user)}, transports=["websocket"])
    node.cleanups.append(client.disconnect)
    return client


async def test_a_flooder_is_limited_while_an_honest_call_keeps_relaying(
        make_node: NodeFactory) -> None:
    node = await make_node(rate_signal="20/40", rate_strikes=100000)
    flooder, target = await _raw_client(node, "mallory"), await node.client("tom")
    await target.join("flood")
    joined = await flooder.call("room:join", {"room": "flood"}, timeout=5)
    ann, bob = await node.client("ann"), await node.client("bob")
    bob_log = EventLog(bob)
    a = await ann.join("call")
    b = await bob.join("call")

    async def flood() -> list[Any]:
        to = next(p["id"] for p in joined["participants"])
        return list(await asyncio.gather(*(
            flooder.call("signal", {"room": "flood", "to": to, "description": OFFER}, timeout=10)
            for _ in range(300))))

    async def honest() -> None:
        for _ in range(30):
            await ann.signal("call", b.self_id, description=OFFER)

    acks, _ = await asyncio.gather(flood(), honest())
    ok = [ack for ack in acks if ack["ok"]]
    limited = [ack["error"] for ack in acks if not ack["ok"]]
    assert 40 <= len(ok) < 100  # the burst, and what refilled while the flood lasted
    assert len(ok) + len(limited) == 300
    assert {e["code"] for e in limited} == {"rate_limited"}
    assert all(isinstance(e["retryAfter"], int) and 0 < e["retryAfter"] <= 50 for e in limited)
    # The honest call lost nothing.
    signals = await bob_log.wait_count(SignalReceived, 30)
    assert len(signals) == 30 and {s.sender for s in signals} == {a.self_id}
    # Once the bucket has refilled, the flooder may send again: a limit, not a ban.
    await asyncio.sleep(limited[-1]["retryAfter"] / 1000 + 0.05)
    ack = await flooder.call("signal", {"room": "flood", "to": joined["participants"][0]["id"],
                                        "description": OFFER}, timeout=5)
    assert ack["ok"] is True


async def test_a_connection_that_keeps_going_over_is_dropped(make_node: NodeFactory) -> None:
    node = await make_node(rate_presence="1/2", rate_strikes=10)
    flooder = await _raw_client(node, "mallory")
    dropped = asyncio.Event()
    flooder.on("disconnect", lambda *_: dropped.set())
    await flooder.call("room:join", {"room": "lobby"}, timeout=5)
    bystander = await node.client("ann")
    await bystander.join("lobby")
    acks = []
    for i in range(13):  # 2 in the burst, then 11 refused
        acks.append(await flooder.call("participant:update",
                                       {"room": "lobby", "state": {"hand": bool(i % 2)}}, timeout=5))
    assert [a["ok"] for a in acks[:2]] == [True, True]
    assert all(a["error"]["code"] == "rate_limited" for a in acks[2:])
    async with asyncio.timeout(5):
        await dropped.wait()  # the 11th refusal within 10 s
    assert (await bystander.request("ping", {"t": 1}))["ok"] is True


async def test_connects_are_limited_per_address(make_node: NodeFactory) -> None:
    node = await make_node(rate_connect="1/2")
    await _raw_client(node, "ann")
    await _raw_client(node, "bob")
    refused = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    refused.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await refused.connect(node.url, auth={"token": node.token("cat")},
                              transports=["websocket"])
    assert errors and errors[0]["data"]["code"] == "rate_limited"
    assert 0 < errors[0]["data"]["retryAfter"] <= 1000


async def test_failed_connects_slow_down_an_address(make_node: NodeFactory) -> None:
    node = await make_node(rate_auth_failures="2/3")
    forged = node.token("ann")[:-4] + "AAAA"

    async def connect(token: str) -> dict[str, Any] | None:
        client = socketio.AsyncClient(reconnection=False)
        errors: list[Any] = []
        client.on("connect_error", errors.append)
        try:
            await client.connect(node.url, auth={"token": token}, transports=["websocket"])
        except socketio.exceptions.ConnectionError:
            return dict(errors[0]["data"])
        await client.disconnect()
        return None

    assert [(await connect(forged))["code"] for _ in range(3)] == ["unauthorized"] * 3
    refused = await connect(node.token("ann"))  # a good token, but this address guessed
    assert refused is not None and refused["code"] == "rate_limited"
    await asyncio.sleep(refused["retryAfter"] / 1000 + 0.05)
    assert await connect(node.token("ann")) is None


@pytest.mark.parametrize(("setting", "event", "payload"), [
    ("rate_file", "file:progress", {"file": "f1", "bytes": 10}),
    ("rate_other", "call:hangup", {"call": "c1"}),
    ("rate_other", "no:such-event", {}),
    # Names a client may not send (python-socketio's own) count like unknown ones.
    ("rate_other", "disconnect", {}),
    ("rate_other", "*", {}),
])
async def test_every_class_of_event_is_limited(make_node: NodeFactory, setting: str,
                                                event: str, payload: dict[str, Any]) -> None:
    node = await make_node(**{setting: "1/3"}, rate_strikes=100000)
    client = await _raw_client(node, "mallory")
    codes = [(await client.call(event, payload, timeout=5)).get("error", {}).get("code")
             for _ in range(8)]
    assert "rate_limited" not in codes[:3]  # refused for what they are, not their number
    assert codes[3:] == ["rate_limited"] * 5


async def test_the_python_sdk_tells_how_long_to_wait(make_node: NodeFactory) -> None:
    node = await make_node(rate_presence="2/1")
    ann = await node.client("ann")
    await ann.join("lobby")
    await ann.update("lobby", hand=True)
    with pytest.raises(RequestError) as limited:
        await ann.update("lobby", hand=False)
    assert limited.value.code == "rate_limited"
    assert limited.value.retry_after is not None and 0 < limited.value.retry_after <= 0.5
    await asyncio.sleep(limited.value.retry_after)
    await ann.update("lobby", hand=False)  # waited as told: accepted
