"""Rooms and their participants: membership, presence state, seq, and signal routing.

The service is transport-free: connections are opaque ConnectionIds and every
method returns what happened so the edge can deliver it. Each mutation assigns
its room seq without awaiting, so seq order is the order of the calls.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .auth import Identity
from .errors import Conflict, Forbidden, NotFound, RoomFull
from .ids import ConnectionId, ParticipantId, RoomId, UserId
from .protocol import STATE_KEYS, LeaveReason


def _new_participant_id() -> ParticipantId:
    return ParticipantId("P" + secrets.token_hex(8))


@dataclass(slots=True)
class Participant:
    id: ParticipantId
    user: UserId
    name: str
    room: RoomId
    connection: ConnectionId
    meta: dict[str, Any] | None = None
    state: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(STATE_KEYS, False))

    def public(self) -> dict[str, Any]:
        """The participant as other clients see it."""
        return {"id": self.id, "user": self.user, "name": self.name, "state": dict(self.state)}


@dataclass(slots=True)
class Room:
    id: RoomId
    seq: int = 0
    participants: dict[ParticipantId, Participant] = field(default_factory=dict)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


@dataclass(frozen=True, slots=True)
class Joined:
    participant: Participant
    others: list[Participant]
    seq: int


@dataclass(frozen=True, slots=True)
class Left:
    participant: Participant
    seq: int
    reason: LeaveReason


@dataclass(frozen=True, slots=True)
class Updated:
    participant: Participant
    seq: int


class RoomService:
    """All rooms of one node, kept in memory."""

    def __init__(self, max_participants: int) -> None:
        self._max = max_participants
        self._rooms: dict[RoomId, Room] = {}
        # connection -> its participants, one per room it joined
        self._members: dict[ConnectionId, dict[RoomId, Participant]] = {}

    def join(
        self,
        conn: ConnectionId,
        who: Identity,
        room_id: RoomId,
        name: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> Joined:
        if not who.grants.allows_room(room_id):
            raise Forbidden(f"token does not grant room {room_id!r}")
        if room_id in self._members.get(conn, ()):
            raise Conflict(f"already in room {room_id!r} on this connection")
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = Room(room_id)
        elif len(room.participants) >= self._max:
            raise RoomFull(f"room {room_id!r} has {self._max} participants")
        me = Participant(
            id=_new_participant_id(), user=who.user, name=name or who.name,
            room=room_id, connection=conn, meta=meta,
        )
        others = list(room.participants.values())
        room.participants[me.id] = me
        self._members.setdefault(conn, {})[room_id] = me
        return Joined(participant=me, others=others, seq=room.next_seq())

    def leave(self, conn: ConnectionId, room_id: RoomId, reason: LeaveReason) -> Left:
        mine = self._members.get(conn, {})
        me = mine.pop(room_id, None)
        if me is None:
            raise NotFound(f"not in room {room_id!r}")
        if not mine:
            self._members.pop(conn, None)
        room = self._rooms[room_id]
        del room.participants[me.id]
        left = Left(participant=me, seq=room.next_seq(), reason=reason)
        if not room.participants:
            del self._rooms[room_id]
        return left

    def joined_rooms(self, conn: ConnectionId) -> list[RoomId]:
        return list(self._members.get(conn, ()))

    def update(self, conn: ConnectionId, room_id: RoomId, state: dict[str, bool]) -> Updated:
        me = self.member(conn, room_id)
        me.state.update(state)
        return Updated(participant=me, seq=self._rooms[room_id].next_seq())

    def member(self, conn: ConnectionId, room_id: RoomId) -> Participant:
        me = self._members.get(conn, {}).get(room_id)
        if me is None:
            raise NotFound(f"not in room {room_id!r}")
        return me

    def route(self, conn: ConnectionId, room_id: RoomId, to: ParticipantId) -> tuple[Participant,
                                                                                    Participant]:
        """Return (sender, target) for a signal; unknown and foreign targets look the same."""
        me = self.member(conn, room_id)
        target = self._rooms[room_id].participants.get(to)
        if target is None or target.id == me.id:
            raise NotFound(f"no participant {to!r} in room {room_id!r}")
        return me, target

    def rooms(self) -> Iterator[Room]:
        return iter(self._rooms.values())

    def room(self, room_id: RoomId) -> Room | None:
        return self._rooms.get(room_id)
