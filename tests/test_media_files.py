"""Peer-to-peer file transfer between real aiortc headless peers through a real node.

The bytes go over `file:<id>` data channels (media.files); the node only keeps the state,
which a plain SignalingClient watching the room follows.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from media import HeadlessPeer, SyntheticMedia
from signaling.client import FileState

from .conftest import Node
from .helpers import EventLog
from .media_fixtures import JoinPeer, eventually, media_tasks, peer_joiner

# Files, not media, are under test: keep the synthetic tracks cheap.
MEDIA = SyntheticMedia(160, 120, fps=5)
SIZE = 5 * 1024 * 1024 + 123

@pytest.fixture
async def join_peer(node: Node) -> AsyncIterator[JoinPeer]:
    async with peer_joiner(node, media=MEDIA, room="files") as join:
        yield join


def payload(size: int = SIZE, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


async def connected(a: HeadlessPeer, b: HeadlessPeer) -> None:
    await eventually(lambda: b.id in a.links and a.links[b.id].usable
                     and a.id in b.links and b.links[a.id].usable, timeout=15)


def states(log: EventLog, file_id: str) -> list[dict[str, Any]]:
    return [e.data for e in log.of(FileState) if e.id == file_id]


@pytest.mark.media
async def test_a_file_goes_peer_to_peer_and_watchers_see_it_done(
        node: Node, join_peer: JoinPeer) -> None:
    ann = await join_peer("ann")
    bob = await join_peer("bob", accept_files=True)
    watcher = await node.client("watcher")
    watch = EventLog(watcher)
    assert await watcher.watch_files("files") == []
    await connected(ann, bob)
    data = payload()
    sha = hashlib.sha256(data).hexdigest()

    outgoing = ann.send_file(bob.id, data, name="noise.bin", file_id="p2p1")
    final = await outgoing.wait()
    incoming = await bob.files.wait_incoming("p2p1")
    await incoming.wait()

    assert final["state"] == "done" and final["sha256"] == sha
    assert incoming.data == data and incoming.sha256 == sha and incoming.sender == ann.id
    assert outgoing.rounds == [(0, SIZE)]
    done = await watch.wait_for(FileState, lambda e: e.id == "p2p1" and e.state == "done")
    assert done.data["bytes"] == SIZE and done.data["sha256"] == sha
    assert done.data["receivers"][bob.id]["state"] == "done"
    seen = states(watch, "p2p1")
    confirmed = [s["bytes"] for s in seen]
    assert confirmed == sorted(confirmed), "progress went backwards"
    assert any(0 < b < SIZE for b in confirmed), "no intermediate progress reported"
    assert seen[-1]["state"] == "done"


@pytest.mark.media
async def test_an_interrupted_transfer_resumes_from_the_receivers_offset(
        join_peer: JoinPeer, tmp_path: Path) -> None:
    ann = await join_peer("ann", accept_files=True, file_dir=tmp_path)
    bob = await join_peer("bob")
    await connected(ann, bob)
    data = payload(seed=11)
    source = tmp_path / "source.bin"
    source.write_bytes(data)

    # The later joiner sends this time: channels open from the answering side too.
    outgoing = bob.send_file(ann.id, source, name="noise.bin", file_id="p2p2")
    incoming = await ann.files.wait_incoming("p2p2")
    await eventually(lambda: incoming.received > SIZE // 4, timeout=15, interval=0.005)
    outgoing.interrupt()
    await outgoing.wait()
    await incoming.wait()

    assert incoming.path is not None and incoming.path.read_bytes() == data
    assert len(outgoing.rounds) == 2
    (first_at, first_sent), (resumed_at, resumed_sent) = outgoing.rounds
    assert first_at == 0 and 0 < resumed_at <= first_sent
    assert resumed_at + resumed_sent == SIZE
    assert resumed_sent < SIZE  # it did not start over


@pytest.mark.media
async def test_closing_the_peers_stops_every_file_task(join_peer: JoinPeer) -> None:
    ann = await join_peer("ann")
    bob = await join_peer("bob", accept_files=lambda event: event.data["name"] == "ok.bin")
    await connected(ann, bob)
    refused = ann.send_file(bob.id, b"x" * 1000, name="no.bin")
    with pytest.raises(Exception, match="cancelled"):
        await refused.wait()
    outgoing = ann.send_file(bob.id, payload(seed=3), name="ok.bin")
    await eventually(lambda: outgoing.sent > 0, timeout=15, interval=0.005)
    await ann.close()
    await bob.close()
    assert [t for t in media_tasks() if "file" in t.get_name()] == []
