"""The audit log (signaling/audit.py): who did what from where, as JSON lines, and
never a token or an SDP."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest
import socketio

from signaling.client import RequestError

from .conftest import NodeFactory

SDP = "v=0\r\no=- 4242 2 IN IP4 127.0.0.1\r\ns=secret-session-description\r\nt=0 0\r\n"


async def test_auth_failures_joins_refusals_and_drops_are_audited_without_secrets(
        make_node: NodeFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    audit = tmp_path / "audit.jsonl"
    node = await make_node(audit_log=str(audit), rate_presence="1/1", rate_strikes=2)
    forged = node.token("mallory")[:-4] + "AAAA"
    refused = await node.client("mallory", token=forged, connect=False)
    with pytest.raises(RequestError):
        await refused.connect()

    ann_token = node.token("ann", rooms=("lobby",))
    ann = await node.client("ann", token=ann_token)
    joined = await ann.join("lobby")
    with pytest.raises(RequestError, match="forbidden"):
        await ann.join("boardroom")
    bob = await node.client("bob")
    await bob.join("lobby")
    await bob.signal("lobby", joined.self_id, description={"type": "offer", "sdp": SDP})

    flooder = socketio.AsyncClient(reconnection=False)
    await flooder.connect(node.url, auth={"token": node.token("flo")}, transports=["websocket"])
    node.cleanups.append(flooder.disconnect)
    await flooder.call("room:join", {"room": "lobby"}, timeout=5)
    for _ in range(4):  # 1 allowed, then 3 refused: the third refusal drops it
        await flooder.call("participant:update", {"room": "lobby", "state": {"hand": True}},
                           timeout=5)

    async with asyncio.timeout(5):
        while "rate_limit_disconnect" not in audit.read_text():
            await asyncio.sleep(0.02)
    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    by_event = {}
    for line in lines:
        assert isinstance(line["ts"], float)
        by_event.setdefault(line["event"], []).append(line)
    assert by_event["auth_failed"][0] == {**by_event["auth_failed"][0], "ip": "127.0.0.1",
                                          "reason": "unauthorized"}
    assert {(j["user"], j["room"], j["ip"]) for j in by_event["join"]} == {
        ("ann", "lobby", "127.0.0.1"), ("bob", "lobby", "127.0.0.1"), ("flo", "lobby", "127.0.0.1")}
    refusal = by_event["grant_refused"][0]
    assert (refusal["user"], refusal["request"], refusal["ip"]) == ("ann", "room:join", "127.0.0.1")
    assert "boardroom" in refusal["reason"]
    assert by_event["rate_limit_disconnect"][0]["user"] == "flo"

    logged = audit.read_text() + "\n".join(r.getMessage() for r in caplog.records)
    for secret in (forged, ann_token, "secret-session-description", ann._resume):
        assert secret not in logged
