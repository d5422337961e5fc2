"""A token that expires while connected: `auth:expiring` ahead of time, `auth:refresh`,
else `auth:expired` and a disconnect (docs/protocol.md)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import socketio

from signaling.auth import Grants, issue_token
from signaling.client import Disconnected, RequestError, SignalingClient

from .conftest import TEST_SECRET, NodeFactory
from .helpers import EventLog, free_port


async def _raw(url: str, token: str) -> tuple[socketio.AsyncClient, list[tuple[str, Any]]]:
    client = socketio.AsyncClient(reconnection=False)
    seen: list[tuple[str, Any]] = []
    for name in ("auth:expiring", "auth:expired"):
        client.on(name, lambda data, name=name: seen.append((name, data)))
    client.on("disconnect", lambda *_: seen.append(("disconnect", None)))
    await client.connect(url, auth={"token": token}, transports=["websocket"])
    return client, seen


async def _until(seen: list[tuple[str, Any]], name: str, timeout: float = 10) -> Any:
    async with asyncio.timeout(timeout):
        while not any(n == name for n, _ in seen):
            await asyncio.sleep(0.02)
    return next(d for n, d in seen if n == name)


async def test_an_expiring_token_is_announced_then_the_connection_ends(
        make_node: NodeFactory) -> None:
    node = await make_node(auth_expiry_notice=1.0)
    client, seen = await _raw(node.url, node.token("ann", ttl=2))
    expiring = await _until(seen, "auth:expiring")
    assert isinstance(expiring["expiresAt"], int)
    expired = await _until(seen, "auth:expired")
    assert expired["code"] == "unauthorized"
    await _until(seen, "disconnect")
    assert [n for n, _ in seen] == ["auth:expiring", "auth:expired", "disconnect"]
    await client.disconnect()


async def test_a_refreshed_token_keeps_the_connection(make_node: NodeFactory) -> None:
    node = await make_node(auth_expiry_notice=1.0)
    client, seen = await _raw(node.url, node.token("ann", ttl=2))
    await _until(seen, "auth:expiring")
    ack = await client.call("auth:refresh", {"token": node.token("ann", ttl=600)}, timeout=5)
    assert ack["ok"] is True and ack["expiresAt"] > 0
    other = await client.call("auth:refresh", {"token": node.token("bob", ttl=600)}, timeout=5)
    assert other["error"]["code"] == "forbidden"
    bad = await client.call("auth:refresh", {"token": "garbage"}, timeout=5)
    assert bad["error"]["code"] == "unauthorized"
    await asyncio.sleep(1.5)  # past the first token's expiry
    assert (await client.call("ping", {"t": 1}, timeout=5))["ok"] is True
    assert "auth:expired" not in [n for n, _ in seen]
    await client.disconnect()


async def test_the_python_sdk_refreshes_with_its_token_function(make_node: NodeFactory) -> None:
    node = await make_node(auth_expiry_notice=1.5)
    minted: list[str] = []

    def token() -> str:
        minted.append(issue_token(TEST_SECRET, "ann", ttl=2,
                                  grants=Grants(rooms=("*",), publish=True, subscribe=True)))
        return minted[-1]

    from signaling.client import SignalingClient

    client = SignalingClient(node.url, token)
    node.clients.append(client)
    await client.connect()
    await client.join("lobby")
    await asyncio.sleep(3)  # two tokens' lifetimes
    assert len(minted) >= 2
    assert (await client.request("ping", {"t": 1}))["ok"] is True


async def test_the_python_sdk_with_a_fixed_token_stops_at_its_expiry(
        make_node: NodeFactory) -> None:
    node = await make_node(auth_expiry_notice=0.5)
    token = issue_token(TEST_SECRET, "ann", grants=Grants(rooms=("*",)), ttl=2)
    ann = await node.client("ann", token=token)
    log = EventLog(ann)
    await ann.join("lobby")
    gone = await log.wait_for(Disconnected, timeout=10)
    assert "token was refused" in gone.reason and ann.state == "disconnected"
    # Requests fail at once instead of waiting for a connection that will not come.
    with pytest.raises(RequestError) as refused:
        await asyncio.wait_for(ann.update("lobby", hand=True), 2)
    assert refused.value.code == "unavailable"


async def test_requests_waiting_for_a_reconnect_fail_when_the_client_gives_up(
        make_node: NodeFactory) -> None:
    node = await make_node()
    ann = SignalingClient(node.url, node.token("ann"), backoff=0.05, max_attempts=3)
    node.clients.append(ann)
    await ann.connect()
    await ann.join("lobby")
    ann.url = f"http://127.0.0.1:{free_port()}"  # the node is unreachable from now on
    await ann.drop_transport()
    waiting = asyncio.ensure_future(ann.update("lobby", hand=True))
    with pytest.raises(RequestError) as gave_up:
        await asyncio.wait_for(waiting, 10)
    assert gave_up.value.code == "unavailable" and ann.state == "disconnected"
