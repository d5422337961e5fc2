"""Rate limits: token buckets per connection and class of event, per address for
connects, and strikes against a connection that keeps going over.

A bucket holds up to `burst` tokens and refills at `per_second`; an event takes one,
or is refused with the time until one is back (`retryAfter`). The buckets live in
this node's memory: a connection is on one node, and an address's connects are
limited on each node it reaches (a load balancer spreads them), which is what a
limit against a flood needs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import RateLimited

if TYPE_CHECKING:
    from .config import Config

_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*/\s*(\d+)\s*")


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: int

    @classmethod
    def parse(cls, text: str) -> Rate:
        """`"RATE/BURST"`: events per second, and how many may come at once."""
        match = _RATE.fullmatch(text)
        if match is None or float(match[1]) <= 0 or int(match[2]) < 1:
            raise ValueError(f"a rate is 'EVENTS_PER_SECOND/BURST', e.g. '20/60', not {text!r}")
        return cls(float(match[1]), int(match[2]))


class Bucket:
    __slots__ = ("_burst", "_per_second", "_stamp", "_tokens")

    def __init__(self, rate: Rate, now: float) -> None:
        self._per_second = rate.per_second
        self._burst = float(rate.burst)
        self._tokens = self._burst
        self._stamp = now

    def take(self, now: float) -> float:
        """Take a token: 0.0, or the seconds until one is back (nothing taken)."""
        tokens = self._tokens + (now - self._stamp) * self._per_second
        if tokens > self._burst:
            tokens = self._burst
        self._stamp = now
        if tokens >= 1.0 - 1e-9:  # refills are sums of float steps
            self._tokens = tokens - 1.0 if tokens > 1.0 else 0.0
            return 0.0
        self._tokens = tokens
        return (1.0 - tokens) / self._per_second

    def full(self, now: float) -> bool:
        return self._tokens + (now - self._stamp) * self._per_second >= self._burst

    def empty(self, now: float) -> bool:
        return self.wait(now) > 0

    def wait(self, now: float) -> float:
        """Seconds until a token is there (0.0: there is one)."""
        tokens = min(self._burst, self._tokens + (now - self._stamp) * self._per_second)
        return 0.0 if tokens >= 1.0 - 1e-9 else (1.0 - tokens) / self._per_second


@dataclass(frozen=True, slots=True)
class Limits:
    """What the configuration allows."""

    events: dict[str, Rate]  # by class of event; "other" for any event not listed
    classes: dict[str, str]  # event name -> class
    connect: Rate  # connects per address
    failures: Rate  # failed connects (bad tokens, bad resumes) per address
    strikes: int  # refused events within `strike_window` before a connection is dropped
    strike_window: float


# Which class of limit each event counts against; any other event counts as "other".
EVENT_CLASSES = {"signal": "signal", "participant:update": "presence", "file:progress": "file"}
STRIKE_WINDOW = 10.0


def limits_of(config: Config) -> Limits:
    return Limits(
        events={"signal": Rate.parse(config.rate_signal),
                "presence": Rate.parse(config.rate_presence),
                "file": Rate.parse(config.rate_file), "other": Rate.parse(config.rate_other)},
        classes=EVENT_CLASSES, connect=Rate.parse(config.rate_connect),
        failures=Rate.parse(config.rate_auth_failures),
        strikes=config.rate_strikes, strike_window=STRIKE_WINDOW)


class ConnectionLimiter:
    """One connection's buckets, made as its events first come."""

    __slots__ = ("_buckets", "_by_event", "_limits", "_since", "_strikes")

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._buckets: dict[str, Bucket] = {}  # by class
        self._by_event: dict[str, Bucket] = {}  # the same, by event name
        self._strikes = 0
        self._since = 0.0

    def check(self, event: str, now: float) -> None:
        """Let the event through, or raise `RateLimited` (with `retry_after`)."""
        bucket = self._by_event.get(event)
        if bucket is None:
            bucket = self._bucket(event, now)
        wait = bucket.take(now)
        if wait:
            kind = self._limits.classes.get(event, "other")
            raise RateLimited(f"too many {kind} events: at most "
                              f"{self._limits.events[kind].per_second:g} a second",
                              retry_after=wait)

    def _bucket(self, event: str, now: float) -> Bucket:
        kind = self._limits.classes.get(event, "other")
        bucket = self._buckets.get(kind)
        if bucket is None:
            bucket = self._buckets[kind] = Bucket(self._limits.events[kind], now)
        if len(self._by_event) < 64:  # event names are the client's: keep the map small
            self._by_event[event] = bucket
        return bucket

    def strike(self, now: float) -> bool:
        """Count a refused event; True (once) when the connection has gone over too
        often within the window. Its events stay limited until it is gone."""
        if now - self._since > self._limits.strike_window:
            self._strikes, self._since = 0, now
        self._strikes += 1
        return self._strikes == self._limits.strikes + 1


class AddressLimiter:
    """Tokens per address (connects, failures), with idle addresses forgotten."""

    def __init__(self, rate: Rate, clock: Callable[[], float]) -> None:
        self._rate = rate
        self._clock = clock
        self._buckets: dict[str, Bucket] = {}
        self._swept = 0.0

    def check(self, address: str) -> None:
        """Take a token for the address, or raise `RateLimited`."""
        wait = self._bucket(address).take(self._clock())
        if wait:
            raise RateLimited(f"too many connects from {address}", retry_after=wait)

    def spend(self, address: str) -> None:
        """Take a token if there is one (a failure counted against the address)."""
        self._bucket(address).take(self._clock())

    def require(self, address: str) -> None:
        """Raise `RateLimited` while the address has no token left, taking none."""
        bucket = self._bucket(address)
        now = self._clock()
        if bucket.empty(now):
            raise RateLimited(f"too many failed attempts from {address}",
                              retry_after=bucket.wait(now))

    def _bucket(self, address: str) -> Bucket:
        now = self._clock()
        if now - self._swept > 60.0:  # a flood of addresses must not fill memory
            self._buckets = {a: b for a, b in self._buckets.items() if not b.full(now)}
            self._swept = now
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = Bucket(self._rate, now)
        return bucket
