"""Access tokens: HS256 JWTs carrying a user and the grants that bound what it may do."""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from .errors import Unauthorized
from .ids import RoomId, UserId

ALGORITHM = "HS256"
MAX_USER_LEN = 128
MAX_NAME_LEN = 64


@dataclass(frozen=True)
class Grants:
    """What a token allows. `rooms` holds exact names, `*`, or prefix patterns like `team-*`."""

    rooms: tuple[str, ...] = ()
    publish: bool = False
    subscribe: bool = False
    record: bool = False
    admin: bool = False
    service: bool = False

    def allows_room(self, room: RoomId) -> bool:
        return any(p == room or ("*" in p and fnmatch.fnmatchcase(room, p)) for p in self.rooms)

    def to_claim(self) -> dict[str, Any]:
        return {
            "rooms": list(self.rooms),
            "publish": self.publish,
            "subscribe": self.subscribe,
            "record": self.record,
            "admin": self.admin,
            "service": self.service,
        }

    @classmethod
    def from_claim(cls, claim: object) -> Grants:
        if claim is None:
            return cls()
        if not isinstance(claim, Mapping):
            raise Unauthorized("grants must be an object")
        rooms = claim.get("rooms", [])
        if not isinstance(rooms, list) or not all(isinstance(r, str) for r in rooms):
            raise Unauthorized("grants.rooms must be a list of strings")
        flags = {}
        for name in ("publish", "subscribe", "record", "admin", "service"):
            value = claim.get(name, False)
            if not isinstance(value, bool):
                raise Unauthorized(f"grants.{name} must be a boolean")
            flags[name] = value
        return cls(rooms=tuple(rooms), **flags)


@dataclass(frozen=True)
class Identity:
    """Who is connected, as proven by a verified token."""

    user: UserId
    name: str
    grants: Grants = field(default_factory=Grants)
    expires_at: float = 0.0


def issue_token(
    secret: str,
    user: str,
    *,
    name: str | None = None,
    grants: Grants | None = None,
    ttl: int = 3600,
    now: float | None = None,
) -> str:
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": user,
        "name": name or user,
        "iat": issued,
        "exp": issued + ttl,
        "grants": (grants or Grants()).to_claim(),
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


# Tokens carry a user, a name and grants: a few hundred bytes; room patterns may add some.
MAX_TOKEN_LEN = 8192


def verify_token(secret: str, token: object) -> Identity:
    """Return the identity a token proves, or raise Unauthorized saying why not."""
    if not isinstance(token, str) or not token:
        raise Unauthorized("missing token")
    if len(token) > MAX_TOKEN_LEN:  # refused before any decoding
        raise Unauthorized(f"token longer than {MAX_TOKEN_LEN} characters")
    try:
        claims = jwt.decode(
            token, secret, algorithms=[ALGORITHM], options={"require": ["exp", "sub"]}
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthorized("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"invalid token: {exc}") from exc
    user = claims["sub"]
    if not isinstance(user, str) or not 0 < len(user) <= MAX_USER_LEN:
        raise Unauthorized("sub must be a string of 1-128 characters")
    name = claims.get("name", user)
    if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LEN:
        raise Unauthorized("name must be a string of 1-64 characters")
    return Identity(
        user=UserId(user),
        name=name,
        grants=Grants.from_claim(claims.get("grants")),
        expires_at=float(claims["exp"]),
    )


def room_grants(rooms: Iterable[str] | None) -> Grants:
    """The grants of an ordinary participant: publish and subscribe in the given rooms."""
    return Grants(rooms=tuple(rooms) if rooms else ("*",), publish=True, subscribe=True)
