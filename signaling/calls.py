"""Calls between users: ringing every device, answers, and the call's state machine.

Transport-free: every change returns the notices to deliver (an event for every
device of some users); the edge turns users into connections.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .auth import Identity
from .errors import BadRequest, Conflict, Forbidden, NotFound
from .ids import CallId, RoomId, SessionId, UserId
from .protocol import ServerEvent

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


FINISHED_KEPT = 4096
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
    timer: asyncio.TimerHandle | None = None

    @property
    def parties(self) -> tuple[UserId, ...]:
        return (self.caller, *self.callees)

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


class CallService:
    """Every call of one node. A ringing call that nobody answers in time is missed."""

    def __init__(self, ring_timeout: float, max_callees: int,
                 on_timeout: Callable[[list[Notice]], None]) -> None:
        self._ring_timeout = ring_timeout
        self._max_callees = max_callees
        self._on_timeout = on_timeout
        self._calls: dict[CallId, Call] = {}
        # Recently finished calls, so acting on one is a `conflict`, not `not_found`.
        self._finished: OrderedDict[CallId, tuple[CallState, frozenset[UserId]]] = OrderedDict()
        # user -> the accepted call they are in (for `busy`)
        self._in_call: dict[UserId, CallId] = {}

    def invite(self, caller: Identity, to: list[UserId], media: dict[str, bool],
               room: RoomId | None) -> tuple[Call, list[Notice]]:
        callees = tuple(dict.fromkeys(to))
        if not callees or len(callees) > self._max_callees:
            raise BadRequest(f"a call has 1-{self._max_callees} callees")
        if caller.user in callees:
            raise BadRequest("a caller cannot call themselves")
        if room is not None and not caller.grants.allows_room(room):
            raise Forbidden(f"token does not grant room {room!r}")
        call_id = CallId("C" + secrets.token_hex(8))
        call = Call(id=call_id, caller=caller.user, caller_name=caller.name, callees=callees,
                    media=media, room=room or RoomId(f"call-{call_id}"))
        for callee in callees:
            if callee in self._in_call:
                call.answers[callee] = CallState.BUSY
        if len(call.answers) == len(callees):
            call.state = CallState.BUSY
            return call, [Notice(ServerEvent.CALL_STATE, call.state_payload(CallState.BUSY),
                                 users=(caller.user,))]
        self._calls[call_id] = call
        call.timer = asyncio.get_running_loop().call_later(
            self._ring_timeout, self._time_out, call)
        ringing = tuple(u for u in callees if u not in call.answers)
        return call, [
            Notice(ServerEvent.CALL_INCOMING, call.incoming(), users=ringing),
            Notice(ServerEvent.CALL_STATE, call.state_payload(CallState.RINGING),
                   users=(caller.user, *ringing)),
        ]

    def accept(self, who: UserId, device: SessionId, call_id: CallId) -> list[Notice]:
        call = self._callee_call(who, call_id)
        if call.state not in (CallState.RINGING, CallState.ACCEPTED) or who in call.answers:
            raise Conflict(f"call is {call.state.value}; {who} cannot accept it")
        if who in self._in_call:
            raise Conflict("already in another call")
        call.answers[who] = CallState.ACCEPTED
        for user in (call.caller, who):
            call.active.add(user)
            self._in_call[user] = call.id
        call.state = CallState.ACCEPTED
        if not self._still_ringing(call):
            self._stop_timer(call)
        accepted = call.state_payload(CallState.ACCEPTED, by=who, device=device)
        return [
            Notice(ServerEvent.CALL_STATE, accepted,
                   users=tuple(u for u in call.parties if u != who), devices=(device,)),
            Notice(ServerEvent.CALL_STATE,
                   call.state_payload(CallState.ANSWERED_ELSEWHERE, by=who, device=device),
                   users=(who,), skip=frozenset({device})),
        ]

    def decline(self, who: UserId, device: SessionId, call_id: CallId,
                reason: str | None) -> list[Notice]:
        call = self._callee_call(who, call_id)
        if call.state not in (CallState.RINGING, CallState.ACCEPTED) or who in call.answers:
            raise Conflict(f"call is {call.state.value}; {who} cannot decline it")
        call.answers[who] = CallState.DECLINED
        declined = call.state_payload(CallState.DECLINED, by=who, device=device, reason=reason)
        if call.state is CallState.RINGING and not self._still_ringing(call):
            return self._finish(call, CallState.DECLINED, declined)
        # A group call goes on for the others: tell the decliner's devices and the caller.
        return [Notice(ServerEvent.CALL_STATE, declined, users=(who, call.caller))]

    def cancel(self, who: UserId, device: SessionId, call_id: CallId) -> list[Notice]:
        call = self._party_call(who, call_id)
        if who != call.caller or call.state is not CallState.RINGING:
            raise Conflict(f"call is {call.state.value}; only its caller cancels while ringing")
        return self._finish(call, CallState.CANCELLED,
                            call.state_payload(CallState.CANCELLED, by=who, device=device))

    def hangup(self, who: UserId, device: SessionId, call_id: CallId) -> list[Notice]:
        call = self._party_call(who, call_id)
        if call.state is not CallState.ACCEPTED or who not in call.active:
            raise Conflict(f"call is {call.state.value}; {who} is not in it")
        call.active.discard(who)
        self._in_call.pop(who, None)
        ended = call.state_payload(CallState.ENDED, by=who, device=device)
        if len(call.active) < 2:
            return self._finish(call, CallState.ENDED, ended)
        return [Notice(ServerEvent.CALL_STATE, ended, users=(who,))]

    def user_gone(self, user: UserId) -> list[Notice]:
        """The user's last device went away: end what they started or were in.

        Without this an accepted call would keep them `busy` for good. Calls still
        ringing for them are left to time out, as a phone would.
        """
        notices: list[Notice] = []
        for call in list(self._calls.values()):
            if call.state is CallState.RINGING and user == call.caller:
                notices += self._finish(call, CallState.CANCELLED, call.state_payload(
                    CallState.CANCELLED, by=user, reason="caller gone"))
            elif call.state is CallState.ACCEPTED and user in call.active:
                call.active.discard(user)
                self._in_call.pop(user, None)
                if len(call.active) < 2:
                    notices += self._finish(call, CallState.ENDED, call.state_payload(
                        CallState.ENDED, by=user, reason="left"))
        return notices

    def room_of_party(self, user: UserId, room: RoomId) -> bool:
        """Whether `user` is a party of a live call whose media goes through `room`."""
        return any(c.room == room and user in c.parties for c in self._calls.values())

    def get(self, call_id: CallId) -> Call | None:
        return self._calls.get(call_id)

    def close(self) -> None:
        for call in self._calls.values():
            self._stop_timer(call)

    # -- internals --------------------------------------------------------------------

    def _party_call(self, who: UserId, call_id: CallId) -> Call:
        call = self._calls.get(call_id)
        if call is None and call_id in self._finished:
            state, parties = self._finished[call_id]
            if who in parties:
                raise Conflict(f"call is {state.value}")
        if call is None or who not in call.parties:
            raise NotFound(f"no call {call_id!r} of yours")
        return call

    def _callee_call(self, who: UserId, call_id: CallId) -> Call:
        call = self._party_call(who, call_id)
        if who not in call.callees:
            raise Conflict("the caller cannot answer their own call")
        return call

    @staticmethod
    def _still_ringing(call: Call) -> bool:
        return any(u not in call.answers for u in call.callees)

    def _finish(self, call: Call, state: CallState, payload: dict[str, Any]) -> list[Notice]:
        call.state = state
        self._stop_timer(call)
        self._calls.pop(call.id, None)
        self._finished[call.id] = (state, frozenset(call.parties))
        if len(self._finished) > FINISHED_KEPT:
            self._finished.popitem(last=False)
        for user in call.active:
            if self._in_call.get(user) == call.id:
                del self._in_call[user]
        call.active.clear()
        return [Notice(ServerEvent.CALL_STATE, payload, users=call.parties)]

    @staticmethod
    def _stop_timer(call: Call) -> None:
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None

    def _time_out(self, call: Call) -> None:
        call.timer = None
        unanswered = tuple(u for u in call.callees if u not in call.answers)
        for user in unanswered:
            call.answers[user] = CallState.MISSED
        missed = call.state_payload(CallState.MISSED, reason="no answer")
        if call.state is CallState.RINGING:
            notices = self._finish(call, CallState.MISSED, missed)
        else:  # an accepted group call: only the ones still ringing stop
            notices = [Notice(ServerEvent.CALL_STATE, missed, users=unanswered)]
        log.info("call %s: ring timeout (%s)", call.id, ", ".join(unanswered))
        self._on_timeout(notices)
