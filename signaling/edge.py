"""The Socket.IO edge: authenticate connects, validate events, call the services, deliver, ack.

Nothing here decides anything: rules live in `rooms`, `sessions` and `calls`,
payload shapes in `protocol`. Each handler turns an RtcError into a coded ack
and a log line, so a client's bad input never reaches another client.

Room events are not emitted here: the store hands every committed one to the
`Fanout`, on every node, which sends each connection its rooms' events once and in
seq order (tests/test_signaling.py and tests/test_cluster.py check it). Everything
else goes to a session's current connection, on whichever node holds it, through
python-socketio's client manager (`AsyncRedisManager` when there are several nodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, NoReturn

import socketio

from . import logs
from .audit import Audit
from .auth import Identity, verify_token
from .calls import CallService, Notice
from .candidates import is_private, without_private
from .caps import UserCaps
from .clientaddr import client_address, parse_networks
from .coalesce import Coalescer
from .config import Config
from .deadlines import Deadlines
from .errors import (
    BadRequest,
    ErrorCode,
    Forbidden,
    NotFound,
    RateLimited,
    RtcError,
    Unavailable,
)
from .fanout import Fanout
from .fastjson import event_utf8
from .files import FileService, Transfer, TransferState
from .ice import ice_servers
from .ids import CallId, ConnectionId, ParticipantId, RoomId, SessionId
from .observe import Observers, Seen
from .protocol import (
    ClientEvent,
    ConnectionState,
    LeaveReason,
    ServerEvent,
    error,
    ok,
    parse_call,
    parse_decline,
    parse_file_cancel,
    parse_file_done,
    parse_file_id,
    parse_file_offer,
    parse_file_progress,
    parse_invite,
    parse_join,
    parse_leave,
    parse_ping,
    parse_room_only,
    parse_signal,
    parse_update,
    split_cid,
)
from .push import PushHook
from .ratelimit import AddressLimiter, ConnectionLimiter, limits_of
from .rooms import Left, Participant, RoomService
from .sdp import sends_media
from .sessions import Session, SessionService, node_key
from .sioserver import SignalingServer
from .stats import Stats
from .store import Store, Tx
from .transport import Message

log = logging.getLogger(__name__)

Ack = dict[str, Any]
Handler = Callable[[Session, object], Awaitable[Ack]]
_SIGNAL: str = ClientEvent.SIGNAL.value
# Told of every participant that leaves (hidden ones included), after it is gone.
LeftListener = Callable[[Participant, LeaveReason], Awaitable[None]]
# Told of every visible participant that joined, before its join is acked.
JoinedListener = Callable[[Session, Participant], Awaitable[None]]
# Told of every session that is over, after it left its rooms.
EndedListener = Callable[[Session], Awaitable[None]]
# Adds fields to every join ack: the room's state kept elsewhere.
JoinFields = Callable[[RoomId], Awaitable[Ack]]
REASON = socketio.AsyncServer.reason
FILE_STATE_INTERVAL = 0.1  # at most 10 file:state per second per transfer


def _watchers_key(room: RoomId) -> str:
    return "file-watchers:" + room


def _watching_key(session: SessionId) -> str:
    return "file-watching:" + session


@dataclass(slots=True)
class _Connection:
    """What the edge keeps of each of this node's connections."""

    address: str
    limiter: ConnectionLimiter
    # Which of the connection's tokens its deadlines are for (a refresh starts the next).
    token: int = 0


class SignalingEdge:
    """Registers the protocol's handlers on a python-socketio AsyncServer."""

    def __init__(self, sio: SignalingServer, config: Config, store: Store, node: str,
                 push: PushHook) -> None:
        assert config.secret is not None
        self._sio = sio
        self._loop: asyncio.AbstractEventLoop | None = None  # known from the first connect
        self._config = config
        self._secret = config.secret
        self._store = store
        self._rooms = RoomService(store, config.room_max_participants)
        self._push = push
        self.sessions = SessionService(store, node, config.resume_grace, config.dedup_window,
                                       self._expired)
        self.calls = CallService(store, config.call_ring_timeout, config.call_max_callees,
                                 self._deliver)
        self.files = FileService(store, config.file_max_bytes, keep=config.file_ttl)
        self._caps = UserCaps(store, self.sessions, self._rooms,
                              config.max_connections_per_user, config.max_rooms_per_user)
        self._fanout = Fanout(self._encode, self._send_packet, store.events, self._lost)
        store.on_event(self._fanout.deliver)
        store.on_resync(self._resynced)
        self._file_states = Coalescer(FILE_STATE_INTERVAL, self._send_file_state, self._spawn)
        self._draining = False
        self._all_gone: asyncio.Event | None = None  # set when draining and the last one left
        # This node's connections of media workers (a drain does not wait for them).
        self._services: set[ConnectionId] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._limits = limits_of(config)
        self._proxies = parse_networks(config.trusted_proxies)
        self._conns: dict[str, _Connection] = {}  # this node's, by connection id
        self._token_deadlines: Deadlines[tuple[str, int, float, bool]] = Deadlines(
            self._token_deadline)
        self._connects = AddressLimiter(self._limits.connect, time.monotonic)
        self._failures = AddressLimiter(self._limits.failures, time.monotonic)
        self.audit = Audit(config.audit_log)
        self.observers = Observers()
        self.stats = Stats()
        self._left_listeners: list[LeftListener] = []
        self._ended_listeners: list[EndedListener] = []
        self._join_extras: list[JoinFields] = []
        self._joined_listeners: list[JoinedListener] = []
        handlers: dict[ClientEvent, Handler] = {
            ClientEvent.ROOM_JOIN: self._join,
            ClientEvent.ROOM_LEAVE: self._leave,
            ClientEvent.SIGNAL: self._signal,
            ClientEvent.PARTICIPANT_UPDATE: self._update,
            ClientEvent.PING: self._ping,
            ClientEvent.SESSION_END: self._end,
            ClientEvent.AUTH_REFRESH: self._refresh,
            ClientEvent.CALL_INVITE: self._invite,
            ClientEvent.CALL_ACCEPT: self._accept,
            ClientEvent.CALL_DECLINE: self._decline,
            ClientEvent.CALL_CANCEL: self._cancel,
            ClientEvent.CALL_HANGUP: self._hangup,
            ClientEvent.FILE_OFFER: self._file_offer,
            ClientEvent.FILE_ACCEPT: self._file_accept,
            ClientEvent.FILE_REJECT: self._file_reject,
            ClientEvent.FILE_PROGRESS: self._file_progress,
            ClientEvent.FILE_DONE: self._file_done,
            ClientEvent.FILE_CANCEL: self._file_cancel,
            ClientEvent.FILE_SUBSCRIBE: self._file_subscribe,
            ClientEvent.FILE_UNSUBSCRIBE: self._file_unsubscribe,
        }
        sio.on("connect", self._connect)
        sio.on("disconnect", self._disconnect)
        for event, handler in handlers.items():
            self.handle(event, handler)
        sio.on("*", self._unknown)
        if store.at_hand:
            sio.on_now(_SIGNAL, self._signal_now)

    def handle(self, event: ClientEvent, handler: Handler) -> None:
        """Serve `event` with `handler`, with the same dedup, validation and coded acks."""
        self._sio.on(event.value, self._guarded(event.value, handler))

    def on_participant_left(self, listener: LeftListener) -> None:
        self._left_listeners.append(listener)

    def on_session_ended(self, listener: EndedListener) -> None:
        self._ended_listeners.append(listener)

    def on_participant_joined(self, listener: JoinedListener) -> None:
        self._joined_listeners.append(listener)

    def add_to_join_ack(self, fields: JoinFields) -> None:
        """Add `await fields(room)` to every `room:join` ack (the room's state kept elsewhere)."""
        self._join_extras.append(fields)

    async def send(self, session_id: SessionId, event: ServerEvent, payload: Ack) -> bool:
        """Emit to a session's current connection, on any node; False when it has none."""
        session = await self.sessions.get(session_id)
        if session is None or session.connection is None:
            return False
        await self._emit(session.connection, event, payload)
        return True

    async def _emit(self, conn: ConnectionId, event: ServerEvent, payload: Ack) -> None:
        """Emit to a connection: straight to it when it is this node's, else through the
        client manager to the node that has it, encoded here once."""
        if self.sessions.local(conn) is not None:
            self._emit_local(conn, event, payload)
        else:
            await self._sio.post_remote(conn, self._encode(event, payload))

    def _emit_local(self, conn: ConnectionId, event: ServerEvent, payload: Ack) -> None:
        # Not sio.emit: its manager starts a task per recipient and waits on them all,
        # which for one recipient was a fifth of the cost of a relayed message.
        self._send_packet(conn, self._encode(event, payload))

    def _encode(self, event: ServerEvent, payload: Ack) -> Message:
        """A Socket.IO event packet, encoded once for every connection it goes to."""
        # The name as a plain str: an Enum's `value` and hash are Python code, per message.
        name: str = event._value_
        out = self.stats.events_out
        out[name] = out.get(name, 0) + 1
        return Message.of_utf8(event_utf8(name, payload))

    def _send_packet(self, conn: ConnectionId, packet: Message) -> None:
        """Queue an encoded packet for one of this node's connections."""
        eio_sid = self._sio.manager.eio_sid_from_sid(conn, "/")
        if eio_sid is not None:
            self._sio.post(eio_sid, packet)

    async def _lost(self, conn: ConnectionId, room: RoomId) -> None:
        """The connection missed room events that are gone from the log: drop it, so its
        client resumes, learns the history is gone (`conflict`) and joins afresh."""
        await self._sio.disconnect(conn)

    @property
    def store(self) -> Store:
        return self._store

    @property
    def draining(self) -> bool:
        return self._draining

    @property
    def sio(self) -> socketio.AsyncServer:
        return self._sio

    @property
    def rooms(self) -> RoomService:
        return self._rooms

    def connections(self) -> list[ConnectionId]:
        return self.sessions.connections()

    def _user_connections(self) -> list[ConnectionId]:
        """Connections a drain waits for: not media workers, which serve until the end."""
        return [c for c in self.sessions.connections() if c not in self._services]

    # -- connect, resume, disconnect -----------------------------------------------------

    async def _connect(self, sid: str, environ: dict[str, Any], auth: object = None) -> None:
        self._loop = asyncio.get_running_loop()
        logs.connection(sid, self._loop)
        conn = ConnectionId(sid)
        address = client_address(environ.get("REMOTE_ADDR"), environ.get("HTTP_X_FORWARDED_FOR"),
                                 self._proxies)
        try:
            if self._draining:
                raise Unavailable("this node is draining; connect to another one")
            self._connects.check(address)
            self._failures.require(address)
            if auth is None:
                auth = {}
            if not isinstance(auth, dict):
                raise BadRequest("auth must be an object")
            who = verify_token(self._secret, auth.get("token"))
            self._conns[sid] = _Connection(address, ConnectionLimiter(self._limits))
            if auth.get("session") is None:
                await self._caps.check_connect(who)
                session = await self.sessions.open(conn, who)
                if who.grants.service:
                    self._services.add(conn)
                self._spawn(self._make_room(session))
                self._spawn(self._welcome(conn, session, None))
                self._watch_expiry(sid, who)
                log.info("connect sid=%s user=%s session=%s", sid, who.user, session.id)
                self.observers.emit(Seen.CONNECTED, user=who.user, session=session.id,
                                    resumed=False)
                return
            last_seq = _last_seq(auth.get("lastSeq"))
            claimed = await self.sessions.claim(who, auth.get("session"), auth.get("resume"))
            for room, me in (await self._rooms.memberships(claimed.id)).items():
                # Refuse now, while the session is untouched, if history is gone.
                if room in last_seq:
                    await self._rooms.replay(room, last_seq[room], me)
            session, replaced = await self.sessions.reattach(claimed, who, conn)
        except RtcError as exc:
            self._forget(sid)
            failed = exc.code in (ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN)
            if failed:  # a bad token or resume token: counted against the address
                self._failures.spend(address)
            self.audit.record("auth_failed" if failed else "connect_refused", ip=address,
                              reason=exc.code.value)
            self.observers.emit(Seen.CONNECT_REFUSED, code=exc.code.value,
                                resuming=isinstance(auth, dict) and auth.get("session") is not None)
            self._refuse(sid, exc, address)
        if who.grants.service:
            self._services.add(conn)
        if replaced is not None:  # the old transport was not noticed dead yet
            self._spawn(self._sio.disconnect(replaced))
        self._spawn(self._welcome(conn, session, last_seq))
        self._watch_expiry(sid, who)
        log.info("resume sid=%s user=%s session=%s", sid, who.user, session.id)
        self.observers.emit(Seen.CONNECTED, user=who.user, session=session.id, resumed=True)

    @staticmethod
    def _refuse(sid: str, exc: RtcError, address: str) -> NoReturn:
        log.info("connect refused sid=%s peer=%s code=%s: %s",
                 sid, address, exc.code, exc.message)
        raise socketio.exceptions.ConnectionRefusedError(exc.message, exc.to_wire())

    async def _welcome(self, conn: ConnectionId, session: Session,
                       last_seq: dict[str, int] | None) -> None:
        """After the connect: the `session` event, then (on resume) replay and held signals."""
        try:
            memberships = await self._rooms.memberships(session.id)
            seqs = {r: await self._rooms.seq(r) for r in memberships}
            self._emit_local(conn, ServerEvent.SESSION, {
                "session": session.id, "resume": session.resume_token,
                "resumed": last_seq is not None,
                "rooms": [{"room": r, "id": p, "seq": seqs[r]} for r, p in memberships.items()],
            })
            if last_seq is None:
                return
            for room, me in memberships.items():
                # From the client's cursor: what it missed is replayed, then events follow.
                await self._fanout.attach(room, conn, me, last_seq.get(room, seqs[room]))
                await self._fanout.catch_up(room, conn)
            for room in memberships:
                await self._rooms.set_connection(session.id, room, ConnectionState.CONNECTED)
            for signal in await self.sessions.take_held(session.id, conn):
                self._emit_local(conn, ServerEvent.SIGNAL, signal)
        except RtcError as exc:
            # The store failed under us: the client resumes again once it is back.
            log.warning("welcome of %s failed: %s; dropping the connection", conn, exc.message)
            await self._sio.disconnect(conn)

    async def _disconnect(self, sid: str, reason: object = None) -> None:
        logs.connection(sid)
        conn = ConnectionId(sid)
        self._forget(sid)
        self._fanout.detach_all(conn)
        self._services.discard(conn)
        try:
            session = await self.sessions.by_connection(conn)
            if reason == REASON.CLIENT_DISCONNECT or (session is not None
                                                      and session.ends_with_transport):
                session = await self.sessions.end(conn)
                if session is not None:
                    await self._leave_all(session, LeaveReason.DISCONNECT)
            else:
                session = await self.sessions.detach(conn)
                if session is not None:
                    await self._reconnecting(session)
        except RtcError as exc:
            # The store is down: the session's timer or a node sweep settles it later.
            log.warning("disconnect sid=%s not recorded: %s", sid, exc.message)
        log.info("disconnect sid=%s reason=%s", sid, reason)
        self.observers.emit(Seen.DISCONNECTED, reason=str(reason))
        if self._all_gone is not None and not self._user_connections():
            self._all_gone.set()

    async def _reconnecting(self, session: Session) -> None:
        for room in await self._rooms.memberships(session.id):
            await self._rooms.set_connection(session.id, room, ConnectionState.RECONNECTING)

    async def node_lost(self, node: str) -> None:
        """A node stopped its heartbeat: its sessions lost their transports."""
        log.warning("node %s is gone%s: detaching its sessions", node,
                    " (this node: the store lost track of it)" if node == self.sessions.node
                    else "")
        for session in await self.sessions.detach_node(node):
            if session.ends_with_transport:
                ended = await self.sessions.forget(session.id)
                if ended is not None:
                    await self._leave_all(ended, LeaveReason.DISCONNECT)
            else:
                await self._reconnecting(session)
        if node == self.sessions.node:
            await self._reconcile()

    async def _resynced(self) -> None:
        """The store's event feed was interrupted: settle what happened meanwhile."""
        await self._reconcile()
        await self._fanout.resync()

    async def _reconcile(self) -> None:
        """Make the store and this node's connections agree again after an outage:
        sessions the store thinks are here but whose transport went are detached, and
        connections whose session was detached meanwhile are dropped, so their clients
        resume (on any node) and catch up."""
        local = set(self.sessions.connections())
        for session_id in await self._store.members(node_key(self.sessions.node)):
            session = await self.sessions.get(SessionId(session_id))
            if session is not None and session.connection not in local:
                if await self.sessions.detach_stale(session.id) is not None:
                    await self._reconnecting(session)
        for conn in local:
            if await self.sessions.by_connection(conn) is None:
                log.info("dropping %s: its session was detached while the store was away", conn)
                await self._sio.disconnect(conn)

    async def _make_room(self, opened: Session) -> None:
        """End the user's sessions in grace that `opened` took past its cap."""
        try:
            for waiting in await self._caps.surplus(opened):
                ended = await self.sessions.forget(waiting.id)
                if ended is not None:
                    log.info("session %s of %s ended: its user is at the connection cap",
                             ended.id, ended.user)
                    await self._leave_all(ended, LeaveReason.TIMEOUT)
        except RtcError as exc:  # the store failed: the cap is exceeded until grace ends
            log.warning("ending sessions past the cap of %s failed: %s", opened.user, exc.message)

    async def _expired(self, session: Session) -> None:
        log.info("session %s of %s expired", session.id, session.user)
        await self._leave_all(session, LeaveReason.TIMEOUT)

    async def _leave_all(self, session: Session, reason: LeaveReason) -> None:
        """The session is over: leave its rooms, and its user's calls if it was the last device."""
        for room in await self._rooms.memberships(session.id):
            try:
                left = await self._rooms.leave(session.id, room, reason)
            except NotFound:
                continue  # left meanwhile, on another node
            await self._left(left, reason)
        watching = await self._store.members(_watching_key(session.id))
        if watching:
            await self._store.transact([], lambda tx: _unwatch(tx, session.id, watching))
        if not await self.sessions.of_user(session.user):
            await self._deliver(await self.calls.user_gone(session.user))
        for listener in self._ended_listeners:
            try:
                await listener(session)
            except Exception:
                log.exception("session-ended listener failed for %s", session.id)

    # -- dispatch ----------------------------------------------------------------------

    def _guarded(self, event: str, handler: Handler) -> Callable[..., Awaitable[Ack]]:
        counts = self.stats.events_in
        async def handle(sid: str, *args: Any) -> Ack:
            counts[event] = counts.get(event, 0) + 1
            logs.connection(sid, self._loop)  # python-socketio runs most events in tasks
            try:
                session = self.sessions.attached(ConnectionId(sid))
                if session is None:  # an event racing its own disconnect
                    raise BadRequest("not connected")
                self._limit(sid, event)
                if len(args) > 1 or (not args and event not in _NO_PAYLOAD):
                    raise BadRequest("expected exactly one payload argument")
                cid, data = split_cid(args[0] if args else None)
            except RtcError as exc:
                return self._error(event, sid, exc)
            if cid is None:
                return await self._act(event, sid, handler, session, data)
            ack = await self.sessions.dedup(session.id).run(
                cid, lambda: self._act(event, sid, handler, session, data))
            if self.sessions.local(ConnectionId(sid)) is None:
                # The transport went while this ran: the ack is lost, a retry may come
                # to another node.
                with contextlib.suppress(RtcError):
                    await self.sessions.save_acks(session.id)
            return ack

        return handle

    async def _act(self, event: str, sid: str, handler: Handler, session: Session,
                   data: object) -> Ack:
        try:
            return await handler(session, data)
        except RtcError as exc:
            return self._error(event, sid, exc, data)
        except Exception:
            log.exception("internal error handling %s sid=%s", event, sid)
            return error(ErrorCode.INTERNAL, "internal error")

    def _forget(self, sid: str) -> None:
        self._conns.pop(sid, None)

    def _limit(self, sid: str, event: str) -> None:
        state = self._conns.get(sid)
        if state is None:
            return
        limiter, now = state.limiter, time.monotonic()
        try:
            limiter.check(event, now)
        except RateLimited:
            if limiter.strike(now):
                log.warning("dropping sid=%s: over its rate limits %d times in %g s",
                            sid, self._limits.strikes, self._limits.strike_window)
                self.audit.record("rate_limit_disconnect", **self._who(sid),
                                  reason=f"more than {self._limits.strikes} refused events")
                self._spawn(self._sio.disconnect(sid))
            raise

    def _who(self, sid: str) -> dict[str, str | None]:
        """A connection's user and address, for the audit log."""
        session = self.sessions.attached(ConnectionId(sid))
        state = self._conns.get(sid)
        return {"user": session.user if session is not None else None,
                "ip": state.address if state is not None else None}

    def _error(self, event: str, sid: str, exc: RtcError, data: object = None) -> Ack:
        log.info("refused %s sid=%s code=%s: %s", event, sid, exc.code, exc.message)
        room = data.get("room") if isinstance(data, dict) else None
        self.observers.emit(Seen.REFUSED, request=event, code=exc.code.value,
                            room=room if isinstance(room, str) and len(room) <= 128 else None)
        if exc.code is ErrorCode.FORBIDDEN:
            self.audit.record("grant_refused", **self._who(sid), request=event,
                              reason=exc.message)
        return {"ok": False, "error": exc.to_wire()}

    async def _unknown(self, event: str, sid: str, *args: Any) -> Ack:
        counts = self.stats.events_in
        counts["unknown"] = counts.get("unknown", 0) + 1
        logs.connection(sid)
        try:
            self._limit(sid, "")  # counts as "other": a flood of nonsense is one too
        except RateLimited as exc:
            return self._error("unknown", sid, exc)
        log.info("unknown event %.64r sid=%s", event, sid)
        return error(ErrorCode.BAD_REQUEST, f"unknown event {event[:64]!r}")

    # -- rooms ------------------------------------------------------------------------

    async def _join(self, session: Session, data: object) -> Ack:
        if self._draining:
            raise Unavailable("this node is draining")
        req = parse_join(data, self._config.max_meta_bytes)
        who = session.identity
        await self._caps.check_join(session, req.room)
        granted = (not who.grants.allows_room(req.room)
                   and await self.calls.room_of_party(who.user, req.room))
        joined = await self._rooms.join(
            session.id, who, req.room, req.name, req.meta, granted=granted, hidden=req.hidden,
        )
        me = joined.participant
        assert session.connection is not None
        # Events after the join's own seq follow; any already on their way are caught up.
        await self._fanout.attach(req.room, session.connection, me.id, joined.seq)
        log.info("join room=%s participant=%s user=%s seq=%d%s",
                 req.room, me.id, me.user, joined.seq, " hidden" if me.hidden else "")
        if joined.started:
            self.observers.emit(Seen.ROOM_STARTED, room=req.room)
        if not me.hidden:
            self.observers.emit(Seen.PARTICIPANT_JOINED, room=req.room, participant=me.id,
                                user=me.user, name=me.name)
        if not me.hidden:
            for listener in self._joined_listeners:
                try:
                    await listener(session, me)
                except Exception:
                    log.exception("participant-joined listener failed for %s", me.id)
        state = self._conns.get(session.connection) if session.connection else None
        self.audit.record("join", user=who.user, room=req.room, participant=me.id,
                          ip=state.address if state is not None else None,
                          hidden=me.hidden or None)
        return ok(
            room=req.room,
            seq=joined.seq,
            self={"id": me.id, "user": me.user, "name": me.name},
            participants=[{**p.public(), "polite": True} for p in joined.others],
            iceServers=ice_servers(self._config, who.user),
            **{k: v for extra in self._join_extras for k, v in (await extra(req.room)).items()},
        )

    async def _leave(self, session: Session, data: object) -> Ack:
        req = parse_leave(data)
        left = await self._rooms.leave(session.id, req.room, LeaveReason.LEAVE)
        if session.connection is not None:
            self._fanout.detach(req.room, session.connection)
        await self._left(left, LeaveReason.LEAVE)
        return ok(seq=left.event.seq if left.event is not None
                  else await self._rooms.seq(req.room))

    async def _left(self, left: Left, reason: LeaveReason) -> None:
        me = left.participant
        if not me.hidden:
            self.observers.emit(Seen.PARTICIPANT_LEFT, room=me.room, participant=me.id,
                                user=me.user, reason=reason.value)
        if left.finished:
            self.observers.emit(Seen.ROOM_FINISHED, room=me.room)
        for listener in self._left_listeners:
            try:
                await listener(me, reason)
            except Exception:
                log.exception("participant-left listener failed for %s", me.id)
        if not me.hidden:
            for transfer in await self.files.participant_left(me.id):
                await self.file_changed(transfer)

    async def remove(self, room_id: RoomId, participant: ParticipantId, reason: LeaveReason,
                     by: str) -> Participant:
        """An operator removes a participant: it and the room see `participant:left` with
        `reason` (kicked, closed), and its connection stops following the room."""
        room = await self._rooms.room(room_id)
        target = room.participants.get(participant) if room is not None else None
        if target is None:
            raise NotFound(f"no participant {participant!r} in room {room_id!r}")
        left = await self._rooms.leave(target.session, room_id, reason)
        await self._left(left, reason)
        self.audit.record("kick", user=target.user, room=room_id, participant=participant,
                          by=by, reason=reason.value)
        log.info("participant %s (%s) removed from %s by %s: %s",
                 participant, target.user, room_id, by, reason.value)
        return target

    async def _signal(self, session: Session, data: object) -> Ack:
        started = time.perf_counter()
        req = parse_signal(data, self._config.max_sdp_bytes)
        sender, target = await self._rooms.route(session.id, req.room, req.to)
        body = self._relayed_body(session, req.body)
        if body is None:
            return ok(dropped=True)  # not relayed: a private address
        await self._send_to_participant(target.session, {"room": req.room, "from": sender.id,
                                                         **body})
        return self._relayed(started, req.room, sender.id, target.id, body)

    def _signal_now(self, sid: str, *args: Any) -> Ack | None:
        """`signal` handled at once, as `_guarded` and `_signal` would, when nothing on its
        way waits or is refused: the store has its documents at hand, the signal is new
        (its `cid` unknown), valid and allowed, and its target is connected to this node.
        None otherwise, with nothing done: the usual way takes it (and logs what it
        refuses).

        The usual way is a stack of coroutines (dispatch, guard, dedup, handler, store
        reads, emit) made and unwound for every message; every microsecond a relay takes
        shows several times over in its latency under load (bench/README.md).
        """
        session = self.sessions.attached(ConnectionId(sid))
        state = self._conns.get(sid)
        if session is None or state is None or len(args) != 1:
            return None
        try:
            cid, data = split_cid(args[0])
        except RtcError:
            return None
        if cid is None:
            return self._relay_now(session, state, data)
        return self.sessions.dedup(session.id).run_now(
            cid, lambda: self._relay_now(session, state, data))

    def _relay_now(self, session: Session, state: _Connection, data: object) -> Ack | None:
        started = time.perf_counter()
        try:
            req = parse_signal(data, self._config.max_sdp_bytes)
            sender, target = self._rooms.route_now(session.id, req.room, req.to)
            body = self._relayed_body(session, req.body)
            to = self.sessions.get_now(target.session)
            conn = to.connection if to is not None else None
            if body is None or conn is None or self.sessions.local(conn) is None:
                return None  # dropped, held for a detached target, or on another node
            state.limiter.check(_SIGNAL, time.monotonic())
        except RtcError:
            return None
        counts = self.stats.events_in
        counts[_SIGNAL] = counts.get(_SIGNAL, 0) + 1
        try:
            self._emit_local(conn, ServerEvent.SIGNAL,
                             {"room": req.room, "from": sender.id, **body})
            return self._relayed(started, req.room, sender.id, target.id, body)
        except Exception:  # as `_act`
            log.exception("internal error handling signal")
            return error(ErrorCode.INTERNAL, "internal error")

    def _relayed_body(self, session: Session, body: dict[str, Any]) -> dict[str, Any] | None:
        """What of a signal goes to its target; None when none of it may."""
        grants = session.identity.grants
        if (not (grants.publish or grants.service) and "description" in body
                and sends_media(body["description"]["sdp"])):
            raise Forbidden("token does not grant publish: the description sends media")
        if self._config.drop_private_candidates:
            candidate, description = body.get("candidate"), body.get("description")
            if candidate is not None and is_private(candidate["candidate"]):
                return None
            if description is not None:
                body = {**body, "description": {
                    **description, "sdp": without_private(description["sdp"])}}
        return body

    def _relayed(self, started: float, room: RoomId, sender: ParticipantId,
                 target: ParticipantId, body: dict[str, Any]) -> Ack:
        self.stats.relay.observe(time.perf_counter() - started)
        self.observers.signal(room, sender, target, body)
        return ok()

    async def _send_to_participant(self, session_id: SessionId, payload: Ack) -> None:
        target = await self.sessions.get(session_id)
        conn = target.connection if target is not None else None
        if target is not None and conn is None:
            conn = await self.sessions.hold(session_id, payload)  # kept unless it came back
        if conn is not None:
            await self._emit(conn, ServerEvent.SIGNAL, payload)

    async def _update(self, session: Session, data: object) -> Ack:
        req = parse_update(data)
        event = await self._rooms.update(session.id, req.room, req.state)
        return ok(seq=event.seq)

    async def _end(self, session: Session, data: object) -> Ack:
        if data not in (None, {}):
            raise BadRequest("session:end takes no fields")
        if session.connection is not None:
            self._fanout.detach_all(session.connection)
            await self.sessions.end(session.connection)
        await self._leave_all(session, LeaveReason.DISCONNECT)
        return ok()

    # -- token expiry -----------------------------------------------------------------

    def _watch_expiry(self, sid: str, who: Identity) -> None:
        """`auth:expiring` ahead of the token's expiry, and a disconnect at it."""
        state = self._conns.get(sid)
        if state is None:  # gone while its connect was being handled
            return
        state.token += 1
        left = who.expires_at - time.time()
        self._token_deadlines.add(left - self._config.auth_expiry_notice,
                                  (sid, state.token, who.expires_at, False))
        self._token_deadlines.add(left, (sid, state.token, who.expires_at, True))

    def _token_deadline(self, due: tuple[str, int, float, bool]) -> None:
        sid, token, expires_at, expired = due
        state = self._conns.get(sid)
        if state is None or state.token != token:
            return  # gone, or refreshed since
        if expired:
            self._token_expired(sid)
        else:
            self._emit_local(ConnectionId(sid), ServerEvent.AUTH_EXPIRING,
                             {"expiresAt": int(expires_at * 1000)})

    def _token_expired(self, sid: str) -> None:
        self.audit.record("token_expired", **self._who(sid))
        self._emit_local(ConnectionId(sid), ServerEvent.AUTH_EXPIRED,
                         {"code": ErrorCode.UNAUTHORIZED.value, "message": "token expired"})
        self._spawn(self._sio.disconnect(sid))

    async def _refresh(self, session: Session, data: object) -> Ack:
        if not isinstance(data, dict) or set(data) != {"token"}:
            raise BadRequest("auth:refresh takes {token}")
        who = verify_token(self._secret, data["token"])
        if session.connection is None:
            raise NotFound("not connected")
        await self.sessions.refresh(session.connection, who)
        self._watch_expiry(session.connection, who)
        return ok(expiresAt=int(who.expires_at * 1000))

    async def _ping(self, session: Session, data: object) -> Ack:
        return ok(t=parse_ping(data), now=int(time.time() * 1000))

    # -- calls ------------------------------------------------------------------------

    async def _invite(self, session: Session, data: object) -> Ack:
        req = parse_invite(data)
        call, notices = await self.calls.invite(session.identity, req.to, req.media, req.room)
        await self._deliver(notices)
        for callee in call.callees:
            if callee not in call.answers and not await self.sessions.of_user(callee):
                self._push.ring(callee, call.incoming())
        log.info("call %s: %s invites %s (%s)", call.id, call.caller, ", ".join(call.callees),
                 call.state)
        return ok(callId=call.id, room=call.room, state=call.state.value)

    async def _accept(self, session: Session, data: object) -> Ack:
        req = parse_call(data)
        return await self._call_change(req.call_id, await self.calls.accept(
            session.user, session.id, req.call_id))

    async def _decline(self, session: Session, data: object) -> Ack:
        req = parse_decline(data)
        return await self._call_change(req.call_id, await self.calls.decline(
            session.user, session.id, req.call_id, req.reason))

    async def _cancel(self, session: Session, data: object) -> Ack:
        req = parse_call(data)
        return await self._call_change(req.call_id, await self.calls.cancel(
            session.user, session.id, req.call_id))

    async def _hangup(self, session: Session, data: object) -> Ack:
        req = parse_call(data)
        return await self._call_change(req.call_id, await self.calls.hangup(
            session.user, session.id, req.call_id))

    async def _call_change(self, call_id: str, notices: list[Notice]) -> Ack:
        await self._deliver(notices)
        log.info("call %s: %s", call_id, notices[0].payload.get("state") if notices else "-")
        return ok(state=notices[0].payload["state"]) if notices else ok()

    async def _deliver(self, notices: list[Notice]) -> None:
        if self.observers.watched:
            await self._observe_calls(notices)
        for notice in notices:
            targets: dict[SessionId, ConnectionId | None] = {}
            for device in notice.devices:
                session = await self.sessions.get(device)
                targets[device] = session.connection if session is not None else None
            for user in notice.users:
                targets.update((s.id, s.connection) for s in await self.sessions.of_user(user)
                               if s.id not in notice.skip)
            for conn in targets.values():
                if conn is not None:
                    await self._emit(conn, notice.event, notice.payload)

    async def _observe_calls(self, notices: list[Notice]) -> None:
        seen = set()
        for notice in notices:
            state = notice.payload.get("state")
            if notice.event is not ServerEvent.CALL_STATE or state == "answered_elsewhere":
                continue  # what a call's other devices are told, not a change of the call
            key = (notice.payload.get("callId"), state, notice.payload.get("by"))
            if key in seen:
                continue
            seen.add(key)
            # Who called whom, where, and whether the call is over (the platform writes
            # call history from this); calls are rare next to signals, so one read each.
            call = await self.calls.get(CallId(str(key[0])))
            about = {} if call is None else {
                "room": call.room, "caller": call.caller, "callees": list(call.callees),
                "media": dict(call.media), "final": call.final}
            self.observers.emit(Seen.CALL_STATE, call=key[0], state=state, **about,
                                **{k: notice.payload[k] for k in ("by", "reason")
                                   if k in notice.payload})

    # -- files ------------------------------------------------------------------------

    async def _file_offer(self, session: Session, data: object) -> Ack:
        req = parse_file_offer(data, self.files.max_bytes)
        if not session.identity.grants.publish:
            raise Forbidden("token does not grant publish")
        if req.to is not None:
            me, target = await self._rooms.route(session.id, req.room, req.to)
            receivers = [target]
        else:
            me = await self._rooms.member(session.id, req.room)
            room = await self._rooms.room(req.room)
            assert room is not None
            receivers = [p for p in room.participants.values() if p.id != me.id]
        transfer = await self.files.offer(req, me, receivers)
        await self.file_changed(transfer)
        return ok(transfer=transfer.wire(time.time()))

    async def _file_accept(self, session: Session, data: object) -> Ack:
        return await self._file_answer(session, data, accept=True)

    async def _file_reject(self, session: Session, data: object) -> Ack:
        return await self._file_answer(session, data, accept=False)

    async def _file_answer(self, session: Session, data: object, *, accept: bool) -> Ack:
        req = parse_file_id(data)
        party = await self._party(session, req.id)
        transfer = await self.files.answer(party, req.id, accept)
        await self.file_changed(transfer)
        return ok(transfer=transfer.wire(time.time()))

    async def _file_progress(self, session: Session, data: object) -> Ack:
        req = parse_file_progress(data)
        party = await self._party(session, req.id)
        transfer, recorded = await self.files.progress(party, req.id, req.bytes)
        await self.file_changed(transfer)
        return ok(bytes=recorded)

    async def _file_done(self, session: Session, data: object) -> Ack:
        req = parse_file_done(data)
        assert req.sha256 is not None
        party = await self._party(session, req.id)
        transfer = await self.files.done(party, req.id, req.sha256)
        await self.file_changed(transfer)
        return ok(transfer=transfer.wire(time.time()))

    async def _file_cancel(self, session: Session, data: object) -> Ack:
        req = parse_file_cancel(data)
        party = await self._party(session, req.id)
        transfer = await self.files.cancel(party, req.id, req.reason)
        await self.file_changed(transfer)
        return ok(transfer=transfer.wire(time.time()))

    async def _file_subscribe(self, session: Session, data: object) -> Ack:
        room = parse_room_only(data)
        if not session.identity.grants.allows_room(room):
            raise Forbidden(f"token does not grant room {room!r}")

        def watch(tx: Tx) -> None:
            tx.add(_watchers_key(room), session.id)
            tx.add(_watching_key(session.id), room)

        await self._store.transact([], watch)
        now = time.time()
        return ok(transfers=[t.wire(now) for t in await self.files.of_room(room)])

    async def _file_unsubscribe(self, session: Session, data: object) -> Ack:
        room = parse_room_only(data)
        await self._store.transact([], lambda tx: _unwatch(tx, session.id, {room}))
        return ok()

    async def _party(self, session: Session, transfer_id: str) -> ParticipantId:
        """This session's participant in the transfer's room (NotFound when not there)."""
        transfer = await self.files.get(transfer_id)
        return (await self._rooms.member(session.id, transfer.room)).id

    async def file_changed(self, transfer: Transfer) -> None:
        """Tell the parties and watchers, at most 10 times a second, finals at once."""
        await self._file_states.changed(transfer.id, final=transfer.final)
        if transfer.state is TransferState.DONE:
            self.observers.emit(Seen.FILE_DONE, room=transfer.room, transfer=transfer.id,
                                sender=transfer.sender, size=transfer.offer.size,
                                via=transfer.via)

    async def _send_file_state(self, transfer_id: str) -> None:
        try:
            transfer = await self.files.get(transfer_id)
            room = await self._rooms.room(transfer.room)
            watchers = await self._store.members(_watchers_key(transfer.room))
        except RtcError:
            return
        sessions = {SessionId(s) for s in watchers}
        if room is not None:
            sessions.update(room.participants[p].session for p in transfer.parties()
                            if p in room.participants)
        payload = transfer.wire(time.time())
        for session_id in sorted(sessions):
            await self.send(session_id, ServerEvent.FILE_STATE, payload)

    # -- lifecycle ----------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro, name=logs.current())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Refuse new work, tell every client to go, wait for them (bounded), close the rest."""
        self._draining = True
        reconnect_in = int(self._config.drain_timeout * 1000)
        await self._sio.emit(ServerEvent.SERVER_DRAINING, {"reconnectIn": reconnect_in})
        if self._user_connections():
            self._all_gone = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_gone.wait(), self._config.drain_timeout)
        for conn in self.connections():
            await self._sio.disconnect(conn)

    async def aclose(self) -> None:
        self._token_deadlines.close()
        self._sio.eio.pings.close()
        self.audit.close()
        self._file_states.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


_NO_PAYLOAD = frozenset({ClientEvent.PING, ClientEvent.SESSION_END})


def _unwatch(tx: Tx, session: SessionId, rooms: set[str]) -> None:
    for room in rooms:
        tx.discard(_watchers_key(RoomId(room)), session)
        tx.discard(_watching_key(session), room)


def _last_seq(value: object) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
        for k, v in value.items()
    ):
        raise BadRequest("lastSeq must be an object of room -> seq")
    return value

