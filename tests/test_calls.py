"""Calls over real sockets: every device rings, one answers, every end state reaches everyone."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from signaling.client import CallIncoming, CallStateChanged, RequestError, SignalingClient
from signaling.push import sign

from .conftest import Node
from .helpers import EventLog

Devices = list[tuple[SignalingClient, EventLog]]


async def devices(node: Node, user: str, count: int, **token_args: Any) -> Devices:
    out = []
    for _ in range(count):
        client = await node.client(user, **token_args)
        out.append((client, EventLog(client)))
    return out


async def states(devs: Devices, call_id: str, state: str) -> list[CallStateChanged]:
    return [await log.wait_for(CallStateChanged,
                               lambda e: e.call_id == call_id and e.state == state)
            for _, log in devs]


async def test_every_device_rings_and_answering_on_one_stops_the_others(node: Node) -> None:
    ann = await devices(node, "ann", 2)
    bob = await devices(node, "bob", 3, rooms=("nowhere",))
    ack = await ann[0][0].invite("bob", audio=True, video=False)
    call_id, room = ack["callId"], ack["room"]
    assert ack["state"] == "ringing" and room == f"call-{call_id}"
    for _, log in bob:
        incoming = await log.wait_for(CallIncoming)
        assert (incoming.call_id, incoming.caller, incoming.room) == (call_id, "ann", room)
        assert incoming.media == {"audio": True, "video": False}
    await states(ann + bob, call_id, "ringing")  # the caller's other device sees it too

    assert await bob[1][0].call_action("accept", call_id) == "accepted"
    for _client, log in (bob[0], bob[2]):
        gone = await log.wait_for(CallStateChanged, lambda e: e.state == "answered_elsewhere")
        assert gone.by == "bob" and gone.device == bob[1][0].session
    accepted = await states([*ann, bob[1]], call_id, "accepted")
    assert {e.device for e in accepted} == {bob[1][0].session}
    await asyncio.sleep(0.1)
    assert not bob[1][1].of(CallStateChanged)[-1].state == "answered_elsewhere"

    # the call's room admits both parties, whatever their tokens' room grants
    assert (await ann[0][0].join(room)).room == room
    assert (await bob[1][0].join(room)).room == room
    with pytest.raises(RequestError) as err:
        await bob[1][0].join("lobby")
    assert err.value.code == "forbidden"

    assert await ann[0][0].call_action("hangup", call_id) == "ended"
    await states(ann + bob, call_id, "ended")


async def test_decline_on_one_device_declines_for_everyone(node: Node) -> None:
    ann, bob = await devices(node, "ann", 1), await devices(node, "bob", 2)
    call_id = (await ann[0][0].invite("bob"))["callId"]
    await states(bob, call_id, "ringing")
    assert await bob[0][0].call_action("decline", call_id, reason="in a meeting") == "declined"
    got = await states(ann + bob, call_id, "declined")
    assert got[0].by == "bob" and got[0].reason == "in a meeting"


async def test_cancel_by_the_caller(node: Node) -> None:
    ann, bob = await devices(node, "ann", 2), await devices(node, "bob", 2)
    call_id = (await ann[0][0].invite("bob"))["callId"]
    await states(bob, call_id, "ringing")
    assert await ann[0][0].call_action("cancel", call_id) == "cancelled"
    await states(ann + bob, call_id, "cancelled")


async def test_busy_when_the_callee_is_in_another_call(node: Node) -> None:
    ann, bob, cat = [await devices(node, u, 1) for u in ("ann", "bob", "cat")]
    first = (await cat[0][0].invite("bob"))["callId"]
    await bob[0][0].call_action("accept", first)
    ack = await ann[0][0].invite("bob")
    assert ack["state"] == "busy"
    await states(ann, ack["callId"], "busy")
    await asyncio.sleep(0.1)
    assert not [e for e in bob[0][1].of(CallIncoming) if e.call_id == ack["callId"]]


async def test_missed_after_the_ring_timeout(make_node: Any) -> None:
    node = await make_node(call_ring_timeout=0.3)
    ann, bob = await devices(node, "ann", 1), await devices(node, "bob", 2)
    call_id = (await ann[0][0].invite("bob"))["callId"]
    got = await states(ann + bob, call_id, "missed")
    assert got[0].reason == "no answer"


async def test_illegal_transitions_are_conflicts(node: Node) -> None:
    ann, bob = await devices(node, "ann", 1), await devices(node, "bob", 2)
    eve = await devices(node, "eve", 1)
    call_id = (await ann[0][0].invite("bob"))["callId"]

    async def code(client: SignalingClient, action: str) -> str:
        with pytest.raises(RequestError) as err:
            await client.call_action(action, call_id)
        return err.value.code

    assert await code(ann[0][0], "accept") == "conflict"   # the caller cannot answer
    assert await code(bob[0][0], "cancel") == "conflict"   # only the caller cancels
    assert await code(bob[0][0], "hangup") == "conflict"   # not accepted yet
    assert await code(eve[0][0], "accept") == "not_found"  # not a party
    await bob[0][0].call_action("accept", call_id)
    assert await code(bob[1][0], "accept") == "conflict"   # answered on the other device
    assert await code(ann[0][0], "cancel") == "conflict"   # too late to cancel
    await bob[0][0].call_action("hangup", call_id)
    assert await code(ann[0][0], "hangup") == "conflict"   # already ended


@pytest.mark.parametrize("payload", [
    {"to": [], "media": {"audio": True}}, {"to": "ann", "media": {"audio": True}},
    {"to": "bob", "media": {"audio": "yes"}}, {"to": "bob"}, {"to": 5, "media": {}},
    {"to": "bob", "media": {}, "room": "bad room"}, {"to": [f"u{i}" for i in range(9)], "media": {}},
])
async def test_bad_invites_get_bad_request(node: Node, payload: dict[str, Any]) -> None:
    ann = await node.client("ann")
    with pytest.raises(RequestError) as err:
        await ann.request("call:invite", payload)
    assert err.value.code == "bad_request"


async def test_invite_into_a_room_outside_the_grants_is_forbidden(node: Node) -> None:
    ann = await node.client("ann", rooms=("team-*",))
    with pytest.raises(RequestError) as err:
        await ann.invite("bob", room="lobby")
    assert err.value.code == "forbidden"
    assert (await ann.invite("bob", room="team-x"))["room"] == "team-x"


async def test_offline_callee_gets_a_signed_push_and_the_call_is_missed(
    make_node: Any, aiohttp_server: Any
) -> None:
    received: list[tuple[dict[str, Any], bool]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        expected = sign("push-secret", request.headers["X-Mikoto-Timestamp"], body)
        received.append((json.loads(body), request.headers["X-Mikoto-Signature"] == expected))
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/push", hook)
    server: TestServer = await aiohttp_server(receiver, host="127.0.0.1")
    node = await make_node(push_url=str(server.make_url("/push")), push_secret="push-secret",
                           call_ring_timeout=0.5)
    ann = await devices(node, "ann", 1)
    call_id = (await ann[0][0].invite(["bob", "cat"]))["callId"]
    await states(ann, call_id, "missed")
    assert sorted((p["user"], ok) for p, ok in received) == [("bob", True), ("cat", True)]
    assert all(p["type"] == "call.incoming" and p["call"]["callId"] == call_id
               for p, _ in received)


async def test_group_call_goes_on_when_one_callee_declines(node: Node) -> None:
    ann, bob, cat = [await devices(node, u, 1) for u in ("ann", "bob", "cat")]
    call_id = (await ann[0][0].invite(["bob", "cat"]))["callId"]
    await bob[0][0].call_action("decline", call_id)
    declined = await ann[0][1].wait_for(CallStateChanged, lambda e: e.state == "declined")
    assert declined.by == "bob"
    assert await cat[0][0].call_action("accept", call_id) == "accepted"
    await states(ann + cat, call_id, "accepted")


async def test_a_party_whose_last_device_goes_ends_the_call_and_frees_the_other(
    node: Node,
) -> None:
    ann, bob = await devices(node, "ann", 1), await devices(node, "bob", 1)
    call_id = (await ann[0][0].invite("bob"))["callId"]
    await bob[0][0].call_action("accept", call_id)
    await ann[0][0].close()
    ended = await states(bob, call_id, "ended")
    assert ended[0].by == "ann" and ended[0].reason == "left"
    cat = await devices(node, "cat", 1)
    assert (await cat[0][0].invite("bob"))["state"] == "ringing"  # bob is not busy any more


async def test_a_caller_who_goes_away_cancels_the_ringing_call(node: Node) -> None:
    ann, bob = await devices(node, "ann", 1), await devices(node, "bob", 2)
    call_id = (await ann[0][0].invite("bob"))["callId"]
    await states(bob, call_id, "ringing")
    await ann[0][0].close()
    got = await states(bob, call_id, "cancelled")
    assert got[0].reason == "caller gone"
