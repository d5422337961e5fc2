"""Resume after a lost transport, replay without loss or duplicates, request ids, keepalive."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
import socketio

from signaling.client import (
    ConnectionChanged,
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    RequestError,
    SessionStarted,
    SignalReceived,
)
from signaling.config import Config

from .conftest import Node
from .helpers import EventLog

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}


def room_events(log: EventLog, room: str = "lobby") -> list[Any]:
    return [e for e in log.events
            if isinstance(e, ParticipantJoined | ParticipantLeft | ParticipantUpdated)
            and e.room == room]


async def test_killed_transport_resumes_with_every_event_once_in_order(node: Node) -> None:
    ann, bob, cat = [await node.client(u) for u in ("ann", "bob", "cat")]
    ann_log, bob_log = EventLog(ann), EventLog(bob)
    a = await ann.join("lobby")
    b = await bob.join("lobby")
    await cat.join("lobby")
    session = ann.session

    await ann.drop_transport()
    await bob_log.wait_for(ParticipantUpdated, lambda e: e.participant.id == a.self_id
                           and e.participant.connection == "reconnecting")
    # 200 room events while ann is away or coming back
    for i in range(100):
        await bob.update("lobby", audio=bool(i % 2))
        await cat.update("lobby", video=bool(i % 2))
    await bob.signal("lobby", a.self_id, description=OFFER)
    await ann_log.wait_for(ConnectionChanged, lambda e: e.state == "connected")
    await bob_log.wait_for(ParticipantUpdated, lambda e: e.participant.id == a.self_id
                           and e.participant.connection == "connected")
    await ann.update("lobby", hand=True)  # flushes: everything before it has arrived

    assert ann.session == session
    resumed = [e for e in ann_log.events if isinstance(e, SessionStarted)]
    assert resumed[-1].resumed is True
    seqs = [e.seq for e in room_events(ann_log)]
    assert seqs == sorted(set(seqs)), "out of order or duplicated"
    # every seq after ann's join, exactly once: as an event or in one of ann's own acks
    own = {ann.last_seq("lobby")}
    assert sorted(set(seqs) | own) == list(range(b.seq, ann.last_seq("lobby") + 1))
    assert len([e for e in room_events(ann_log) if isinstance(e, ParticipantUpdated)
                and e.participant.id != a.self_id]) == 200
    # the signal sent while ann was away arrived, after the resume
    assert (await ann_log.wait_for(SignalReceived)).sender == b.self_id
    # the others never saw ann leave or join again
    assert not [e for e in bob_log.events if isinstance(e, ParticipantLeft)]
    assert not [e for e in bob_log.events
                if isinstance(e, ParticipantJoined) and e.participant.id == a.self_id]


async def test_requests_made_while_offline_are_sent_once_after_the_resume(node: Node) -> None:
    ann, bob = await node.client("ann"), await node.client("bob")
    bob_log = EventLog(bob)
    await ann.join("lobby")
    await bob.join("lobby")
    await ann.drop_transport()
    seqs = await asyncio.gather(*(ann.update("lobby", audio=bool(i % 2)) for i in range(5)))
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    await bob_log.wait_for(ParticipantUpdated, lambda e: e.seq == seqs[-1])
    own = [e for e in bob_log.of(ParticipantUpdated) if e.participant.user == "ann"
           and e.participant.connection == "connected" and e.seq in seqs]
    assert [e.seq for e in own] == seqs


async def _raw(node: Node, auth: dict[str, Any]) -> tuple[socketio.AsyncClient, list[Any]]:
    """A bare python-socketio client: sees the session event and refusals as they are."""
    http = aiohttp.ClientSession()
    node.cleanups.append(http.close)
    client = socketio.AsyncClient(reconnection=False, http_session=http)
    got: list[Any] = []
    client.on("session", got.append)
    client.on("connect_error", got.append)
    try:
        await client.connect(node.url, auth=auth, transports=["websocket"])
    except socketio.exceptions.ConnectionError:
        pass
    return client, got


async def _wait(got: list[Any]) -> Any:
    async with asyncio.timeout(5):
        while not got:
            await asyncio.sleep(0.01)
    return got[0]


async def test_retried_request_id_acts_once(node: Node) -> None:
    bob = await node.client("bob")
    bob_log = EventLog(bob)
    await bob.join("lobby")
    raw, got = await _raw(node, {"token": node.token("ann")})
    try:
        await _wait(got)
        await raw.call("room:join", {"room": "lobby", "cid": "j1"}, timeout=5)
        first = await raw.call("participant:update",
                               {"room": "lobby", "state": {"audio": True}, "cid": "u1"}, timeout=5)
        again = await raw.call("participant:update",
                               {"room": "lobby", "state": {"audio": True}, "cid": "u1"}, timeout=5)
        assert first == again and first["ok"]
        rejoin = await raw.call("room:join", {"room": "lobby", "cid": "j1"}, timeout=5)
        assert rejoin["ok"], "a retried join returns the first ack, not conflict"
        third = await raw.call("participant:update",
                               {"room": "lobby", "state": {"audio": False}, "cid": "u2"}, timeout=5)
        await bob_log.wait_for(ParticipantUpdated, lambda e: e.seq == third["seq"])
        assert len(bob_log.of(ParticipantUpdated)) == 2
        bad = await raw.call("ping", {"cid": 7}, timeout=5)
        assert bad["error"]["code"] == "bad_request"
    finally:
        await raw.disconnect()


async def test_resume_after_the_grace_period_fails_cleanly(make_node: Any) -> None:
    node = await make_node(resume_grace=0.3)
    bob = await node.client("bob")
    bob_log = EventLog(bob)
    await bob.join("lobby")
    raw, got = await _raw(node, {"token": node.token("ann")})
    session = await _wait(got)
    await raw.call("room:join", {"room": "lobby"}, timeout=5)
    await raw.eio.ws.close()  # a lost transport, not a goodbye
    left = await bob_log.wait_for(ParticipantLeft)
    assert left.reason == "timeout"
    again, refused = await _raw(node, {"token": node.token("ann"), "session": session["session"],
                                        "resume": session["resume"], "lastSeq": {"lobby": 1}})
    assert (await _wait(refused))["data"]["code"] == "not_found"
    await raw.disconnect()
    await again.disconnect()


async def test_resume_tokens_are_bound_to_the_user_and_single_use(node: Node) -> None:
    raw, got = await _raw(node, {"token": node.token("ann")})
    first = await _wait(got)
    await raw.call("room:join", {"room": "lobby"}, timeout=5)
    await raw.eio.ws.close()
    await asyncio.sleep(0.1)
    resume = {"session": first["session"], "resume": first["resume"], "lastSeq": {"lobby": 1}}
    thief, refused = await _raw(node, {"token": node.token("mallory"), **resume})
    assert (await _wait(refused))["data"]["code"] == "forbidden"
    owner, welcome = await _raw(node, {"token": node.token("ann"), **resume})
    second = await _wait(welcome)
    assert second["resumed"] is True and second["session"] == first["session"]
    assert second["resume"] != first["resume"]
    await owner.eio.ws.close()
    await asyncio.sleep(0.1)
    replay, refused = await _raw(node, {"token": node.token("ann"), **resume})  # the old token
    assert (await _wait(refused))["data"]["code"] == "forbidden"
    for client in (raw, thief, owner, replay):
        await client.disconnect()


async def test_session_end_leaves_at_once(node: Node) -> None:
    ann, bob = await node.client("ann"), await node.client("bob")
    bob_log = EventLog(bob)
    await ann.join("lobby")
    await bob.join("lobby")
    await ann.close()
    left = await bob_log.wait_for(ParticipantLeft)
    assert left.reason == "disconnect"
    with pytest.raises(RequestError):
        await ann.update("lobby", audio=True)


async def test_ping_gives_the_round_trip(node: Node) -> None:
    ann = await node.client("ann")
    assert 0 <= await ann.ping() < 5
    ack = await ann.request("ping", {"t": 42})
    assert ack["t"] == 42 and ack["now"] > 1_700_000_000_000


def test_default_heartbeat_detects_a_dead_client_within_20_seconds() -> None:
    c = Config()
    assert c.ping_interval + c.ping_timeout <= 20


async def test_a_client_that_stops_answering_pings_is_marked_reconnecting(make_node: Any) -> None:
    node = await make_node(ping_interval=0.3, ping_timeout=0.3, resume_grace=5)
    bob = await node.client("bob")
    bob_log = EventLog(bob)
    await bob.join("lobby")
    # Speak engine.io/socket.io by hand, then go silent: no pong, like a dead network.
    async with aiohttp.ClientSession() as http:
        url = node.url + "/socket.io/?EIO=4&transport=websocket"
        async with http.ws_connect(url) as ws:
            assert (await ws.receive_str()).startswith("0")
            await ws.send_str("40" + json.dumps({"token": node.token("zed")}))
            while not (await ws.receive_str()).startswith("40"):
                pass
            await ws.send_str('421["room:join",{"room":"lobby"}]')
            while not (msg := await ws.receive_str()).startswith("431"):
                pass
            me = json.loads(msg[3:])[0]["self"]["id"]
            update = await bob_log.wait_for(
                ParticipantUpdated, lambda e: e.participant.id == me, timeout=5)
            assert update.participant.connection == "reconnecting"
