import pytest

from signaling.auth import Grants, Identity
from signaling.errors import Conflict, Forbidden, NotFound, RoomFull
from signaling.ids import ConnectionId, ParticipantId, RoomId, UserId
from signaling.protocol import LeaveReason
from signaling.rooms import RoomService

R = RoomId("r")
ANY = Grants(rooms=("*",), publish=True, subscribe=True)


def who(user: str, grants: Grants = ANY) -> Identity:
    return Identity(user=UserId(user), name=user.title(), grants=grants)


def c(n: int) -> ConnectionId:
    return ConnectionId(f"c{n}")


def test_join_lists_others_and_counts_seq() -> None:
    rooms = RoomService(10)
    a = rooms.join(c(1), who("ann"), R)
    b = rooms.join(c(2), who("bob"), R, name="Bobby")
    assert (a.seq, b.seq) == (1, 2)
    assert a.others == [] and [p.id for p in b.others] == [a.participant.id]
    assert b.participant.name == "Bobby" and a.participant.name == "Ann"
    assert a.participant.id != b.participant.id
    assert rooms.update(c(1), R, {"audio": True}).seq == 3
    left = rooms.leave(c(2), R, LeaveReason.LEAVE)
    assert (left.seq, left.participant.id) == (4, b.participant.id)


def test_same_user_on_two_connections_gets_two_participants() -> None:
    rooms = RoomService(10)
    ids = {rooms.join(c(n), who("ann"), R).participant.id for n in range(3)}
    assert len(ids) == 3


def test_grants_cap_and_duplicates() -> None:
    rooms = RoomService(2)
    with pytest.raises(Forbidden):
        rooms.join(c(1), who("ann", Grants(rooms=("other",))), R)
    rooms.join(c(1), who("ann"), R)
    with pytest.raises(Conflict):
        rooms.join(c(1), who("ann"), R)
    rooms.join(c(2), who("bob"), R)
    with pytest.raises(RoomFull):
        rooms.join(c(3), who("cat"), R)


def test_empty_rooms_are_dropped_and_seq_restarts() -> None:
    rooms = RoomService(10)
    rooms.join(c(1), who("ann"), R)
    rooms.leave(c(1), R, LeaveReason.LEAVE)
    assert rooms.room(R) is None
    assert rooms.joined_rooms(c(1)) == []
    assert rooms.join(c(1), who("ann"), R).seq == 1


def test_route_only_within_the_room() -> None:
    rooms = RoomService(10)
    a = rooms.join(c(1), who("ann"), R).participant
    b = rooms.join(c(2), who("bob"), R).participant
    x = rooms.join(c(3), who("eve"), RoomId("elsewhere")).participant
    assert rooms.route(c(1), R, b.id) == (a, b)
    for target in (x.id, ParticipantId("Pnope"), a.id):
        with pytest.raises(NotFound):
            rooms.route(c(1), R, target)
    with pytest.raises(NotFound):  # sender not in the room
        rooms.route(c(3), R, a.id)
