"""Input limits on relayed session descriptions and candidates (docs/security.md)."""

from __future__ import annotations

import pytest

from signaling.candidates import is_private, without_private
from signaling.client import RequestError, SignalReceived
from signaling.protocol import MAX_SDP_LINES

from .conftest import Node, NodeFactory
from .helpers import EventLog

HEAD = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


async def test_a_description_with_too_many_lines_is_refused(node: Node) -> None:
    ann, bob = await node.client("ann"), await node.client("bob")
    await ann.join("lobby")
    b = await bob.join("lobby")
    await ann.signal("lobby", b.self_id, description={
        "type": "offer", "sdp": HEAD + "a=x\r\n" * (MAX_SDP_LINES - 10)})
    with pytest.raises(RequestError) as err:
        await ann.signal("lobby", b.self_id, description={
            "type": "offer", "sdp": HEAD + "a=\n" * (MAX_SDP_LINES + 1)})
    assert err.value.code == "bad_request" and "lines" in err.value.message


@pytest.mark.parametrize(("candidate", "private"), [
    ("candidate:1 1 udp 2122260223 192.168.1.5 54400 typ host", True),
    ("candidate:1 1 udp 2122260223 10.0.0.7 54400 typ host", True),
    ("candidate:1 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active", True),
    ("candidate:1 1 udp 2122260223 fe80::1 54400 typ host", True),
    ("candidate:1 1 udp 2122260223 3c2b4c1f-1d9e-4f43-a8a4-5c1a9e0d7e21.local 54400 typ host", True),
    ("candidate:2 1 udp 1686052607 1.2.3.4 61000 typ srflx raddr 192.168.1.5 rport 54400",
     False),
    ("candidate:3 1 udp 41885439 5.6.7.8 3478 typ relay raddr 0.0.0.0 rport 0", False),
    ("garbage", False),
])
def test_private_candidates_are_recognised(candidate: str, private: bool) -> None:
    assert is_private(candidate) is private


async def test_private_candidates_are_not_relayed_when_configured(
        make_node: NodeFactory) -> None:
    node = await make_node(drop_private_candidates=True)
    ann, bob = await node.client("ann"), await node.client("bob")
    log = EventLog(bob)
    await ann.join("lobby")
    b = await bob.join("lobby")
    private = "candidate:1 1 udp 2122260223 192.168.1.5 54400 typ host"
    public = "candidate:2 1 udp 1686052607 1.2.3.4 61000 typ srflx raddr 0.0.0.0 rport 0"
    ack = await ann.request("signal", {"room": "lobby", "to": b.self_id, "candidate": {
        "candidate": private, "sdpMid": "0", "sdpMLineIndex": 0}})
    assert ack == {"ok": True, "dropped": True}
    await ann.signal("lobby", b.self_id, candidate={"candidate": public, "sdpMid": "0",
                                                    "sdpMLineIndex": 0})
    sdp = HEAD + f"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na={private}\r\na={public}\r\n"
    await ann.signal("lobby", b.self_id, description={"type": "offer", "sdp": sdp})
    got = await log.wait_count(SignalReceived, 2)
    assert got[0].candidate is not None and got[0].candidate["candidate"] == public
    assert got[1].description is not None
    assert got[1].description["sdp"] == without_private(sdp)
    assert public in got[1].description["sdp"] and "192.168.1.5" not in got[1].description["sdp"]


async def test_private_candidates_are_relayed_by_default(node: Node) -> None:
    ann, bob = await node.client("ann"), await node.client("bob")
    log = EventLog(bob)
    await ann.join("lobby")
    b = await bob.join("lobby")
    private = "candidate:1 1 udp 2122260223 192.168.1.5 54400 typ host"
    await ann.signal("lobby", b.self_id, candidate={"candidate": private, "sdpMid": "0",
                                                    "sdpMLineIndex": 0})
    got = await log.wait_for(SignalReceived)
    assert got.candidate is not None and got.candidate["candidate"] == private
