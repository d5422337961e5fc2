"""Integration: real Socket.IO clients against a real node on a loopback port."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
import socketio

from signaling.client import (
    ParticipantJoined,
    ParticipantLeft,
    ParticipantUpdated,
    RequestError,
    SignalingClient,
    SignalReceived,
)

from .conftest import Node
from .helpers import EventLog

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 192.0.2.1 5000 typ host",
             "sdpMid": "0", "sdpMLineIndex": 0}


async def test_join_presence_and_ack_shape(node: Node) -> None:
    ann = await node.client("ann", name="Ann")
    ann_log = EventLog(ann)
    a = await ann.join("lobby")
    assert a.participants == [] and a.seq == 1
    assert (a.user, a.name) == ("ann", "Ann")

    bob = await node.client("bob")
    b = await bob.join("lobby", name="Bobby", meta={"device": "phone"})
    assert b.seq == 2
    [seen] = [p for p in b.participants]
    assert (seen.id, seen.user, seen.name, seen.polite) == (a.self_id, "ann", "Ann", True)
    assert seen.state == dict.fromkeys(("audio", "video", "screen", "hand", "speaking"), False)

    joined = await ann_log.wait_for(ParticipantJoined)
    assert joined.seq == 2 and joined.polite is False
    assert (joined.participant.id, joined.participant.name) == (b.self_id, "Bobby")
    assert b.self_id not in (ann.url, a.self_id)


async def test_participant_ids_are_not_socket_ids(node: Node) -> None:
    ann = await node.client("ann")
    joined = await ann.join("lobby")
    assert joined.self_id != ann._sio.get_sid()


async def test_signal_reaches_the_target_alone(node: Node) -> None:
    ann, bob, cat = [await node.client(u) for u in ("ann", "bob", "cat")]
    logs = {name: EventLog(c) for name, c in (("ann", ann), ("bob", bob), ("cat", cat))}
    a = await ann.join("lobby")
    b = await bob.join("lobby")
    await cat.join("lobby")
    await ann.signal("lobby", b.self_id, description=OFFER)
    await ann.signal("lobby", b.self_id, candidate=CANDIDATE)
    await ann.signal("lobby", b.self_id, candidate=None)
    got = await logs["bob"].wait_count(SignalReceived, 3)
    assert got[0] == SignalReceived(room="lobby", sender=a.self_id, description=OFFER)
    assert got[1].candidate == CANDIDATE and got[1].is_candidate
    assert got[2].candidate is None and got[2].is_candidate and got[2].description is None
    await bob.signal("lobby", a.self_id, description={"type": "answer", "sdp": OFFER["sdp"]})
    answer = await logs["ann"].wait_for(SignalReceived)
    assert answer.sender == b.self_id and answer.description["type"] == "answer"
    await asyncio.sleep(0.1)
    assert logs["cat"].of(SignalReceived) == []


async def test_update_and_leave_reach_the_others_in_seq_order(node: Node) -> None:
    ann, bob = await node.client("ann"), await node.client("bob")
    bob_log = EventLog(bob)
    a = await ann.join("lobby")
    b = await bob.join("lobby")
    assert await ann.update("lobby", audio=True, hand=True) == b.seq + 1
    updated = await bob_log.wait_for(ParticipantUpdated)
    assert updated.participant.state["audio"] and updated.participant.state["hand"]
    assert not updated.participant.state["video"]
    await ann.leave("lobby")
    left = await bob_log.wait_for(ParticipantLeft)
    assert (left.id, left.reason, left.seq) == (a.self_id, "leave", b.seq + 2)
    with pytest.raises(RequestError) as err:
        await ann.leave("lobby")
    assert err.value.code == "not_found"


async def test_disconnect_leaves_every_room(node: Node) -> None:
    ann, bob = await node.client("ann"), await node.client("bob")
    bob_log = EventLog(bob)
    for room in ("r1", "r2"):
        await bob.join(room)
        await ann.join(room)
    await ann.close()
    lefts = await bob_log.wait_count(ParticipantLeft, 2)
    assert {(e.room, e.reason) for e in lefts} == {("r1", "disconnect"), ("r2", "disconnect")}


async def test_seq_strictly_increases_by_one_under_concurrent_events(node: Node) -> None:
    watcher = await node.client("watcher")
    log = EventLog(watcher)
    w = await watcher.join("busy")
    clients = [await node.client(f"u{i}") for i in range(6)]

    async def churn(client: SignalingClient) -> None:
        await client.join("busy")
        for i in range(10):
            await client.update("busy", audio=bool(i % 2))
        await client.leave("busy")

    await asyncio.gather(*(churn(c) for c in clients))
    expected = 6 * 12
    await log.wait_count(ParticipantLeft, 6)
    room_events = [e for e in log.events
                   if isinstance(e, ParticipantJoined | ParticipantUpdated | ParticipantLeft)]
    assert [e.seq for e in room_events] == list(range(w.seq + 1, w.seq + 1 + expected))


async def test_ice_servers_in_join_ack(make_node: Any) -> None:
    node = await make_node(stun_urls=("stun:127.0.0.1:3478",),
                           turn_urls=("turn:127.0.0.1:3478",), turn_secret="t-secret")
    ann = await node.client("ann")
    servers = (await ann.join("lobby")).ice_servers
    assert servers[0] == {"urls": ["stun:127.0.0.1:3478"]}
    assert servers[1]["urls"] == ["turn:127.0.0.1:3478"]
    assert servers[1]["username"].endswith(":ann")


# -- refusals ---------------------------------------------------------------------------


async def test_connect_without_token_is_refused_with_a_code(node: Node) -> None:
    raw = socketio.AsyncClient(reconnection=False)
    errors: list[Any] = []
    raw.on("connect_error", errors.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await raw.connect(node.url, transports=["websocket"])
    # the wire shape the official JS client exposes as err.message and err.data
    assert errors == [{"message": "missing token",
                       "data": {"code": "unauthorized", "message": "missing token"}}]


@pytest.mark.parametrize("token_kind", ["expired", "forged", "garbage"])
async def test_bad_tokens_are_refused(node: Node, token_kind: str) -> None:
    token = {
        "expired": node.token("ann", ttl=-10),
        "forged": node.token("ann")[:-4] + "AAAA",
        "garbage": "garbage",
    }[token_kind]
    client = await node.client("ann", token=token, connect=False)
    with pytest.raises(RequestError) as err:
        await client.connect()
    assert err.value.code == "unauthorized"
    if token_kind == "expired":
        assert "expired" in err.value.message


async def test_room_outside_grants_is_forbidden(node: Node) -> None:
    ann = await node.client("ann", rooms=("team-*",))
    await ann.join("team-red")
    with pytest.raises(RequestError) as err:
        await ann.join("lobby")
    assert err.value.code == "forbidden"


async def test_signal_to_another_room_or_unknown_id_is_not_found(node: Node) -> None:
    ann, bob, eve = [await node.client(u) for u in ("ann", "bob", "eve")]
    eve_log = EventLog(eve)
    await ann.join("lobby")
    await bob.join("lobby")
    e = await eve.join("elsewhere")
    for room, to in (("lobby", e.self_id), ("lobby", "Pnobody"), ("elsewhere", e.self_id)):
        with pytest.raises(RequestError) as err:
            await ann.signal(room, to, description=OFFER)
        assert err.value.code == "not_found"
    await asyncio.sleep(0.1)
    assert eve_log.of(SignalReceived) == []


async def test_room_full_and_double_join(make_node: Any) -> None:
    node = await make_node(room_max_participants=2)
    a, b, c = [await node.client(u) for u in ("a", "b", "c")]
    await a.join("small")
    await b.join("small")
    with pytest.raises(RequestError) as err:
        await c.join("small")
    assert err.value.code == "room_full"
    with pytest.raises(RequestError) as err:
        await a.join("small")
    assert err.value.code == "conflict"


MALFORMED: list[tuple[str, Any]] = [
    ("room:join", None), ("room:join", "lobby"), ("room:join", {"room": 42}),
    ("room:join", {}), ("room:join", {"room": "lobby", "name": ["x"]}),
    ("room:join", {"room": "lobby", "meta": "x"}), ("room:join", {"room": "lobby", "bogus": 1}),
    ("room:leave", []), ("room:leave", {"room": None}),
    ("signal", {"room": "lobby"}), ("signal", {"room": "lobby", "to": 1, "candidate": None}),
    ("signal", {"room": "lobby", "to": "P1", "description": {"type": "offer", "sdp": 7}}),
    ("signal", {"room": "lobby", "to": "P1", "description": {"type": "hello", "sdp": "v=0"}}),
    ("signal", {"room": "lobby", "to": "P1",
                "description": {"type": "offer", "sdp": "a" * (64 * 1024 + 1)}}),
    ("signal", {"room": "lobby", "to": "P1", "candidate": {"candidate": 5}}),
    ("participant:update", {"room": "lobby", "state": {"audio": "yes"}}),
    ("participant:update", {"room": "lobby", "state": {"mood": True}}),
    ("participant:update", {"room": "lobby"}),
    ("no:such:event", {"room": "lobby"}),
    ("message", "hello"),
]


@pytest.mark.parametrize(("event", "payload"), MALFORMED)
async def test_malformed_payloads_get_bad_request_and_others_keep_working(
    node: Node, event: str, payload: Any
) -> None:
    ann, bob = await node.client("ann"), await node.client("bob")
    bob_log = EventLog(bob)
    a = await ann.join("lobby")
    b = await bob.join("lobby")
    hostile = await node.client("mallory")
    await hostile.join("lobby")
    with pytest.raises(RequestError) as err:
        await hostile.request(event, payload)
    assert err.value.code == "bad_request"
    # the node keeps serving everyone, the hostile client included
    await ann.signal("lobby", b.self_id, description=OFFER)
    assert (await bob_log.wait_for(SignalReceived)).sender == a.self_id
    assert await hostile.update("lobby", audio=True) > 0


async def test_event_with_no_or_extra_arguments_gets_bad_request(node: Node) -> None:
    raw = socketio.AsyncClient(reconnection=False)
    await raw.connect(node.url, auth={"token": node.token("ann")}, transports=["websocket"])
    try:
        assert (await raw.call("room:join", timeout=5))["error"]["code"] == "bad_request"
        ack = await raw.call("room:join", ({"room": "a"}, {"room": "b"}), timeout=5)
        assert ack["error"]["code"] == "bad_request"
        assert (await raw.call("room:join", {"room": "a"}, timeout=5))["ok"] is True
    finally:
        await raw.disconnect()


async def test_oversized_engineio_packet_drops_only_that_client(node: Node) -> None:
    ann, bob = await node.client("ann"), await node.client("bob")
    bob_log = EventLog(bob)
    a = await ann.join("lobby")
    b = await bob.join("lobby")
    hog = await node.client("hog", request_timeout=1.0)
    await hog.join("lobby")
    with pytest.raises(RequestError):
        await hog.request("signal", {"room": "lobby", "to": a.self_id,
                                     "description": {"type": "offer", "sdp": "x" * 2_000_000}})
    await ann.signal("lobby", b.self_id, description=OFFER)
    assert (await bob_log.wait_for(SignalReceived)).sender == a.self_id


async def test_sdk_request_after_close_fails_with_a_code(node: Node) -> None:
    ann = await node.client("ann")
    await ann.close()
    with pytest.raises(RequestError) as err:
        await ann.join("lobby")
    assert err.value.code == "unavailable"


async def test_restart_intents_are_relayed(node: Node) -> None:
    ann, bob = await node.client("ann"), await node.client("bob")
    bob_log = EventLog(bob)
    a = await ann.join("lobby")
    b = await bob.join("lobby")
    await ann.signal("lobby", b.self_id, restart=True)
    got = await bob_log.wait_for(SignalReceived)
    assert got.restart and got.sender == a.self_id and got.description is None
    with pytest.raises(RequestError) as err:
        await ann.request("signal", {"room": "lobby", "to": b.self_id, "restart": False})
    assert err.value.code == "bad_request"


async def test_draining_refuses_new_work_and_closes_connections(make_node: Any) -> None:
    from signaling.app import EDGE
    from signaling.client import Draining

    node = await make_node(drain_timeout=0.5)
    ann = await node.client("ann")
    ann_log = EventLog(ann)
    await ann.join("lobby")
    drain = asyncio.ensure_future(node.server.app[EDGE].drain())
    got = await ann_log.wait_for(Draining)
    assert got.reconnect_in == 500
    late = await node.client("late", connect=False)
    with pytest.raises(RequestError) as err:
        await late.connect()
    assert err.value.code == "unavailable"
    await asyncio.wait_for(drain, 5)
    assert not node.server.app[EDGE].connections()


@pytest.mark.parametrize("name", ["disconnect", "connect", "*"])
async def test_a_client_cannot_raise_the_servers_own_events(node: Node, name: str) -> None:
    """python-socketio routes these names to the connect, disconnect and catch-all
    handlers: a client's "disconnect" used to detach its own session (found by the fuzz
    test), and "connect" to open a second one with an environ of its choosing."""
    raw = socketio.AsyncClient(reconnection=False)
    await raw.connect(node.url, auth={"token": node.token("mallory")}, transports=["websocket"])
    node.cleanups.append(raw.disconnect)
    await raw.call("room:join", {"room": "lobby"}, timeout=5)
    ann = await node.client("ann")
    log = EventLog(ann)
    await ann.join("lobby")
    ack = await raw.call(name, ({"REMOTE_ADDR": "203.0.113.9"}, {"token": "x"}), timeout=5)
    assert ack["ok"] is False and ack["error"]["code"] == "bad_request"
    ping = await raw.call("ping", {"t": 1}, timeout=5)
    assert ping["ok"] is True  # still connected, same session
    await ann.update("lobby", hand=True)  # everything before it has arrived
    assert not [e for e in log.events if isinstance(e, ParticipantUpdated)
                and e.participant.connection != "connected"]


async def test_an_event_name_that_is_not_a_string_gets_bad_request(node: Node) -> None:
    url = node.url + "/socket.io/?EIO=4&transport=websocket"
    async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        assert (await ws.receive_str()).startswith("0{")
        await ws.send_str("40" + json.dumps({"token": node.token("mallory")}))
        assert (await ws.receive_str()).startswith("40{")
        await ws.send_str('427[["a"],{"room":"lobby"}]')
        while True:
            got = await ws.receive_str()
            if got.startswith("437"):
                break
        assert json.loads(got[3:])[0]["error"]["code"] == "bad_request"
