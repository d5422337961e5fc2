"""Sessions: what survives a lost transport, and the single-use tokens that resume them.

A session is a document in the store naming the node and connection it is attached
to, so a session may resume on any node. A detached session expires after the grace
period through a store timer, which fires on some node even if this one died.
Connections are this node's own: the map from a connection to its session is local.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from .auth import Grants, Identity
from .dedup import Dedup
from .errors import Forbidden, NotFound, RtcError
from .ids import ConnectionId, SessionId, UserId
from .store import Store, Tx

log = logging.getLogger(__name__)

HELD_SIGNALS = 256
RESUME_TOKEN_BYTES = 24  # 192 bits
EXPIRE = "session:"


@dataclass(eq=False)
class Session:
    id: SessionId
    identity: Identity
    resume_token: str
    connection: ConnectionId | None = None
    # The node holding `connection`.
    node: str | None = None
    # Signals for this session's participants that arrived while it was away.
    held: list[dict[str, Any]] = field(default_factory=list)
    # Ends with its transport instead of waiting out the grace period (a media worker:
    # its jobs must fail over at once, and its media does not survive it anyway).
    ends_with_transport: bool = False

    @property
    def user(self) -> UserId:
        return self.identity.user

    @property
    def attached(self) -> bool:
        return self.connection is not None

    def to_dict(self) -> dict[str, Any]:
        who = self.identity
        return {"id": self.id, "user": who.user, "name": who.name,
                "grants": who.grants.to_claim(), "exp": who.expires_at,
                "resume": self.resume_token, "connection": self.connection, "node": self.node,
                "held": self.held, "endsWithTransport": self.ends_with_transport}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Session:
        who = Identity(user=d["user"], name=d["name"], grants=Grants.from_claim(d["grants"]),
                       expires_at=d["exp"])
        return cls(id=d["id"], identity=who, resume_token=d["resume"],
                   connection=d["connection"], node=d["node"], held=d["held"],
                   ends_with_transport=d["endsWithTransport"])


@dataclass(slots=True)
class RecentAcks:
    """A session's latest request acks, for a retry that reaches another node."""

    acks: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"acks": self.acks}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecentAcks:
        return cls(acks=d["acks"])


def _key(session: SessionId) -> str:
    return "session:" + session


def _acks_key(session: SessionId) -> str:
    return "acks:" + session


def user_key(user: UserId) -> str:
    return "devices:" + user


def node_key(node: str) -> str:
    return "node-sessions:" + node


class SessionService:
    """Sessions in the store; connections of this node."""

    def __init__(self, store: Store, node: str, grace: float, dedup_window: float,
                 on_expire: Callable[[Session], Coroutine[Any, Any, None]]) -> None:
        self._store = store
        self.node = node
        self._grace = grace
        self._dedup_window = dedup_window
        self._on_expire = on_expire
        self._local: dict[ConnectionId, SessionId] = {}
        # What the session was when this connection attached: every event reads it, and
        # nothing an event checks (its id, identity, grants) changes while it is attached.
        self._attached: dict[ConnectionId, Session] = {}
        # Request ids of sessions this node served lately (a retry usually comes back here).
        self._dedups: dict[SessionId, tuple[float, Dedup]] = {}
        store.on_timer(EXPIRE, self._expire)

    async def open(self, conn: ConnectionId, who: Identity) -> Session:
        session = Session(
            id=SessionId("S" + secrets.token_urlsafe(16)), identity=who,
            resume_token=secrets.token_urlsafe(RESUME_TOKEN_BYTES),
            connection=conn, node=self.node,
        )

        def open_(tx: Tx) -> None:
            tx.put(_key(session.id), session)
            tx.add(user_key(who.user), session.id)
            tx.add(node_key(self.node), session.id)

        await self._store.transact([], open_)
        self._local[conn] = session.id
        self._attached[conn] = session
        return session

    async def claim(self, who: Identity, session_id: object, resume_token: object) -> Session:
        """The session `who` may resume with this token; changes nothing."""
        session = await self.get(SessionId(session_id)) if isinstance(session_id, str) else None
        if session is None:
            raise NotFound("no such session (expired or never existed)")
        _check_token(session, who, resume_token)
        return session

    async def reattach(self, claimed: Session, who: Identity,
                       conn: ConnectionId) -> tuple[Session, ConnectionId | None]:
        """Move a claimed session onto a new connection of this node with a new resume
        token (the old one is spent, here or on any node); returns the session and the
        connection it replaced, if the old one was still thought alive."""
        token = secrets.token_urlsafe(RESUME_TOKEN_BYTES)

        def reattach(tx: Tx) -> tuple[Session, ConnectionId | None]:
            session = tx.get(_key(claimed.id), Session)
            if session is None:
                raise NotFound("no such session (expired or never existed)")
            _check_token(session, who, claimed.resume_token)
            replaced = session.connection
            if session.node is not None and session.node != self.node:
                tx.discard(node_key(session.node), session.id)
            session.identity = who  # the fresher token
            session.resume_token = token
            session.connection, session.node = conn, self.node
            tx.put(_key(session.id), session)
            tx.add(node_key(self.node), session.id)
            tx.cancel(EXPIRE + session.id)
            return session, replaced

        session, replaced = await self._store.transact([_key(claimed.id)], reattach)
        if replaced is not None:
            self._local.pop(replaced, None)
            self._attached.pop(replaced, None)
        self._local[conn] = session.id
        self._attached[conn] = session
        entry = self._dedups.get(session.id)
        if entry is not None:
            self._dedups[session.id] = (0.0, entry[1])
        elif claimed.node != self.node:
            saved = await self._store.get(_acks_key(session.id), RecentAcks)
            if saved is not None:
                self.dedup(session.id).load(saved.acks)
        return session, replaced

    async def refresh(self, conn: ConnectionId, who: Identity) -> Session:
        """Give a connection's session the identity of a fresher token of its user."""
        session_id = self._local.get(conn)
        if session_id is None:
            raise NotFound("not connected")

        def refresh(tx: Tx) -> Session:
            session = tx.get(_key(session_id), Session)
            if session is None or session.connection != conn:
                raise NotFound("no such session")
            if session.user != who.user:
                raise Forbidden("the token is for another user")
            session.identity = who
            tx.put(_key(session_id), session)
            return session

        session = await self._store.transact([_key(session_id)], refresh)
        self._attached[conn] = session
        return session

    async def save_acks(self, session_id: SessionId) -> None:
        """Keep the session's latest acks in the store: it lost its transport, and its
        client may resume (and retry what it got no ack for) on another node."""
        entry = self._dedups.get(session_id)
        if entry is None:
            return
        acks = RecentAcks(entry[1].export())
        await self._store.transact(
            [], lambda tx: tx.put(_acks_key(session_id), acks, ttl=self._dedup_window))

    async def detach(self, conn: ConnectionId) -> Session | None:
        """The transport is gone but the session may come back: start its grace period."""
        session_id = self._local.pop(conn, None)
        self._attached.pop(conn, None)
        if session_id is None:
            return None
        self._dedups_detached(session_id)
        with contextlib.suppress(RtcError):  # a lost store must not keep it attached
            await self.save_acks(session_id)
        return await self._detach(session_id, conn)

    async def _detach(self, session_id: SessionId, conn: ConnectionId | None) -> Session | None:
        """Detach from `conn` (any connection of this node's when None)."""

        def detach(tx: Tx) -> Session | None:
            session = tx.get(_key(session_id), Session)
            if session is None or session.connection is None:
                return None
            if conn is not None and session.connection != conn:
                return None  # it moved on already
            tx.discard(node_key(session.node or self.node), session.id)
            session.connection = session.node = None
            tx.put(_key(session.id), session)
            tx.schedule(EXPIRE + session.id, self._grace)
            return session

        return await self._store.transact([_key(session_id)], detach)

    async def detach_stale(self, session_id: SessionId) -> Session | None:
        """Detach a session of this node whose connection is no longer here."""
        if session_id in self._local.values():
            return None
        return await self._detach_from_node(session_id, self.node)

    async def detach_node(self, node: str) -> list[Session]:
        """A node died: its attached sessions are detached, as if each transport was lost."""
        detached = []
        for session_id in await self._store.members(node_key(node)):
            session = await self._detach_from_node(SessionId(session_id), node)
            if session is not None:
                detached.append(session)
        return detached

    async def _detach_from_node(self, session_id: SessionId, node: str) -> Session | None:
        def detach(tx: Tx) -> Session | None:
            tx.discard(node_key(node), session_id)
            session = tx.get(_key(session_id), Session)
            if session is None or session.node != node:
                return None
            session.connection = session.node = None
            tx.put(_key(session.id), session)
            tx.schedule(EXPIRE + session.id, self._grace)
            return session

        return await self._store.transact([_key(session_id)], detach)

    async def end(self, conn: ConnectionId) -> Session | None:
        """The client closed the connection itself: the session ends now."""
        session_id = self._local.pop(conn, None)
        self._attached.pop(conn, None)
        if session_id is None:
            return None
        self._dedups.pop(session_id, None)
        return await self.forget(session_id)

    async def forget(self, session_id: SessionId) -> Session | None:
        """End a session wherever it is; None when it had already ended."""

        def end(tx: Tx) -> Session | None:
            session = tx.get(_key(session_id), Session)
            if session is None:
                return None
            tx.delete(_key(session_id))
            tx.discard(user_key(session.user), session_id)
            if session.node is not None:
                tx.discard(node_key(session.node), session_id)
            tx.cancel(EXPIRE + session_id)
            return session

        return await self._store.transact([_key(session_id)], end)

    async def _expire(self, session_id: str) -> None:
        def expire(tx: Tx) -> Session | None:
            session = tx.get(_key(SessionId(session_id)), Session)
            if session is None or session.attached:
                return None  # ended, or resumed just before the timer fired
            tx.delete(_key(session.id))
            tx.discard(user_key(session.user), session.id)
            return session

        session = await self._store.transact([_key(SessionId(session_id))], expire)
        self._dedups.pop(SessionId(session_id), None)
        if session is not None:
            await self._on_expire(session)

    async def hold(self, session_id: SessionId,
                   payload: dict[str, Any]) -> ConnectionId | None:
        """Keep a signal for a detached session (delivered when it resumes); returns the
        connection to send it to instead when it is attached."""

        def hold(tx: Tx) -> ConnectionId | None:
            session = tx.get(_key(session_id), Session)
            if session is None or session.connection is not None:
                return session.connection if session is not None else None
            session.held = [*session.held[-(HELD_SIGNALS - 1):], payload]
            tx.put(_key(session_id), session)
            return None

        return await self._store.transact([_key(session_id)], hold)

    async def take_held(self, session_id: SessionId, conn: ConnectionId) -> list[dict[str, Any]]:
        """The signals held for a session now attached to `conn`, removed from it."""

        def take(tx: Tx) -> list[dict[str, Any]]:
            session = tx.get(_key(session_id), Session)
            if session is None or session.connection != conn or not session.held:
                return []
            held, session.held = session.held, []
            tx.put(_key(session_id), session)
            return held

        return await self._store.transact([_key(session_id)], take)

    async def mark_ends_with_transport(self, session_id: SessionId) -> None:
        def mark(tx: Tx) -> None:
            session = tx.get(_key(session_id), Session)
            if session is None:
                raise NotFound("no such session")
            session.ends_with_transport = True
            tx.put(_key(session_id), session)

        await self._store.transact([_key(session_id)], mark)
        for attached in self._attached.values():
            if attached.id == session_id:
                attached.ends_with_transport = True

    def local(self, conn: ConnectionId) -> SessionId | None:
        return self._local.get(conn)

    def attached(self, conn: ConnectionId) -> Session | None:
        """The session of one of this node's connections, as it was when it attached
        (no store read: for each event)."""
        return self._attached.get(conn)

    async def by_connection(self, conn: ConnectionId) -> Session | None:
        """The session of one of this node's connections as the store has it now; None
        when it moved on (resumed elsewhere, or detached while the store was away)."""
        session_id = self._local.get(conn)
        if session_id is None:
            return None
        session = await self.get(session_id)
        return session if session is not None and session.connection == conn else None

    async def get(self, session_id: SessionId) -> Session | None:
        return await self._store.get(_key(session_id), Session)

    def get_now(self, session_id: SessionId) -> Session | None:
        """`get`, without waiting: only with a store that has its sessions at hand."""
        return self._store.get_now(_key(session_id), Session)

    async def of_user(self, user: UserId) -> list[Session]:
        """Every live session (device) of a user, attached or within its grace period."""
        ids = sorted(await self._store.members(user_key(user)))
        return [s for s in await self._store.get_many([_key(SessionId(i)) for i in ids], Session)
                if s is not None]

    def dedup(self, session_id: SessionId) -> Dedup:
        entry = self._dedups.get(session_id)
        if entry is None:
            entry = self._dedups[session_id] = (0.0, Dedup(self._dedup_window))
        return entry[1]

    def _dedups_detached(self, session_id: SessionId) -> None:
        """Keep a detached session's request ids for its grace period, then drop them
        even if the session resumed elsewhere (this node would not hear of it)."""
        now = time.monotonic()
        entry = self._dedups.get(session_id)
        if entry is not None:
            self._dedups[session_id] = (now, entry[1])
        for sid, (since, _) in list(self._dedups.items()):
            if since and now - since > self._grace + self._dedup_window:
                del self._dedups[sid]

    def connections(self) -> list[ConnectionId]:
        return list(self._local)


def _check_token(session: Session, who: Identity, resume_token: object) -> None:
    if not isinstance(resume_token, str) or not hmac.compare_digest(
        resume_token.encode(), session.resume_token.encode()
    ):
        raise Forbidden("wrong resume token")
    if session.user != who.user:
        raise Forbidden("the session belongs to another user")
