"""Calls between real aiortc headless peers through a real node on loopback.

ICE uses host candidates on the machine's non-loopback interfaces (aioice leaves
127.0.0.1 out); only the relay test needs a server (coturn on loopback).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from media import HeadlessPeer, PeerLink, SyntheticMedia
from media.ice import parse_candidate, rtc_configuration
from media.tracks import read_frame_index
from signaling.client import ConnectionChanged, SignalReceived
from signaling.ids import ParticipantId, RoomId

from .conftest import Node
from .helpers import EventLog
from .media_fixtures import JoinPeer, eventually, media_tasks, peer_joiner
from .turn import coturn

# Small and slow enough that six peer connections encode and decode in real time on two cores.
MEDIA = SyntheticMedia(320, 240, fps=15)
FRAMES = {"min_video_frames": 10, "min_audio_frames": 10}
MEDIA_TIMEOUT = 15.0

@pytest.fixture
async def join_peer(node: Node) -> AsyncIterator[JoinPeer]:
    async with peer_joiner(node, media=MEDIA, room="call") as join:
        yield join


# -- calls ------------------------------------------------------------------------------


@pytest.mark.media
async def test_media_keeps_flowing_while_signaling_resumes(node: Node, join_peer: JoinPeer) -> None:
    ann = await join_peer("ann")
    bob = await join_peer("bob")
    await ann.wait_for_media(participants=[bob.id], timeout=MEDIA_TIMEOUT, **FRAMES)
    client = node.clients[0]
    session, before = client.session, ann.stats()[bob.id]
    changes = EventLog(client)
    await client.drop_transport()
    await changes.wait_for(ConnectionChanged, lambda e: e.state == "reconnecting")
    await changes.wait_for(ConnectionChanged, lambda e: e.state == "connected")
    more = before.video_frames + 15
    after = await ann.wait_for_media(participants=[bob.id], min_video_frames=more,
                                     min_audio_frames=before.audio_frames + 15,
                                     timeout=MEDIA_TIMEOUT)
    assert client.session == session and ann.id in bob.links
    assert after[bob.id].connections == before.connections  # the same peer connection
    assert after[bob.id].connection_state == "connected"



@pytest.mark.media
async def test_two_peers_send_each_other_audio_and_video(join_peer: JoinPeer) -> None:
    ann = await join_peer("ann")
    bob = await join_peer("bob")
    got_by_ann, got_by_bob = await asyncio.gather(
        ann.wait_for_media(participants=[bob.id], timeout=MEDIA_TIMEOUT, **FRAMES),
        bob.wait_for_media(participants=[ann.id], timeout=MEDIA_TIMEOUT, **FRAMES),
    )
    for stats in (got_by_ann[bob.id], got_by_bob[ann.id]):
        assert stats.connection_state == "connected"
        assert stats.video_size == (320, 240)
        assert stats.connections == 1  # no glare: only the joiner offered
    # The later joiner is the polite side (protocol.md).
    assert (ann.links[bob.id].polite, bob.links[ann.id].polite) == (False, True)
    # Distinct, numbered pictures arrive, not one frame repeated.
    frames = [s.last_frame for s in ann.links[bob.id].sinks if s.last_frame is not None]
    assert frames and read_frame_index(frames[0]) >= 5


@pytest.mark.media
async def test_a_later_joiner_gets_media_from_everyone_and_gives_to_everyone(
        join_peer: JoinPeer) -> None:
    ann = await join_peer("ann")
    bob = await join_peer("bob")
    cat = await join_peer("cat")
    await asyncio.gather(
        cat.wait_for_media(participants=[ann.id, bob.id], timeout=MEDIA_TIMEOUT, **FRAMES),
        ann.wait_for_media(participants=[bob.id, cat.id], timeout=MEDIA_TIMEOUT, **FRAMES),
        bob.wait_for_media(participants=[ann.id, cat.id], timeout=MEDIA_TIMEOUT, **FRAMES),
    )
    assert set(cat.links) == {ann.id, bob.id}
    assert all(link.polite for link in cat.links.values())
    assert not ann.links[cat.id].polite and not bob.links[cat.id].polite


@pytest.mark.media
@pytest.mark.parametrize("how", ["close", "disconnect"])
async def test_a_leaving_peer_has_its_connection_closed_on_the_other_side(
        join_peer: JoinPeer, node: Node, how: str) -> None:
    ann = await join_peer("ann")
    bob = await join_peer("bob")
    await ann.wait_for_media(participants=[bob.id], timeout=MEDIA_TIMEOUT, **FRAMES)
    link = ann.links[bob.id]
    if how == "close":
        await bob.close()  # leaves the room
    else:
        await node.clients[-1].close()  # bob's connection drops; the node makes it leave
    await eventually(lambda: bob.id not in ann.links)  # dropped once closed
    assert link.closed and link.connection_state == "closed"
    assert ann.stats() == {}
    assert not any(sink.running for sink in link.sinks)


@pytest.mark.media
async def test_a_kicked_peer_closes_its_calls_on_both_sides(join_peer: JoinPeer,
                                                           node: Node) -> None:
    ann = await join_peer("ann")
    bob = await join_peer("bob")
    await ann.wait_for_media(participants=[bob.id], timeout=MEDIA_TIMEOUT, **FRAMES)
    links = ann.links[bob.id], bob.links[ann.id]
    headers = {"Authorization": "Bearer " + node.token("ops", admin=True)}
    async with aiohttp.ClientSession(headers=headers) as http, http.delete(
            f"{node.url}/api/admin/rooms/call/participants/{bob.id}") as resp:
        assert resp.status == 200
    await eventually(lambda: bob.removed == "kicked" and bob.links == {})
    await eventually(lambda: bob.id not in ann.links)
    assert all(link.closed for link in links)
    await bob.close()  # still clean: it is out of the room already
    await ann.close()
    assert media_tasks() == []


@pytest.mark.media
async def test_close_is_idempotent_and_leaves_no_task_behind(
        join_peer: JoinPeer, node: Node) -> None:
    ann = await join_peer("ann")
    bob = await join_peer("bob")
    await bob.wait_for_media(participants=[ann.id], timeout=MEDIA_TIMEOUT, **FRAMES)
    assert media_tasks()
    await asyncio.gather(ann.close(), ann.close(), bob.close())
    await ann.close()
    assert media_tasks() == []
    assert ann.links == {} and bob.links == {}
    # Both left the room: a newcomer finds nobody there.
    probe = await node.client("probe")
    assert (await probe.join("call")).participants == []


@pytest.mark.media
@pytest.mark.parametrize("stage", ["offering", "answering"])
async def test_leaving_in_the_middle_of_negotiation_is_clean(
        join_peer: JoinPeer, stage: str) -> None:
    ann = await join_peer("ann")
    bob = await join_peer("bob")  # its offer to ann is being made right now
    if stage == "answering":  # ann got the offer and is answering it
        await eventually(lambda: bob.id in ann.links, interval=0.001)
    await bob.close()
    await eventually(lambda: bob.id not in ann.links)
    await ann.close()
    assert media_tasks() == []


@pytest.mark.media
async def test_close_survives_the_cancellation_of_its_caller(join_peer: JoinPeer) -> None:
    ann = await join_peer("ann")
    bob = await join_peer("bob")
    await bob.wait_for_media(participants=[ann.id], timeout=MEDIA_TIMEOUT, **FRAMES)
    pc = bob.links[ann.id].pc
    assert pc is not None
    closing = asyncio.create_task(bob.close())
    await asyncio.sleep(0.001)  # bob is now closing its peer connection
    closing.cancel()
    await asyncio.wait([closing])
    # The cancelled caller got control back only once everything was closed.
    assert closing.cancelled() and pc.connectionState == "closed" and bob.links == {}
    await bob.close()  # finishes the same work, not a second one
    await eventually(lambda: bob.id not in ann.links)
    assert bob.links == {}
    await ann.close()
    assert media_tasks() == []


async def test_ice_configuration_comes_from_the_join_ack_or_the_override(
        make_node: Any) -> None:
    node = await make_node(stun_urls=("stun:127.0.0.1:3478",),
                           turn_urls=("turn:127.0.0.1:3479",), turn_secret="t-secret")
    from_ack = HeadlessPeer(await node.client("ann"), media=MEDIA)
    overridden = HeadlessPeer(await node.client("bob"), media=MEDIA, relay_only=True,
                              ice_servers=[{"urls": "turn:192.0.2.9:3478",
                                            "username": "u", "credential": "p"}])
    try:
        await from_ack.join("lobby")
        await overridden.join("other-room")  # alone: no connection is attempted
        stun, turn = from_ack.configuration.iceServers or []
        assert stun.urls == ["stun:127.0.0.1:3478"]
        assert turn.urls == ["turn:127.0.0.1:3479"] and str(turn.username).endswith(":ann")
        assert from_ack.configuration.iceTransportPolicy == RTCIceTransportPolicy.ALL
        [relay] = overridden.configuration.iceServers or []
        assert (relay.urls, relay.username, relay.credential) == (
            ["turn:192.0.2.9:3478"], "u", "p")
        assert overridden.configuration.iceTransportPolicy == RTCIceTransportPolicy.RELAY
    finally:
        await from_ack.close()
        await overridden.close()


@pytest.mark.media
@pytest.mark.turn
async def test_relay_only_peers_talk_through_turn(make_node: Any, tmp_path: Path) -> None:
    with coturn(tmp_path) as turn:
        node = await make_node(turn_urls=turn.urls, turn_secret=turn.secret)
        peers = [HeadlessPeer(await node.client(user), media=MEDIA, relay_only=True)
                 for user in ("ann", "bob")]
        try:
            for peer in peers:
                await peer.join("relayed")
            ann, bob = peers
            await asyncio.gather(
                ann.wait_for_media(participants=[bob.id], timeout=MEDIA_TIMEOUT, **FRAMES),
                bob.wait_for_media(participants=[ann.id], timeout=MEDIA_TIMEOUT, **FRAMES),
            )
            assert turn.allocations() >= 2
        finally:
            for peer in peers:
                await peer.close()


# -- glare, with two links wired to each other directly ------------------------------------


@pytest.mark.media
async def test_glare_the_polite_side_answers_on_a_fresh_connection() -> None:
    room = RoomId("glare")
    ids = {"polite": ParticipantId("Ppolite"), "impolite": ParticipantId("Pimpolite")}
    links: dict[str, PeerLink] = {}

    def sender(me: str, other: str) -> Callable[[dict[str, Any]], Awaitable[None]]:
        async def send(message: dict[str, Any]) -> None:
            links[other].deliver(SignalReceived(
                room=room, sender=ids[me], description=message.get("description"),
                candidate=message.get("candidate"), is_candidate="candidate" in message))
        return send

    config = rtc_configuration([])
    for me, other in (("polite", "impolite"), ("impolite", "polite")):
        links[me] = PeerLink(ids[other], polite=me == "polite", configuration=config,
                             media=MEDIA, send=sender(me, other))
    try:
        # Both queue their offer before either can see the other's: certain glare.
        links["polite"].offer()
        links["impolite"].offer()
        await eventually(lambda: all(
            link.stats().video_frames >= 10 and link.stats().audio_frames >= 10
            for link in links.values()), timeout=MEDIA_TIMEOUT)
        assert links["polite"].stats().connections == 2
        assert links["impolite"].stats().connections == 1
        assert {link.connection_state for link in links.values()} == {"connected"}
    finally:
        await asyncio.gather(*(link.close() for link in links.values()))
    assert media_tasks() == []


# -- wire ICE data to aiortc --------------------------------------------------------------


def test_ice_servers_from_the_join_ack_become_an_aiortc_configuration() -> None:
    empty = rtc_configuration([])
    assert empty.iceServers == []  # not None, which aiortc would replace with Google STUN
    assert empty.iceTransportPolicy == RTCIceTransportPolicy.ALL
    config = rtc_configuration([
        {"urls": ["stun:127.0.0.1:3478"]},
        {"urls": ["turn:127.0.0.1:3479", "bogus:x"], "username": "9:ann", "credential": "c2"},
    ], relay_only=True)
    assert config.iceTransportPolicy == RTCIceTransportPolicy.RELAY
    assert config.iceServers is not None
    stun, turn = config.iceServers
    assert (stun.urls, stun.username) == (["stun:127.0.0.1:3478"], None)
    assert (turn.urls, turn.username, turn.credential) == (["turn:127.0.0.1:3479"], "9:ann", "c2")


def test_browser_candidates_become_aiortc_candidates() -> None:
    wire = {"candidate": "candidate:842163049 1 udp 1677729535 198.51.100.7 46154 typ srflx "
                         "raddr 10.0.0.2 rport 46154 generation 0 ufrag sx1a network-cost 999",
            "sdpMid": "0", "sdpMLineIndex": 0, "usernameFragment": "sx1a"}
    candidate = parse_candidate(wire)
    assert candidate is not None
    assert (candidate.ip, candidate.port, candidate.type, candidate.protocol) == (
        "198.51.100.7", 46154, "srflx", "udp")
    assert (candidate.relatedAddress, candidate.sdpMid, candidate.sdpMLineIndex) == (
        "10.0.0.2", "0", 0)
    # null and an empty candidate string both mean end-of-candidates
    assert parse_candidate(None) is None
    assert parse_candidate({"candidate": "", "sdpMid": "0"}) is None


@pytest.mark.parametrize("wire", [
    {"candidate": "candidate:1 1 udp", "sdpMid": "0"},
    {"candidate": "candidate:1 1 udp 2122260223 192.0.2.1 5000 typ host"},
    {"candidate": 42, "sdpMid": "0"},
])
def test_unusable_candidates_are_refused(wire: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        parse_candidate(wire)
