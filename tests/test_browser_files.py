"""Real Chromium pages send files to each other through the demo: peer to peer with a
Python observer, resume after a dropped data channel or socket, the HTTP relay fallback."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

import numpy as np
import pytest
from playwright.async_api import Browser, Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

from signaling.client import FileState

from .browser import chromium, open_demo, wait_decoding
from .conftest import Node
from .helpers import EventLog

pytestmark = pytest.mark.browser

MiB = 1024 * 1024


def pseudo_random(size: int, seed: int) -> bytes:
    """The demo's `pseudoRandomBytes(size, seed)`: word i = lowbias32(i * 0x9e3779b1 +
    seed * 0x85ebca77), little-endian, cut to `size` bytes."""
    i = np.arange((size + 3) // 4, dtype=np.uint32)
    h = i * np.uint32(0x9E3779B1) + np.uint32((seed * 0x85EBCA77) & 0xFFFFFFFF)
    h ^= h >> np.uint32(16)
    h = h * np.uint32(0x7FEB352D)
    h ^= h >> np.uint32(15)
    h = h * np.uint32(0x846CA68B)
    h ^= h >> np.uint32(16)
    return h.astype("<u4").tobytes()[:size]


def sha256_of(size: int, seed: int) -> str:
    return hashlib.sha256(pseudo_random(size, seed)).hexdigest()


# ---- page helpers ----------------------------------------------------------------------


async def pair(browser: Browser, node: Node, room: str, *, autoaccept: bool = True
               ) -> tuple[Page, Page, str, str]:
    """Two demo pages (no camera or microphone) in `room`, their peer connection up."""
    extra = {"autoaccept": 1} if autoaccept else {}
    ann = await open_demo(browser, node.url, room=room, name="Ann", media=0, **extra)
    bob = await open_demo(browser, node.url, room=room, name="Bob", media=0, **extra)
    for page in (ann, bob):
        await page.wait_for_selector(
            ".tile[data-local=false][data-connection-state=connected]", timeout=20_000)
    return ann, bob, await self_id(ann), await self_id(bob)


async def self_id(page: Page) -> str:
    value: str = await page.evaluate("() => window.mikotoDemo.selfId")
    return value


async def send_file(page: Page, name: str, size: int, seed: int, **options: Any) -> dict[str, Any]:
    """Offer pseudo-random bytes made in the page; returns {id, sha256}."""
    sent: dict[str, Any] = await page.evaluate(
        "([name, size, seed, options]) =>"
        " window.mikotoDemo.sendFile(name, {random: size, seed}, options)",
        [name, size, seed, options])
    return sent


async def record(page: Page, file_id: str) -> dict[str, Any]:
    found: dict[str, Any] = await page.evaluate("(id) => window.mikotoDemo.files[id]", file_id)
    return found


async def wait_row(page: Page, file_id: str, state: str, timeout: float = 30.0) -> None:
    try:
        await page.wait_for_selector(f".file-row[data-file-id='{file_id}'][data-state={state}]",
                                     timeout=timeout * 1000)
    except PlaywrightTimeout:
        seen = await record(page, file_id)
        events = await page.evaluate(
            "() => window.mikotoDemo.events.filter(e => e.type.startsWith('file')"
            " || e.type.startsWith('peer')).slice(-30)")
        raise AssertionError(f"{file_id} not {state} within {timeout}s: {seen}\n{events}") from None


async def received_sha(page: Page, file_id: str) -> str | None:
    value: str | None = await page.evaluate("(id) => window.mikotoDemo.received(id)", file_id)
    return value


def observed(log: EventLog, file_id: str) -> list[dict[str, Any]]:
    return [e.data for e in log.of(FileState) if e.id == file_id]


async def observed_final(log: EventLog, file_id: str, timeout: float = 10.0) -> dict[str, Any]:
    event = await log.wait_for(
        FileState, lambda e: e.id == file_id and e.state in ("done", "cancelled", "failed"),
        timeout=timeout)
    return event.data


def assert_monotone(states: list[dict[str, Any]]) -> None:
    confirmed = [s["bytes"] for s in states]
    sent = [s["sent"] for s in states]
    assert confirmed == sorted(confirmed), f"confirmed bytes went backwards: {confirmed}"
    assert sent == sorted(sent), f"sent bytes went backwards: {sent}"


# ---- (a) 20 MB peer to peer, watched by a Python client --------------------------------


async def test_20mb_file_goes_peer_to_peer_while_an_observer_follows_it(node: Node) -> None:
    size, seed = 20 * MiB, 7
    expected = sha256_of(size, seed)
    watcher = await node.client("watcher")
    log = EventLog(watcher)
    assert await watcher.watch_files("files-p2p") == []
    async with chromium() as browser:
        ann, bob, ann_id, bob_id = await pair(browser, node, "files-p2p")
        started = time.monotonic()
        sent = await send_file(ann, "noise.bin", size, seed)
        file_id = sent["id"]
        assert sent["sha256"] == expected
        # the receiver's row shows progress, then done with a download link
        await wait_row(bob, file_id, "done", timeout=30)
        elapsed = time.monotonic() - started
        await bob.wait_for_selector(f".file-row[data-file-id='{file_id}'] a.file-download")
        await wait_row(ann, file_id, "done", timeout=10)
        assert elapsed < 30, f"20 MB took {elapsed:.1f}s"

        # the bytes that arrived are the bytes that were sent
        assert await received_sha(bob, file_id) == expected
        got = await record(bob, file_id)
        assert got["receivedSha256"] == expected and got["bytes"] == size
        assert got["via"] == "p2p" and got["direction"] == "incoming" and got["from"] == ann_id
        mine = await record(ann, file_id)
        assert mine["state"] == "done" and mine["via"] == "p2p" and mine["bytes"] == size
        assert mine["bytesSent"] == size  # nothing sent twice
        assert [(r["offset"], r["bytes"]) for r in mine["runs"]] == [(0, size)]

        # the observer saw the whole transfer, progress never going back, ending done
        final = await observed_final(log, file_id)
        states = observed(log, file_id)
        assert final["state"] == "done" and final["sha256"] == expected
        assert final["bytes"] == size and final["via"] == "p2p"
        assert final["from"] == ann_id and final["to"] == [bob_id]
        assert final["receivers"][bob_id]["state"] == "done"
        assert_monotone(states)
        assert states[0]["state"] == "offered"
        assert any(0 < s["bytes"] < size for s in states), "no intermediate progress seen"
        assert any(s["state"] == "transferring" for s in states)


async def test_several_files_at_once_in_both_directions(node: Node) -> None:
    files = {("ann", 1): 3 * MiB, ("ann", 2): 1 * MiB + 1, ("bob", 3): 2 * MiB - 5, ("bob", 4): 0}
    async with chromium() as browser:
        ann, bob, _, _ = await pair(browser, node, "files-many")
        pages = {"ann": ann, "bob": bob}
        # both sides open their first data channels at the same time: glare, resolved by
        # perfect negotiation
        sent = await asyncio.gather(*(
            send_file(pages[who], f"{who}-{seed}.bin", size, seed)
            for (who, seed), size in files.items()))
        for ((who, seed), size), offer in zip(files.items(), sent, strict=True):
            receiver = bob if who == "ann" else ann
            await wait_row(receiver, offer["id"], "done", timeout=30)
            await wait_row(pages[who], offer["id"], "done", timeout=10)
            assert offer["sha256"] == sha256_of(size, seed)
            assert await received_sha(receiver, offer["id"]) == offer["sha256"]
            assert (await record(receiver, offer["id"]))["via"] == "p2p"


# ---- (b) resume after a dropped data channel / socket ----------------------------------


async def test_interrupted_channel_resumes_from_the_receivers_offset(node: Node) -> None:
    size, seed = 8 * MiB, 11
    expected = sha256_of(size, seed)
    async with chromium() as browser:
        ann, bob, _, _ = await pair(browser, node, "files-resume")
        # the sender's channel closes once 3 MiB are out, as a lost connection would
        sent = await send_file(ann, "resume.bin", size, seed, interruptAt=3 * MiB)
        file_id = sent["id"]
        await wait_row(bob, file_id, "done", timeout=30)
        await wait_row(ann, file_id, "done", timeout=10)
        assert await received_sha(bob, file_id) == expected

        mine = await record(ann, file_id)
        runs = mine["runs"]
        assert len(runs) >= 2, f"no second channel: {runs}"
        first, *later = runs
        assert first["offset"] == 0 and first["bytes"] >= 3 * MiB
        assert later[0]["offset"] > 0, f"resumed from zero: {runs}"
        after = sum(r["bytes"] for r in later)
        assert after == size - later[0]["offset"] < size, runs
        # what went twice is at most what was on the wire when the channel closed
        assert mine["bytesSent"] < size + 2 * MiB, mine["bytesSent"]
        got = await record(bob, file_id)
        assert got["channels"] >= 2 and got["receivedSha256"] == expected


async def test_transfer_survives_the_senders_socket_resume(node: Node) -> None:
    size, seed = 8 * MiB, 13
    expected = sha256_of(size, seed)
    watcher = await node.client("watcher")
    log = EventLog(watcher)
    await watcher.watch_files("files-socket")
    async with chromium() as browser:
        ann, bob, _, _ = await pair(browser, node, "files-socket")
        session = await ann.evaluate("() => window.mikotoDemo.sessionId")
        sent = await send_file(ann, "socket.bin", size, seed)
        file_id = sent["id"]
        # mid-transfer, the sender's signaling transport goes away and resumes
        await bob.wait_for_function("(id) => (window.mikotoDemo.files[id] || {}).bytes > 0",
                                    arg=file_id, timeout=20_000)
        await ann.evaluate("() => window.mikotoDemo.dropTransport()")
        await wait_row(bob, file_id, "done", timeout=30)
        await wait_row(ann, file_id, "done", timeout=15)
        assert await ann.evaluate("() => window.mikotoDemo.sessionId") == session
        assert await received_sha(bob, file_id) == expected
        final = await observed_final(log, file_id)
        assert final["state"] == "done" and final["sha256"] == expected
        assert_monotone(observed(log, file_id))
        mine = await record(ann, file_id)
        assert mine["bytesSent"] < 2 * size


# ---- (c) relay fallback -----------------------------------------------------------------


async def test_files_go_through_the_relay_when_peer_to_peer_fails_or_is_refused(
        node: Node) -> None:
    watcher = await node.client("watcher")
    log = EventLog(watcher)
    await watcher.watch_files("files-relay")
    a_size, a_seed = 5 * MiB, 21
    b_size, b_seed = 3 * MiB + 17, 22
    async with chromium() as browser:
        ann, bob, ann_id, bob_id = await pair(browser, node, "files-relay")
        # Ann's data channels cannot open: after 2 s without a peer-to-peer path she uploads.
        await ann.evaluate("() => window.mikotoDemo.failP2P(true)")
        # Both at once: Ann's file falls back, Bob asks for the relay from the start.
        a_sent, b_sent = await asyncio.gather(
            send_file(ann, "fallback.bin", a_size, a_seed, p2pTimeoutMs=2000),
            send_file(bob, "forced.bin", b_size, b_seed, relay=True))
        assert a_sent["sha256"] == sha256_of(a_size, a_seed)
        assert b_sent["sha256"] == sha256_of(b_size, b_seed)
        for receiver, sender, sent, size in ((bob, ann, a_sent, a_size),
                                             (ann, bob, b_sent, b_size)):
            file_id = sent["id"]
            await wait_row(receiver, file_id, "done", timeout=30)
            await wait_row(sender, file_id, "done", timeout=10)
            assert await received_sha(receiver, file_id) == sent["sha256"]
            got = await record(receiver, file_id)
            assert got["via"] == "relay" and got["bytes"] == size
            row = f".file-row[data-file-id='{file_id}']"
            assert await receiver.get_attribute(row, "data-via") == "relay"
            mine = await record(sender, file_id)
            assert mine["via"] == "relay" and mine["bytesSent"] == 0  # nothing went peer to peer
            final = await observed_final(log, file_id)
            assert final["state"] == "done" and final["via"] == "relay"
            assert final["sha256"] == sent["sha256"] and final["sent"] == size
            assert_monotone(observed(log, file_id))
        assert (await record(bob, a_sent["id"]))["from"] == ann_id
        assert (await record(ann, b_sent["id"]))["from"] == bob_id


# ---- offers answered in the page --------------------------------------------------------


async def test_reject_and_cancel_from_the_rows(node: Node) -> None:
    async with chromium() as browser:
        ann, bob, _, _ = await pair(browser, node, "files-answer", autoaccept=False)
        rejected = (await send_file(ann, "unwanted.bin", 100_000, 1))["id"]
        row = f".file-row[data-file-id='{rejected}']"
        await bob.wait_for_selector(f"{row}[data-state=offered] .file-accept")
        await bob.click(f"{row} .file-reject")
        await wait_row(bob, rejected, "rejected", timeout=10)
        await wait_row(ann, rejected, "cancelled", timeout=10)
        assert (await record(ann, rejected))["reason"] == "rejected"

        # the sender withdraws an offer nobody answered yet
        withdrawn = (await send_file(ann, "later.bin", 100_000, 2))["id"]
        await bob.wait_for_selector(f".file-row[data-file-id='{withdrawn}'][data-state=offered]")
        await ann.click(f".file-row[data-file-id='{withdrawn}'] .file-cancel")
        await wait_row(bob, withdrawn, "cancelled", timeout=10)

        # accepted by hand: it arrives
        taken = (await send_file(ann, "wanted.bin", 300_000, 3))["id"]
        await bob.click(f".file-row[data-file-id='{taken}'] .file-accept")
        await wait_row(bob, taken, "done", timeout=20)
        assert await received_sha(bob, taken) == sha256_of(300_000, 3)


@pytest.mark.media
async def test_a_headless_aiortc_peer_sends_a_file_to_a_chromium_page(node: Node) -> None:
    import hashlib

    from media import HeadlessPeer, SyntheticMedia

    client = await node.client("robot")
    peer = HeadlessPeer(client, media=SyntheticMedia(160, 120, fps=5))
    data = bytes(range(256)) * 4096  # 1 MiB
    try:
        await peer.join("mixed-files")
        async with chromium() as browser:
            page = await open_demo(browser, node.url, room="mixed-files", name="Ann",
                                   autoaccept=1)
            await wait_decoding(page)  # the page offered first; its offer carried SCTP
            page_id = await page.evaluate("() => window.mikotoDemo.selfId")
            out = peer.send_file(page_id, data, name="blob.bin")
            final = await asyncio.wait_for(out.wait(), 30)
            assert final["state"] == "done"
            got = await page.evaluate(f"() => window.mikotoDemo.received('{out.id}')")
            assert got == hashlib.sha256(data).hexdigest()
    finally:
        await peer.close()
