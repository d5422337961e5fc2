"""Calls between users: ringing every device, answers, and the call's state machine.

Transport-free: every change returns the notices to deliver (an event for every
device of some users); the edge turns users into connections. A call is a document
in the store, with each user's current accepted call beside it (for `busy`), so
every node sees the same calls; the ring timeout is a store timer.
"""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .auth import Identity
from .errors import BadRequest, Conflict, Forbidden, NotFound
from .ids import CallId, RoomId, SessionId, UserId
from .protocol import ServerEvent
from .store import Store, Tx

log = logging.getLogger(__name__)


class CallState(StrEnum):
    RINGING = "ringing"
    ACCEPTED = "accepted"
    ANSWERED_ELSEWHERE = "answered_elsewhere"
    DECLINED = "declined"
    BUSY = "busy"
    CANCELLED = "cancelled"
    MISSED = "missed"
    ENDED = "ended"


# Finished calls stay this long, so acting on one is a `conflict`, not `not_found`.
FINISHED_KEEP = 3600.0
RING = "ring:"
FINAL = frozenset({CallState.DECLINED, CallState.BUSY, CallState.CANCELLED, CallState.MISSED,
                   CallState.ENDED})


@dataclass(frozen=True, slots=True)
class Notice:
    """Send `event`/`payload` to every device of `users` but those in `skip`, and to `devices`."""

    event: ServerEvent
    payload: dict[str, Any]
    users: tuple[UserId, ...] = ()
    skip: frozenset[SessionId] = frozenset()
    devices: tuple[SessionId, ...] = ()


@dataclass(eq=False)
class Call:
    id: CallId
    caller: UserId
    caller_name: str
    callees: tuple[UserId, ...]
    media: dict[str, bool]
    room: RoomId
    state: CallState = CallState.RINGING
    # Each callee's own answer: accepted, declined, busy or missed.
    answers: dict[UserId, CallState] = field(default_factory=dict)
    # Users currently in the accepted call.
    active: set[UserId] = field(default_factory=set)

    @property
    def parties(self) -> tuple[UserId, ...]:
        return (self.caller, *self.callees)

    @property
    def final(self) -> bool:
        return self.state in FINAL

    def incoming(self) -> dict[str, Any]:
        return {"callId": self.id, "from": {"user": self.caller, "name": self.caller_name},
                "media": dict(self.media), "room": self.room}

    def state_payload(self, state: CallState, by: UserId | None = None,
                      device: SessionId | None = None, reason: str | None = None) -> dict[str, Any]:
        payload: dict[str, Any] = {"callId": self.id, "state": state.value}
        if by is not None:
            payload["by"] = by
        if device is not None:
            payload["device"] = device
        if reason is not None:
            payload["reason"] = reason
        return payload

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "caller": self.caller, "callerName": self.caller_name,
                "callees": list(self.callees), "media": self.media, "room": self.room,
                "state": self.state.value, "answers": {u: a.value for u, a in self.answers.items()},
                "active": sorted(self.active)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Call:
        return cls(id=d["id"], caller=d["caller"], caller_name=d["callerName"],
                   callees=tuple(d["callees"]), media=d["media"], room=d["room"],
                   state=CallState(d["state"]),
                   answers={u: CallState(a) for u, a in d["answers"].items()},
                   active=set(d["active"]))


@dataclass(slots=True)
class InCall:
    """The accepted call a user is in (for `busy`)."""

    call: CallId

    def to_dict(self) -> dict[str, Any]:
        return {"call": self.call}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> InCall:
        return cls(call=d["call"])


def _call_key(call_id: CallId) -> str:
    return "call:" + call_id


def _in_call_key(user: UserId) -> str:
    return "in-call:" + user


def _user_calls_key(user: UserId) -> str:
    return "user-calls:" + user


def _room_calls_key(room: RoomId) -> str:
    return "room-calls:" + room


class CallService:
    """Every call, in the store. A ringing call that nobody answers in time is missed."""

    def __init__(self, store: Store, ring_timeout: float, max_callees: int,
                 on_timeout: Callable[[list[Notice]], Awaitable[None]]) -> None:
        self._store = store
        self._ring_timeout = ring_timeout
        self._max_callees = max_callees
        self._on_timeout = on_timeout
        store.on_timer(RING, self._time_out)

    async def invite(self, caller: Identity, to: list[UserId], media: dict[str, bool],
                     room: RoomId | None) -> tuple[Call, list[Notice]]:
        callees = tuple(dict.fromkeys(to))
        if not callees or len(callees) > self._max_callees:
            raise BadRequest(f"a call has 1-{self._max_callees} callees")
        if caller.user in callees:
            raise BadRequest("a caller cannot call themselves")
        if room is not None and not caller.grants.allows_room(room):
            raise Forbidden(f"token does not grant room {room!r}")
        call_id = CallId("C" + secrets.token_hex(8))

        def invite(tx: Tx) -> tuple[Call, list[Notice]]:
            call = Call(id=call_id, caller=caller.user, caller_name=caller.name,
                        callees=callees, media=media, room=room or RoomId(f"call-{call_id}"))
            for callee in callees:
                if tx.get(_in_call_key(callee), InCall) is not None:
                    call.answers[callee] = CallState.BUSY
            if len(call.answers) == len(callees):
                call.state = CallState.BUSY
                return call, [Notice(ServerEvent.CALL_STATE, call.state_payload(CallState.BUSY),
                                     users=(caller.user,))]
            tx.put(_call_key(call_id), call)
            for user in call.parties:
                tx.add(_user_calls_key(user), call_id)
            tx.add(_room_calls_key(call.room), call_id)
            tx.schedule(RING + call_id, self._ring_timeout)
            ringing = tuple(u for u in callees if u not in call.answers)
            return call, [
                Notice(ServerEvent.CALL_INCOMING, call.incoming(), users=ringing),
                Notice(ServerEvent.CALL_STATE, call.state_payload(CallState.RINGING),
                       users=(caller.user, *ringing)),
            ]

        return await self._store.transact([_in_call_key(u) for u in callees], invite)

    async def accept(self, who: UserId, device: SessionId, call_id: CallId) -> list[Notice]:
        def accept(tx: Tx) -> list[Notice]:
            call = self._callee_call(tx, who, call_id)
            if call.state not in (CallState.RINGING, CallState.ACCEPTED) or who in call.answers:
                raise Conflict(f"call is {call.state.value}; {who} cannot accept it")
            if tx.get(_in_call_key(who), InCall) is not None:
                raise Conflict("already in another call")
            call.answers[who] = CallState.ACCEPTED
            for user in (call.caller, who):
                call.active.add(user)
                tx.put(_in_call_key(user), InCall(call.id))
            call.state = CallState.ACCEPTED
            if not _still_ringing(call):
                tx.cancel(RING + call.id)
            tx.put(_call_key(call.id), call)
            accepted = call.state_payload(CallState.ACCEPTED, by=who, device=device)
            return [
                Notice(ServerEvent.CALL_STATE, accepted,
                       users=tuple(u for u in call.parties if u != who), devices=(device,)),
                Notice(ServerEvent.CALL_STATE,
                       call.state_payload(CallState.ANSWERED_ELSEWHERE, by=who, device=device),
                       users=(who,), skip=frozenset({device})),
            ]

        return await self._transact(call_id, accept)

    async def decline(self, who: UserId, device: SessionId, call_id: CallId,
                      reason: str | None) -> list[Notice]:
        def decline(tx: Tx) -> list[Notice]:
            call = self._callee_call(tx, who, call_id)
            if call.state not in (CallState.RINGING, CallState.ACCEPTED) or who in call.answers:
                raise Conflict(f"call is {call.state.value}; {who} cannot decline it")
            call.answers[who] = CallState.DECLINED
            declined = call.state_payload(CallState.DECLINED, by=who, device=device,
                                          reason=reason)
            if call.state is CallState.RINGING and not _still_ringing(call):
                return _finish(tx, call, CallState.DECLINED, declined)
            tx.put(_call_key(call.id), call)
            # A group call goes on for the others: tell the decliner's devices and the caller.
            return [Notice(ServerEvent.CALL_STATE, declined, users=(who, call.caller))]

        return await self._transact(call_id, decline)

    async def cancel(self, who: UserId, device: SessionId, call_id: CallId) -> list[Notice]:
        def cancel(tx: Tx) -> list[Notice]:
            call = self._party_call(tx, who, call_id)
            if who != call.caller or call.state is not CallState.RINGING:
                raise Conflict(f"call is {call.state.value}; only its caller cancels while ringing")
            return _finish(tx, call, CallState.CANCELLED,
                           call.state_payload(CallState.CANCELLED, by=who, device=device))

        return await self._transact(call_id, cancel)

    async def hangup(self, who: UserId, device: SessionId, call_id: CallId) -> list[Notice]:
        def hangup(tx: Tx) -> list[Notice]:
            call = self._party_call(tx, who, call_id)
            if call.state is not CallState.ACCEPTED or who not in call.active:
                raise Conflict(f"call is {call.state.value}; {who} is not in it")
            call.active.discard(who)
            _leave_call(tx, call, who)
            ended = call.state_payload(CallState.ENDED, by=who, device=device)
            if len(call.active) < 2:
                return _finish(tx, call, CallState.ENDED, ended)
            tx.put(_call_key(call.id), call)
            return [Notice(ServerEvent.CALL_STATE, ended, users=(who,))]

        return await self._transact(call_id, hangup)

    async def user_gone(self, user: UserId) -> list[Notice]:
        """The user's last device went away: end what they started or were in.

        Without this an accepted call would keep them `busy` for good. Calls still
        ringing for them are left to time out, as a phone would.
        """
        notices: list[Notice] = []
        for call_id in sorted(await self._store.members(_user_calls_key(user))):
            notices += await self._transact(CallId(call_id), functools.partial(
                _gone, call_id=CallId(call_id), user=user))
        return notices

    async def room_of_party(self, user: UserId, room: RoomId) -> bool:
        """Whether `user` is a party of a live call whose media goes through `room`."""
        ids = sorted(await self._store.members(_room_calls_key(room)))
        calls = await self._store.get_many([_call_key(CallId(i)) for i in ids], Call)
        return any(c is not None and not c.final and user in c.parties for c in calls)

    async def get(self, call_id: CallId) -> Call | None:
        return await self._store.get(_call_key(call_id), Call)

    # -- internals --------------------------------------------------------------------

    async def _transact(self, call_id: CallId, fn: Callable[[Tx], list[Notice]]) -> list[Notice]:
        """Run `fn` over the call and the in-call marks of its parties."""
        call = await self.get(call_id)
        parties = call.parties if call is not None else ()
        return await self._store.transact(
            [_call_key(call_id), *(_in_call_key(u) for u in parties)], fn)

    @staticmethod
    def _party_call(tx: Tx, who: UserId, call_id: CallId) -> Call:
        call = tx.get(_call_key(call_id), Call)
        if call is None or who not in call.parties:
            raise NotFound(f"no call {call_id!r} of yours")
        if call.final:
            raise Conflict(f"call is {call.state.value}")
        return call

    def _callee_call(self, tx: Tx, who: UserId, call_id: CallId) -> Call:
        call = self._party_call(tx, who, call_id)
        if who not in call.callees:
            raise Conflict("the caller cannot answer their own call")
        return call

    async def _time_out(self, call_id: str) -> None:
        notices = await self._transact(CallId(call_id), lambda tx: _time_out(tx, CallId(call_id)))
        if notices:
            log.info("call %s: ring timeout", call_id)
            await self._on_timeout(notices)


def _still_ringing(call: Call) -> bool:
    return any(u not in call.answers for u in call.callees)


def _leave_call(tx: Tx, call: Call, user: UserId) -> None:
    mark = tx.get(_in_call_key(user), InCall)
    if mark is not None and mark.call == call.id:
        tx.delete(_in_call_key(user))


def _finish(tx: Tx, call: Call, state: CallState, payload: dict[str, Any]) -> list[Notice]:
    call.state = state
    tx.cancel(RING + call.id)
    for user in call.active:
        _leave_call(tx, call, user)
    call.active.clear()
    tx.put(_call_key(call.id), call, ttl=FINISHED_KEEP)
    for user in call.parties:
        tx.discard(_user_calls_key(user), call.id)
    tx.discard(_room_calls_key(call.room), call.id)
    return [Notice(ServerEvent.CALL_STATE, payload, users=call.parties)]


def _gone(tx: Tx, call_id: CallId, user: UserId) -> list[Notice]:
    call = tx.get(_call_key(call_id), Call)
    if call is None or call.final:
        return []
    if call.state is CallState.RINGING and user == call.caller:
        return _finish(tx, call, CallState.CANCELLED, call.state_payload(
            CallState.CANCELLED, by=user, reason="caller gone"))
    if call.state is CallState.ACCEPTED and user in call.active:
        call.active.discard(user)
        _leave_call(tx, call, user)
        if len(call.active) < 2:
            return _finish(tx, call, CallState.ENDED, call.state_payload(
                CallState.ENDED, by=user, reason="left"))
        tx.put(_call_key(call.id), call)
    return []


def _time_out(tx: Tx, call_id: CallId) -> list[Notice]:
    call = tx.get(_call_key(call_id), Call)
    if call is None or call.final:
        return []
    unanswered = tuple(u for u in call.callees if u not in call.answers)
    for user in unanswered:
        call.answers[user] = CallState.MISSED
    missed = call.state_payload(CallState.MISSED, reason="no answer")
    if call.state is CallState.RINGING:
        return _finish(tx, call, CallState.MISSED, missed)
    # an accepted group call: only the ones still ringing stop
    tx.put(_call_key(call.id), call)
    return [Notice(ServerEvent.CALL_STATE, missed, users=unanswered)]
