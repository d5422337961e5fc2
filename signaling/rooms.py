"""Rooms and their participants: membership, presence, seq, the replay log, signal routing.

The service is transport-free: participants belong to sessions (opaque ids) and
every change returns the room event it produced, already in wire shape, so the
edge only delivers it. Each mutation assigns its seq without awaiting, so seq
order is the order of the calls; each room keeps its last events for replay.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .auth import Identity
from .errors import Conflict, Forbidden, NotFound, RoomFull
from .ids import ParticipantId, RoomId, SessionId, UserId
from .protocol import STATE_KEYS, ConnectionState, LeaveReason, ServerEvent


def _new_participant_id() -> ParticipantId:
    return ParticipantId("P" + secrets.token_hex(8))


@dataclass(slots=True)
class Participant:
    id: ParticipantId
    user: UserId
    name: str
    room: RoomId
    session: SessionId
    meta: dict[str, Any] | None = None
    state: dict[str, bool] = field(default_factory=lambda: dict.fromkeys(STATE_KEYS, False))
    connection: ConnectionState = ConnectionState.CONNECTED
    # A media worker: reachable by signal, but never listed, announced or counted.
    hidden: bool = False

    def public(self) -> dict[str, Any]:
        """The participant as other clients see it."""
        return {"id": self.id, "user": self.user, "name": self.name, "state": dict(self.state),
                "connection": self.connection.value}


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """One room event as sent on the wire, and who caused it by a request (not sent to them)."""

    room: RoomId
    seq: int
    name: ServerEvent
    payload: dict[str, Any]
    actor: ParticipantId | None = None


@dataclass(slots=True)
class Room:
    id: RoomId
    log_size: int
    seq: int = 0
    participants: dict[ParticipantId, Participant] = field(default_factory=dict)
    hidden: dict[ParticipantId, Participant] = field(default_factory=dict)
    log: deque[RoomEvent] = field(init=False)

    def __post_init__(self) -> None:
        self.log = deque(maxlen=self.log_size)

    def record(self, name: ServerEvent, payload: dict[str, Any],
               actor: ParticipantId | None = None) -> RoomEvent:
        self.seq += 1
        event = RoomEvent(self.id, self.seq, name, {"room": self.id, "seq": self.seq, **payload},
                          actor)
        self.log.append(event)
        return event

    def since(self, seq: int) -> list[RoomEvent]:
        """Events after `seq`; Conflict when the log no longer reaches back that far."""
        if seq >= self.seq:
            return []
        if not self.log or self.log[0].seq > seq + 1:
            raise Conflict(f"room {self.id!r} no longer has events after seq {seq}")
        return [e for e in self.log if e.seq > seq]


@dataclass(frozen=True, slots=True)
class Joined:
    participant: Participant
    others: list[Participant]
    # None for a hidden participant: nobody is told.
    event: RoomEvent | None
    seq: int


class RoomService:
    """All rooms of one node, kept in memory."""

    def __init__(self, max_participants: int, log_size: int = 1024) -> None:
        self._max = max_participants
        self._log_size = log_size
        self._rooms: dict[RoomId, Room] = {}
        # session -> its participants, one per room it joined
        self._members: dict[SessionId, dict[RoomId, Participant]] = {}

    def join(
        self,
        session: SessionId,
        who: Identity,
        room_id: RoomId,
        name: str | None = None,
        meta: dict[str, Any] | None = None,
        *,
        granted: bool = False,
        hidden: bool = False,
    ) -> Joined:
        """Add a participant; `granted` admits it whatever its token's room grants (a call).

        A `hidden` participant (grant `service`: a media worker) gets no event and is
        left out of every participant list and of the room's size.
        """
        if hidden and not who.grants.service:
            raise Forbidden("only a service token may join hidden")
        if not granted and not who.grants.allows_room(room_id):
            raise Forbidden(f"token does not grant room {room_id!r}")
        if room_id in self._members.get(session, ()):
            raise Conflict(f"already in room {room_id!r} in this session")
        room = self._rooms.get(room_id)
        if room is None:
            room = self._rooms[room_id] = Room(room_id, self._log_size)
        elif not hidden and len(room.participants) >= self._max:
            raise RoomFull(f"room {room_id!r} has {self._max} participants")
        me = Participant(
            id=_new_participant_id(), user=who.user, name=name or who.name,
            room=room_id, session=session, meta=meta, hidden=hidden,
        )
        others = list(room.participants.values())
        self._members.setdefault(session, {})[room_id] = me
        if hidden:
            room.hidden[me.id] = me
            return Joined(participant=me, others=others, event=None, seq=room.seq)
        room.participants[me.id] = me
        event = room.record(ServerEvent.PARTICIPANT_JOINED,
                            {"participant": me.public(), "polite": False}, actor=me.id)
        return Joined(participant=me, others=others, event=event, seq=event.seq)

    def leave(self, session: SessionId, room_id: RoomId,
              reason: LeaveReason) -> tuple[Participant, RoomEvent | None]:
        """Remove the session's participant; the event is None for a hidden one."""
        mine = self._members.get(session, {})
        me = mine.pop(room_id, None)
        if me is None:
            raise NotFound(f"not in room {room_id!r}")
        if not mine:
            self._members.pop(session, None)
        room = self._rooms[room_id]
        event = None
        if me.hidden:
            del room.hidden[me.id]
        else:
            del room.participants[me.id]
            event = room.record(ServerEvent.PARTICIPANT_LEFT,
                                {"id": me.id, "reason": reason.value},
                                actor=me.id if reason is LeaveReason.LEAVE else None)
        if not room.participants and not room.hidden:
            del self._rooms[room_id]
        return me, event

    def update(self, session: SessionId, room_id: RoomId, state: dict[str, bool]) -> RoomEvent:
        me = self.member(session, room_id)
        if me.hidden:
            raise Forbidden("a hidden participant has no presence")
        me.state.update(state)
        return self._rooms[room_id].record(
            ServerEvent.PARTICIPANT_UPDATED, {"participant": me.public()}, actor=me.id)

    def set_connection(self, session: SessionId, room_id: RoomId,
                       connection: ConnectionState) -> RoomEvent | None:
        """Mark a session's participant connected or reconnecting; None when unchanged."""
        me = self.member(session, room_id)
        if me.connection is connection or me.hidden:
            return None
        me.connection = connection
        return self._rooms[room_id].record(ServerEvent.PARTICIPANT_UPDATED,
                                           {"participant": me.public()})

    def announce(self, room_id: RoomId, name: ServerEvent, payload: dict[str, Any],
                 actor: ParticipantId | None = None) -> RoomEvent:
        """Record a room event that is not about membership (e.g. `recording:state`)."""
        room = self._rooms.get(room_id)
        if room is None:
            raise NotFound(f"no room {room_id!r}")
        return room.record(name, payload, actor)

    def visible(self, room_id: RoomId) -> int:
        """How many participants (hidden ones aside) a room has; 0 when it does not exist."""
        room = self._rooms.get(room_id)
        return len(room.participants) if room is not None else 0

    def member(self, session: SessionId, room_id: RoomId) -> Participant:
        me = self._members.get(session, {}).get(room_id)
        if me is None:
            raise NotFound(f"not in room {room_id!r}")
        return me

    def memberships(self, session: SessionId) -> dict[RoomId, Participant]:
        return dict(self._members.get(session, {}))

    def route(self, session: SessionId, room_id: RoomId,
              to: ParticipantId) -> tuple[Participant, Participant]:
        """Return (sender, target) for a signal; unknown and foreign targets look the same."""
        me = self.member(session, room_id)
        room = self._rooms[room_id]
        target = room.participants.get(to) or room.hidden.get(to)
        if target is None or target.id == me.id:
            raise NotFound(f"no participant {to!r} in room {room_id!r}")
        return me, target

    def replay(self, room_id: RoomId, after: int, me: ParticipantId) -> list[RoomEvent]:
        """Events of a room after seq `after` that `me` would have been sent."""
        return [e for e in self._rooms[room_id].since(after) if e.actor != me]

    def seq(self, room_id: RoomId) -> int:
        return self._rooms[room_id].seq

    def room(self, room_id: RoomId) -> Room | None:
        return self._rooms.get(room_id)
