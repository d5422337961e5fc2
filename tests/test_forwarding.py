"""Forwarding: rooms above the mesh limit send media through a media worker, without transcoding."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

import av
import pytest

from media import HeadlessPeer, SyntheticMedia
from media.forward import ForwardJob
from media.worker import MediaWorker
from signaling.app import WORKERS
from signaling.client import RequestError, RoomModeChanged
from signaling.ids import SessionId

from .conftest import Node, NodeFactory, StartWorker
from .helpers import EventLog
from .media_fixtures import eventually, peer_joiner

pytestmark = pytest.mark.media

MEDIA = SyntheticMedia(320, 240, fps=15)
ROOM = "big-room"


@pytest.fixture
async def node(make_node: NodeFactory) -> Node:
    return await make_node(mesh_max_participants=2)


@pytest.fixture
async def worker(start_worker: StartWorker) -> MediaWorker:
    return cast(MediaWorker, await start_worker("forwarder"))


def forward_job(worker: MediaWorker) -> ForwardJob:
    [job] = [j for j in worker.jobs.values() if isinstance(j, ForwardJob)]
    return job


async def test_a_room_above_the_mesh_limit_forwards_through_the_worker(
        node: Node, worker: MediaWorker) -> None:
    async with peer_joiner(node, media=MEDIA, room=ROOM) as join:
        alice, bob = await join("alice"), await join("bob")
        await alice.wait_for_media(min_video_frames=5)  # two: still a mesh
        assert alice.forwarded is None and len(alice.links) == 1
        log = EventLog(alice._client)
        carol = await join("carol")  # three: above the limit
        switched = await log.wait_for(RoomModeChanged)
        assert switched.mode == "forward" and switched.worker is not None
        peers = {"alice": alice, "bob": bob, "carol": carol}
        for name, peer in peers.items():
            others = [p.id for n, p in peers.items() if n != name]
            stats = await peer.wait_for_media(min_video_frames=10, min_audio_frames=10,
                                              participants=others, timeout=30)
            assert all(s.video_size == (320, 240) for s in stats.values()), name
            assert peer.forwarded is not None and not peer.links  # no mesh links left
        # One upload each: the worker receives 3 x (audio + video) and sends 6 x 2.
        assert forward_job(worker).load == 6 + 12
        # ...and the node knows it, though no job started or ended since the first join.
        registry = node.server.app[WORKERS]
        session = SessionId(str(worker._client.session))

        async def reported() -> bool:
            return (await registry.worker(session)).load == 18

        await eventually(reported, timeout=5)
        # A late subscriber sees every publisher's video within a second of connecting.
        dave = await join("dave")
        assert dave.forwarded is not None
        await dave.wait_for_media(min_video_frames=1, participants=list(
            p.id for p in peers.values()), timeout=30)
        fwd = dave.forwarded
        assert fwd.connected_at is not None
        delays = {p: t - fwd.connected_at for p, t in fwd.first_video().items()}
        assert len(delays) == 3 and all(d < 1.0 for d in delays.values()), delays
        # A leave renegotiates: the others stop receiving the leaver, keep the rest.
        await carol.close()
        await eventually(lambda: carol.id not in alice.stats(), timeout=10)
        before = alice.stats()[bob.id].video_frames
        await eventually(lambda: alice.stats()[bob.id].video_frames > before + 10, timeout=10)
        await eventually(lambda: forward_job(worker).load == 6 + 12, timeout=10)  # 3 left


async def test_a_room_without_a_worker_stays_mesh(node: Node) -> None:
    async with peer_joiner(node, media=MEDIA, room=ROOM) as join:
        peers = [await join(name) for name in ("alice", "bob", "carol")]
        for peer in peers:
            await peer.wait_for_media(min_video_frames=5, timeout=30)
            assert peer.forwarded is None and len(peer.links) == 2
        with pytest.raises(RequestError) as err:
            await peers[0]._client.request_media(ROOM, "forward")
        assert err.value.code == "unavailable"


async def test_losing_the_worker_falls_back_to_mesh(node: Node, worker: MediaWorker) -> None:
    async with peer_joiner(node, media=MEDIA, room=ROOM) as join:
        peers = [await join(name) for name in ("alice", "bob", "carol")]
        for peer in peers:
            await eventually(lambda p=peer: p.forwarded is not None, timeout=10)  # type: ignore[misc]
        await peers[0].wait_for_media(min_video_frames=5, timeout=30)
        log = EventLog(peers[0]._client)
        await worker._client.drop_transport()
        back = await log.wait_for(RoomModeChanged, lambda e: e.mode == "mesh", timeout=15)
        assert back.worker is None
        for peer in peers:
            others = [p.id for p in peers if p is not peer]
            await eventually(lambda p=peer: p.forwarded is None, timeout=10)  # type: ignore[misc]
            stats = await peer.wait_for_media(min_video_frames=5, participants=others,
                                              timeout=30)
            assert all(s.video_frames >= 5 for s in stats.values())


async def test_media_request_forwards_a_small_room(node: Node, worker: MediaWorker) -> None:
    async with peer_joiner(node, media=MEDIA, room="small") as join:
        alice: HeadlessPeer = await join("alice")
        bob = await join("bob")
        job = await alice._client.request_media("small", "forward")
        assert job.kind == "forward"
        again = await bob._client.request_media("small", "forward")
        assert (again.job, again.worker) == (job.job, job.worker)  # one per room
        await alice.wait_for_media(min_video_frames=5, participants=[bob.id], timeout=30)
        assert alice.forwarded is not None and bob.forwarded is not None


async def test_a_forwarded_room_is_recorded_from_what_the_worker_receives(
        node: Node, worker: MediaWorker) -> None:
    async with peer_joiner(node, media=MEDIA, room=ROOM) as join:
        peers = [await join(name, grants={"record": True}) for name in ("alice", "bob", "carol")]
        for peer in peers:
            await eventually(lambda p=peer: p.forwarded is not None, timeout=10)  # type: ignore[misc]
        state = await peers[0]._client.start_recording(ROOM)
        assert state["upstream"] is False and state["worker"] == peers[0].forwarded.worker
        directory = node.config.recordings_dir / state["recording"]

        def files() -> list[dict[str, Any]]:
            tracks = json.loads((directory / "catalog.json").read_text())["tracks"]
            return [t for t in tracks if t["file"]]

        await eventually(lambda: len(files()) == 6, timeout=20)
        assert all(p.upstream is None for p in peers)  # nobody uploads twice
        await asyncio.sleep(2)
        await peers[0]._client.stop_recording(ROOM)
        await eventually(lambda: json.loads((directory / "catalog.json").read_text())["state"]
                         == "complete", timeout=10)
        for track in files():
            with av.open(str(directory / track["file"])) as container:
                decoded = sum(1 for _ in container.decode(container.streams[0]))
            assert decoded > (20 if track["kind"] == "video" else 80), track
