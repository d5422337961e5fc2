"""Media workers: registration, routing by load, hidden participants, the echo test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from media import SyntheticMedia
from signaling.app import WORKERS
from signaling.client import MediaEnded, RequestError

from .conftest import Node, StartWorker
from .helpers import EventLog
from .media_fixtures import JoinPeer, eventually, peer_joiner

pytestmark = pytest.mark.media

MEDIA = SyntheticMedia(320, 240, fps=15)


@pytest.fixture
async def join(node: Node) -> AsyncIterator[JoinPeer]:
    async with peer_joiner(node, media=MEDIA, room="echo-room") as join:
        yield join


async def test_echo_reports_what_the_worker_saw(start_worker: StartWorker,
                                                join: JoinPeer) -> None:
    await start_worker()
    peer = await join("alice")
    result = await peer.echo_test(duration=3)
    report = result.report
    assert report is not None, result.ended
    assert report["verdict"] == "good", report["reasons"]
    assert report["reasons"] == []
    assert 2.5 <= report["duration"] <= 4.0
    conn = report["connection"]
    assert conn["state"] == "connected" and conn["turn"] is False
    assert conn["local"] == "host" and conn["remote"] in ("host", "prflx")
    assert conn["protocol"] == "udp"
    assert report["rttMs"] is not None and 0 < report["rttMs"] < 300
    video, audio = report["video"], report["audio"]
    assert (video["width"], video["height"]) == (320, 240)
    assert 10 <= video["frameRate"] <= 17  # the synthetic camera sends 15 fps
    assert video["keyframes"] >= 1 and video["frames"] >= 30
    assert video["bitrateKbps"] > 10 and video["lossPercent"] < 3
    assert audio["packets"] >= 100  # 50 Opus packets a second
    assert audio["lossPercent"] < 3 and audio["jitterMs"] < 50
    # The echo came back: the peer decoded its own media from the worker.
    assert result.returned.video_frames >= 20 and result.returned.audio_frames >= 50
    assert result.returned.video_size == (320, 240)


async def test_echo_over_a_lossy_network_is_degraded(start_worker: StartWorker,
                                                     join: JoinPeer) -> None:
    await start_worker()
    peer = await join("alice", send_loss=0.15)
    result = await peer.echo_test(duration=3)
    assert result.report is not None
    assert result.report["verdict"] == "degraded"
    assert result.report["audio"]["lossPercent"] > 5
    assert any("lost" in reason for reason in result.report["reasons"])


async def test_requests_without_a_worker_are_unavailable(node: Node) -> None:
    client = await node.client("alice", record=True)
    await client.join("room")
    for kind in ("echo", "record", "forward"):
        with pytest.raises(RequestError) as err:
            await client.request_media("room", kind)
        assert err.value.code == "unavailable"


async def test_worker_is_hidden_and_only_services_hide(node: Node,
                                                       start_worker: StartWorker,
                                                       join: JoinPeer) -> None:
    await start_worker()
    alice = await join("alice")
    bob = await node.client("bob")
    log = EventLog(bob)
    await bob.join("echo-room")
    job = await alice._client.request_media("echo-room", "echo", duration=1)
    # Bob neither sees the worker in the room nor is told it joined.
    carol = await node.client("carol")
    joined = await carol.join("echo-room")
    assert [p.user for p in joined.participants] == ["alice", "bob"]
    assert job.worker not in {p.id for p in joined.participants}
    await alice._client.ping()
    assert not [e for e in log.events if getattr(e, "participant", None)
                and e.participant.id == job.worker]
    # A user token cannot join hidden, nor act as a worker.
    with pytest.raises(RequestError) as err:
        await bob.join("other", hidden=True)
    assert err.value.code == "forbidden"
    with pytest.raises(RequestError) as err:
        await bob.request("worker:register", {"capacity": 1, "kinds": ["echo"]})
    assert err.value.code == "forbidden"
    with pytest.raises(RequestError) as err:
        await bob.request("media:report", {"job": job.job, "report": {}})
    assert err.value.code == "forbidden"


async def test_jobs_go_to_the_least_loaded_worker(start_worker: StartWorker,
                                                  join: JoinPeer) -> None:
    one = await start_worker("worker-1")
    two = await start_worker("worker-2")
    alice, bob = await join("alice"), await join("bob")
    await alice._client.request_media("echo-room", "echo", duration=30)
    await bob._client.request_media("echo-room", "echo", duration=30)
    assert (len(one.jobs), len(two.jobs)) == (1, 1)


async def test_a_worker_that_goes_fails_its_jobs(node: Node, start_worker: StartWorker,
                                                 join: JoinPeer) -> None:
    worker = await start_worker()
    alice = await join("alice")
    ended: list[MediaEnded] = []
    alice._client.subscribe(lambda e: isinstance(e, MediaEnded) and ended.append(e))
    job = await alice._client.request_media("echo-room", "echo", duration=30)
    await worker._client.drop_transport()  # as a crash or network loss would
    await eventually(lambda: bool(ended), timeout=10)
    assert ended[0].job == job.job and ended[0].reason == "worker_lost"
    assert ended[0].error is not None and ended[0].error["code"] == "unavailable"
    # The worker comes back with a new session, registers again and takes work again.
    registry = node.server.app[WORKERS]

    async def back() -> bool:
        return len(await registry.all()) == 1 and not worker.jobs

    await eventually(back, timeout=10)
    result = await alice.echo_test(duration=1)
    assert result.report is not None and result.report["verdict"] != "failed"


async def test_leaving_ends_the_job_on_the_worker(start_worker: StartWorker,
                                                  join: JoinPeer) -> None:
    worker = await start_worker()
    alice = await join("alice")
    await alice._client.request_media("echo-room", "echo", duration=30)
    assert len(worker.jobs) == 1
    await alice.close()
    await eventually(lambda: not worker.jobs, timeout=10)


async def test_bad_media_payloads_get_coded_acks(node: Node, start_worker: StartWorker) -> None:
    await start_worker()
    client = await node.client("alice")
    await client.join("room")
    for payload in ({"room": "room"}, {"room": "room", "kind": "dance"},
                    {"room": "room", "kind": "echo", "duration": 0},
                    {"room": "room", "kind": "echo", "duration": "5"},
                    {"room": "room", "kind": "echo", "extra": 1}, ["echo"]):
        with pytest.raises(RequestError) as err:
            await client.request("media:request", payload)
        assert err.value.code == "bad_request", payload
    with pytest.raises(RequestError) as err:
        await client.request_media("elsewhere", "echo")
    assert err.value.code == "not_found"
    for payload in ({"job": "nope"}, {"job": "J" + "0" * 16}):
        with pytest.raises(RequestError) as err:
            await client.request("media:release", payload)
        assert err.value.code in ("bad_request", "not_found")
    await asyncio.sleep(0)


async def test_one_echo_at_a_time_and_no_job_for_a_full_worker(start_worker: StartWorker,
                                                               join: JoinPeer) -> None:
    await start_worker(capacity=2)  # one echo test (an audio and a video stream)
    alice, bob = await join("alice"), await join("bob")
    job = await alice._client.request_media("echo-room", "echo", duration=30)
    with pytest.raises(RequestError) as err:
        await alice._client.request_media("echo-room", "echo", duration=30)
    assert err.value.code == "conflict"
    await eventually(lambda: bob._client.connected)
    with pytest.raises(RequestError) as err:
        await bob._client.request_media("echo-room", "echo", duration=30)
    assert err.value.code == "unavailable" and "capacity" in err.value.message
    await alice._client.release_media(job.job)
    # Free again once the worker has reported its load after the release.
    async with asyncio.timeout(5):
        while True:
            try:
                assert (await bob._client.request_media("echo-room", "echo")).kind == "echo"
                break
            except RequestError as exc:
                assert exc.code == "unavailable"
            await asyncio.sleep(0.05)
