"""Room events to this node's connections: each gets every event of its rooms once, in
seq order, except the ones its own requests caused (those it learns from its acks).

Every connection in a room has a cursor: the last seq it was given. An event right
after the cursor is sent; an older one is a duplicate and dropped; a newer one means
the connection missed some (the event feed was interrupted, or the connection joined
while events were on their way), and the gap is filled from the room's log first.
Cursors move before the send is awaited, so concurrent deliveries never repeat one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .errors import RtcError
from .ids import ConnectionId, ParticipantId, RoomId
from .protocol import ServerEvent
from .store import RoomEvent
from .transport import Message

log = logging.getLogger(__name__)

# An event is encoded once, however many connections it goes to; sending queues it.
Encode = Callable[[ServerEvent, dict[str, Any]], Message]
Send = Callable[[ConnectionId, Message], None]
Fetch = Callable[[RoomId, int], Awaitable[list[RoomEvent] | None]]
Lost = Callable[[ConnectionId, RoomId], Awaitable[None]]


@dataclass(slots=True)
class _Cursor:
    participant: ParticipantId
    seq: int


class Fanout:
    def __init__(self, encode: Encode, send: Send, fetch: Fetch, lost: Lost) -> None:
        self._encode = encode
        self._send_packet = send
        self._fetch = fetch
        self._lost = lost
        self._rooms: dict[RoomId, dict[ConnectionId, _Cursor]] = {}
        # The highest seq heard of each room with connections here.
        self._heard: dict[RoomId, int] = {}

    async def attach(self, room: RoomId, conn: ConnectionId, participant: ParticipantId,
                     seq: int) -> None:
        """Follow `room` on `conn` from after `seq`, sending what it missed since."""
        self._rooms.setdefault(room, {})[conn] = _Cursor(participant, seq)
        if self._heard.get(room, 0) > seq:
            await self.catch_up(room, conn)

    def detach(self, room: RoomId, conn: ConnectionId) -> None:
        cursors = self._rooms.get(room)
        if cursors is not None:
            cursors.pop(conn, None)
            if not cursors:
                del self._rooms[room]
                self._heard.pop(room, None)

    def detach_all(self, conn: ConnectionId) -> None:
        for room in [r for r, cursors in self._rooms.items() if conn in cursors]:
            self.detach(room, conn)

    async def deliver(self, event: RoomEvent) -> None:
        cursors = self._rooms.get(event.room)
        if cursors is None:
            return
        if event.seq > self._heard.get(event.room, 0):
            self._heard[event.room] = event.seq
        packet: Message | None = None
        seq, actor = event.seq, event.actor
        behind: list[ConnectionId] = []
        for conn, cursor in cursors.items():
            if seq == cursor.seq + 1:
                cursor.seq = seq
                if actor != cursor.participant:
                    if packet is None:
                        packet = self._encode(event.name, event.payload)
                    self._send_packet(conn, packet)
            elif seq > cursor.seq:
                behind.append(conn)
        for conn in behind:  # after the loop: catching up waits, and cursors may change
            await self.catch_up(event.room, conn)
        if event.name is ServerEvent.PARTICIPANT_LEFT:
            self._removed(event)

    async def catch_up(self, room: RoomId, conn: ConnectionId) -> None:
        cursor = self._rooms.get(room, {}).get(conn)
        if cursor is None:
            return
        try:
            events = await self._fetch(room, cursor.seq)
        except RtcError as exc:
            log.warning("cannot catch %s up on %s now: %s", conn, room, exc.message)
            return
        if events is None:
            log.warning("%s missed events of %s that the log no longer has", conn, room)
            self.detach(room, conn)
            await self._lost(conn, room)
            return
        for event in events:
            if event.seq == cursor.seq + 1:
                await self._send(conn, cursor, event)

    async def resync(self) -> None:
        """Events may have been missed: catch every connection up from the logs."""
        for room, cursors in list(self._rooms.items()):
            for conn in list(cursors):
                await self.catch_up(room, conn)

    async def _send(self, conn: ConnectionId, cursor: _Cursor, event: RoomEvent) -> None:
        cursor.seq = event.seq
        if event.actor != cursor.participant:
            self._send_packet(conn, self._encode(event.name, event.payload))
        if event.name is ServerEvent.PARTICIPANT_LEFT:
            self._removed(event)

    def _removed(self, event: RoomEvent) -> None:
        """A participant that did not leave by itself (kicked, timed out) was told so:
        its connection stops following the room."""
        cursors = self._rooms.get(event.room, {})
        for conn, cursor in list(cursors.items()):
            if cursor.participant == event.payload.get("id"):
                self.detach(event.room, conn)
