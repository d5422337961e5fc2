"""A participant whose token does not grant `publish` may receive media, never send it
(signaling/sdp.py): its descriptions are refused if any audio or video section sends."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from signaling.client import RequestError, SignalReceived
from signaling.sdp import sends_media

from .conftest import NodeFactory
from .helpers import EventLog


async def _offer(setup: Callable[[RTCPeerConnection], None]) -> str:
    pc = RTCPeerConnection()
    try:
        setup(pc)
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


async def _answer_to(offer: str, setup: Callable[[RTCPeerConnection], None]) -> str:
    pc = RTCPeerConnection()
    try:
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        setup(pc)
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


def _send_tracks(pc: RTCPeerConnection) -> None:
    pc.addTrack(AudioStreamTrack())
    pc.addTrack(VideoStreamTrack())


def _receive_only(pc: RTCPeerConnection) -> None:
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")


def _data_only(pc: RTCPeerConnection) -> None:
    pc.createDataChannel("files")


async def test_descriptions_from_real_peer_connections() -> None:
    sending = await _offer(_send_tracks)
    assert sends_media(sending)
    assert not sends_media(await _offer(_receive_only))
    assert not sends_media(await _offer(_data_only))
    # Answering a publisher's offer without adding tracks receives only; adding them sends.
    assert not sends_media(await _answer_to(sending, lambda pc: None))
    assert sends_media(await _answer_to(sending, _send_tracks))


HEAD = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"


@pytest.mark.parametrize(("sdp", "sends"), [
    (HEAD, False),
    # No direction anywhere: RFC 8866's default is sendrecv.
    (HEAD + "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", True),
    (HEAD + "a=recvonly\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", False),
    (HEAD + "a=recvonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n", True),
    (HEAD + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=inactive\r\n", False),
    # Rejected (port 0) sections send nothing, unless bundle-only (they ride the bundle).
    (HEAD + "m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\n", False),
    (HEAD + "m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=bundle-only\r\na=sendrecv\r\n", True),
    (HEAD + "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=sendrecv\r\n", False),
    (HEAD + "m=audio 9 RTP/AVP 0\na=recvonly\nm=audio 9 RTP/AVP 0\na=sendrecv\n", True),
])
def test_directions_by_the_rules_of_sdp(sdp: str, sends: bool) -> None:
    assert sends_media(sdp) is sends


async def test_a_viewer_cannot_send_media_but_receives_and_is_audited(
        make_node: NodeFactory, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    node = await make_node(audit_log=str(audit))
    host = await node.client("host")
    viewer = await node.client("viewer", publish=False)
    host_log, viewer_log = EventLog(host), EventLog(viewer)
    h = await host.join("stage")
    v = await viewer.join("stage")

    sending = await _offer(_send_tracks)
    with pytest.raises(RequestError) as refused:
        await viewer.signal("stage", h.self_id, description={"type": "offer", "sdp": sending})
    assert refused.value.code == "forbidden" and "publish" in refused.value.message
    # Receiving is what the viewer is for: its receive-only offer and its answer to the
    # host's offer are relayed, and the host's own offers are untouched.
    await viewer.signal("stage", h.self_id,
                        description={"type": "offer", "sdp": await _offer(_receive_only)})
    await host.signal("stage", v.self_id, description={"type": "offer", "sdp": sending})
    answer = await _answer_to(sending, lambda pc: None)
    await viewer.signal("stage", h.self_id, description={"type": "answer", "sdp": answer})
    got = await host_log.wait_count(SignalReceived, 2)
    assert [s.description["type"] for s in got if s.description] == ["offer", "answer"]
    assert (await viewer_log.wait_for(SignalReceived)).description["sdp"] == sending
    # Candidates need no check: without a sending section they carry no media.
    await viewer.signal("stage", h.self_id, candidate=None)

    refusals = [json.loads(line) for line in audit.read_text().splitlines()
                if '"grant_refused"' in line]
    assert [(r["user"], r["request"]) for r in refusals] == [("viewer", "signal")]
    assert "v=0" not in audit.read_text()  # never an SDP in the audit log
