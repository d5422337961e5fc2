"""Log lines as text or JSON (`MIKOTO_RTC_LOG_FORMAT`), each naming what it is about:
the Socket.IO connection (`c:<sid>`) or HTTP request (`r:<id>`) whose handling wrote it.

The id lives in a context variable: set when a connection's event or a request is
handled, and inherited by the tasks that handling starts, so a line logged anywhere
below carries it without being passed along.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from aiohttp import web

CONTEXT: ContextVar[str | None] = ContextVar("mikoto_log_context", default=None)
FORMATS = ("text", "json")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_TEXT = "%(asctime)s %(levelname)s %(name)s [%(context)s]: %(message)s"


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.context = CONTEXT.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (Unix seconds), level, logger, context, msg, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": round(record.created, 6), "level": record.levelname,
                "logger": record.name, "context": getattr(record, "context", None),
                "msg": record.getMessage()}
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def connection(sid: str) -> None:
    """What the current task logs is about connection `sid` from now on."""
    CONTEXT.set("c:" + sid)


@web.middleware
async def request_ids(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    """Each request gets an id (the caller's `X-Request-Id` when it is sane, so a
    backend can follow its own request here), logged with its lines and echoed back."""
    offered = request.headers.get("X-Request-Id", "")
    rid = offered if _REQUEST_ID.fullmatch(offered) else secrets.token_hex(8)
    CONTEXT.set("r:" + rid)
    response = await handler(request)
    if not response.prepared:
        response.headers["X-Request-Id"] = rid
    return response
