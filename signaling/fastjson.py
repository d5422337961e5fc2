"""The JSON codec python-socketio uses for every packet: orjson, with the standard
library behind it for what orjson refuses (integers beyond 64 bits, which a client may
send and a relay must pass on), so nothing a client sends becomes an error here."""

from __future__ import annotations

import json
from typing import Any

import orjson


class FastJson:
    """A `json`-like module for `socketio.AsyncServer(json=...)`."""

    JSONDecodeError = json.JSONDecodeError

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        # python-socketio passes `separators`; orjson is always compact.
        try:
            return orjson.dumps(obj).decode()
        except TypeError:
            return json.dumps(obj, separators=(",", ":"))

    @staticmethod
    def loads(data: str | bytes, **_: Any) -> Any:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return json.loads(data)
