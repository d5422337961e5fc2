"""`mikoto-rtc`: run a node (`serve`), a media worker (`media-worker`), the echo test
(`probe`), mix a recording into one file (`mix`), or mint a token (`token`)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web

from . import logs
from .app import create_app
from .auth import Grants, issue_token
from .config import Config, Env
from .errors import ConfigError
from .sched import request_slice
from .workerproc import Children, embedded_workers

# What a media worker that holds the secret mints itself: every room, hidden, nothing else.
WORKER_GRANTS = Grants(rooms=("*",), service=True)
WORKER_TOKEN_TTL = 3600  # minted again for every connect


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mikoto-rtc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a signaling node")
    serve.add_argument("--host", help="listen address (MIKOTO_RTC_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (MIKOTO_RTC_PORT, default 8080)")
    serve.add_argument("--env", choices=[e.value for e in Env], help="dev or production")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING (MIKOTO_RTC_LOG_LEVEL)")
    serve.add_argument("--workers", type=int, dest="processes",
                       help="node processes on the port, e.g. one per core (MIKOTO_RTC_PROCESSES;"
                            " more than 1 needs MIKOTO_RTC_REDIS_URL)")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)

    token = sub.add_parser("token", help="print a token signed with MIKOTO_RTC_SECRET")
    token.add_argument("--user", required=True, help="user id (the token's sub)")
    token.add_argument("--name", help="display name")
    token.add_argument("--room", action="append", dest="rooms", metavar="ROOM",
                       help="a room name or pattern it may join; repeatable (default: any)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.add_argument("--record", action="store_true", help="grant record")
    token.add_argument("--admin", action="store_true", help="grant admin")
    token.add_argument("--service", action="store_true",
                       help="a media worker's token: grant service (and no publish)")

    worker = sub.add_parser("media-worker", help="run a media worker (echo, record, forward)")
    worker.add_argument("--url", help="the node (MIKOTO_RTC_WORKER_URL)")
    worker.add_argument("--token", help="a service token (MIKOTO_RTC_WORKER_TOKEN; prefer "
                        "the variable: arguments are visible to other local users); "
                        "without one the worker mints its own from MIKOTO_RTC_SECRET")
    worker.add_argument("--capacity", type=int, help="load units (MIKOTO_RTC_WORKER_CAPACITY)")
    worker.add_argument("--parent", type=int, help=argparse.SUPPRESS)

    probe = sub.add_parser("probe", help="run the echo test headless and print its report; "
                           "exit 1 when the verdict is failed, 3 when it could not run")
    probe.add_argument("url", help="the node, e.g. https://rtc.example.org")
    probe.add_argument("--token", required=True, help="a token granting the room")
    probe.add_argument("--room", help="room to test in (default: a random probe-* room)")
    probe.add_argument("--duration", type=float, help="seconds of media before the report")
    probe.add_argument("--relay-only", action="store_true", help="use TURN relay candidates only")
    probe.add_argument("--timeout", type=float, default=90.0, help="give up after (seconds)")

    mix = sub.add_parser("mix", help="mix one recording into a single WebM (VP8 + Opus); "
                         "exit 2 when its catalog is missing or invalid")
    mix.add_argument("directory", type=Path, help="the recording's directory (catalog.json)")
    mix.add_argument("-o", "--output", type=Path, help="default: DIRECTORY/mixed.webm")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            _serve(args)
        elif args.command == "media-worker":
            _media_worker(args)
        elif args.command == "probe":
            _probe(args)
        elif args.command == "mix":
            _mix(args)
        else:
            _token(args)
    except ConfigError as exc:
        print(f"mikoto-rtc: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)


def _serve(args: argparse.Namespace) -> None:
    config = Config.load(
        os.environ, host=args.host, port=args.port,
        env=Env(args.env) if args.env else None, log_level=args.log_level,
        processes=args.processes,
    ).with_runtime_secret()
    _logging(config)
    if config.processes > 1:
        with asyncio.Runner(loop_factory=_event_loop) as runner:
            runner.run(_supervise(config))
        return
    if config.sched_slice_us:
        request_slice(config.sched_slice_us)
    app = create_app(config)
    if config.media_workers:
        app.cleanup_ctx.append(embedded_workers(config))
    print(f"mikoto-rtc listening on http://{config.host}:{config.port}", flush=True)
    web.run_app(
        app, host=config.host, port=config.port,
        shutdown_timeout=config.shutdown_timeout, print=None, loop=_event_loop(),
        reuse_port=args.reuse_port or None,
    )


async def _supervise(config: Config) -> None:
    """`serve --workers N`: N node processes listening on one port (the kernel spreads
    connections over them), sharing state through Redis; restarted if one dies, all
    stopped (each draining) on SIGTERM or SIGINT."""
    secret = config.secret
    assert secret is not None

    def spawn(index: int) -> tuple[list[str], dict[str, str]]:
        # The secret goes through the environment, not argv (any local user reads argv).
        env = {**os.environ, "MIKOTO_RTC_SECRET": secret, "MIKOTO_RTC_PROCESSES": "1",
               "MIKOTO_RTC_ENV": config.env.value, "MIKOTO_RTC_LOG_LEVEL": config.log_level,
               "MIKOTO_RTC_LOG_FORMAT": config.log_format,
               # One set of media workers serves every process (through Redis).
               "MIKOTO_RTC_MEDIA_WORKERS": str(config.media_workers if index == 0 else 0)}
        return [sys.executable, "-m", "signaling", "serve", "--host", config.host,
                "--port", str(config.port), "--reuse-port"], env

    stop_after = config.drain_timeout + config.shutdown_timeout + 5
    children = Children("node", config.processes, spawn, stop_timeout=stop_after)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    print(f"mikoto-rtc: {config.processes} node processes on "
          f"http://{config.host}:{config.port}", flush=True)
    children.start()
    await stopping.wait()
    await children.stop()


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (a quarter less CPU per relayed message), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _logging(config: Config) -> None:
    logs.configure(config.log_level, config.log_format)


def _media_worker(args: argparse.Namespace) -> None:
    config = Config.load(os.environ, worker_url=args.url, worker_token=args.token,
                         worker_capacity=args.capacity)
    if not config.worker_url:
        raise ConfigError("media-worker needs --url (MIKOTO_RTC_WORKER_URL)")
    token: str | Callable[[], str]
    if config.worker_token:
        token = config.worker_token
    elif config.secret:
        secret = config.secret
        token = lambda: issue_token(  # noqa: E731
            secret, "media-worker", grants=WORKER_GRANTS, ttl=WORKER_TOKEN_TTL)
    else:
        raise ConfigError("media-worker needs a service token (MIKOTO_RTC_WORKER_TOKEN) "
                          "or the node's secret (MIKOTO_RTC_SECRET) to mint its own")
    _logging(config)
    request_slice(0)  # the node's short slices are not for codec work (signaling/sched.py)
    from media.service import serve_worker  # the node itself never needs aiortc

    asyncio.run(serve_worker(config.worker_url, token, capacity=config.worker_capacity,
                             recordings_dir=config.recordings_dir, parent=args.parent))


def _probe(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    from media.probe import ProbeOptions, run

    sys.exit(run(ProbeOptions(url=args.url, token=args.token, room=args.room,
                              duration=args.duration, relay_only=args.relay_only,
                              timeout=args.timeout)))


def _mix(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING, format="mikoto-rtc mix: %(message)s")
    from media.mix import CatalogError, MixError, mix

    try:
        result = mix(args.directory, args.output)
    except MixError as exc:
        print(f"mikoto-rtc mix: {exc}", file=sys.stderr)
        sys.exit(2 if isinstance(exc, CatalogError) else 1)
    print(f"{result.path}\t{result.duration:.2f} s")


def _token(args: argparse.Namespace) -> None:
    config = Config.load(os.environ)
    if config.secret is None:
        raise ConfigError("set MIKOTO_RTC_SECRET to the node's secret to mint tokens")
    if args.ttl <= 0:
        raise ConfigError("--ttl must be positive")
    grants = Grants(
        rooms=tuple(args.rooms or ["*"]), publish=not args.service, subscribe=not args.service,
        record=args.record, admin=args.admin, service=args.service,
    )
    print(issue_token(config.secret, args.user, name=args.name, grants=grants, ttl=args.ttl))
