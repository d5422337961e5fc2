"""Call timelines: what happened in each room and call, for debugging calls that failed
without a word (who joined, which offers, answers and candidates went where, how big,
which requests were refused, who left and why) — never what a description or a
candidate said.

A watcher of the edge's observations. Entries are buffered and appended to the store
in batches a few times a second, off the relay path, a chunk per turn of the loop.
Signals are counted, not written one by one (a call trickles dozens of candidates, and
a node relays tens of thousands of signals a second): one entry per sender, target,
kind (and candidate type) and batch, with its `count`, total `bytes` and the `at` of
the first. Each room's and call's timeline keeps its last `keep` entries and is
forgotten `age` seconds after its last one. A timeline is best effort: entries that
cannot be written (the store is down) are dropped, with a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import Any

from .errors import RtcError
from .fastjson import FastJson
from .ids import CallId, RoomId
from .observe import Observation, Seen
from .store import Store

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.25
MAX_PENDING = 10_000
FLUSH_CHUNK = 100  # signal entries encoded and appended per turn of the loop
# (room, sender, to, kind, candidate type, pc); counted as [first at, count, bytes]
_SignalKey = tuple[str, str, str, str, str | None, str | None]
_SKIPPED = frozenset({Seen.CONNECTED, Seen.CONNECT_REFUSED, Seen.DISCONNECTED})


def room_key(room: RoomId) -> str:
    return "timeline:room:" + room


def call_key(call: CallId) -> str:
    return "timeline:call:" + call


class Timelines:
    def __init__(self, store: Store, keep: int, age: float) -> None:
        self._store = store
        self._keep = keep
        self._age = age
        self._pending: dict[str, list[str]] = {}
        self._signals: dict[_SignalKey, list[Any]] = {}
        self._out: deque[tuple[_SignalKey, list[Any]]] = deque()  # taken, not yet appended
        self._flushing = asyncio.Lock()
        self._count = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def watch(self, seen: Observation) -> None:
        if seen.kind in _SKIPPED:
            return
        data = seen.data
        room, call = data.get("room"), data.get("call")
        if room is None and call is None:
            return
        if self._count >= MAX_PENDING:
            return  # the store is behind or down: the newest are dropped, not the node
        entry = json.dumps({"at": int(seen.at * 1000), "event": seen.kind.value,
                            **{k: v for k, v in data.items() if v is not None}},
                           separators=(",", ":"))
        for key in (room_key(room) if room else None, call_key(call) if call else None):
            if key is not None:
                self._pending.setdefault(key, []).append(entry)
                self._count += 1
        self._wake.set()

    def signal(self, room: str, sender: str, to: str, body: dict[str, Any]) -> None:
        typ: str | None = None
        if "description" in body:
            description = body["description"]
            kind, size = description["type"], len(description["sdp"])
        elif "candidate" in body:
            candidate = body["candidate"]
            if candidate is None:
                kind, size = "end-of-candidates", 0
            else:
                text = candidate["candidate"]
                kind, size, typ = "candidate", len(text), _candidate_type(text)
        else:
            kind, size = "restart", 0
        key = (room, sender, to, kind, typ, body.get("pc"))
        counted = self._signals.get(key)
        if counted is None:
            self._signals[key] = [time.time(), 1, size]
            self._wake.set()
        else:
            counted[1] += 1
            counted[2] += size

    async def read(self, key: str) -> list[dict[str, Any]]:
        await self._flush()  # what this node saw so far is in
        entries = [json.loads(item) for item in await self._store.items(key)]
        # Nodes append in batches: put theirs in the order things happened.
        return sorted(entries, key=lambda e: int(e["at"]))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RtcError):
            await self._flush()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()
            await asyncio.sleep(FLUSH_INTERVAL)

    async def _flush(self) -> None:
        """Append what was seen, a chunk per turn of the loop: thousands of calls give
        thousands of signal entries per flush, which written at once held every relay
        behind them for milliseconds. A flush cancelled between chunks leaves the rest
        in `_out` for the next one."""
        async with self._flushing:
            out = self._out
            out.extend(self._signals.items())
            self._signals = {}
            batch, self._pending, self._count = self._pending, {}, 0
            dropped = 0
            while batch or out:
                for _ in range(min(FLUSH_CHUNK, len(out))):
                    key, counted = out.popleft()
                    batch.setdefault(room_key(RoomId(key[0])), []).append(
                        _signal_entry(key, counted))
                try:
                    await self._store.append(batch, self._keep, self._age)
                except RtcError as exc:
                    dropped += sum(map(len, batch.values()))
                    reason = exc.message
                batch = {}
                if out:
                    await asyncio.sleep(0)
            if dropped:
                log.warning("dropped %d timeline entries: %s", dropped, reason)


def _signal_entry(key: _SignalKey, counted: list[Any]) -> str:
    (room, sender, to, kind, typ, pc), (at, count, size) = key, counted
    entry = {"at": int(at * 1000), "event": "signal", "room": room, "sender": sender,
             "to": to, "kind": kind, "count": count, "bytes": size}
    if typ is not None:
        entry["type"] = typ
    if pc is not None:
        entry["pc"] = pc
    return FastJson.dumps(entry)


def _candidate_type(candidate: str) -> str | None:
    """`host`, `srflx`, `prflx` or `relay`, from `candidate:... typ <type> ...`."""
    at = candidate.find(" typ ")
    if at < 0:
        return None
    end = candidate.find(" ", at + 5)
    return candidate[at + 5:end if end >= 0 else None] or None
