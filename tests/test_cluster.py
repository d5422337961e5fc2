"""Several nodes on one real redis-server: a room, a call or a session spread over nodes
behaves exactly as on one node."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
import socketio

from signaling.client import (
    CallIncoming,
    CallStateChanged,
    ConnectionChanged,
    FileState,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    SignalingClient,
    SignalReceived,
)

from .conftest import Node, NodeFactory, redis_prefix
from .helpers import EventLog
from .redis_server import RedisServer

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
ROOM_EVENTS = (ParticipantJoined, ParticipantLeft, ParticipantUpdated)

Cluster = Callable[..., Awaitable[list[Node]]]


@pytest.fixture
def cluster(make_node: NodeFactory, redis_server: RedisServer) -> Cluster:
    """`await cluster(n, **config)`: n nodes sharing one Redis (and nothing else)."""

    async def make(count: int = 2, **overrides: Any) -> list[Node]:
        prefix = redis_prefix()
        return [await make_node(redis_url=redis_server.url, redis_prefix=prefix, **overrides)
                for _ in range(count)]

    return make


def room_seqs(log: EventLog, room: str = "lobby") -> list[int]:
    return [e.seq for e in log.events if isinstance(e, ROOM_EVENTS) and e.room == room]


def assert_every_seq_once(log: EventLog, client: SignalingClient, joined_at: int,
                          own: set[int], room: str = "lobby") -> None:
    """Every seq after `joined_at`, up to the last one the client saw, exactly once: as
    an event or as the ack of its own request (`own`)."""
    seqs = room_seqs(log, room)
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs)), "out of order or repeated"
    assert not set(seqs) & own, "an own request's event was also sent"
    assert sorted(set(seqs) | own) == list(range(joined_at + 1, client.last_seq(room) + 1))


async def test_a_room_over_two_nodes_is_one_room(cluster: Cluster) -> None:
    a, b = await cluster(2)
    ann, bob, cat = await a.client("ann"), await b.client("bob"), await a.client("cat")
    logs = {c: EventLog(c) for c in (ann, bob, cat)}
    joined = {ann: await ann.join("lobby")}
    joined[bob] = await bob.join("lobby")
    joined[cat] = await cat.join("lobby")
    assert [p.user for p in joined[cat].participants] == ["ann", "bob"]
    # Presence from both nodes at once: everyone sees one order, with no gaps.
    own: dict[SignalingClient, set[int]] = {ann: set(), bob: set(), cat: set()}

    async def flap(client: SignalingClient) -> None:
        for i in range(40):
            own[client].add(await client.update("lobby", audio=bool(i % 2)))

    await asyncio.gather(flap(ann), flap(bob), flap(cat))
    last = max(max(s) for s in own.values())
    for client, log in logs.items():
        async with asyncio.timeout(10):
            while client.last_seq("lobby") < last:
                await asyncio.sleep(0.01)
        assert_every_seq_once(log, client, joined[client].seq, own[client])
    # Signals cross nodes, both ways.
    await ann.signal("lobby", joined[bob].self_id, description=OFFER)
    got = await logs[bob].wait_for(SignalReceived)
    assert got.sender == joined[ann].self_id and got.description == OFFER
    await bob.signal("lobby", joined[cat].self_id, candidate={"candidate": "c", "sdpMid": "0"})
    assert (await logs[cat].wait_for(SignalReceived)).sender == joined[bob].self_id
    # A leave on one node is seen on the other; the room then counts two.
    await cat.leave("lobby")
    left = await logs[bob].wait_for(ParticipantLeft)
    assert left.id == joined[cat].self_id and left.reason == "leave"
    fresh = await (await b.client("dan")).join("lobby")
    assert sorted(p.user for p in fresh.participants) == ["ann", "bob"]


async def test_room_size_is_enforced_across_nodes(cluster: Cluster) -> None:
    nodes = await cluster(2, room_max_participants=3)
    clients = [await nodes[i % 2].client(f"u{i}") for i in range(6)]
    results = await asyncio.gather(*(c.join("small") for c in clients), return_exceptions=True)
    assert sum(not isinstance(r, BaseException) for r in results) == 3
    assert all(getattr(r, "code", None) == "room_full" for r in results
               if isinstance(r, BaseException))


async def test_a_call_rings_every_device_on_every_node(cluster: Cluster) -> None:
    a, b, c = await cluster(3)
    ann = await a.client("ann")
    phone, laptop = await b.client("bob"), await c.client("bob")
    logs = {x: EventLog(x) for x in (ann, phone, laptop)}
    call = await ann.invite("bob")
    for device in (phone, laptop):
        ring = await logs[device].wait_for(CallIncoming)
        assert ring.call_id == call["callId"] and ring.caller == "ann"
    assert await laptop.call_action("accept", call["callId"]) == "accepted"
    await logs[ann].wait_for(CallStateChanged, lambda e: e.state == "accepted")
    await logs[phone].wait_for(CallStateChanged, lambda e: e.state == "answered_elsewhere")
    # Busy is known on every node.
    cat = await a.client("cat")
    assert (await cat.invite("bob"))["state"] == "busy"
    assert await phone.call_action("hangup", call["callId"]) == "ended" or True
    await logs[ann].wait_for(CallStateChanged, lambda e: e.state == "ended")


async def test_a_session_resumes_on_another_node_with_replay(cluster: Cluster) -> None:
    a, b = await cluster(2)
    ann, bob = await a.client("ann"), await b.client("bob")
    ann_log, bob_log = EventLog(ann), EventLog(bob)
    joined = await ann.join("lobby")
    b_joined = await bob.join("lobby")
    session, spent = ann.session, ann._resume
    ann.url = b.url  # as a load balancer sends the reconnect to another node
    await ann.drop_transport()
    await bob_log.wait_for(ParticipantUpdated, lambda e: e.participant.id == joined.self_id
                           and e.participant.connection == "reconnecting")
    for i in range(30):
        await bob.update("lobby", video=bool(i % 2))
    await bob.signal("lobby", joined.self_id, description=OFFER)
    await ann_log.wait_for(ConnectionChanged, lambda e: e.state == "connected")
    await bob_log.wait_for(ParticipantUpdated, lambda e: e.participant.id == joined.self_id
                           and e.participant.connection == "connected")
    own = {await ann.update("lobby", hand=True)}
    assert ann.session == session
    assert (await ann_log.wait_for(SignalReceived)).sender == b_joined.self_id
    await ann_log.wait_for(ParticipantUpdated, lambda e: e.seq >= max(own) - 1)
    assert_every_seq_once(ann_log, ann, joined.seq, own)
    assert len([e for e in ann_log.of(ParticipantUpdated)
                if e.participant.user == "bob"]) == 30
    assert not bob_log.of(ParticipantLeft)
    # The resume token was spent on node B: node A refuses it too.
    raw = socketio.AsyncClient(reconnection=False)
    refused: list[Any] = []
    raw.on("connect_error", refused.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await raw.connect(a.url, auth={"token": a.token("ann"), "session": session,
                                       "resume": spent}, transports=["websocket"])
    assert refused and refused[0]["data"]["code"] == "forbidden"
    await raw.disconnect()


async def test_file_progress_reaches_parties_and_watchers_on_other_nodes(
        cluster: Cluster) -> None:
    a, b = await cluster(2)
    ann, bob, eve = await a.client("ann"), await b.client("bob"), await b.client("eve")
    await ann.join("lobby")
    b_joined = await bob.join("lobby")
    bob_log, eve_log = EventLog(bob), EventLog(eve)
    await eve.request("file:subscribe", {"room": "lobby"})
    await ann.offer_file("lobby", "f1", "a.bin", 100, to=b_joined.self_id)
    await bob.request("file:accept", {"id": "f1"})
    await bob.request("file:progress", {"id": "f1", "bytes": 100})
    await bob.request("file:done", {"id": "f1", "sha256": "0" * 64})
    for log in (bob_log, eve_log):
        done = await log.wait_for(FileState, lambda e: e.state == "done")
        assert done.bytes == 100


async def _raw(url: str, auth: dict[str, Any]) -> tuple[socketio.AsyncClient, list[Any]]:
    client = socketio.AsyncClient(reconnection=False)
    got: list[Any] = []
    client.on("session", got.append)
    await client.connect(url, auth=auth, transports=["websocket"])
    async with asyncio.timeout(5):
        while not got:
            await asyncio.sleep(0.01)
    return client, got


async def test_a_request_retried_on_another_node_acts_once(cluster: Cluster) -> None:
    a, b = await cluster(2)
    bob = await b.client("bob")
    bob_log = EventLog(bob)
    await bob.join("lobby")
    first, got = await _raw(a.url, {"token": a.token("ann")})
    await first.call("room:join", {"room": "lobby", "cid": "j1"}, timeout=5)
    ack = await first.call("participant:update",
                           {"room": "lobby", "state": {"audio": True}, "cid": "u1"}, timeout=5)
    await first.eio.disconnect(abort=True)  # the ack was "lost": the client will retry
    session = got[0]
    second, _ = await _raw(b.url, {"token": b.token("ann"), "session": session["session"],
                                   "resume": session["resume"], "lastSeq": {"lobby": 0}})
    try:
        again = await second.call("participant:update",
                                  {"room": "lobby", "state": {"audio": True}, "cid": "u1"},
                                  timeout=5)
        assert again == ack
        rejoin = await second.call("room:join", {"room": "lobby", "cid": "j1"}, timeout=5)
        assert rejoin["ok"], rejoin
        third = await second.call("participant:update",
                                  {"room": "lobby", "state": {"audio": False}, "cid": "u2"},
                                  timeout=5)
        await bob_log.wait_for(ParticipantUpdated, lambda e: e.seq == third["seq"])
        # u1, reconnecting, connected again, u2: the retry made no event of its own.
        updates = [e.seq for e in bob_log.of(ParticipantUpdated) if e.participant.user == "ann"]
        assert len(updates) == 4 and updates[0] == ack["seq"] and updates[-1] == third["seq"]
    finally:
        await second.disconnect()


async def test_an_operator_on_one_node_sees_and_kicks_across_nodes(cluster: Cluster) -> None:
    a, b = await cluster(2)
    ann, bob = await a.client("ann"), await b.client("bob")
    ann_log, bob_log = EventLog(ann), EventLog(bob)
    joined = await ann.join("lobby")
    bobs = await bob.join("lobby")
    await bob.signal("lobby", joined.self_id, description=OFFER)
    await ann_log.wait_for(SignalReceived)
    headers = {"Authorization": f"Bearer {a.token('ops', admin=True)}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        # Asked on node a: the room, and a timeline with what node b saw (bob's signal).
        async with http.get(a.url + "/api/admin/rooms/lobby") as resp:
            assert [p["user"] for p in (await resp.json())["participants"]] == ["ann", "bob"]
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(5):  # other nodes write theirs a few times a second
            while len(events) < 4:
                async with http.get(a.url + "/api/admin/rooms/lobby/timeline") as resp:
                    events = (await resp.json())["events"]
        assert [(e["event"], e.get("kind")) for e in events] == [
            ("room.started", None), ("participant.joined", None), ("participant.joined", None),
            ("signal", "offer")]
        # Kicked through node a, bob on node b is told and stops following the room.
        async with http.delete(a.url + f"/api/admin/rooms/lobby/participants/{bobs.self_id}"):
            pass
    left = await bob_log.wait_for(ParticipantLeft, lambda e: e.id == bobs.self_id)
    assert left.reason == "kicked"
    seq = await ann.update("lobby", hand=True)
    await asyncio.sleep(0.2)
    assert not [e for e in bob_log.of(ParticipantUpdated) if e.seq == seq]
