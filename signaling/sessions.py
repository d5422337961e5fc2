"""Sessions: what survives a lost transport, and the single-use tokens that resume them."""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

from .auth import Identity
from .dedup import Dedup
from .errors import Forbidden, NotFound
from .ids import ConnectionId, SessionId, UserId

log = logging.getLogger(__name__)

HELD_SIGNALS = 256
RESUME_TOKEN_BYTES = 24  # 192 bits


@dataclass(eq=False)
class Session:
    id: SessionId
    identity: Identity
    resume_token: str
    dedup: Dedup
    connection: ConnectionId | None = None
    # Signals for this session's participants that arrived while it was away.
    held: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HELD_SIGNALS))
    # Ends with its transport instead of waiting out the grace period (a media worker:
    # its jobs must fail over at once, and its media does not survive it anyway).
    ends_with_transport: bool = False
    _expiry: asyncio.TimerHandle | None = None

    @property
    def user(self) -> UserId:
        return self.identity.user

    @property
    def attached(self) -> bool:
        return self.connection is not None


class SessionService:
    """Sessions of one node. A detached session expires after the grace period."""

    def __init__(self, grace: float, dedup_window: float,
                 on_expire: Callable[[Session], Coroutine[Any, Any, None]]) -> None:
        self._grace = grace
        self._dedup_window = dedup_window
        self._on_expire = on_expire
        self._sessions: dict[SessionId, Session] = {}
        self._by_connection: dict[ConnectionId, Session] = {}
        self._by_user: dict[UserId, set[Session]] = {}
        self._expiring: set[asyncio.Task[None]] = set()

    def open(self, conn: ConnectionId, who: Identity) -> Session:
        session = Session(
            id=SessionId("S" + secrets.token_urlsafe(16)), identity=who,
            resume_token=secrets.token_urlsafe(RESUME_TOKEN_BYTES),
            dedup=Dedup(self._dedup_window),
        )
        self._sessions[session.id] = session
        self._by_user.setdefault(who.user, set()).add(session)
        self._attach(session, conn)
        return session

    def claim(self, who: Identity, session_id: object, resume_token: object) -> Session:
        """The session `who` may resume with this token; changes nothing."""
        session = self._sessions.get(SessionId(session_id)) if isinstance(session_id, str) else None
        if session is None:
            raise NotFound("no such session (expired or never existed)")
        if not isinstance(resume_token, str) or not hmac.compare_digest(
            resume_token.encode(), session.resume_token.encode()
        ):
            raise Forbidden("wrong resume token")
        if session.user != who.user:
            raise Forbidden("the session belongs to another user")
        session.identity = who  # the fresher token
        return session

    def reattach(self, session: Session, conn: ConnectionId) -> ConnectionId | None:
        """Move a claimed session onto a new connection with a new resume token; returns the
        connection it replaced, if the old one was still thought alive."""
        replaced = session.connection
        if replaced is not None:
            del self._by_connection[replaced]
        session.resume_token = secrets.token_urlsafe(RESUME_TOKEN_BYTES)
        self._attach(session, conn)
        return replaced

    def _attach(self, session: Session, conn: ConnectionId) -> None:
        if session._expiry is not None:
            session._expiry.cancel()
            session._expiry = None
        session.connection = conn
        self._by_connection[conn] = session

    def detach(self, conn: ConnectionId) -> Session | None:
        """The transport is gone but the session may come back: start its grace period."""
        session = self._by_connection.pop(conn, None)
        if session is None:
            return None
        session.connection = None
        session._expiry = asyncio.get_running_loop().call_later(
            self._grace, self._expire, session)
        return session

    def end(self, conn: ConnectionId) -> Session | None:
        """The client closed the connection itself: the session ends now."""
        session = self._by_connection.pop(conn, None)
        if session is not None:
            self._forget(session)
        return session

    def _expire(self, session: Session) -> None:
        session._expiry = None
        self._forget(session)
        task = asyncio.create_task(self._on_expire(session), name=f"session-expire:{session.id}")
        self._expiring.add(task)
        task.add_done_callback(self._expiring.discard)

    def _forget(self, session: Session) -> None:
        self._sessions.pop(session.id, None)
        devices = self._by_user.get(session.user)
        if devices is not None:
            devices.discard(session)
            if not devices:
                del self._by_user[session.user]

    def by_connection(self, conn: ConnectionId) -> Session | None:
        return self._by_connection.get(conn)

    def get(self, session_id: SessionId) -> Session | None:
        return self._sessions.get(session_id)

    def of_user(self, user: UserId) -> list[Session]:
        """Every live session (device) of a user, attached or within its grace period."""
        return list(self._by_user.get(user, ()))

    def connections(self) -> Iterator[ConnectionId]:
        return iter(list(self._by_connection))

    async def aclose(self) -> None:
        for session in self._sessions.values():
            if session._expiry is not None:
                session._expiry.cancel()
        for task in list(self._expiring):
            task.cancel()
        await asyncio.gather(*self._expiring, return_exceptions=True)
