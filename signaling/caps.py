"""Per-user caps: how many sessions (devices, tabs) and rooms one user may hold at once.

Rate limits bound how fast a connection acts; these bound what a user holds, on every
node together (they read the store). Media workers (grant `service`) are not capped:
they hold a session and many rooms by design. A cap of 0 means no cap.
"""

from __future__ import annotations

from .auth import Identity
from .errors import Conflict
from .ids import RoomId, UserId
from .rooms import RoomService
from .sessions import Session, SessionService, user_key
from .store import Store


class UserCaps:
    def __init__(self, store: Store, sessions: SessionService, rooms: RoomService,
                 max_sessions: int, max_rooms: int) -> None:
        self._store = store
        self._sessions = sessions
        self._rooms = rooms
        self._max_sessions = max_sessions
        self._max_rooms = max_rooms

    async def check_connect(self, who: Identity) -> None:
        """Refuse a new session when all of the user's sessions are connected and at the cap.

        Sessions waiting out their grace period count, but do not block: a device that
        reconnected without resuming must not lock its user out (`surplus` ends them).
        """
        cap = self._max_sessions
        if not cap or who.grants.service:
            return
        if len(await self._store.members(user_key(who.user))) < cap:
            return  # the common case, one read
        live = [s for s in await self._people(who.user) if s.attached]
        if len(live) >= cap:
            raise Conflict(f"user {who.user!r} already has {len(live)} connections "
                           f"(MIKOTO_RTC_MAX_CONNECTIONS_PER_USER={cap})")

    async def surplus(self, opened: Session) -> list[Session]:
        """Sessions in grace to end now that `opened` took the user past the cap."""
        cap = self._max_sessions
        if not cap or opened.identity.grants.service:
            return []
        if len(await self._store.members(user_key(opened.user))) <= cap:
            return []
        sessions = await self._people(opened.user)
        waiting = [s for s in sessions if not s.attached and s.id != opened.id]
        return waiting[:max(0, len(sessions) - cap)]

    async def check_join(self, session: Session, room: RoomId) -> None:
        """Refuse joining one more room past the user's cap (rooms of all its sessions)."""
        cap = self._max_rooms
        if not cap or session.identity.grants.service:
            return
        rooms: set[RoomId] = set()
        for other in await self._people(session.user):
            rooms.update(await self._rooms.memberships(other.id))
        if room not in rooms and len(rooms) >= cap:
            raise Conflict(f"user {session.user!r} is already in {len(rooms)} rooms "
                           f"(MIKOTO_RTC_MAX_ROOMS_PER_USER={cap})")

    async def _people(self, user: UserId) -> list[Session]:
        """The user's sessions that count: not those of media workers under its name."""
        return [s for s in await self._sessions.of_user(user) if not s.identity.grants.service]
