"""Rooms and their participants: membership, presence, seq, the replay log, signal routing.

The service is transport-free: participants belong to sessions (opaque ids) and
every change returns the room event it produced, already in wire shape. A room is
one document in the store; each change assigns the next seq in the transaction that
records the event, so seq order is commit order on every node, and the store keeps
each room's recent events for replay.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from .auth import Identity
from .errors import Conflict, Forbidden, NotFound, RoomFull
from .ids import ParticipantId, RoomId, SessionId, UserId
from .protocol import STATE_KEYS, ConnectionState, LeaveReason, ServerEvent
from .store import RoomEvent, Store, Tx

__all__ = ["Joined", "Participant", "Room", "RoomEvent", "RoomService"]


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

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "user": self.user, "name": self.name, "room": self.room,
                "session": self.session, "meta": self.meta, "state": self.state,
                "connection": self.connection.value, "hidden": self.hidden}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Participant:
        return cls(id=d["id"], user=d["user"], name=d["name"], room=d["room"],
                   session=d["session"], meta=d["meta"], state=d["state"],
                   connection=ConnectionState(d["connection"]), hidden=d["hidden"])


@dataclass(slots=True)
class Room:
    id: RoomId
    seq: int = 0
    participants: dict[ParticipantId, Participant] = field(default_factory=dict)
    hidden: dict[ParticipantId, Participant] = field(default_factory=dict)

    def record(self, tx: Tx, name: ServerEvent, payload: dict[str, Any],
               actor: ParticipantId | None = None) -> RoomEvent:
        self.seq += 1
        event = RoomEvent(self.id, self.seq, name, {"room": self.id, "seq": self.seq, **payload},
                          actor)
        tx.record(event)
        return event

    def of_session(self, session: SessionId) -> Participant | None:
        for members in (self.participants, self.hidden):
            for p in members.values():
                if p.session == session:
                    return p
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "seq": self.seq,
                "participants": [p.to_dict() for p in self.participants.values()],
                "hidden": [p.to_dict() for p in self.hidden.values()]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Room:
        participants = [Participant.from_dict(p) for p in d["participants"]]
        hidden = [Participant.from_dict(p) for p in d["hidden"]]
        return cls(id=d["id"], seq=d["seq"], participants={p.id: p for p in participants},
                   hidden={p.id: p for p in hidden})


@dataclass(slots=True)
class Memberships:
    """The rooms a session is in, and its participant in each."""

    rooms: dict[RoomId, ParticipantId] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"rooms": self.rooms}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Memberships:
        return cls(rooms=d["rooms"])


@dataclass(frozen=True, slots=True)
class Joined:
    participant: Participant
    others: list[Participant]
    # None for a hidden participant: nobody is told.
    event: RoomEvent | None
    seq: int
    # This join brought the room into being.
    started: bool = False


@dataclass(frozen=True, slots=True)
class Left:
    participant: Participant
    # None for a hidden participant: nobody is told.
    event: RoomEvent | None
    # The room is gone: this was its last participant.
    finished: bool


# The names of all rooms (for operators: the admin API lists them).
ROOMS = "rooms"


def _room_key(room: RoomId) -> str:
    return "room:" + room


def _members_key(session: SessionId) -> str:
    return "members:" + session


class RoomService:
    """All rooms, kept in the store."""

    def __init__(self, store: Store, max_participants: int) -> None:
        self._store = store
        self._max = max_participants

    async def join(
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
        pid = _new_participant_id()

        def join(tx: Tx) -> Joined:
            mine = tx.get(_members_key(session), Memberships) or Memberships()
            if room_id in mine.rooms:
                raise Conflict(f"already in room {room_id!r} in this session")
            room = tx.get(_room_key(room_id), Room)
            started = room is None
            if room is None:
                room = Room(room_id)
                tx.add(ROOMS, room_id)
            elif not hidden and len(room.participants) >= self._max:
                raise RoomFull(f"room {room_id!r} has {self._max} participants")
            me = Participant(id=pid, user=who.user, name=name or who.name, room=room_id,
                             session=session, meta=meta, hidden=hidden)
            others = list(room.participants.values())
            mine.rooms[room_id] = me.id
            tx.put(_members_key(session), mine)
            if hidden:
                room.hidden[me.id] = me
                tx.put(_room_key(room_id), room)
                return Joined(participant=me, others=others, event=None, seq=room.seq,
                              started=started)
            room.participants[me.id] = me
            event = room.record(tx, ServerEvent.PARTICIPANT_JOINED,
                                {"participant": me.public(), "polite": False}, actor=me.id)
            tx.put(_room_key(room_id), room)
            return Joined(participant=me, others=others, event=event, seq=event.seq,
                          started=started)

        return await self._store.transact([_members_key(session), _room_key(room_id)], join)

    async def leave(self, session: SessionId, room_id: RoomId, reason: LeaveReason) -> Left:
        """Remove the session's participant."""

        def leave(tx: Tx) -> Left:
            mine = tx.get(_members_key(session), Memberships)
            pid = mine.rooms.pop(room_id, None) if mine is not None else None
            room = tx.get(_room_key(room_id), Room)
            if pid is None or room is None:
                raise NotFound(f"not in room {room_id!r}")
            assert mine is not None
            if mine.rooms:
                tx.put(_members_key(session), mine)
            else:
                tx.delete(_members_key(session))
            event = None
            me = room.hidden.pop(pid, None)
            if me is None:
                me = room.participants.pop(pid)
                event = room.record(tx, ServerEvent.PARTICIPANT_LEFT,
                                    {"id": me.id, "reason": reason.value},
                                    actor=me.id if reason is LeaveReason.LEAVE else None)
            if room.participants or room.hidden:
                tx.put(_room_key(room_id), room)
                return Left(me, event, finished=False)
            tx.delete(_room_key(room_id))
            tx.discard(ROOMS, room_id)
            tx.drop_log(room_id)
            return Left(me, event, finished=True)

        return await self._store.transact([_members_key(session), _room_key(room_id)], leave)

    async def update(self, session: SessionId, room_id: RoomId,
                     state: dict[str, bool]) -> RoomEvent:
        def update(tx: Tx) -> RoomEvent:
            room = self._room_in(tx, room_id)
            me = _member_of(room, session, room_id)
            if me.hidden:
                raise Forbidden("a hidden participant has no presence")
            me.state.update(state)
            event = room.record(tx, ServerEvent.PARTICIPANT_UPDATED,
                                {"participant": me.public()}, actor=me.id)
            tx.put(_room_key(room_id), room)
            return event

        return await self._store.transact([_room_key(room_id)], update)

    async def set_connection(self, session: SessionId, room_id: RoomId,
                             connection: ConnectionState) -> RoomEvent | None:
        """Mark a session's participant connected or reconnecting; None when unchanged
        (or when it is no longer there)."""

        def mark(tx: Tx) -> RoomEvent | None:
            room = tx.get(_room_key(room_id), Room)
            me = room.of_session(session) if room is not None else None
            if room is None or me is None or me.connection is connection or me.hidden:
                return None
            me.connection = connection
            event = room.record(tx, ServerEvent.PARTICIPANT_UPDATED, {"participant": me.public()})
            tx.put(_room_key(room_id), room)
            return event

        return await self._store.transact([_room_key(room_id)], mark)

    async def announce(self, room_id: RoomId, name: ServerEvent, payload: dict[str, Any],
                       actor: ParticipantId | None = None) -> RoomEvent:
        """Record a room event that is not about membership (e.g. `recording:state`)."""

        def announce(tx: Tx) -> RoomEvent:
            room = self._room_in(tx, room_id)
            event = room.record(tx, name, payload, actor)
            tx.put(_room_key(room_id), room)
            return event

        return await self._store.transact([_room_key(room_id)], announce)

    async def visible(self, room_id: RoomId) -> int:
        """How many participants (hidden ones aside) a room has; 0 when it does not exist."""
        room = await self.room(room_id)
        return len(room.participants) if room is not None else 0

    async def member(self, session: SessionId, room_id: RoomId) -> Participant:
        room = await self.room(room_id)
        if room is None:
            raise NotFound(f"not in room {room_id!r}")
        return _member_of(room, session, room_id)

    async def memberships(self, session: SessionId) -> dict[RoomId, ParticipantId]:
        mine = await self._store.get(_members_key(session), Memberships)
        return dict(mine.rooms) if mine is not None else {}

    async def route(self, session: SessionId, room_id: RoomId,
                    to: ParticipantId) -> tuple[Participant, Participant]:
        """Return (sender, target) for a signal; unknown and foreign targets look the same."""
        return _route(await self.room(room_id), session, room_id, to)

    def route_now(self, session: SessionId, room_id: RoomId,
                  to: ParticipantId) -> tuple[Participant, Participant]:
        """`route`, without waiting: only with a store that has its rooms at hand."""
        return _route(self._store.get_now(_room_key(room_id), Room), session, room_id, to)

    async def replay(self, room_id: RoomId, after: int,
                     me: ParticipantId) -> list[RoomEvent]:
        """Events of a room after seq `after` that `me` would have been sent; Conflict
        when the log no longer reaches back that far."""
        room = await self.room(room_id)
        if room is None or after >= room.seq:
            return []
        events = await self._store.events(room_id, after)
        if events is None:
            raise Conflict(f"room {room_id!r} no longer has events after seq {after}")
        return [e for e in events if e.actor != me]

    async def seq(self, room_id: RoomId) -> int:
        room = await self.room(room_id)
        return room.seq if room is not None else 0

    async def room(self, room_id: RoomId) -> Room | None:
        return await self._store.get(_room_key(room_id), Room)

    async def many(self, names: list[RoomId]) -> list[Room | None]:
        return await self._store.get_many([_room_key(r) for r in names], Room)

    async def names(self) -> list[RoomId]:
        return sorted(RoomId(r) for r in await self._store.members(ROOMS))

    @staticmethod
    def _room_in(tx: Tx, room_id: RoomId) -> Room:
        room = tx.get(_room_key(room_id), Room)
        if room is None:
            raise NotFound(f"no room {room_id!r}")
        return room


def _route(room: Room | None, session: SessionId, room_id: RoomId,
           to: ParticipantId) -> tuple[Participant, Participant]:
    if room is None:
        raise NotFound(f"not in room {room_id!r}")
    me = _member_of(room, session, room_id)
    target = room.participants.get(to) or room.hidden.get(to)
    if target is None or target.id == me.id:
        raise NotFound(f"no participant {to!r} in room {room_id!r}")
    return me, target


def _member_of(room: Room, session: SessionId, room_id: RoomId) -> Participant:
    me = room.of_session(session)
    if me is None:
        raise NotFound(f"not in room {room_id!r}")
    return me
