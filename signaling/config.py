"""The one configuration object: read from MIKOTO_RTC_* variables and CLI flags, validated once."""

from __future__ import annotations

import dataclasses
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from .clientaddr import parse_networks
from .errors import ConfigError
from .logs import FORMATS
from .ratelimit import Rate

PREFIX = "MIKOTO_RTC_"
# Secrets starting with this are the clearly-marked development values from the
# sample config; production mode refuses them.
DEV_SECRET_PREFIX = "dev-"
MIN_PRODUCTION_SECRET_LEN = 32
DEFAULT_WEB_DIR = Path(__file__).resolve().parent.parent / "web" / "dist"


class Env(StrEnum):
    DEV = "dev"
    PRODUCTION = "production"


@dataclass(frozen=True)
class Config:
    env: Env = Env.DEV
    host: str = "127.0.0.1"
    port: int = 8080
    # None in dev mode means "generate an ephemeral one at start-up".
    secret: str | None = field(default=None, repr=False)
    log_level: str = "INFO"
    # "text", or "json": one object per line (ts, level, logger, context, msg, exc), for
    # log pipelines. Either way each line names its connection (c:<sid>) or request (r:<id>).
    log_format: str = "text"
    web_dir: Path = DEFAULT_WEB_DIR
    cors_origins: tuple[str, ...] = ()
    room_max_participants: int = 50
    max_sdp_bytes: int = 65536
    max_meta_bytes: int = 2048
    stun_urls: tuple[str, ...] = ()
    turn_urls: tuple[str, ...] = ()
    turn_secret: str | None = field(default=None, repr=False)
    turn_ttl: int = 3600
    token_ttl: int = 3600
    shutdown_timeout: float = 5.0
    resume_grace: float = 30.0
    ping_interval: float = 10.0
    ping_timeout: float = 10.0
    room_log_size: int = 1024
    dedup_window: float = 120.0
    drain_timeout: float = 10.0
    call_ring_timeout: float = 30.0
    call_max_callees: int = 8
    push_url: str | None = None
    push_secret: str | None = field(default=None, repr=False)
    # Webhooks (docs/webhooks.md): what happened, POSTed signed to the platform's backend
    # (None: off). A delivery is tried webhook_attempts times in all, the first retry after
    # about webhook_backoff seconds, doubling up to webhook_backoff_max; at most
    # webhook_queue events wait, the oldest dropped beyond that. Pushes retry the same way.
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_timeout: float = 5.0
    webhook_attempts: int = 10
    webhook_backoff: float = 1.0
    webhook_backoff_max: float = 60.0
    webhook_queue: int = 10000
    file_max_bytes: int = 4 * 1024**3
    file_relay_max_bytes: int = 1024**3
    file_ttl: float = 3600.0
    file_dir: Path = Path(tempfile.gettempdir()) / "mikoto-rtc-files"
    # Media workers `serve` starts beside the node (0: run them yourself).
    media_workers: int = 1
    # Load units one worker takes before it counts as full: media tracks it receives or
    # sends (bench/media.py: one core passes through several hundred).
    worker_capacity: int = 200
    # Where a media worker connects, and its service token (media-worker command).
    worker_url: str | None = None
    worker_token: str | None = field(default=None, repr=False)
    echo_duration: float = 8.0
    # Rooms with more participants than this send media through a media worker.
    mesh_max_participants: int = 4
    # Where media workers write recordings and the node serves them from (shared by both).
    recordings_dir: Path = Path("recordings")
    # Several nodes: the Redis they share state through (None: one node, state in memory).
    redis_url: str | None = None
    # Prefix of every key and channel, so clusters can share one Redis.
    redis_prefix: str = "mikoto"
    # Room logs (for replay after a resume) keep at most room_log_size events this long.
    room_log_age: float = 600.0
    # Each node refreshes its heartbeat this often; one silent for node_timeout is dead
    # and its sessions are treated as disconnected.
    node_heartbeat: float = 1.0
    node_timeout: float = 5.0
    # permessage-deflate on WebSockets: browsers always offer it, and it costs about
    # 100 kB of memory per connection and a compression per recipient of each message
    # (bench/README.md), for signaling messages that are small anyway.
    ws_deflate: bool = False
    # Node processes `serve` runs on one port (SO_REUSEPORT), to use every core of a
    # machine; more than one shares state through Redis (redis_url).
    processes: int = 1
    # The scheduler time slice a node process asks Linux (6.12 or later) for, in
    # microseconds (100 to 100000; 0: the kernel's default, about 1.4 ms): a short one
    # lets a node that wakes for a message run at once on a core shared with other work
    # (signaling/sched.py). Its share of the CPU stays the same.
    sched_slice_us: int = 100
    # Rate limits as "EVENTS_PER_SECOND/BURST" (docs/security.md): per connection for each
    # class of event (signal; participant:update; file:progress; everything else), and
    # per client address for connects. A connection refused more than rate_strikes
    # events within 10 s is dropped.
    rate_signal: str = "100/300"
    rate_presence: str = "10/30"
    rate_file: str = "20/60"
    rate_other: str = "20/60"
    rate_connect: str = "20/100"
    # Failed connects (bad tokens, bad resume tokens) per address: past the burst, an
    # address's connects are refused until the bucket refills (slows guessing).
    rate_auth_failures: str = "1/10"
    rate_strikes: int = 50
    # Reverse proxies (addresses or CIDRs) whose X-Forwarded-For names the client, for
    # per-address limits and the audit log (signaling/clientaddr.py). Empty: the
    # connection's own address is the client's.
    trusted_proxies: tuple[str, ...] = ()
    # What one user may hold at once, on all nodes together (0: no cap): sessions (devices
    # and tabs; one in its grace period is ended to make room for a new one) and rooms.
    max_connections_per_user: int = 10
    max_rooms_per_user: int = 20
    # Relay no ICE candidate naming a private, loopback or link-local address or an mDNS
    # name (trickled, or in a description): nobody learns another's LAN address.
    drop_private_candidates: bool = False
    # Seconds before a connection's token expires that it is sent `auth:expiring`; at
    # expiry, a connection that did not `auth:refresh` is disconnected.
    auth_expiry_notice: float = 60.0
    # /metrics: when set, only these addresses or networks (through trusted proxies) and/
    # or requests with `Authorization: Bearer <metrics_token>` may scrape it.
    metrics_allow: tuple[str, ...] = ()
    metrics_token: str | None = field(default=None, repr=False)
    # Call timelines (admin API): entries kept per room and per call, and for how long
    # after a timeline's last entry.
    timeline_size: int = 1000
    timeline_age: float = 86400.0
    # /readyz answers 503 while no media worker is registered (echo tests and recording
    # would fail); false on nodes whose calls should go on without one.
    ready_needs_worker: bool = True
    # Audit log (docs/security.md): JSON lines appended to this file ("-": stderr), and
    # always to the `mikoto.audit` logger.
    audit_log: str | None = None

    def __post_init__(self) -> None:
        for name in ("rate_signal", "rate_presence", "rate_file", "rate_other", "rate_connect",
                     "rate_auth_failures"):
            try:
                Rate.parse(getattr(self, name))
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        for name in ("trusted_proxies", "metrics_allow"):
            try:
                parse_networks(getattr(self, name))
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        if self.log_format not in FORMATS:
            raise ConfigError(f"log_format must be one of {', '.join(FORMATS)}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port out of range: {self.port}")
        if self.room_max_participants < 2:
            raise ConfigError("room_max_participants must be at least 2")
        for name in ("max_sdp_bytes", "max_meta_bytes", "turn_ttl", "token_ttl", "resume_grace",
                     "ping_interval", "ping_timeout", "room_log_size", "dedup_window",
                     "call_ring_timeout", "call_max_callees", "file_max_bytes",
                     "file_relay_max_bytes", "file_ttl", "worker_capacity", "echo_duration",
                     "mesh_max_participants", "room_log_age", "node_heartbeat", "node_timeout",
                     "rate_strikes", "auth_expiry_notice", "timeline_size", "timeline_age"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.turn_urls and not self.turn_secret:
            raise ConfigError("turn_urls are set but turn_secret is not")
        for name in ("max_connections_per_user", "max_rooms_per_user"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must not be negative")
        if self.media_workers < 0:
            raise ConfigError("media_workers must not be negative")
        if self.drain_timeout < 0:
            raise ConfigError("drain_timeout must not be negative")
        if self.push_url and not self.push_secret:
            raise ConfigError("push_url is set but push_secret is not")
        self._check_webhooks()
        if self.redis_url and self.secret is None:
            raise ConfigError("redis_url is set but secret is not: nodes must share one secret")
        if self.processes < 1:
            raise ConfigError("processes must be at least 1")
        if self.sched_slice_us and not 100 <= self.sched_slice_us <= 100_000:
            raise ConfigError("sched_slice_us must be 0 or from 100 to 100000")
        if self.processes > 1 and not self.redis_url:
            raise ConfigError("several processes share state through Redis: set redis_url")
        if self.node_timeout <= self.node_heartbeat:
            raise ConfigError("node_timeout must be longer than node_heartbeat")
        if self.env is Env.PRODUCTION:
            self._check_production()

    def _check_webhooks(self) -> None:
        if self.webhook_url and not self.webhook_secret:
            raise ConfigError("webhook_url is set but webhook_secret is not")
        for name in ("push_url", "webhook_url"):
            url = getattr(self, name)
            if url and not url.startswith(("http://", "https://")):
                raise ConfigError(f"{name} must be an http:// or https:// URL")
        for name in ("webhook_timeout", "webhook_attempts", "webhook_backoff",
                     "webhook_backoff_max", "webhook_queue"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        if self.webhook_backoff_max < self.webhook_backoff:
            raise ConfigError("webhook_backoff_max must not be shorter than webhook_backoff")

    def _check_production(self) -> None:
        if self.secret is None:
            raise ConfigError("production mode requires MIKOTO_RTC_SECRET")
        for label, value in (("MIKOTO_RTC_SECRET", self.secret),
                             ("MIKOTO_RTC_TURN_SECRET", self.turn_secret),
                             ("MIKOTO_RTC_PUSH_SECRET", self.push_secret),
                             ("MIKOTO_RTC_WEBHOOK_SECRET", self.webhook_secret),
                             ("MIKOTO_RTC_METRICS_TOKEN", self.metrics_token)):
            if value is None:
                continue
            if value.startswith(DEV_SECRET_PREFIX):
                raise ConfigError(f"{label} is a development value; refused in production")
            if len(value) < MIN_PRODUCTION_SECRET_LEN:
                raise ConfigError(
                    f"{label} must be at least {MIN_PRODUCTION_SECRET_LEN} characters in production"
                )

    @property
    def dev(self) -> bool:
        return self.env is Env.DEV

    def with_runtime_secret(self) -> Config:
        """Return a copy whose secret is set, generating an ephemeral one in dev mode."""
        if self.secret is not None:
            return self
        if not self.dev:  # unreachable through __post_init__, kept as a guard
            raise ConfigError("production mode requires MIKOTO_RTC_SECRET")
        return dataclasses.replace(self, secret=DEV_SECRET_PREFIX + secrets.token_urlsafe(32))

    @classmethod
    def load(cls, environ: Mapping[str, str], **overrides: Any) -> Config:
        """Build from MIKOTO_RTC_* variables; keyword overrides (CLI flags) win when not None."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = environ.get(PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from exc


def _parse(name: str, type_name: Any, raw: str) -> Any:
    kind = str(type_name)
    try:
        if kind == "Env":
            return Env(raw.strip().lower())
        if kind in ("str | None", "Optional[str]"):
            return raw
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "Path":
            return Path(raw)
        if kind == "bool":
            value = raw.strip().lower()
            if value not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(f"not a boolean: {raw!r}")
            return value in ("1", "true", "yes", "on")
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"{PREFIX}{name.upper()}: {exc}") from exc
    return raw
