"""What happened on a node, for whoever watches: metrics, call timelines, webhooks.

The edge and its services say what happened (`Observers.emit`); watchers subscribe.
Watchers are called synchronously and must not block (queue, count, append); one
that raises is logged and skipped, never the cause of a failed request. When nobody
watches, `emit` returns at once, so the relay path pays nothing for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

log = logging.getLogger(__name__)


class Seen(StrEnum):
    """Kinds of observation. Those marked (webhook) are also sent to the platform."""

    ROOM_STARTED = "room.started"  # (webhook) a room came into being with its first join
    ROOM_FINISHED = "room.finished"  # (webhook) its last participant left
    PARTICIPANT_JOINED = "participant.joined"  # (webhook)
    PARTICIPANT_LEFT = "participant.left"  # (webhook) reason: leave, disconnect, timeout, kicked
    CALL_STATE = "call.state"  # (webhook) a call changed state
    RECORDING_STARTED = "recording.started"
    RECORDING_FINISHED = "recording.finished"  # (webhook)
    FILE_DONE = "file.done"  # (webhook) a file transfer completed
    REFUSED = "refused"  # a request refused with an error code
    CONNECTED = "connected"  # a connection opened a session or resumed one
    CONNECT_REFUSED = "connect.refused"
    DISCONNECTED = "disconnected"


WEBHOOK_KINDS = frozenset({Seen.ROOM_STARTED, Seen.ROOM_FINISHED, Seen.PARTICIPANT_JOINED,
                           Seen.PARTICIPANT_LEFT, Seen.CALL_STATE, Seen.RECORDING_FINISHED,
                           Seen.FILE_DONE})


@dataclass(frozen=True, slots=True)
class Observation:
    kind: Seen
    at: float  # Unix seconds
    data: dict[str, Any]


Watcher = Callable[[Observation], None]
# (room, sender, to, body): a relayed signal's normalized body, never to be kept or logged.
SignalWatcher = Callable[[str, str, str, dict[str, Any]], None]


class Observers:
    def __init__(self) -> None:
        self._watchers: list[Watcher] = []
        self._signal_watchers: list[SignalWatcher] = []
        # Called with every relayed signal: `(room, sender, to, body)`.
        self.signal: SignalWatcher = _nobody

    def subscribe(self, watcher: Watcher) -> None:
        self._watchers.append(watcher)

    @property
    def watched(self) -> bool:
        """Whether anyone watches (to skip reads made only to tell them)."""
        return bool(self._watchers)

    def subscribe_signals(self, watcher: SignalWatcher) -> None:
        """Signals are most of what a node relays: they get a lean channel of their own
        (no observation built, and a single watcher is called directly), for watchers
        that count rather than record each, and never raise."""
        self._signal_watchers.append(watcher)
        watchers = list(self._signal_watchers)
        if len(watchers) == 1:
            self.signal = watcher
            return

        def each(room: str, sender: str, to: str, body: dict[str, Any]) -> None:
            for one in watchers:
                one(room, sender, to, body)

        self.signal = each

    def emit(self, kind: Seen, /, **data: Any) -> None:
        if not self._watchers:
            return
        seen = Observation(kind, time.time(), data)
        for watcher in self._watchers:
            try:
                watcher(seen)
            except Exception:
                log.exception("watcher %r failed on %s", watcher, kind)


def _nobody(room: str, sender: str, to: str, body: dict[str, Any]) -> None:
    return None
