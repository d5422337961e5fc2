"""`mikoto-rtc`: run a node (`serve`) or mint a token (`token`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from aiohttp import web

from .app import create_app
from .auth import Grants, issue_token
from .config import Config, Env
from .errors import ConfigError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mikoto-rtc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run a signaling node")
    serve.add_argument("--host", help="listen address (MIKOTO_RTC_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (MIKOTO_RTC_PORT, default 8080)")
    serve.add_argument("--env", choices=[e.value for e in Env], help="dev or production")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING (MIKOTO_RTC_LOG_LEVEL)")

    token = sub.add_parser("token", help="print a token signed with MIKOTO_RTC_SECRET")
    token.add_argument("--user", required=True, help="user id (the token's sub)")
    token.add_argument("--name", help="display name")
    token.add_argument("--room", action="append", dest="rooms", metavar="ROOM",
                       help="a room name or pattern it may join; repeatable (default: any)")
    token.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds")
    token.add_argument("--record", action="store_true", help="grant record")
    token.add_argument("--admin", action="store_true", help="grant admin")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            _serve(args)
        else:
            _token(args)
    except ConfigError as exc:
        print(f"mikoto-rtc: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)


def _serve(args: argparse.Namespace) -> None:
    config = Config.load(
        os.environ, host=args.host, port=args.port,
        env=Env(args.env) if args.env else None, log_level=args.log_level,
    )
    logging.basicConfig(
        level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(config)
    print(f"mikoto-rtc listening on http://{config.host}:{config.port}", flush=True)
    web.run_app(
        app, host=config.host, port=config.port,
        shutdown_timeout=config.shutdown_timeout, print=None,
    )


def _token(args: argparse.Namespace) -> None:
    config = Config.load(os.environ)
    if config.secret is None:
        raise ConfigError("set MIKOTO_RTC_SECRET to the node's secret to mint tokens")
    if args.ttl <= 0:
        raise ConfigError("--ttl must be positive")
    grants = Grants(
        rooms=tuple(args.rooms or ["*"]), publish=True, subscribe=True,
        record=args.record, admin=args.admin,
    )
    print(issue_token(config.secret, args.user, name=args.name, grants=grants, ttl=args.ttl))
