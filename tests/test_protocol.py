from typing import Any

import pytest

from signaling.errors import BadRequest
from signaling.protocol import parse_join, parse_leave, parse_signal, parse_update

SDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def test_join_accepts_room_name_and_meta() -> None:
    req = parse_join({"room": "team-1.standup", "name": "Ann", "meta": {"k": [1]}}, 2048)
    assert (req.room, req.name, req.meta) == ("team-1.standup", "Ann", {"k": [1]})


@pytest.mark.parametrize("payload", [
    None, "lobby", [], {}, {"room": ""}, {"room": 5}, {"room": "a b"}, {"room": "-x"},
    {"room": "x" * 129}, {"room": "ok", "name": ""}, {"room": "ok", "name": "n" * 65},
    {"room": "ok", "meta": []}, {"room": "ok", "meta": {"x": "y" * 3000}},
    {"room": "ok", "extra": 1},
])
def test_join_rejects(payload: Any) -> None:
    with pytest.raises(BadRequest):
        parse_join(payload, 2048)


def test_leave() -> None:
    assert parse_leave({"room": "r"}).room == "r"
    with pytest.raises(BadRequest):
        parse_leave({"room": "r", "to": "x"})


def test_signal_description_is_normalized() -> None:
    req = parse_signal({"room": "r", "to": "P1", "description": {"type": "offer", "sdp": SDP}}, 65536)
    assert req.body == {"description": {"type": "offer", "sdp": SDP}}
    assert (req.room, req.to) == ("r", "P1")


def test_signal_candidate_and_end_of_candidates() -> None:
    cand = {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0",
            "sdpMLineIndex": 0, "usernameFragment": "abcd"}
    assert parse_signal({"room": "r", "to": "P1", "candidate": cand}, 100).body == {"candidate": cand}
    assert parse_signal({"room": "r", "to": "P1", "candidate": None}, 100).body == {"candidate": None}


def test_rollback_needs_no_sdp() -> None:
    req = parse_signal({"room": "r", "to": "P1", "description": {"type": "rollback"}}, 100)
    assert req.body == {"description": {"type": "rollback", "sdp": ""}}


@pytest.mark.parametrize("payload", [
    {"room": "r", "to": "P1"},  # neither
    {"room": "r", "to": "P1", "description": {"type": "offer", "sdp": SDP}, "candidate": None},
    {"room": "r", "description": {"type": "offer", "sdp": SDP}},
    {"room": "r", "to": 7, "description": {"type": "offer", "sdp": SDP}},
    {"room": "r", "to": "P1", "description": {"type": "bogus", "sdp": SDP}},
    {"room": "r", "to": "P1", "description": {"type": "offer"}},
    {"room": "r", "to": "P1", "description": {"type": "offer", "sdp": 5}},
    {"room": "r", "to": "P1", "description": {"type": "offer", "sdp": SDP, "x": 1}},
    {"room": "r", "to": "P1", "description": "offer"},
    {"room": "r", "to": "P1", "candidate": {"candidate": 5, "sdpMid": "0"}},
    {"room": "r", "to": "P1", "candidate": {"candidate": "c", "sdpMLineIndex": -1}},
    {"room": "r", "to": "P1", "candidate": {"candidate": "c", "sdpMLineIndex": True}},
    {"room": "r", "to": "P1", "candidate": {"candidate": "c"}},
    {"room": "r", "to": "P1", "candidate": {"candidate": "c" * 2000, "sdpMid": "0"}},
    {"room": "r", "to": "P1", "candidate": "candidate:1"},
])
def test_signal_rejects(payload: Any) -> None:
    with pytest.raises(BadRequest):
        parse_signal(payload, 65536)


def test_sdp_cap_counts_bytes_not_characters() -> None:
    wide = "é" * 40  # 80 bytes in UTF-8
    ok = {"room": "r", "to": "P1", "description": {"type": "offer", "sdp": wide}}
    assert parse_signal(ok, 80)
    with pytest.raises(BadRequest, match="exceeds 79 bytes"):
        parse_signal(ok, 79)


def test_update_merges_known_booleans_only() -> None:
    assert parse_update({"room": "r", "state": {"audio": True, "hand": False}}).state == {
        "audio": True, "hand": False}
    for state in ({}, {"mood": True}, {"audio": 1}, None, []):
        with pytest.raises(BadRequest):
            parse_update({"room": "r", "state": state})
