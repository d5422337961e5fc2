"""A cluster through faults: a node killed with SIGKILL mid-call, Redis restarted
mid-call, and nginx in front (the shipped docker/nginx.conf), all as real processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from signaling.auth import Grants, issue_token, room_grants
from signaling.client import (
    CallIncoming,
    CallStateChanged,
    ConnectionChanged,
    FileState,
    MediaEnded,
    ParticipantLeft,
    ParticipantUpdated,
    RequestError,
    SignalingClient,
    SignalReceived,
)

from .conftest import NodeFactory, redis_prefix
from .helpers import EventLog
from .nginx import nginx
from .processes import SECRET, serving
from .redis_server import RedisServer
from .test_cluster import OFFER, assert_every_seq_once

FAST = {"MIKOTO_RTC_NODE_HEARTBEAT": "0.2", "MIKOTO_RTC_NODE_TIMEOUT": "1",
        "MIKOTO_RTC_RESUME_GRACE": "3", "MIKOTO_RTC_MEDIA_WORKERS": "0",
        "MIKOTO_RTC_READY_NEEDS_WORKER": "false",
        "MIKOTO_RTC_CALL_RING_TIMEOUT": "60",
        # A polling client closing waits out its pending long-poll (ping interval+timeout).
        "MIKOTO_RTC_PING_INTERVAL": "1", "MIKOTO_RTC_PING_TIMEOUT": "2"}


@pytest.fixture
def own_redis(tmp_path: Path) -> Any:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.kill()


async def status(url: str, path: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(url + path) as resp:
        return resp.status


async def until(check: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def clients() -> AsyncIterator[Any]:
    made: list[SignalingClient] = []

    async def make(url: str, user: str, **options: Any) -> SignalingClient:
        client = SignalingClient(url, issue_token(SECRET, user, grants=room_grants(None)),
                                 **options)
        made.append(client)
        await client.connect()
        return client

    try:
        yield make
    finally:
        await asyncio.gather(*(client.close() for client in made))


async def test_redis_restart_mid_call_loses_and_repeats_nothing(
        own_redis: RedisServer, make_node: NodeFactory) -> None:
    # (own_redis first: it is set up first and so torn down after the nodes)
    prefix = redis_prefix()
    a, b = [await make_node(redis_url=own_redis.url, redis_prefix=prefix,
                            ready_needs_worker=False) for _ in range(2)]
    ann, bob = await a.client("ann"), await b.client("bob")
    ann_log, bob_log = EventLog(ann), EventLog(bob)
    joined = {ann: await ann.join("lobby")}
    joined[bob] = await bob.join("lobby")
    own: dict[SignalingClient, set[int]] = {ann: set(), bob: set()}
    for i in range(10):
        own[ann].add(await ann.update("lobby", audio=bool(i % 2)))
        own[bob].add(await bob.update("lobby", video=bool(i % 2)))

    own_redis.stop()
    await until(lambda: _is(status(a.url, "/readyz"), 503))
    assert await status(a.url, "/healthz") == 200  # up, just not ready
    with pytest.raises(RequestError) as refused:
        await bob.update("lobby", hand=True)
    assert refused.value.code == "unavailable"
    await ann.drop_transport()  # and a client loses its connection meanwhile
    own_redis.start()  # the same data: its append-only file
    for node in (a, b):
        await until(lambda node=node: _is(status(node.url, "/readyz"), 200))
    await ann_log.wait_for(ConnectionChanged, lambda e: e.state == "connected", timeout=20)
    for i in range(10):
        own[ann].add(await ann.update("lobby", audio=bool(i % 2)))
        own[bob].add(await bob.update("lobby", video=bool(i % 2)))
    await bob.signal("lobby", joined[ann].self_id, description=OFFER)
    await ann_log.wait_for(SignalReceived)
    last = max(max(s) for s in own.values())
    for client, log in ((ann, ann_log), (bob, bob_log)):
        async with asyncio.timeout(10):
            while client.last_seq("lobby") < last:
                await asyncio.sleep(0.01)
        assert_every_seq_once(log, client, joined[client].seq, own[client])
    assert not bob_log.of(ParticipantLeft) and not ann_log.of(ParticipantLeft)


async def _is(coro: Any, expected: int) -> bool:
    try:
        return bool(await coro == expected)
    except aiohttp.ClientError:
        return False


async def test_kill_9_of_a_node_mid_call(tmp_path: Path, redis_server: RedisServer) -> None:
    env = {**FAST, "MIKOTO_RTC_REDIS_URL": redis_server.url,
           "MIKOTO_RTC_REDIS_PREFIX": redis_prefix()}
    with serving(**env) as doomed, serving(**env) as survivor, \
            nginx([doomed.port, survivor.port], tmp_path / "nginx") as balanced:
        async with clients() as connect:
            # ann and dan are on the node that dies; bob and cat on the other.
            ann = await connect(doomed.url, "ann")
            dan = await connect(doomed.url, "dan", reconnect=False)
            bob = await connect(survivor.url, "bob")
            cat = await connect(survivor.url, "cat")
            logs = {c: EventLog(c) for c in (ann, bob, cat)}
            joined = {c: await c.join("lobby") for c in (ann, dan, bob, cat)}
            own: dict[SignalingClient, set[int]] = {ann: set(), bob: set(), cat: set()}
            # dan rings cat and offers bob a file: both outlive dan's node for a while.
            await dan.invite("cat")
            await logs[cat].wait_for(CallIncoming)
            await dan.offer_file("lobby", "f1", "a.bin", 10, to=joined[bob].self_id)
            await logs[bob].wait_for(FileState, lambda e: e.id == "f1")
            for i in range(5):
                own[ann].add(await ann.update("lobby", audio=bool(i % 2)))

            ann.url = balanced  # as every client's would be: the load balancer
            doomed.proc.kill()
            # The dead node's participants are shown reconnecting once its heartbeat
            # stops (ann may have resumed before that); ann resumes through nginx on the
            # survivor and misses nothing sent meanwhile.
            await logs[bob].wait_for(ParticipantUpdated, lambda e: e.participant.user == "dan"
                                     and e.participant.connection == "reconnecting")
            for i in range(5):
                own[bob].add(await bob.update("lobby", video=bool(i % 2)))
            await logs[ann].wait_for(ConnectionChanged, lambda e: e.state == "connected",
                                     timeout=20)
            own[ann].add(await ann.update("lobby", hand=True))
            await logs[bob].wait_for(ParticipantUpdated, lambda e: e.participant.user == "ann"
                                     and e.participant.connection == "connected")
            # dan never comes back: after the grace period he leaves with `timeout`, and
            # what he started ends in a defined state.
            gone = await logs[bob].wait_for(ParticipantLeft, lambda e: e.id == joined[dan].self_id,
                                            timeout=15)
            assert gone.reason == "timeout"
            cancelled = await logs[cat].wait_for(CallStateChanged,
                                                 lambda e: e.state == "cancelled")
            assert cancelled.reason == "caller gone"
            dropped = await logs[bob].wait_for(FileState, lambda e: e.state == "cancelled")
            assert dropped.data["reason"] == "sender left"
            # No ghosts: a newcomer sees exactly the three who are there.
            eve = await connect(balanced, "eve")
            room = await eve.join("lobby")
            assert sorted(p.user for p in room.participants) == ["ann", "bob", "cat"]
            assert {p.connection for p in room.participants} == {"connected"}
            last = room.seq
            for client in (ann, bob, cat):
                async with asyncio.timeout(10):
                    while client.last_seq("lobby") < last:
                        await asyncio.sleep(0.01)
                assert_every_seq_once(logs[client], client, joined[client].seq, own[client])


async def test_nginx_spreads_websockets_and_pins_polling(
        tmp_path: Path, redis_server: RedisServer) -> None:
    prefix = redis_prefix()
    env = {**FAST, "MIKOTO_RTC_REDIS_URL": redis_server.url, "MIKOTO_RTC_REDIS_PREFIX": prefix}
    with serving(**env) as one, serving(**env) as two, \
            nginx([one.port, two.port], tmp_path / "nginx") as balanced:
        async with clients() as connect:
            sockets = [await connect(balanced, f"ws{i}") for i in range(4)]
            polling = [await connect(balanced, f"poll{i}", transports=("polling",))
                       for i in range(2)]
            everyone = sockets + polling
            joined = [await c.join("lobby") for c in everyone]
            # WebSockets went to both nodes (no stickiness needed)...
            r = aioredis.Redis.from_url(redis_server.url)
            try:
                nodes = set()
                for key in await r.keys(f"{prefix}:session:*"):
                    nodes.add(json.loads(await r.get(key))["node"])
            finally:
                await r.aclose()
            assert len(nodes) == 2
            # ...and everyone reaches everyone, polling clients included.
            logs = [EventLog(c) for c in everyone]
            for i, client in enumerate(everyone):
                target = joined[(i + 1) % len(everyone)]
                await client.signal("lobby", target.self_id, description=OFFER)
            for i, log in enumerate(logs):
                got = await log.wait_for(SignalReceived)
                assert got.sender == joined[i - 1].self_id


@pytest.mark.media
async def test_a_worker_on_a_killed_node_fails_its_jobs_and_comes_back_elsewhere(
        tmp_path: Path, redis_server: RedisServer) -> None:
    from media.worker import MediaWorker  # only the media tests pay for importing aiortc

    env = {**FAST, "MIKOTO_RTC_REDIS_URL": redis_server.url,
           "MIKOTO_RTC_REDIS_PREFIX": redis_prefix()}
    with serving(**env) as doomed, serving(**env) as survivor, \
            nginx([doomed.port, survivor.port], tmp_path / "nginx") as balanced:
        worker = MediaWorker(doomed.url, lambda: issue_token(
            SECRET, "worker", grants=Grants(rooms=("*",), service=True)),
            recordings_dir=tmp_path / "recordings")
        await worker.start()
        try:
            async with clients() as connect:
                ann = await connect(survivor.url, "ann")
                log = EventLog(ann)
                await ann.join("echo-room")
                job = await ann.request_media("echo-room", "echo", duration=60)
                # The worker's node dies and the worker cannot reach another one: once the
                # node's heartbeat stops, its jobs fail.
                doomed.proc.kill()
                ended = await log.wait_for(MediaEnded, timeout=15)
                assert (ended.job, ended.reason) == (job.job, "worker_lost")
                # The worker then reaches the survivor through nginx, registers again
                # with a new session, and takes the next job.
                worker._client.url = balanced
                async with asyncio.timeout(30):
                    while True:
                        try:
                            again = await ann.request_media("echo-room", "echo", duration=60)
                            break
                        except RequestError as exc:
                            assert exc.code == "unavailable", exc
                            await asyncio.sleep(0.2)
                assert again.job != job.job and len(worker.jobs) == 1
        finally:
            await worker.close()


async def test_serve_workers_runs_processes_on_one_port_sharing_redis(
        redis_server: RedisServer) -> None:
    prefix = redis_prefix()
    with serving(**FAST, MIKOTO_RTC_REDIS_URL=redis_server.url, MIKOTO_RTC_REDIS_PREFIX=prefix,
                 MIKOTO_RTC_PROCESSES="2") as served:
        # The parent's port answers once one process listens; the other may still start.
        async with asyncio.timeout(20):
            while len(served.listening()) < 2:
                await asyncio.sleep(0.05)
        async with clients() as connect:
            # The kernel hashes each connection to a process: 16 all on one is 1 in 32,768.
            everyone = [await connect(served.url, f"u{i}") for i in range(16)]
            joined = [await c.join("lobby") for c in everyone]
            r = aioredis.Redis.from_url(redis_server.url)
            try:
                nodes = {json.loads(await r.get(key))["node"]
                         for key in await r.keys(f"{prefix}:session:*")}
            finally:
                await r.aclose()
            assert len(nodes) == 2, "the kernel spreads connections over both processes"
            logs = [EventLog(c) for c in everyone]
            for i, client in enumerate(everyone):
                await client.signal("lobby", joined[(i + 1) % 16].self_id, description=OFFER)
            for i, log in enumerate(logs):
                assert (await log.wait_for(SignalReceived)).sender == joined[i - 1].self_id
        children = served.children()
        assert len(children) == 2
    # SIGTERM to the parent stopped every node process.
    assert not [pid for pid in children if _alive(pid)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
