import time

import jwt
import pytest

from signaling.auth import Grants, issue_token, verify_token
from signaling.errors import Unauthorized
from signaling.ids import RoomId

SECRET = "unit-secret-0123456789-0123456789"


def test_round_trip_keeps_user_name_and_grants() -> None:
    grants = Grants(rooms=("standup", "team-*"), publish=True, subscribe=True, record=True)
    who = verify_token(SECRET, issue_token(SECRET, "u1", name="Ann", grants=grants, ttl=60))
    assert (who.user, who.name, who.grants) == ("u1", "Ann", grants)
    assert who.expires_at > time.time()


@pytest.mark.parametrize("token", [None, "", 42, "not-a-jwt", "a.b.c"])
def test_missing_or_malformed_tokens_are_unauthorized(token: object) -> None:
    with pytest.raises(Unauthorized):
        verify_token(SECRET, token)


def test_expired_token_is_unauthorized() -> None:
    token = issue_token(SECRET, "u1", ttl=10, now=time.time() - 3600)
    with pytest.raises(Unauthorized, match="expired"):
        verify_token(SECRET, token)


def test_wrong_secret_is_unauthorized() -> None:
    with pytest.raises(Unauthorized):
        verify_token(SECRET, issue_token("another-secret-0123456789-012345", "u1"))


@pytest.mark.parametrize("claims", [
    {"sub": "u1"},  # no exp
    {"exp": 4102444800},  # no sub
    {"sub": "", "exp": 4102444800},
    {"sub": "u1", "exp": 4102444800, "grants": {"rooms": "lobby"}},
    {"sub": "u1", "exp": 4102444800, "grants": {"admin": "yes"}},
    {"sub": "u1", "exp": 4102444800, "grants": []},
])
def test_bad_claims_are_unauthorized(claims: dict[str, object]) -> None:
    with pytest.raises(Unauthorized):
        verify_token(SECRET, jwt.encode(claims, SECRET, algorithm="HS256"))


def test_none_algorithm_is_refused() -> None:
    token = jwt.encode({"sub": "u1", "exp": 4102444800}, None, algorithm="none")
    with pytest.raises(Unauthorized):
        verify_token(SECRET, token)


def test_room_patterns() -> None:
    g = Grants(rooms=("lobby", "team-*"))
    assert g.allows_room(RoomId("lobby"))
    assert g.allows_room(RoomId("team-red"))
    assert not g.allows_room(RoomId("lobby2"))
    assert not g.allows_room(RoomId("teams"))
    assert Grants(rooms=("*",)).allows_room(RoomId("anything"))
    assert not Grants().allows_room(RoomId("lobby"))
