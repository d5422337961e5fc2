"""Every event's fields are capped and typed: oversized and malformed payloads, event by
event and field by field, get a coded error, and nobody else notices.

The table must name every client event (a new event without a row fails here), and
every row must reach the server's own checks: a payload within the engine.io packet
cap, so what refuses it is the event's parser, not the transport.
"""

from __future__ import annotations

from typing import Any

import pytest
import socketio

from signaling.client import SignalReceived
from signaling.protocol import ClientEvent

from .conftest import Node, NodeFactory
from .helpers import EventLog

BIG = "x" * 10_000  # past every field's cap, well within a packet
ROOM = "payloads"
SHA = "0" * 64
OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}

# Malformed for every event that takes a payload: not an object, or an unknown field.
NOT_OBJECTS: list[Any] = [[], "room", 7, True, [{"room": ROOM}]]

# event -> payloads each refused by the event's own checks (bad_request unless a code
# is given), one or more per field: oversized, wrong type, out of range.
CASES: dict[ClientEvent, list[Any]] = {
    ClientEvent.ROOM_JOIN: [
        {"room": BIG}, {"room": ""}, {"room": "no spaces"}, {"room": 7},
        {"room": ROOM, "name": BIG}, {"room": ROOM, "name": ""}, {"room": ROOM, "name": 7},
        {"room": ROOM, "meta": {"k": BIG}}, {"room": ROOM, "meta": [1]},
        {"room": ROOM, "hidden": "yes"},
    ],
    ClientEvent.ROOM_LEAVE: [{"room": BIG}, {"room": None}],
    ClientEvent.SIGNAL: [
        {"room": BIG, "to": "p", "candidate": None},
        {"room": ROOM, "to": BIG, "candidate": None},
        {"room": ROOM, "to": 7, "candidate": None},
        {"room": ROOM, "to": "p", "description": {"type": BIG, "sdp": "v=0"}},
        {"room": ROOM, "to": "p", "description": {"type": "offer", "sdp": 7}},
        {"room": ROOM, "to": "p", "description": {"type": "offer", "sdp": "v=0\n" * 10_001}},
        {"room": ROOM, "to": "p", "description": {"type": "offer", "sdp": "v=0", "x": 1}},
        {"room": ROOM, "to": "p", "candidate": {"candidate": BIG}},
        {"room": ROOM, "to": "p", "candidate": {"candidate": "c", "sdpMid": BIG}},
        {"room": ROOM, "to": "p", "candidate": {"candidate": "c", "sdpMLineIndex": 10**9}},
        {"room": ROOM, "to": "p", "candidate": {"candidate": "c", "sdpMLineIndex": True}},
        {"room": ROOM, "to": "p", "candidate": {"candidate": "c", "usernameFragment": BIG}},
        {"room": ROOM, "to": "p", "restart": "yes"},
        {"room": ROOM, "to": "p", "candidate": None, "pc": BIG},
        {"room": ROOM, "to": "p"},
        {"room": ROOM, "to": "p", "candidate": None, "restart": True},
    ],
    ClientEvent.PARTICIPANT_UPDATE: [
        {"room": BIG, "state": {}}, {"room": ROOM, "state": {BIG: True}},
        {"room": ROOM, "state": {"audio": BIG}}, {"room": ROOM, "state": [True]},
    ],
    ClientEvent.PING: [{"t": BIG}, {"t": True}],
    ClientEvent.SESSION_END: [{"reason": BIG}],
    ClientEvent.AUTH_REFRESH: [
        ({"token": BIG}, "unauthorized"), ({"token": 7}, "unauthorized"),
        ({"token": "t", "user": "x"}, "bad_request"),
    ],
    ClientEvent.CALL_INVITE: [
        {"to": BIG, "media": {}}, {"to": [BIG], "media": {}}, {"to": 7, "media": {}},
        {"to": "bob", "media": {"audio": BIG}}, {"to": "bob", "media": {BIG: True}},
        {"to": "bob", "media": {}, "room": BIG},
    ],
    ClientEvent.CALL_ACCEPT: [{"callId": BIG}, {"callId": 7}],
    ClientEvent.CALL_DECLINE: [{"callId": BIG}, {"callId": "c", "reason": BIG}],
    ClientEvent.CALL_CANCEL: [{"callId": BIG}],
    ClientEvent.CALL_HANGUP: [{"callId": BIG}],
    ClientEvent.FILE_OFFER: [
        {"room": BIG, "id": "f1", "name": "a", "size": 1, "mime": "a/b"},
        {"room": ROOM, "to": BIG, "id": "f1", "name": "a", "size": 1, "mime": "a/b"},
        {"room": ROOM, "id": BIG, "name": "a", "size": 1, "mime": "a/b"},
        {"room": ROOM, "id": "f1", "name": BIG, "size": 1, "mime": "a/b"},
        {"room": ROOM, "id": "f1", "name": "../a", "size": 1, "mime": "a/b"},
        {"room": ROOM, "id": "f1", "name": "a", "size": -1, "mime": "a/b"},
        {"room": ROOM, "id": "f1", "name": "a", "size": 2**70, "mime": "a/b"},
        {"room": ROOM, "id": "f1", "name": "a", "size": "1", "mime": "a/b"},
        {"room": ROOM, "id": "f1", "name": "a", "size": 1, "mime": BIG},
        {"room": ROOM, "id": "f1", "name": "a", "size": 1, "mime": "a/b", "sha256": BIG},
    ],
    ClientEvent.FILE_ACCEPT: [{"id": BIG}, {"id": 7}],
    ClientEvent.FILE_REJECT: [{"id": BIG}],
    ClientEvent.FILE_PROGRESS: [{"id": BIG, "bytes": 1}, {"id": "f1", "bytes": -1},
                                {"id": "f1", "bytes": BIG}],
    ClientEvent.FILE_DONE: [{"id": BIG}, {"id": "f1", "sha256": BIG}],
    ClientEvent.FILE_CANCEL: [{"id": BIG}, {"id": "f1", "reason": BIG}],
    ClientEvent.FILE_SUBSCRIBE: [{"room": BIG}],
    ClientEvent.FILE_UNSUBSCRIBE: [{"room": BIG}],
    ClientEvent.MEDIA_REQUEST: [
        {"room": BIG, "kind": "echo"}, {"room": ROOM, "kind": BIG},
        {"room": ROOM, "kind": "echo", "duration": 10**9},
        {"room": ROOM, "kind": "echo", "duration": BIG},
    ],
    ClientEvent.MEDIA_RELEASE: [{"job": BIG}, {"job": 7}],
    ClientEvent.RECORDING_START: [{"room": BIG}],
    ClientEvent.RECORDING_STOP: [{"room": BIG}],
    ClientEvent.WORKER_REGISTER: [
        {"capacity": 10**9, "kinds": ["echo"]}, {"capacity": 1, "kinds": [BIG]},
        {"capacity": 1, "kinds": BIG},
    ],
    ClientEvent.WORKER_LOAD: [{"load": 10**12}, {"load": BIG}],
    ClientEvent.MEDIA_REPORT: [{"job": BIG, "report": {}},
                               {"job": "j", "report": {"text": "y" * 20_000}},
                               {"job": "j", "report": BIG}],
}


def test_every_client_event_has_rows() -> None:
    assert set(CASES) == set(ClientEvent)
    assert all(CASES.values())


def _rows() -> list[Any]:
    rows = []
    for event, cases in CASES.items():
        for i, case in enumerate([*cases, *(p for p in NOT_OBJECTS if cases)]):
            payload, code = case if isinstance(case, tuple) else (case, "bad_request")
            if event in (ClientEvent.SESSION_END, ClientEvent.PING) and payload == []:
                continue
            rows.append(pytest.param(event, payload, code, id=f"{event}-{i}"))
    return rows


@pytest.fixture(scope="module")
def rows() -> list[Any]:
    return _rows()


async def _sender(node: Node, user: str, **grants: bool) -> socketio.AsyncClient:
    client = socketio.AsyncClient(reconnection=False)
    token = node.token(user, **grants)
    await client.connect(node.url, auth={"token": token}, transports=["websocket"])
    node.cleanups.append(client.disconnect)
    return client


async def test_every_bad_field_of_every_event_gets_a_code(
        make_node: NodeFactory, rows: list[Any]) -> None:
    node = await make_node()
    ann, bob = await node.client("ann"), await node.client("bob")
    bob_log = EventLog(bob)
    await ann.join(ROOM)
    b = await bob.join(ROOM)
    # One sender with every grant, in the room, so no grant or membership check answers
    # before the payload's own.
    mallory = await _sender(node, "mallory", record=True, admin=True, service=True)
    assert (await mallory.call("room:join", {"room": ROOM}, timeout=5))["ok"]
    failures = []
    for row in rows:
        event, payload, code = row.values
        ack = await mallory.call(str(event), payload, timeout=10)
        got = ack.get("error", {}).get("code") if isinstance(ack, dict) else None
        if got != code:
            failures.append((row.id, code, ack if len(repr(ack)) < 300 else repr(ack)[:300]))
        # The other participants keep talking after every bad payload.
    assert not failures, failures
    assert mallory.connected, "bad payloads are refused, not punished with a disconnect"
    for _ in range(3):
        await ann.signal(ROOM, b.self_id, description=OFFER)
    assert len(await bob_log.wait_count(SignalReceived, 3)) == 3
