"""Prometheus metrics at /metrics (prometheus-client's text format; docs/admin.md lists
them).

Each app has a registry of its own. Counters come from the edge's `Stats` (the relay
path) and from its observations; gauges of the whole cluster (rooms, participants,
media workers, recordings) are read from the store just before each scrape. Scrapes
may be limited to addresses (`MIKOTO_RTC_METRICS_ALLOW`) and/or a bearer token
(`MIKOTO_RTC_METRICS_TOKEN`).
"""

from __future__ import annotations

import hmac
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from .clientaddr import client_address, parse_networks, within
from .config import Config
from .edge import SignalingEdge
from .errors import RtcError
from .front import route
from .observe import Observation, Seen
from .recording_edge import RecordingEdge
from .webhooks import Webhooks
from .workers import Worker, WorkerRegistry

log = logging.getLogger(__name__)

# call.state values that end a call: its outcome.
_OUTCOMES = frozenset({"ended", "declined", "missed", "cancelled", "busy", "failed"})


@dataclass
class _Cluster:
    """What the store says, read before a scrape."""

    rooms: int = 0
    participants: int = 0
    recordings: int = 0
    workers: list[Worker] = field(default_factory=list)


class NodeMetrics(Collector):
    def __init__(self, config: Config, edge: SignalingEdge, workers: WorkerRegistry,
                 recordings: RecordingEdge, webhooks: Webhooks,
                 store_up: Callable[[], bool]) -> None:
        self._config = config
        self._edge = edge
        self._workers = workers
        self._recordings = recordings
        self._webhooks = webhooks
        self._store_up = store_up
        self._allow = parse_networks(config.metrics_allow)
        self._proxies = parse_networks(config.trusted_proxies)
        self._seen: Counter[tuple[str, str]] = Counter()
        self._cluster = _Cluster()
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        edge.observers.subscribe(self._watch)

    def add_routes(self, app: web.Application) -> None:
        route(app, "GET", "/metrics", self._scrape)

    def _watch(self, seen: Observation) -> None:
        data, kind = seen.data, seen.kind
        if kind is Seen.REFUSED:
            self._seen["error", data["code"]] += 1
            if data["code"] == "rate_limited":
                self._seen["rate_limited", data["request"]] += 1
        elif kind is Seen.CONNECTED:
            self._seen["resume" if data["resumed"] else "connect", "ok"] += 1
        elif kind is Seen.CONNECT_REFUSED:
            self._seen["resume" if data["resuming"] else "connect", data["code"]] += 1
            if data["code"] == "rate_limited":
                self._seen["rate_limited", "connect"] += 1
        elif kind is Seen.CALL_STATE:
            if data["state"] in _OUTCOMES:
                self._seen["call", data["state"]] += 1
        else:
            self._seen[kind.value, ""] += 1

    async def _scrape(self, request: web.Request) -> web.Response:
        if not self._allowed(request):
            return web.Response(status=403, text="metrics are not open to you\n")
        await self._refresh()
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _allowed(self, request: web.Request) -> bool:
        token = self._config.metrics_token
        if token is not None:
            offered = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(offered.encode(), token.encode()):
                return False
        if self._allow:
            address = client_address(request.remote, request.headers.get("X-Forwarded-For"),
                                     self._proxies)
            return within(address, self._allow)
        return True

    async def _refresh(self) -> None:
        rooms = self._edge.rooms
        try:
            names = await rooms.names()
            found = [r for r in await rooms.many(names) if r is not None]
            self._cluster = _Cluster(
                rooms=len(found), participants=sum(len(r.participants) for r in found),
                recordings=await self._recordings.active_count(names),
                workers=await self._workers.all())
        except RtcError as exc:  # the store is down: say so, and keep the last figures
            log.warning("metrics: cannot read the store: %s", exc.message)

    def collect(self) -> Iterator[Metric]:
        edge, stats, seen, cluster = self._edge, self._edge.stats, self._seen, self._cluster
        connections = edge.sessions.connections()
        yield _gauge("mikoto_connections", "Socket.IO connections on this node",
                     len(connections))
        yield _gauge("mikoto_rooms", "Rooms in the cluster", cluster.rooms)
        yield _gauge("mikoto_participants", "Participants in the cluster's rooms (visible)",
                     cluster.participants)
        yield _gauge("mikoto_recordings_active", "Rooms being recorded", cluster.recordings)
        yield _gauge("mikoto_store_up", "Whether the store (Redis) answers",
                     1 if self._store_up() else 0)
        events_in = CounterMetricFamily("mikoto_events_in", "Client events received",
                                        labels=["event"])
        for name, count in sorted(stats.events_in.items()):
            events_in.add_metric([name], count)
        yield events_in
        events_out = CounterMetricFamily(
            "mikoto_events_out", "Server events emitted (a room event counts once)",
            labels=["event"])
        for name, count in sorted(stats.events_out.items()):
            events_out.add_metric([str(name)], count)
        yield events_out
        relay = stats.relay
        buckets, total = [], 0
        for bound, count in zip((*relay.bounds, float("inf")), relay.counts, strict=True):
            total += count
            buckets.append((_le(bound), total))
        yield HistogramMetricFamily(
            "mikoto_relay_seconds", "From a signal's arrival to its relay being queued",
            buckets=buckets, sum_value=relay.sum)
        yield _by(seen, "error", "mikoto_errors", "Requests refused, by error code", "code")
        yield _by(seen, "rate_limited", "mikoto_rate_limited",
                  "Requests and connects refused for a rate limit", "request")
        yield _by(seen, "resume", "mikoto_resumes", "Session resumes, by outcome", "outcome")
        yield _by(seen, "connect", "mikoto_connects", "New sessions, by outcome", "outcome")
        yield _by(seen, "call", "mikoto_calls", "Calls that ended, by outcome", "outcome")
        for kind, help_ in [(Seen.ROOM_STARTED, "Rooms started"),
                            (Seen.PARTICIPANT_JOINED, "Participants joined"),
                            (Seen.FILE_DONE, "File transfers completed"),
                            (Seen.RECORDING_STARTED, "Recordings started"),
                            (Seen.RECORDING_FINISHED, "Recordings finished")]:
            yield CounterMetricFamily("mikoto_" + kind.value.replace(".", "_"), help_,
                                      value=seen[kind.value, ""])
        hooks = CounterMetricFamily(
            "mikoto_webhooks", "Webhook and push deliveries, by outcome (failed: refused, or "
            "out of attempts; dropped: pushed out of a full queue or unsent at shutdown)",
            labels=["hook", "outcome"])
        for hook, sender in (("events", self._webhooks.events), ("push", self._webhooks.push)):
            if sender is not None:
                for outcome in ("delivered", "failed", "dropped"):
                    hooks.add_metric([hook, outcome], getattr(sender, outcome))
        yield hooks
        load = GaugeMetricFamily("mikoto_worker_load", "Media worker load (tracks)",
                                 labels=["worker"])
        capacity = GaugeMetricFamily("mikoto_worker_capacity", "Media worker capacity",
                                     labels=["worker"])
        for worker in cluster.workers:
            load.add_metric([worker.session], worker.load + worker.unreported)
            capacity.add_metric([worker.session], worker.capacity)
        yield load
        yield capacity


def _gauge(name: str, help_: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_, value=value)


def _by(seen: Counter[tuple[str, str]], group: str, name: str, help_: str,
        label: str) -> CounterMetricFamily:
    family = CounterMetricFamily(name, help_, labels=[label])
    for (kind, value), count in sorted(seen.items()):
        if kind == group:
            family.add_metric([value], count)
    return family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)
