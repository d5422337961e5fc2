"""Counters the relay path keeps for /metrics: plain integers and a fixed-bucket
histogram, a fraction of a microsecond per event. prometheus-client's own metrics
take a lock and look up their labels per update, which on a path of ~20 µs per
message would be measurable (bench/relay.py); they are built from these at scrape."""

from __future__ import annotations

from bisect import bisect_left

# Seconds from a `signal` arriving to its relay being queued (or published to the
# target's node): tens of µs on one node, a few Redis round trips across nodes.
RELAY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                 0.25, 1.0)


class Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class Stats:
    """One node's counts, by event name (only names the node knows, so a client
    cannot grow them: everything else counts as `unknown`)."""

    __slots__ = ("events_in", "events_out", "relay")

    def __init__(self) -> None:
        self.events_in: dict[str, int] = {}
        self.events_out: dict[str, int] = {}
        self.relay = Histogram(RELAY_BUCKETS)
