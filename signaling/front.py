"""What every HTTP route of the node gets, but Socket.IO's: a request id for its log
lines (echoed back as `X-Request-Id`), and for /api, the origin check and CORS.

Not aiohttp middleware: a middleware wraps every handler, Socket.IO's too, and each
layer is a coroutine frame that lives as long as its request, which for a WebSocket is
the whole connection (about 1.3 kB of each idle connection for two layers). Routes are
wrapped where they are added instead (`route`), and /api gets a preflight route.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

from .config import Config
from .logs import CONTEXT

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class Front:
    def __init__(self, config: Config) -> None:
        self._allowed = set(config.cors_origins)

    def install(self, app: web.Application) -> None:
        app[FRONT] = self
        app.router.add_route("OPTIONS", "/api/{tail:.*}", self.wrap(_preflight, api=True))

    def wrap(self, handler: Handler, *, api: bool) -> Handler:
        async def front(request: web.Request) -> web.StreamResponse:
            offered = request.headers.get("X-Request-Id", "")
            rid = offered if _REQUEST_ID.fullmatch(offered) else secrets.token_hex(8)
            CONTEXT.set("r:" + rid)
            origin = request.headers.get("Origin") if api else None
            listed = origin is not None and ("*" in self._allowed or origin in self._allowed)
            if origin is not None and not listed and origin != f"{request.scheme}://{request.host}":
                log.info("refused %s %s from origin %.100s", request.method, request.path, origin)
                response: web.StreamResponse = web.json_response(
                    {"ok": False, "error": {"code": "forbidden", "message": "origin not allowed"}},
                    status=403)
            elif request.method == "OPTIONS" and not listed:
                response = web.Response(status=405)  # a preflight only for listed origins
            else:
                response = await handler(request)
            if listed and not response.prepared:
                response.headers["Access-Control-Allow-Origin"] = str(origin)
                response.headers["Vary"] = "Origin"
            if not response.prepared:
                response.headers["X-Request-Id"] = rid
            return response

        return front


FRONT = web.AppKey("front", Front)


def route(app: web.Application, method: str, path: str, handler: Handler) -> None:
    """Add an HTTP route with what every route gets (see the module's docstring)."""
    app.router.add_route(method, path, app[FRONT].wrap(handler, api=path.startswith("/api/")))


async def _preflight(request: web.Request) -> web.StreamResponse:
    return web.Response(status=204, headers={
        "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE",
        "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Request-Id",
        "Access-Control-Max-Age": "600"})
