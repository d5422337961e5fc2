"""Signed webhooks: what happened on a node, POSTed to the platform's backend, with retries.

A `WebhookSender` delivers events to one URL one at a time, in the order they were
sent, each retried with exponential backoff until delivered, refused (a 4xx other than
429) or out of attempts. Sending never blocks: it only queues, and a full queue drops
its oldest event. `Webhooks` holds a node's senders (events, pushes); the app starts
and closes it. The wire format is in docs/webhooks.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import hmac
import json
import logging
import random
import secrets
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import aiohttp

from .config import Config
from .observe import WEBHOOK_KINDS, Observation, Observers

log = logging.getLogger(__name__)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Mikoto-Signature value: HMAC-SHA256 over "<timestamp>.<body>"."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long one attempt may take, and when a failed one is tried again."""

    timeout: float  # seconds per attempt
    attempts: int  # in all, the first included
    backoff: float  # about this many seconds before the first retry, doubling each time
    backoff_max: float
    # Seconds after the event when it is no use any more (None: only attempts count).
    max_age: float | None = None

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.attempts < 1 or not 0 < self.backoff <= self.backoff_max:
            raise ValueError(f"bad retry policy: {self}")

    @classmethod
    def of(cls, config: Config, max_age: float | None = None) -> RetryPolicy:
        return cls(config.webhook_timeout, config.webhook_attempts, config.webhook_backoff,
                   config.webhook_backoff_max, max_age)

    def delay(self, failures: int, retry_after: float | None) -> float:
        """Seconds to wait after the `failures`-th failed attempt: what the receiver asked
        for, else the doubled backoff cut to a random half to all of it, so nodes that
        failed together do not retry in step; never more than backoff_max."""
        if retry_after is not None:
            return min(retry_after, self.backoff_max)
        full = min(self.backoff * 2.0 ** (failures - 1), self.backoff_max)
        return full * random.uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class _Event:
    id: str
    type: str
    at: float  # Unix seconds: when it happened
    body: bytes  # the same on every attempt; only the timestamp is signed afresh


class _Again(Exception):
    """A failed attempt worth another one."""

    def __init__(self, why: str, after: float | None = None) -> None:
        super().__init__(why)
        self.after = after  # seconds the receiver asked us to wait (Retry-After)


class WebhookSender:
    """Delivers `{id, type, at, node, ...}` events to one URL, one at a time in order.

    Counters (for metrics): `delivered`; `failed`, refused or out of attempts or time;
    `dropped`, pushed out of a full queue or still unsent when the sender closed.
    """

    def __init__(self, url: str, secret: str, node: str, policy: RetryPolicy,
                 queue_size: int) -> None:
        self._url = url
        self._secret = secret
        self._node = node
        self._policy = policy
        self._queue_size = queue_size
        self._queue: deque[_Event] = deque()
        self._current: _Event | None = None  # taken from the queue, not yet settled
        self._wake = asyncio.Event()  # something was queued
        self._stopping = asyncio.Event()  # cuts a backoff short when closing
        self._session: aiohttp.ClientSession | None = None
        self._worker: asyncio.Task[None] | None = None
        self.delivered = self.failed = self.dropped = 0

    def send(self, kind: str, fields: dict[str, Any], at: float | None = None) -> str:
        """Queue `{id, type: kind, at, node, **fields}` and return its id; never blocks."""
        at = time.time() if at is None else at
        event_id = "E" + secrets.token_hex(12)
        body = json.dumps({"id": event_id, "type": kind, "at": int(at * 1000),
                           "node": self._node, **fields}, separators=(",", ":")).encode()
        if self._stopping.is_set():
            self._drop(1, f"{kind} {event_id} after close")
            return event_id
        if len(self._queue) >= self._queue_size:
            oldest = self._queue.popleft()
            self._drop(1, f"{oldest.type} {oldest.id}: queue full ({self._queue_size})")
        self._queue.append(_Event(event_id, kind, at, body))
        self._wake.set()
        return event_id

    async def start(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._policy.timeout)
        self._session = aiohttp.ClientSession(timeout=timeout)
        self._worker = asyncio.create_task(self._run(), name="webhook-sender")

    async def aclose(self, grace: float) -> None:
        """Stop taking events and give the queued ones up to `grace` seconds, without
        retries (a receiver that fails now is not waited for); drop the rest."""
        self._stopping.set()
        self._wake.set()
        if self._worker is not None:
            await asyncio.wait({self._worker}, timeout=grace)
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
            self._worker = None
        unsent = len(self._queue) + (self._current is not None)
        if unsent:
            self._drop(unsent, "unsent when the node stopped")
        self._queue.clear()
        self._current = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        log.warning("webhooks dropped %d: %s (%d dropped in all)", count, why, self.dropped)

    async def _run(self) -> None:
        while True:
            if not self._queue:
                if self._stopping.is_set():
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            self._current = self._queue.popleft()
            try:
                if not await self._deliver(self._current):
                    return  # closing, and the receiver is failing: close counts the rest
            except Exception:
                self.failed += 1
                log.exception("webhook %s %s failed", self._current.type, self._current.id)
            self._current = None

    async def _deliver(self, event: _Event) -> bool:
        """Try until delivered, refused, or out of attempts or time; False when closing
        cut it short."""
        failures = 0
        while True:
            try:
                await self._attempt(event)
                return True
            except _Again as again:
                failures += 1
                if self._stopping.is_set():
                    return False
                if failures >= self._policy.attempts:
                    self._give_up(event, f"{again}, after {failures} attempts")
                    return True
                delay = self._policy.delay(failures, again.after)
                max_age = self._policy.max_age
                if max_age is not None and time.time() + delay > event.at + max_age:
                    self._give_up(event, f"{again}, and of no use after {max_age:g} s")
                    return True
                log.info("webhook %s %s: %s; attempt %d in %.2f s", event.type, event.id,
                         again, failures + 1, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)

    async def _attempt(self, event: _Event) -> None:
        assert self._session is not None
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Mikoto-Id": event.id,
                   "X-Mikoto-Timestamp": timestamp,
                   "X-Mikoto-Signature": sign(self._secret, timestamp, event.body)}
        try:
            # No redirects: a signed event goes to the configured URL or nowhere.
            async with self._session.post(self._url, data=event.body, headers=headers,
                                          allow_redirects=False) as resp:
                status, retry_after = resp.status, resp.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Again(f"{type(exc).__name__} {exc}".strip()) from None
        if 200 <= status < 300:
            self.delivered += 1
        elif status == 429 or status >= 500:
            raise _Again(f"answered {status}", _seconds(retry_after))
        else:
            self._give_up(event, f"answered {status}, not retried")

    def _give_up(self, event: _Event, why: str) -> None:
        self.failed += 1
        log.warning("webhook %s %s not delivered: %s", event.type, event.id, why)


def _seconds(retry_after: str | None) -> float | None:
    """A Retry-After header as seconds from now: delay-seconds or an HTTP date."""
    if retry_after is None:
        return None
    if retry_after.strip().isdigit():
        return float(retry_after)
    try:
        when = email.utils.parsedate_to_datetime(retry_after)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Webhooks:
    """A node's senders: events to `webhook_url`, pushes to `push_url` (None when off)."""

    def __init__(self, config: Config, node: str) -> None:
        self.events: WebhookSender | None = None
        self.push: WebhookSender | None = None
        if config.webhook_url and config.webhook_secret:
            self.events = WebhookSender(config.webhook_url, config.webhook_secret, node,
                                        RetryPolicy.of(config), config.webhook_queue)
        if config.push_url and config.push_secret:
            # A ring that arrives after the call stopped ringing only wakes a phone for nothing.
            self.push = WebhookSender(config.push_url, config.push_secret, node,
                                      RetryPolicy.of(config, max_age=config.call_ring_timeout),
                                      config.webhook_queue)
        self._grace = config.shutdown_timeout

    def _senders(self) -> list[WebhookSender]:
        return [s for s in (self.events, self.push) if s is not None]

    def observe(self, observers: Observers) -> None:
        """Send what `observers` see of the kinds in WEBHOOK_KINDS, when webhooks are on."""
        if self.events is not None:
            observers.subscribe(self._watch)

    def _watch(self, seen: Observation) -> None:
        if self.events is not None and seen.kind in WEBHOOK_KINDS:
            self.events.send(seen.kind.value, {"data": seen.data}, at=seen.at)

    async def start(self) -> None:
        for sender in self._senders():
            await sender.start()

    async def aclose(self) -> None:
        await asyncio.gather(*(s.aclose(self._grace) for s in self._senders()))
