"""Media workers serve every node: a worker connected to one node takes jobs requested
on another, and negotiates with peers there (real aiortc peers, a real redis-server)."""

from __future__ import annotations

import pytest

from media import SyntheticMedia
from signaling.client import RoomModeChanged

from .conftest import NodeFactory, redis_prefix
from .helpers import EventLog
from .media_fixtures import media_worker, peer_joiner
from .redis_server import RedisServer

pytestmark = pytest.mark.media

MEDIA = SyntheticMedia(320, 240, fps=15)


async def test_a_worker_on_one_node_serves_echo_and_forwarding_on_another(
        make_node: NodeFactory, redis_server: RedisServer) -> None:
    prefix = redis_prefix()
    a, b = [await make_node(redis_url=redis_server.url, redis_prefix=prefix,
                            mesh_max_participants=2) for _ in range(2)]
    async with media_worker(a, "worker"), peer_joiner(b, media=MEDIA, room="r") as on_b, \
            peer_joiner(a, media=MEDIA, room="r") as on_a:
        alice = await on_b("alice")
        result = await alice.echo_test(duration=2)
        assert result.report is not None, result.ended
        assert result.report["verdict"] == "good", result.report["reasons"]
        assert result.returned.video_frames >= 10
        # Three in a room spread over both nodes: it forwards through the worker on A.
        log = EventLog(alice._client)
        bob = await on_a("bob")
        carol = await on_b("carol")
        switched = await log.wait_for(RoomModeChanged, timeout=20)
        assert switched.mode == "forward"
        peers = {"alice": alice, "bob": bob, "carol": carol}
        for name, peer in peers.items():
            others = [p.id for n, p in peers.items() if n != name]
            stats = await peer.wait_for_media(min_video_frames=10, participants=others,
                                              timeout=30)
            assert set(stats) >= set(others), name
