"""File transfer state over real sockets and the HTTP relay: parties, observers, limits."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import pytest
from aiohttp import ClientSession

from signaling.app import EDGE, RELAY
from signaling.client import FileState, RequestError, SignalingClient

from .conftest import Node
from .helpers import EventLog

SIZE = 1_000_000


async def trio(node: Node) -> tuple[list[SignalingClient], list[EventLog], list[str]]:
    clients = [await node.client(u) for u in ("ann", "bob", "cat")]
    logs = [EventLog(c) for c in clients]
    ids = [(await c.join("lobby")).self_id for c in clients]
    return clients, logs, ids


def states(log: EventLog, file_id: str) -> list[dict[str, Any]]:
    return [e.data for e in log.of(FileState) if e.id == file_id]


async def final(log: EventLog, file_id: str, state: str) -> dict[str, Any]:
    event = await log.wait_for(FileState, lambda e: e.id == file_id and e.state == state)
    return event.data


async def test_a_transfer_reaches_done_and_only_parties_and_watchers_see_it(node: Node) -> None:
    (ann, bob, _cat), (ann_log, bob_log, cat_log), (a, b, _c) = await trio(node)
    watcher = await node.client("watcher")
    watch_log = EventLog(watcher)
    assert await watcher.watch_files("lobby") == []
    sha = hashlib.sha256(b"x" * SIZE).hexdigest()
    offered = await ann.offer_file("lobby", "f1", "report.pdf", SIZE, mime="application/pdf",
                                   to=b, sha256=sha)
    assert (offered["state"], offered["from"], offered["to"]) == ("offered", a, [b])
    await bob.file_action("accept", "f1")
    for n in range(1, 11):
        await ann.file_action("progress", "f1", bytes=n * SIZE // 10)
        await bob.file_action("progress", "f1", bytes=n * SIZE // 10)
    done = await bob.file_action("done", "f1", sha256=sha)
    assert done["transfer"]["state"] == "done"
    for log in (ann_log, bob_log, watch_log):
        got = await final(log, "f1", "done")
        assert got["bytes"] == SIZE and got["sha256"] == sha and got["receivers"][b]["state"] == "done"
        seen = [s["bytes"] for s in states(log, "f1")]
        assert seen == sorted(seen), "progress went backwards"
    await asyncio.sleep(0.2)
    assert states(cat_log, "f1") == []  # in the room, but neither a party nor a watcher


async def test_progress_is_coalesced_to_ten_per_second_and_the_final_state_arrives(
    node: Node,
) -> None:
    (ann, bob, _), (_, bob_log, _), (_, b, _) = await trio(node)
    await ann.offer_file("lobby", "burst", "a.bin", SIZE, to=b)
    await bob.file_action("accept", "burst")
    loop = asyncio.get_running_loop()
    start = loop.time()
    for n in range(1, 201):
        await bob.file_action("progress", "burst", bytes=n * SIZE // 200)
    elapsed = loop.time() - start
    await bob.file_action("done", "burst", sha256="0" * 64)
    await final(bob_log, "burst", "done")
    updates = states(bob_log, "burst")
    # offered + accepted + at most 10/s of progress (+1 trailing) + done
    assert len(updates) <= 2 + 10 * elapsed + 2 + 1
    assert len(updates) < 100
    assert [u["bytes"] for u in updates] == sorted(u["bytes"] for u in updates)


async def test_backwards_progress_is_ignored_and_beyond_size_refused(node: Node) -> None:
    (ann, bob, _), _, (_, b, _) = await trio(node)
    await ann.offer_file("lobby", "f2", "a.bin", 100, to=b)
    await bob.file_action("accept", "f2")
    assert (await bob.file_action("progress", "f2", bytes=60))["bytes"] == 60
    assert (await bob.file_action("progress", "f2", bytes=10))["bytes"] == 60
    with pytest.raises(RequestError) as err:
        await bob.file_action("progress", "f2", bytes=101)
    assert err.value.code == "bad_request"


async def test_only_parties_report_progress(node: Node) -> None:
    (ann, _bob, cat), _, (_, b, _) = await trio(node)
    await ann.offer_file("lobby", "f3", "a.bin", 100, to=b)
    for action, fields in (("progress", {"bytes": 5}), ("done", {"sha256": "0" * 64}),
                           ("accept", {}), ("cancel", {})):
        with pytest.raises(RequestError) as err:
            await cat.file_action(action, "f3", **fields)
        assert err.value.code == "forbidden", action
    eve = await node.client("eve")
    with pytest.raises(RequestError) as err:
        await eve.file_action("progress", "f3", bytes=5)
    assert err.value.code == "not_found"  # not even in the room


async def test_hash_mismatch_fails_and_cancel_cancels(node: Node) -> None:
    (ann, bob, _), (ann_log, _, _), (_, b, _) = await trio(node)
    await ann.offer_file("lobby", "bad", "a.bin", 10, to=b, sha256="1" * 64)
    await bob.file_action("accept", "bad")
    await bob.file_action("done", "bad", sha256="2" * 64)
    assert (await final(ann_log, "bad", "failed"))["reason"] == "hash mismatch"
    await ann.offer_file("lobby", "gone", "a.bin", 10, to=b)
    await bob.file_action("cancel", "gone", reason="changed my mind")
    assert (await final(ann_log, "gone", "cancelled"))["reason"] == "changed my mind"
    with pytest.raises(RequestError) as err:
        await ann.file_action("progress", "gone", bytes=1)
    assert err.value.code == "conflict"


async def test_offer_to_everyone_and_rejections(node: Node) -> None:
    (ann, bob, cat), (ann_log, _, _), (_, b, c) = await trio(node)
    offered = await ann.offer_file("lobby", "all", "a.bin", 10)
    assert sorted(offered["to"]) == sorted([b, c])
    await bob.file_action("reject", "all")
    await cat.file_action("reject", "all")
    assert (await final(ann_log, "all", "cancelled"))["reason"] == "rejected"


async def test_sender_leaving_cancels_its_transfers(node: Node) -> None:
    (ann, _bob, _), (_, bob_log, _), (_, b, _) = await trio(node)
    await ann.offer_file("lobby", "left", "a.bin", 10, to=b)
    await ann.leave("lobby")
    assert (await final(bob_log, "left", "cancelled"))["reason"] == "sender left"


@pytest.mark.parametrize(("payload", "code"), [
    ({"size": -1}, "bad_request"), ({"size": 5 * 1024**3}, "bad_request"),
    ({"name": "../etc/passwd"}, "bad_request"), ({"name": ""}, "bad_request"),
    ({"name": "a\nb"}, "bad_request"), ({"mime": "nonsense"}, "bad_request"),
    ({"id": "has space"}, "bad_request"), ({"sha256": "XYZ"}, "bad_request"),
    ({"to": "Pnobody"}, "not_found"), ({"room": "elsewhere"}, "not_found"),
])
async def test_invalid_offers_get_coded_errors(node: Node, payload: dict[str, Any],
                                               code: str) -> None:
    ann = await node.client("ann")
    await ann.join("lobby")
    await (await node.client("bob")).join("lobby")
    offer = {"room": "lobby", "id": "f", "name": "a.txt", "size": 1, "mime": "text/plain",
             **payload}
    with pytest.raises(RequestError) as err:
        await ann.request("file:offer", offer)
    assert err.value.code == code


async def test_unknown_and_reused_ids(node: Node) -> None:
    (ann, bob, _), _, (_, b, _) = await trio(node)
    with pytest.raises(RequestError) as err:
        await bob.file_action("accept", "nope")
    assert err.value.code == "not_found"
    await ann.offer_file("lobby", "dup", "a.bin", 1, to=b)
    with pytest.raises(RequestError) as err:
        await ann.offer_file("lobby", "dup", "a.bin", 1, to=b)
    assert err.value.code == "conflict"


async def test_watching_needs_the_room_grant(node: Node) -> None:
    outsider = await node.client("out", rooms=("other",))
    with pytest.raises(RequestError) as err:
        await outsider.watch_files("lobby")
    assert err.value.code == "forbidden"


# -- HTTP relay ---------------------------------------------------------------------------


async def test_relay_upload_and_download_with_auth(node: Node) -> None:
    (ann, bob, _cat), (_, bob_log, _), (_, b, _) = await trio(node)
    body = os.urandom(300_000)
    sha = hashlib.sha256(body).hexdigest()
    await ann.offer_file("lobby", "rel", "photo.jpg", len(body), mime="image/jpeg", to=b,
                         sha256=sha)
    await bob.file_action("accept", "rel")
    url = f"{node.url}/api/files/rel"
    async with ClientSession() as http:
        headers = {"Authorization": f"Bearer {node.token('ann')}"}
        async with http.put(url, data=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
        ready = await bob_log.wait_for(FileState, lambda e: e.id == "rel" and "url" in e.data)
        assert ready.data["via"] == "relay" and ready.data["sent"] == len(body)
        async with http.get(node.url + ready.data["url"],
                            headers={"Authorization": f"Bearer {node.token('bob')}"}) as resp:
            assert resp.status == 200
            assert hashlib.sha256(await resp.read()).hexdigest() == sha
        for user, status in (("cat", 403), ("ann", 403)):
            async with http.get(url, headers={"Authorization": f"Bearer {node.token(user)}"}) as r:
                assert r.status == status
        async with http.get(url) as resp:
            assert resp.status == 401
        async with http.put(url, data=body, headers={
                "Authorization": f"Bearer {node.token('bob')}"}) as resp:
            assert resp.status == 403  # only the sender uploads
    await bob.file_action("done", "rel", sha256=sha)
    assert (await final(bob_log, "rel", "done"))["via"] == "relay"


async def test_relay_refuses_more_than_offered_or_the_cap(make_node: Any) -> None:
    node = await make_node(file_relay_max_bytes=1000)
    (ann, _bob, _), _, (_, b, _) = await trio(node)
    await ann.offer_file("lobby", "big", "a.bin", 5000, to=b)
    await ann.offer_file("lobby", "small", "a.bin", 10, to=b)
    headers = {"Authorization": f"Bearer {node.token('ann')}"}
    async with ClientSession() as http:
        async with http.put(f"{node.url}/api/files/big", data=b"x" * 5000,
                            headers=headers) as resp:
            assert resp.status == 413
        async with http.put(f"{node.url}/api/files/small", data=b"x" * 11,
                            headers=headers) as resp:
            assert resp.status == 413
    assert not list(node.config.file_dir.iterdir())


async def test_relayed_files_expire(make_node: Any) -> None:
    node = await make_node(file_ttl=0.2)
    (ann, _bob, _), _, (_, b, _) = await trio(node)
    await ann.offer_file("lobby", "ttl", "a.bin", 3, to=b)
    async with ClientSession() as http:
        async with http.put(f"{node.url}/api/files/ttl", data=b"abc",
                            headers={"Authorization": f"Bearer {node.token('ann')}"}) as resp:
            assert resp.status == 200
    assert [p.name for p in node.config.file_dir.iterdir()] == ["ttl"]
    await asyncio.sleep(0.4)
    await node.server.app[RELAY].sweep()  # what the periodic sweeper does, now
    assert list(node.config.file_dir.iterdir()) == []
    assert (await node.server.app[EDGE].files.get("ttl")).relay_done is False
