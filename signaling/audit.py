"""The audit log: one JSON line per security-relevant event (docs/security.md).

Lines go to the `mikoto.audit` logger, and to `MIKOTO_RTC_AUDIT_LOG` when set (a
file, appended to; `-` for standard error). Each has `ts` (Unix seconds), `event`,
and whichever of `user`, `room`, `ip`, `reason` apply. Callers pass facts, never
payloads: no SDP, candidates or tokens reach this log.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("mikoto.audit")


class Audit:
    def __init__(self, path: str | None) -> None:
        self._out: IO[str] | None = None
        self._owned = False
        if path == "-":
            self._out = sys.stderr
        elif path:
            self._out = Path(path).open("a", buffering=1, encoding="utf-8")
            self._owned = True

    def record(self, event: str, **fields: Any) -> None:
        line = json.dumps({"ts": round(time.time(), 3), "event": event,
                           **{k: v for k, v in fields.items() if v is not None}},
                          separators=(",", ":"), ensure_ascii=False)
        log.info("%s", line)
        if self._out is not None:
            try:
                self._out.write(line + "\n")
            except OSError as exc:  # a full disk must not take the node down
                log.error("cannot write the audit log: %s", exc)

    def close(self) -> None:
        if self._owned and self._out is not None:
            self._out.close()
        self._out = None
