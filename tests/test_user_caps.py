"""Per-user caps (signaling/caps.py): sessions and rooms one user holds at once."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import aiohttp
import pytest
import socketio

from signaling.client import ParticipantLeft, RequestError
from signaling.config import Config
from signaling.errors import ConfigError

from .conftest import Node, NodeFactory
from .helpers import EventLog


async def _connect(node: Node, auth: dict[str, Any]) -> tuple[socketio.AsyncClient, Any]:
    """A bare client and its `session` event, or the refusal's data."""
    http = aiohttp.ClientSession()
    node.cleanups.append(http.close)
    client = socketio.AsyncClient(reconnection=False, http_session=http)
    node.cleanups.append(client.disconnect)
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    client.on("session", lambda data: got.done() or got.set_result(data))
    client.on("connect_error", lambda data: got.done() or got.set_result(data))
    try:
        await client.connect(node.url, auth=auth, transports=["websocket"])
    except socketio.exceptions.ConnectionError:
        pass
    return client, await asyncio.wait_for(got, 5)


async def test_a_user_at_its_connection_cap_is_refused_until_a_device_leaves(
        make_node: NodeFactory) -> None:
    node = await make_node(max_connections_per_user=3)
    devices = [await _connect(node, {"token": node.token("carol")}) for _ in range(3)]
    assert all("session" in welcome for _, welcome in devices)
    _, refused = await _connect(node, {"token": node.token("carol")})
    assert refused["data"]["code"] == "conflict" and "3 connections" in refused["message"]
    # Other users are not affected, nor are media workers of any user.
    _, other = await _connect(node, {"token": node.token("dave")})
    assert "session" in other
    _, worker = await _connect(node, {"token": node.token("carol", service=True)})
    assert "session" in worker
    # Resuming is not a new session: a device coming back is never refused.
    first, welcome = devices[0]
    await first.eio.ws.close()  # a lost transport: its session waits out the grace period
    await asyncio.sleep(0.2)
    _, resumed = await _connect(node, {"token": node.token("carol"), "session": welcome["session"],
                                       "resume": welcome["resume"], "lastSeq": {}})
    assert resumed["resumed"] is True
    # A device that says goodbye frees its place at once.
    await devices[1][0].disconnect()
    await asyncio.sleep(0.2)
    _, again = await _connect(node, {"token": node.token("carol")})
    assert "session" in again


async def test_a_session_in_grace_makes_room_for_a_new_one(make_node: NodeFactory) -> None:
    node = await make_node(max_connections_per_user=2, resume_grace=60)
    watcher = await node.client("watcher")
    log = EventLog(watcher)
    await watcher.join("lobby")
    phone, phone_welcome = await _connect(node, {"token": node.token("carol")})
    joined = await phone.call("room:join", {"room": "lobby"}, timeout=5)
    await _connect(node, {"token": node.token("carol")})
    await phone.eio.ws.close()  # the phone switched networks and will start over
    await asyncio.sleep(0.2)
    _, fresh = await _connect(node, {"token": node.token("carol")})
    assert "session" in fresh, "a session nobody is connected to must not lock its user out"
    # The phone's old session ended: it left the room, and can no longer be resumed.
    left = await log.wait_for(ParticipantLeft, lambda e: e.id == joined["self"]["id"])
    assert left.reason == "timeout"
    _, refused = await _connect(node, {"token": node.token("carol"),
                                       "session": phone_welcome["session"],
                                       "resume": phone_welcome["resume"], "lastSeq": {}})
    assert refused["data"]["code"] == "not_found"


async def test_rooms_are_capped_per_user_across_its_devices(make_node: NodeFactory) -> None:
    node = await make_node(max_rooms_per_user=2)
    laptop, phone = await node.client("carol"), await node.client("carol")
    await laptop.join("r1")
    await phone.join("r2")
    with pytest.raises(RequestError) as refused:
        await laptop.join("r3")
    assert refused.value.code == "conflict" and "2 rooms" in refused.value.message
    # A room the user is in already is no new room: the phone joins r1 too.
    await phone.join("r1")
    # Someone else is not affected.
    await (await node.client("dave")).join("r3")
    # Leaving one makes room.
    await phone.leave("r2")
    await laptop.join("r3")


async def test_a_cap_of_zero_is_no_cap_and_negative_is_an_error(make_node: NodeFactory) -> None:
    node = await make_node(max_connections_per_user=0, max_rooms_per_user=0)
    clients = [await node.client("carol") for _ in range(12)]
    for i in range(25):
        await clients[i % 12].join(f"room-{i}")
    for name in ("max_connections_per_user", "max_rooms_per_user"):
        with pytest.raises(ConfigError, match=name):
            dataclasses.replace(Config(secret="s" * 32), **{name: -1})
