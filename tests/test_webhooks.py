"""Webhooks to a real receiver on loopback: signed, in order, retried, bounded at close."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from signaling.app import WEBHOOKS
from signaling.webhooks import RetryPolicy, WebhookSender

from .conftest import NodeFactory
from .helpers import free_port
from .test_metrics import scrape, value

SECRET = "webhook-secret-0123456789-0123456789"
CANDIDATE = {"candidate": "candidate:1 1 udp 2122260223 192.0.2.1 5000 typ host",
             "sdpMid": "0", "sdpMLineIndex": 0}


def verify(secret: str, headers: Mapping[str, str], body: bytes, tolerance: float = 300) -> bool:
    """A receiver's check, as docs/webhooks.md shows it."""
    timestamp = headers["X-Mikoto-Timestamp"]
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    fresh = abs(time.time() - int(timestamp)) <= tolerance
    return fresh and hmac.compare_digest("sha256=" + mac.hexdigest(),
                                         headers["X-Mikoto-Signature"])


@dataclass(frozen=True)
class Hit:
    at: float  # the receiver's loop time
    headers: Mapping[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


Answer = Callable[[Hit, list[Hit]], Awaitable[web.Response]]


async def accept(hit: Hit, hits: list[Hit]) -> web.Response:
    return web.Response(status=204)


class Receiver:
    """Records every POST and answers it as scripted (`answer(hit, hits so far)`)."""

    def __init__(self, answer: Answer) -> None:
        self.hits: list[Hit] = []
        self.url = ""
        self._answer = answer
        self._changed = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_post("/hooks", self._handle)

    async def _handle(self, request: web.Request) -> web.Response:
        hit = Hit(asyncio.get_running_loop().time(), dict(request.headers), await request.read())
        self.hits.append(hit)
        self._changed.set()
        return await self._answer(hit, self.hits)

    async def wait_count(self, count: int, timeout: float = 5.0) -> list[Hit]:
        async with asyncio.timeout(timeout):
            while len(self.hits) < count:
                self._changed.clear()
                await self._changed.wait()
        return list(self.hits)


StartReceiver = Callable[..., Awaitable[Receiver]]


@pytest.fixture
def start_receiver(aiohttp_server: Any) -> StartReceiver:
    async def start(answer: Answer = accept, port: int | None = None) -> Receiver:
        receiver = Receiver(answer)
        server = await aiohttp_server(receiver.app, host="127.0.0.1", port=port)
        receiver.url = str(server.make_url("/hooks"))
        return receiver

    return start


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


def hooks(url: str, **overrides: Any) -> dict[str, Any]:
    return {"webhook_url": url, "webhook_secret": SECRET, "webhook_backoff": 0.05,
            "webhook_backoff_max": 0.2, **overrides}


def first_of(kind: str, *statuses: int, **headers: str) -> Answer:
    """Answer the first attempts at the first event of `kind` with `statuses`, then 204."""
    async def answer(hit: Hit, hits: list[Hit]) -> web.Response:
        same = [h for h in hits if h.event["type"] == kind]
        if hit.event["id"] == same[0].event["id"] and len(same) <= len(statuses):
            return web.Response(status=statuses[len(same) - 1], headers=headers)
        return web.Response(status=204)

    return answer


async def test_a_call_is_reported_in_order_signed_with_unique_ids(
    make_node: NodeFactory, start_receiver: StartReceiver
) -> None:
    receiver = await start_receiver()
    node = await make_node(**hooks(receiver.url))
    ann, bob = await node.client("ann"), await node.client("bob")
    before = time.time()
    await ann.join("standup")
    joined = await bob.join("standup")
    await ann.signal("standup", joined.self_id, candidate=CANDIDATE)
    call_id = (await ann.invite("bob", room="standup"))["callId"]
    await bob.call_action("accept", call_id)
    await ann.call_action("hangup", call_id)
    await ann.leave("standup")
    await bob.leave("standup")
    hits = await receiver.wait_count(9)
    events = [h.event for h in hits]
    assert [(e["type"], e["data"].get("state")) for e in events] == [
        ("room.started", None), ("participant.joined", None), ("participant.joined", None),
        ("call.state", "ringing"), ("call.state", "accepted"), ("call.state", "ended"),
        ("participant.left", None), ("participant.left", None), ("room.finished", None),
    ]
    people = [e["data"] for e in events if e["type"].startswith("participant.")]
    assert [(p["user"], p.get("reason")) for p in people] == [
        ("ann", None), ("bob", None), ("ann", "leave"), ("bob", "leave")]
    assert people[1]["participant"] == people[3]["participant"] == joined.self_id
    assert all(e["data"]["room"] == "standup" for e in events)
    calls = [e["data"] for e in events if e["type"] == "call.state"]
    assert [(c["call"], c.get("by"), c["final"]) for c in calls] == [
        (call_id, None, False), (call_id, "bob", False), (call_id, "ann", True)]
    # Enough to write call history from: who called whom, with what.
    assert all((c["caller"], c["callees"], c["media"]) == ("ann", ["bob"],
                                                           {"audio": True, "video": True})
               for c in calls)
    ids = [h.headers["X-Mikoto-Id"] for h in hits]
    assert ids == [e["id"] for e in events] and len(set(ids)) == len(ids)
    assert len({e["node"] for e in events}) == 1
    stamps = [e["at"] for e in events]
    assert stamps == sorted(stamps) and before * 1000 - 1 <= stamps[0] <= time.time() * 1000
    assert all(verify(SECRET, h.headers, h.body) for h in hits)
    # The check can fail: another secret, or a body changed on the way.
    assert not any(verify("another-secret", h.headers, h.body) for h in hits)
    assert not verify(SECRET, hits[0].headers, hits[0].body.replace(b"standup", b"standuq"))
    await asyncio.sleep(0.2)
    assert len(receiver.hits) == 9  # relayed signals are not webhooks; nothing sent twice


async def test_a_failing_receiver_gets_the_same_event_again_signed_afresh(
    make_node: NodeFactory, start_receiver: StartReceiver
) -> None:
    # 503, then 429 asking for a second, then accepted.
    statuses = iter([503, 429])

    async def answer(hit: Hit, hits: list[Hit]) -> web.Response:
        status = next(statuses, 204) if hit.event["type"] == "room.started" else 204
        return web.Response(status=status, headers={"Retry-After": "1"} if status == 429 else {})

    receiver = await start_receiver(answer)
    node = await make_node(**hooks(receiver.url, webhook_backoff=0.1, webhook_backoff_max=1.0))
    ann = await node.client("ann")
    await ann.join("standup")
    hits = await receiver.wait_count(4)
    assert [h.event["type"] for h in hits] == ["room.started"] * 3 + ["participant.joined"]
    tries = hits[:3]
    assert len({h.headers["X-Mikoto-Id"] for h in tries}) == 1
    assert len({h.body for h in tries}) == 1
    assert all(verify(SECRET, h.headers, h.body) for h in tries)
    # A second passed before the last try (Retry-After), so it carries its own signature.
    assert tries[2].headers["X-Mikoto-Timestamp"] > tries[1].headers["X-Mikoto-Timestamp"]
    assert tries[2].headers["X-Mikoto-Signature"] != tries[1].headers["X-Mikoto-Signature"]
    first_gap, second_gap = tries[1].at - tries[0].at, tries[2].at - tries[1].at
    assert 0.045 <= first_gap < 0.9  # backoff 0.1 s, jittered down to half
    assert second_gap >= 0.95
    webhooks = node.server.app[WEBHOOKS].events
    assert webhooks is not None
    await until(lambda: webhooks.delivered == 2)
    assert webhooks.failed == 0


async def test_a_refused_event_is_not_retried_and_the_next_goes_on(
    make_node: NodeFactory, start_receiver: StartReceiver
) -> None:
    receiver = await start_receiver(first_of("room.started", 400))
    node = await make_node(**hooks(receiver.url))
    ann = await node.client("ann")
    await ann.join("standup")
    hits = await receiver.wait_count(2)
    await asyncio.sleep(0.3)  # longer than any backoff
    assert [h.event["type"] for h in receiver.hits] == ["room.started", "participant.joined"]
    webhooks = node.server.app[WEBHOOKS].events
    assert webhooks is not None and (webhooks.delivered, webhooks.failed) == (1, 1)
    assert hits[0].headers["X-Mikoto-Id"] != hits[1].headers["X-Mikoto-Id"]
    scraped = await scrape(node)
    assert [value(scraped, "mikoto_webhooks_total", hook="events", outcome=outcome)
            for outcome in ("delivered", "failed", "dropped")] == [1, 1, 0]


async def test_a_receiver_that_comes_up_late_still_gets_the_events(
    make_node: NodeFactory, start_receiver: StartReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="signaling.webhooks")
    port = free_port()
    node = await make_node(**hooks(f"http://127.0.0.1:{port}/hooks", webhook_attempts=30))
    ann = await node.client("ann")
    await ann.join("standup")
    await asyncio.sleep(0.3)
    assert any("attempt 2 in" in r.getMessage() for r in caplog.records)  # refused, retried
    receiver = await start_receiver(port=port)
    hits = await receiver.wait_count(2)
    await asyncio.sleep(0.1)
    assert [h.event["type"] for h in receiver.hits] == ["room.started", "participant.joined"]
    assert all(verify(SECRET, h.headers, h.body) for h in hits)


async def test_closing_the_app_with_unsent_events_is_bounded_and_leaves_no_task(
    make_node: NodeFactory, start_receiver: StartReceiver
) -> None:
    release = asyncio.Event()

    async def hang(hit: Hit, hits: list[Hit]) -> web.Response:
        await release.wait()
        return web.Response(status=204)

    receiver = await start_receiver(hang)
    node = await make_node(**hooks(receiver.url), shutdown_timeout=0.3)
    try:
        ann = await node.client("ann")
        await ann.join("standup")
        await receiver.wait_count(1)  # room.started hangs; participant.joined waits behind
        webhooks = node.server.app[WEBHOOKS].events
        assert webhooks is not None
        for client in node.clients:
            await client.close()
        loop = asyncio.get_running_loop()
        start = loop.time()
        await node.server.close()
        assert loop.time() - start < 2.0  # not the 5 s attempt timeout, nor forever
        # room.started in flight; participant.joined, .left and room.finished queued
        assert (webhooks.delivered, webhooks.dropped) == (0, 4)
        assert not [t for t in asyncio.all_tasks() if t.get_name() == "webhook-sender"]
    finally:
        release.set()


async def test_a_full_queue_drops_its_oldest_events(start_receiver: StartReceiver) -> None:
    receiver = await start_receiver()
    sender = WebhookSender(receiver.url, SECRET, "Ntest", RetryPolicy(1.0, 3, 0.05, 0.2),
                           queue_size=3)
    ids = [sender.send("test", {"data": {"n": n}}) for n in range(5)]  # before it runs
    await sender.start()
    try:
        hits = await receiver.wait_count(3)
    finally:
        await sender.aclose(grace=1.0)
    assert [h.headers["X-Mikoto-Id"] for h in hits] == ids[2:]
    assert [h.event["data"]["n"] for h in hits] == [2, 3, 4]
    assert (sender.delivered, sender.dropped) == (3, 2)


async def test_a_push_is_retried_and_signed_with_the_push_secret(
    make_node: NodeFactory, start_receiver: StartReceiver
) -> None:
    receiver = await start_receiver(first_of("call.incoming", 503))
    node = await make_node(push_url=receiver.url, push_secret="push-secret",
                           webhook_backoff=0.05, webhook_backoff_max=0.2)
    ann = await node.client("ann")
    call_id = (await ann.invite("bob"))["callId"]
    hits = await receiver.wait_count(2)
    assert hits[0].body == hits[1].body
    push = hits[1].event
    assert (push["type"], push["user"], push["call"]["callId"]) == ("call.incoming", "bob", call_id)
    assert push["id"] == hits[1].headers["X-Mikoto-Id"]
    assert all(verify("push-secret", h.headers, h.body) for h in hits)


async def test_a_push_is_given_up_once_the_call_no_longer_rings(
    make_node: NodeFactory, start_receiver: StartReceiver
) -> None:
    async def unavailable(hit: Hit, hits: list[Hit]) -> web.Response:
        return web.Response(status=503)

    receiver = await start_receiver(unavailable)
    node = await make_node(push_url=receiver.url, push_secret="push-secret",
                           call_ring_timeout=0.3, webhook_backoff=0.05, webhook_backoff_max=0.1,
                           webhook_attempts=100)
    push = node.server.app[WEBHOOKS].push
    assert push is not None
    ann = await node.client("ann")
    await ann.invite("bob")
    await until(lambda: push.failed == 1)
    tries = len(receiver.hits)
    assert tries >= 2 and receiver.hits[-1].at - receiver.hits[0].at < 0.3
    await asyncio.sleep(0.2)
    assert len(receiver.hits) == tries
