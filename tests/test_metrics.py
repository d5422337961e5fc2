"""/metrics after a scripted call, parsed with prometheus-client's own parser."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
import socketio
from prometheus_client.parser import text_string_to_metric_families

from signaling.client import CallStateChanged, ConnectionChanged, RequestError

from .conftest import Node, NodeFactory
from .helpers import EventLog

OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}


async def scrape(node: Node, headers: dict[str, str] | None = None) -> dict[Any, float]:
    """{(sample name, frozenset(labels)): value}"""
    async with aiohttp.ClientSession() as http, \
            http.get(node.url + "/metrics", headers=headers or {}) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_a_scripted_call_shows_in_the_metrics(make_node: NodeFactory) -> None:
    node = await make_node(rate_presence="1/2")
    before = await scrape(node)
    assert value(before, "mikoto_connections") == 0 and value(before, "mikoto_store_up") == 1
    ann, bob = await node.client("ann"), await node.client("bob")
    bob_log = EventLog(bob)
    await ann.join("call")
    b = await bob.join("call")
    for _ in range(5):
        await ann.signal("call", b.self_id, description=OFFER)
    with pytest.raises(RequestError):
        await ann.signal("call", "nobody", description=OFFER)
    for _ in range(3):  # the third is over the presence limit
        try:
            await bob.update("call", hand=True)
        except RequestError:
            pass
    call = await ann.invite("bob", video=False)
    await bob_log.wait_for(CallStateChanged, lambda e: e.state == "ringing")
    await bob.request("call:accept", {"callId": call["callId"]})
    await ann.request("call:hangup", {"callId": call["callId"]})
    ann_log = EventLog(ann)
    await ann.drop_transport()
    await ann_log.wait_for(ConnectionChanged, lambda e: e.state == "connected")
    worker = await node.client("worker", service=True)
    await worker.request("worker:register", {"capacity": 40, "kinds": ["echo"]})
    await worker.request("worker:load", {"load": 3})
    raw = socketio.AsyncClient(reconnection=False)
    await raw.connect(node.url, auth={"token": node.token("eve")}, transports=["websocket"])
    node.cleanups.append(raw.disconnect)
    await raw.call("no:such", {}, timeout=5)

    got = await scrape(node)
    assert value(got, "mikoto_connections") == 4
    assert (value(got, "mikoto_rooms"), value(got, "mikoto_participants")) == (1, 2)
    assert value(got, "mikoto_events_in_total", event="signal") == 6
    assert value(got, "mikoto_events_in_total", event="room:join") == 2
    assert value(got, "mikoto_events_in_total", event="unknown") == 1
    assert value(got, "mikoto_events_out_total", event="signal") == 5
    assert value(got, "mikoto_events_out_total", event="call:state") >= 3
    # Every relayed signal is in the latency histogram; its buckets add up.
    assert value(got, "mikoto_relay_seconds_count") == 5
    assert value(got, "mikoto_relay_seconds_bucket", le="+Inf") == 5
    assert 0 < value(got, "mikoto_relay_seconds_sum") < 5
    assert value(got, "mikoto_errors_total", code="not_found") == 1
    assert value(got, "mikoto_errors_total", code="rate_limited") == 1
    assert value(got, "mikoto_rate_limited_total", request="participant:update") == 1
    assert value(got, "mikoto_resumes_total", outcome="ok") == 1
    assert value(got, "mikoto_connects_total", outcome="ok") == 4
    assert value(got, "mikoto_calls_total", outcome="ended") == 1
    assert value(got, "mikoto_room_started_total") == 1
    assert value(got, "mikoto_participant_joined_total") == 2
    worker_id = worker.session
    assert worker_id is not None
    assert value(got, "mikoto_worker_load", worker=worker_id) == 3
    assert value(got, "mikoto_worker_capacity", worker=worker_id) == 40
    assert value(got, "mikoto_recordings_active") == 0


async def test_a_failed_resume_and_connect_are_counted(node: Node) -> None:
    bad = socketio.AsyncClient(reconnection=False)
    for auth in ({"token": "nonsense"},
                 {"token": node.token("ann"), "session": "Snope", "resume": "x", "lastSeq": {}}):
        try:
            await bad.connect(node.url, auth=auth, transports=["websocket"])
        except socketio.exceptions.ConnectionError:
            pass
    got = await scrape(node)
    assert value(got, "mikoto_connects_total", outcome="unauthorized") == 1
    assert value(got, "mikoto_resumes_total", outcome="not_found") == 1


@pytest.mark.parametrize(("config", "headers", "status"), [
    ({"metrics_allow": ("10.0.0.0/8",)}, {}, 403),
    ({"metrics_allow": ("127.0.0.1",)}, {}, 200),
    ({"metrics_token": "t" * 32}, {}, 403),
    ({"metrics_token": "t" * 32}, {"Authorization": "Bearer " + "u" * 32}, 403),
    ({"metrics_token": "t" * 32}, {"Authorization": "Bearer " + "t" * 32}, 200),
])
async def test_scrapes_can_be_limited(make_node: NodeFactory, config: dict[str, Any],
                                      headers: dict[str, str], status: int) -> None:
    node = await make_node(**config)
    async with aiohttp.ClientSession() as http, \
            http.get(node.url + "/metrics", headers=headers) as resp:
        assert resp.status == status
