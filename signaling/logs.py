"""Log lines as text or JSON (`MIKOTO_RTC_LOG_FORMAT`), each naming what it is about:
the Socket.IO connection (`c:<sid>`) or HTTP request (`r:<id>`) whose handling wrote it.

A request's id lives in a context variable, inherited by the tasks its handling
starts. A connection's is the name of the task handling its events (and of the tasks
the edge starts for it): a context variable set in a connection's long-lived task
would cost each idle connection a copy of its context (about 400 bytes). Input handled
before any Task exists (`eager.start`) has a context of its own: the variable then.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from contextvars import ContextVar

CONTEXT: ContextVar[str | None] = ContextVar("mikoto_log_context", default=None)
FORMATS = ("text", "json")
_TEXT = "%(asctime)s %(levelname)s %(name)s [%(context)s]: %(message)s"


def current() -> str | None:
    """What the running code is about: `c:<sid>`, `r:<id>`, or None."""
    context = CONTEXT.get()
    if context is not None:
        return context
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop in this thread
        return None
    name = task.get_name() if task is not None else ""
    return name if name.startswith("c:") else None


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.context = current() or "-"
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


def connection(sid: str, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """What the current task logs is about connection `sid` from now on. Callers on the
    hot path pass the loop: Python 3.11 asks the kernel for the process id (a system
    call, about 7% of a relayed message at low rates) to find the running loop."""
    task = asyncio.current_task(loop)
    if task is not None:
        task.set_name("c:" + sid)
    else:  # handled before any Task (`eager.start`), in a context of its own
        CONTEXT.set("c:" + sid)
