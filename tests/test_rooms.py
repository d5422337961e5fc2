import pytest

from signaling.auth import Grants, Identity
from signaling.errors import Conflict, Forbidden, NotFound, RoomFull
from signaling.ids import ParticipantId, RoomId, SessionId, UserId
from signaling.protocol import ConnectionState, LeaveReason, ServerEvent
from signaling.rooms import RoomService
from signaling.store import Store

R = RoomId("r")
ANY = Grants(rooms=("*",), publish=True, subscribe=True)


def who(user: str, grants: Grants = ANY) -> Identity:
    return Identity(user=UserId(user), name=user.title(), grants=grants)


def c(n: int) -> SessionId:
    return SessionId(f"s{n}")


async def test_join_lists_others_and_counts_seq(store: Store) -> None:
    rooms = RoomService(store, 10)
    a = await rooms.join(c(1), who("ann"), R)
    b = await rooms.join(c(2), who("bob"), R, name="Bobby")
    assert (a.event.seq, b.event.seq) == (1, 2)
    assert b.event.name is ServerEvent.PARTICIPANT_JOINED and b.event.actor == b.participant.id
    assert a.others == [] and [p.id for p in b.others] == [a.participant.id]
    assert a.started and not b.started  # the first join brings the room into being
    assert b.participant.name == "Bobby" and a.participant.name == "Ann"
    assert a.participant.id != b.participant.id
    assert (await rooms.update(c(1), R, {"audio": True})).seq == 3
    gone = await rooms.leave(c(2), R, LeaveReason.LEAVE)
    left = gone.event
    assert left is not None and gone.participant == b.participant and not gone.finished
    assert left.seq == 4 and left.payload == {"room": R, "seq": 4, "id": b.participant.id,
                                              "reason": "leave"}
    assert (await rooms.leave(c(1), R, LeaveReason.LEAVE)).finished  # the last one


async def test_same_user_on_two_connections_gets_two_participants(store: Store) -> None:
    rooms = RoomService(store, 10)
    ids = {(await rooms.join(c(n), who("ann"), R)).participant.id for n in range(3)}
    assert len(ids) == 3


async def test_grants_cap_and_duplicates(store: Store) -> None:
    rooms = RoomService(store, 2)
    with pytest.raises(Forbidden):
        await rooms.join(c(1), who("ann", Grants(rooms=("other",))), R)
    await rooms.join(c(1), who("ann"), R)
    with pytest.raises(Conflict):
        await rooms.join(c(1), who("ann"), R)
    await rooms.join(c(2), who("bob"), R)
    with pytest.raises(RoomFull):
        await rooms.join(c(3), who("cat"), R)


async def test_empty_rooms_are_dropped_and_seq_restarts(store: Store) -> None:
    rooms = RoomService(store, 10)
    await rooms.join(c(1), who("ann"), R)
    await rooms.leave(c(1), R, LeaveReason.LEAVE)
    assert await rooms.room(R) is None
    assert await rooms.memberships(c(1)) == {}
    assert (await rooms.join(c(1), who("ann"), R)).event.seq == 1


async def test_route_only_within_the_room(store: Store) -> None:
    rooms = RoomService(store, 10)
    a = (await rooms.join(c(1), who("ann"), R)).participant
    b = (await rooms.join(c(2), who("bob"), R)).participant
    x = (await rooms.join(c(3), who("eve"), RoomId("elsewhere"))).participant
    assert await rooms.route(c(1), R, b.id) == (a, b)
    for target in (x.id, ParticipantId("Pnope"), a.id):
        with pytest.raises(NotFound):
            await rooms.route(c(1), R, target)
    with pytest.raises(NotFound):  # sender not in the room
        await rooms.route(c(3), R, a.id)


async def test_call_parties_join_without_a_room_grant(store: Store) -> None:
    rooms = RoomService(store, 10)
    locked = who("ann", Grants(rooms=("elsewhere",)))
    assert (await rooms.join(c(1), locked, R, granted=True)).participant.user == "ann"


async def test_replay_skips_own_requests_but_not_server_events(store: Store) -> None:
    rooms = RoomService(store, 10)
    a = (await rooms.join(c(1), who("ann"), R)).participant
    await rooms.join(c(2), who("bob"), R)                                   # 2, seen by ann
    await rooms.update(c(1), R, {"audio": True})                            # 3, ann's own
    assert (await rooms.set_connection(c(1), R, ConnectionState.RECONNECTING)).seq == 4
    assert await rooms.set_connection(c(1), R, ConnectionState.RECONNECTING) is None
    await rooms.update(c(2), R, {"video": True})                            # 5
    assert [e.seq for e in await rooms.replay(R, 1, a.id)] == [2, 4, 5]
    assert await rooms.replay(R, 5, a.id) == []
    assert (await rooms.member(c(1), R)).public()["connection"] == "reconnecting"


async def test_replay_beyond_the_log_is_a_conflict(store: Store) -> None:
    rooms = RoomService(store, 10)
    a = (await rooms.join(c(1), who("ann"), R)).participant
    for i in range(8):
        await rooms.update(c(1), R, {"audio": bool(i % 2)})
    assert await store.events(R, 0) is None  # 1-5 are gone
    assert [e.seq for e in await store.events(R, 5) or []] == [6, 7, 8, 9]
    assert (await rooms.replay(R, 5, ParticipantId("Pother")))[0].seq == 6
    with pytest.raises(Conflict):
        await rooms.replay(R, 4, a.id)
