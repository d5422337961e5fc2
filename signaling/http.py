"""HTTP routes beside Socket.IO: health, the dev token endpoint, and the built web client."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from .auth import issue_token, room_grants
from .config import Config
from .errors import BadRequest
from .front import route
from .protocol import MAX_NAME_LEN, ROOM_RE

log = logging.getLogger(__name__)

CONFIG = web.AppKey("config", Config)
NOT_BUILT = "The web client is not built: run `npm ci && npm run build` in web/.\n"


async def healthz(request: web.Request) -> web.Response:
    """Alive: the process answers (a load balancer or orchestrator restarts it if not)."""
    return web.json_response({"ok": True})


async def dev_token(request: web.Request) -> web.Response:
    """Mint a participant token; only routed in dev mode. It may also record, so the
    demo can try recording without minting tokens by hand."""
    config = request.app[CONFIG]
    assert config.secret is not None
    try:
        body = await request.json()
        user, name, rooms = _parse_dev_token(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return _bad("body must be JSON")
    except BadRequest as exc:
        return _bad(exc.message)
    token = issue_token(
        config.secret, user, name=name,
        grants=dataclasses.replace(room_grants(rooms), record=True), ttl=config.token_ttl
    )
    return web.json_response({"token": token})


def _parse_dev_token(body: object) -> tuple[str, str | None, list[str] | None]:
    if not isinstance(body, dict):
        raise BadRequest("body must be an object")
    user, name, rooms = body.get("user"), body.get("name"), body.get("rooms")
    if not isinstance(user, str) or not 0 < len(user) <= 128:
        raise BadRequest("user must be a string of 1-128 characters")
    if name is not None and (not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LEN):
        raise BadRequest(f"name must be a string of 1-{MAX_NAME_LEN} characters")
    if rooms is not None and (
        not isinstance(rooms, list)
        or not all(isinstance(r, str) and (r == "*" or ROOM_RE.fullmatch(r)) for r in rooms)
    ):
        raise BadRequest("rooms must be a list of room names or '*'")
    return user, name, rooms


def _bad(message: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error": {"code": "bad_request", "message": message}}, status=400
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def add_routes(app: web.Application, config: Config) -> None:
    route(app, "GET", "/healthz", healthz)
    if config.dev:
        route(app, "POST", "/api/dev/token", dev_token)
    _add_web_client(app, config.web_dir)


def _add_web_client(app: web.Application, web_dir: Path) -> None:
    index = web_dir / "index.html"
    if not index.is_file():
        log.warning("web client not built (%s missing): run `npm run build` in web/", index)

        async def not_built(request: web.Request) -> web.Response:
            return web.Response(status=503, text=NOT_BUILT)

        app.router.add_get("/", not_built)
        return

    async def serve_index(request: web.Request) -> web.FileResponse:
        return web.FileResponse(index)

    app.router.add_get("/", serve_index)
    app.router.add_static("/", web_dir)
