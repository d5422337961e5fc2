"""The admin REST API (signaling/admin.py) against a real node: an operator lists rooms,
sends data, asks for a mute, kicks, closes a room, reads timelines and mints tokens,
within the rooms its token grants; and the OpenAPI document names exactly the routes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from signaling.app import EDGE
from signaling.client import (
    CallStateChanged,
    MuteRequested,
    ParticipantLeft,
    ParticipantUpdated,
    RequestError,
    RoomData,
    SignalingClient,
)
from signaling.openapi import DOCUMENT

from .conftest import Node, NodeFactory
from .helpers import EventLog

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}


class Admin:
    def __init__(self, node: Node, http: aiohttp.ClientSession, token: str) -> None:
        self._node, self._http, self._token = node, http, token

    async def __call__(self, method: str, path: str, body: Any = None,
                       token: str | None = None) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token or self._token}"}
        async with self._http.request(method, self._node.url + path, json=body,
                                      headers=headers) as resp:
            return resp.status, await resp.json()


@pytest.fixture
async def admin(node: Node) -> Any:
    async with aiohttp.ClientSession() as http:
        yield Admin(node, http, node.token("ops", admin=True))


async def test_an_operator_watches_messages_mutes_and_kicks(node: Node, admin: Admin,
                                                            tmp_path: Path) -> None:
    ann, bob = await node.client("ann"), await node.client("bob")
    ann_log, bob_log = EventLog(ann), EventLog(bob)
    a, b = await ann.join("ops-room"), await bob.join("ops-room")
    await ann.signal("ops-room", b.self_id, description=OFFER)

    status, listed = await admin("GET", "/api/admin/rooms")
    assert status == 200 and {"room": "ops-room", "participants": 2,
                              "seq": 2} in listed["rooms"]
    status, room = await admin("GET", "/api/admin/rooms/ops-room")
    assert [p["user"] for p in room["participants"]] == ["ann", "bob"]

    status, sent = await admin("POST", "/api/admin/rooms/ops-room/data",
                               {"data": {"notice": "maintenance at 10"}, "topic": "ops"})
    assert status == 200
    for log in (ann_log, bob_log):
        got = await log.wait_for(RoomData)
        assert (got.data, got.topic, got.by, got.seq) == (
            {"notice": "maintenance at 10"}, "ops", "ops", sent["seq"])

    status, muted = await admin("POST", f"/api/admin/rooms/ops-room/participants/{b.self_id}/mute",
                                {"audio": True})
    assert (status, muted["delivered"]) == (200, True)
    mute = await bob_log.wait_for(MuteRequested)
    assert (mute.room, mute.audio, mute.video, mute.by) == ("ops-room", True, False, "ops")
    assert not ann_log.of(MuteRequested)  # only the one asked

    status, kicked = await admin("DELETE", f"/api/admin/rooms/ops-room/participants/{b.self_id}")
    assert (status, kicked["removed"]) == (200, b.self_id)
    for log in (ann_log, bob_log):  # bob is told too: the left participant is itself
        left = await log.wait_for(ParticipantLeft, lambda e: e.id == b.self_id)
        assert left.reason == "kicked"
    with pytest.raises(RequestError) as refused:
        await bob.signal("ops-room", a.self_id, description=OFFER)
    assert refused.value.code == "not_found"
    # The kicked connection no longer follows the room.
    cat = await node.client("cat")
    cat_log = EventLog(cat)
    await cat.join("ops-room")
    seq = await ann.update("ops-room", hand=True)
    await cat_log.wait_for(ParticipantUpdated, lambda e: e.seq == seq)
    await asyncio.sleep(0.1)
    assert not [e for e in bob_log.of(ParticipantUpdated) if e.seq == seq]

    status, timeline = await admin("GET", "/api/admin/rooms/ops-room/timeline")
    events = [(e["event"], e.get("kind"), e.get("reason")) for e in timeline["events"]]
    assert events[:4] == [("room.started", None, None), ("participant.joined", None, None),
                          ("participant.joined", None, None), ("signal", "offer", None)]
    assert ("participant.left", None, "kicked") in events
    offer = next(e for e in timeline["events"] if e.get("kind") == "offer")
    assert (offer["sender"], offer["to"], offer["bytes"]) == (
        a.self_id, b.self_id, len(OFFER["sdp"]))
    assert "v=0" not in json.dumps(timeline)  # sizes and kinds, never contents

    status, closed = await admin("DELETE", "/api/admin/rooms/ops-room")
    assert status == 200 and len(closed["removed"]) == 2 and a.self_id in closed["removed"]
    assert (await ann_log.wait_for(ParticipantLeft, lambda e: e.id == a.self_id)).reason == "closed"
    status, listed = await admin("GET", "/api/admin/rooms")
    assert "ops-room" not in [r["room"] for r in listed["rooms"]]
    status, timeline = await admin("GET", "/api/admin/rooms/ops-room/timeline")
    assert timeline["events"][-1]["event"] == "room.finished"


async def test_kicks_and_mints_are_audited(make_node: NodeFactory, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    node = await make_node(audit_log=str(audit))
    bob = await node.client("bob")
    b = await bob.join("lobby")
    async with aiohttp.ClientSession() as http:
        admin = Admin(node, http, node.token("ops", admin=True))
        assert (await admin("DELETE", f"/api/admin/rooms/lobby/participants/{b.self_id}"))[0] == 200
        status, minted = await admin("POST", "/api/admin/tokens", {"user": "carol", "ttl": 60})
        assert status == 200
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    kick = next(x for x in lines if x["event"] == "kick")
    assert (kick["user"], kick["room"], kick["by"], kick["reason"]) == (
        "bob", "lobby", "ops", "kicked")
    assert any(x["event"] == "token_minted" and x["user"] == "carol" for x in lines)
    assert minted["token"] not in audit.read_text()


async def test_admin_tokens_are_checked_and_bounded_by_their_rooms(node: Node,
                                                                  admin: Admin) -> None:
    ann = await node.client("ann")
    a = await ann.join("team-a")
    await (await node.client("bob")).join("team-b")
    # No token, a token without admin, a forged one.
    async with aiohttp.ClientSession() as http:
        async with http.get(node.url + "/api/admin/rooms") as resp:
            assert resp.status == 401
    assert (await admin("GET", "/api/admin/rooms", token=node.token("ann")))[0] == 403
    assert (await admin("GET", "/api/admin/rooms", token=node.token("ops", admin=True)[:-3]
                        + "AAA"))[0] == 401
    # An admin of team-b sees team-b only; team-a looks like no room at all.
    scoped = node.token("lead", admin=True, rooms=("team-b",))
    status, listed = await admin("GET", "/api/admin/rooms", token=scoped)
    assert [r["room"] for r in listed["rooms"]] == ["team-b"]
    for method, path in [("GET", "/api/admin/rooms/team-a"),
                         ("DELETE", f"/api/admin/rooms/team-a/participants/{a.self_id}"),
                         ("GET", "/api/admin/rooms/team-a/timeline"),
                         ("DELETE", "/api/admin/rooms/team-a")]:
        status, body = await admin(method, path, token=scoped)
        assert (status, body["error"]["code"]) == (404, "not_found"), path
    # Minting and call timelines need every room.
    status, body = await admin("POST", "/api/admin/tokens", {"user": "x"}, token=scoped)
    assert status == 403
    assert (await admin("GET", "/api/admin/calls/c1/timeline", token=scoped))[0] == 403
    assert (await admin("GET", "/api/admin/rooms/team-a"))[0] == 200  # the full admin may


async def test_minted_tokens_connect_and_never_grant_service(node: Node, admin: Admin) -> None:
    status, minted = await admin("POST", "/api/admin/tokens", {
        "user": "dora", "name": "Dora", "ttl": 120,
        "grants": {"rooms": ["lobby"], "publish": True, "subscribe": True}})
    assert status == 200 and minted["ttl"] == 120
    dora = await node.client("dora", token=minted["token"])
    assert (await dora.join("lobby")).self_id
    with pytest.raises(RequestError, match="forbidden"):
        await dora.join("elsewhere")
    for body in [{"user": "x", "grants": {"rooms": ["*"], "service": True}},
                 {"user": "x", "ttl": 0}, {"user": ""}, {"user": "x", "extra": 1},
                 {"user": "x", "grants": {"rooms": "lobby"}}]:
        status, refused = await admin("POST", "/api/admin/tokens", body)
        assert status in (400, 403) and refused["ok"] is False, body
    async with aiohttp.ClientSession() as http:
        async with http.post(node.url + "/api/admin/tokens", data=b"{not json",
                             headers={"Authorization": f"Bearer {node.token('o', admin=True)}",
                                      "Content-Type": "application/json"}) as resp:
            assert resp.status == 400


async def test_bad_admin_requests_get_coded_errors(node: Node, admin: Admin) -> None:
    ann = await node.client("ann")
    a = await ann.join("lobby")
    cases = [
        ("GET", "/api/admin/rooms/not%20a%20room", None, 400),
        ("GET", "/api/admin/rooms/nosuch", None, 404),
        ("DELETE", "/api/admin/rooms/lobby/participants/nobody", None, 404),
        ("POST", f"/api/admin/rooms/lobby/participants/{a.self_id}/mute", {}, 400),
        ("POST", f"/api/admin/rooms/lobby/participants/{a.self_id}/mute", {"audio": "yes"}, 400),
        ("POST", "/api/admin/rooms/lobby/data", {}, 400),
        ("POST", "/api/admin/rooms/lobby/data", {"data": "x" * 20_000}, 400),
        ("POST", "/api/admin/rooms/lobby/data", {"data": 1, "topic": "t" * 65}, 400),
        ("POST", "/api/admin/rooms/nosuch/data", {"data": 1}, 404),
        ("DELETE", "/api/admin/rooms/lobby/recording", None, 404),
        ("POST", "/api/admin/rooms/lobby/recording", None, 503),  # no media worker
    ]
    for method, path, body, expected in cases:
        status, answer = await admin(method, path, body)
        assert status == expected and answer["ok"] is False, (path, body, answer)
    await ann.update("lobby", audio=True)  # the node and ann are fine


async def test_a_call_has_a_timeline(node: Node, admin: Admin) -> None:
    ann, bob = await node.client("ann"), await node.client("bob")
    bob_log = EventLog(bob)
    call = await ann.invite("bob", video=False)
    await bob_log.wait_for(CallStateChanged, lambda e: e.state == "ringing")
    await bob.request("call:accept", {"callId": call["callId"]})
    await ann.request("call:hangup", {"callId": call["callId"]})
    status, timeline = await admin("GET", f"/api/admin/calls/{call['callId']}/timeline")
    assert status == 200
    states = [(e["event"], e.get("state")) for e in timeline["events"]]
    assert states == [("call.state", "ringing"), ("call.state", "accepted"),
                      ("call.state", "ended")]


def _served(node: Node) -> set[tuple[str, str]]:
    app = node.server.app
    routes = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter") or ""
        operated = path.startswith("/api/") or path in ("/healthz", "/readyz", "/metrics")
        if operated and route.method not in ("HEAD", "OPTIONS"):
            routes.add((route.method.lower(), path))
    return routes


async def test_the_openapi_document_names_exactly_the_api_routes(node: Node) -> None:
    documented = {(method, path) for path, item in DOCUMENT["paths"].items()
                  for method in item if method != "parameters"}
    assert documented == _served(node)
    async with aiohttp.ClientSession() as http:
        async with http.get(node.url + "/api/openapi.json") as resp:
            assert resp.status == 200 and (await resp.json())["openapi"].startswith("3.1")
    # Every admin operation needs a token; every answer has its documented error shape.
    for path, item in DOCUMENT["paths"].items():
        for method, op in item.items():
            if method != "parameters" and path.startswith("/api/admin/"):
                assert op["security"] == [{"bearer": []}], path


async def test_the_edge_knows_the_rooms(node: Node) -> None:
    client: SignalingClient = await node.client("ann")
    await client.join("one")
    await client.join("two")
    assert await node.server.app[EDGE].rooms.names() == ["one", "two"]
    await client.leave("one")
    assert await node.server.app[EDGE].rooms.names() == ["two"]
