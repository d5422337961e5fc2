"""Real headless Chromium calls through the demo: page↔page, page↔aiortc, relay-only via coturn."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from media.peer import HeadlessPeer
from media.tracks import SyntheticMedia

from .browser import chromium, open_demo, selected_candidate_types, wait_decoding
from .conftest import Node
from .turn import Turn, coturn

pytestmark = pytest.mark.browser


@pytest.fixture
def turn(tmp_path: Path) -> Iterator[Turn]:
    with coturn(tmp_path) as server:
        yield server


async def test_two_chromium_pages_call_each_other_through_the_demo(node: Node) -> None:
    async with chromium() as browser:
        ann = await open_demo(browser, node.url, room="pair", name="Ann")
        bob = await open_demo(browser, node.url, room="pair", name="Bob")
        ann_stats = await wait_decoding(ann)
        bob_stats = await wait_decoding(bob)
        ann_id = await ann.evaluate("() => window.mikotoDemo.selfId")
        bob_id = await bob.evaluate("() => window.mikotoDemo.selfId")
        assert set(ann_stats) == {bob_id} and set(bob_stats) == {ann_id}
        assert ann_stats[bob_id]["audio"]["packetsReceived"] > 0
        # the tiles show the other participant by name
        await ann.wait_for_selector(f"[data-participant-id='{bob_id}']")
        assert "Bob" in await ann.inner_text(f"[data-participant-id='{bob_id}']")


async def test_mute_toggle_shows_on_the_other_tile(node: Node) -> None:
    async with chromium() as browser:
        ann = await open_demo(browser, node.url, room="mute", name="Ann")
        bob = await open_demo(browser, node.url, room="mute", name="Bob")
        ann_id = await ann.evaluate("() => window.mikotoDemo.selfId")
        tile = f".tile[data-participant-id='{ann_id}']"
        await bob.wait_for_selector(f"{tile}[data-audio='true']")
        await ann.click("#toggle-audio")
        await bob.wait_for_selector(f"{tile}[data-audio='false']", timeout=10_000)
        await bob.wait_for_selector(f"{tile}[data-video='true']")


async def test_an_operators_mute_request_mutes_the_page(node: Node) -> None:
    async with chromium() as browser:
        ann = await open_demo(browser, node.url, room="muted", name="Ann")
        bob = await open_demo(browser, node.url, room="muted", name="Bob")
        ann_id = await ann.evaluate("() => window.mikotoDemo.selfId")
        tile = f".tile[data-participant-id='{ann_id}']"
        await bob.wait_for_selector(f"{tile}[data-audio='true']")
        headers = {"Authorization": "Bearer " + node.token("ops", admin=True)}
        async with aiohttp.ClientSession(headers=headers) as http, http.post(
                f"{node.url}/api/admin/rooms/muted/participants/{ann_id}/mute",
                json={"audio": True}) as resp:
            assert (resp.status, (await resp.json())["delivered"]) == (200, True)
        await bob.wait_for_selector(f"{tile}[data-audio='false']", timeout=10_000)
        await ann.wait_for_selector("#toggle-audio[aria-pressed='false']", timeout=10_000)
        await bob.wait_for_selector(f"{tile}[data-video='true']")  # only what was asked


async def test_a_kicked_page_leaves_and_does_not_rejoin(node: Node) -> None:
    async with chromium() as browser:
        ann = await open_demo(browser, node.url, room="kick", name="Ann")
        bob = await open_demo(browser, node.url, room="kick", name="Bob")
        ann_id = await ann.evaluate("() => window.mikotoDemo.selfId")
        await bob.wait_for_selector(f".tile[data-participant-id='{ann_id}']")
        headers = {"Authorization": "Bearer " + node.token("ops", admin=True)}
        async with aiohttp.ClientSession(headers=headers) as http:
            async with http.delete(
                    f"{node.url}/api/admin/rooms/kick/participants/{ann_id}") as resp:
                assert resp.status == 200
            await ann.wait_for_function(
                "() => !window.mikotoDemo.room || window.mikotoDemo.room.state === 'left'",
                timeout=10_000)
            await bob.wait_for_selector(f".tile[data-participant-id='{ann_id}']",
                                        state="detached", timeout=10_000)
            await asyncio.sleep(1.5)  # longer than a rejoin takes
            async with http.get(f"{node.url}/api/admin/rooms/kick") as resp:
                assert [p["user"] for p in (await resp.json())["participants"]] == [
                    await bob.evaluate("() => window.mikotoDemo.userId")]


@pytest.mark.media
@pytest.mark.parametrize("first", ["aiortc", "chromium"])
async def test_chromium_page_calls_a_headless_aiortc_peer(node: Node, first: str) -> None:
    client = await node.client("robot")
    peer = HeadlessPeer(client, media=SyntheticMedia(320, 240, fps=15))
    try:
        async with chromium() as browser:
            if first == "aiortc":
                await peer.join("mixed", name="Robot")
                page = await open_demo(browser, node.url, room="mixed", name="Ann")
            else:
                page = await open_demo(browser, node.url, room="mixed", name="Ann")
                await peer.join("mixed", name="Robot")
            stats = await wait_decoding(page)
            assert set(stats) == {peer.id}
            got = await peer.wait_for_media(min_video_frames=10, min_audio_frames=10)
            [(page_id, link)] = got.items()
            assert page_id == await page.evaluate("() => window.mikotoDemo.selfId")
            assert link.video_size is not None
    finally:
        await peer.close()


async def test_relay_only_call_through_coturn_with_node_credentials(
    make_node: Any, turn: Turn
) -> None:
    node = await make_node(turn_urls=turn.urls, turn_secret=turn.secret, turn_ttl=300)
    async with chromium() as browser:
        ann = await open_demo(browser, node.url, room="relayed", name="Ann", relay=1)
        bob = await open_demo(browser, node.url, room="relayed", name="Bob", relay=1)
        await wait_decoding(ann)
        await wait_decoding(bob)
        for page in (ann, bob):
            for pair in (await selected_candidate_types(page)).values():
                assert pair == {"local": "relay", "remote": "relay"}
    assert turn.allocations() >= 2


async def test_wrong_turn_secret_gets_no_relay_and_no_media(make_node: Any, turn: Turn) -> None:
    # The negative of the test above: it proves the relay test depends on the credentials.
    node = await make_node(turn_urls=turn.urls, turn_secret="not-the-turn-secret", turn_ttl=300)
    async with chromium() as browser:
        ann = await open_demo(browser, node.url, room="norelay", name="Ann", relay=1)
        await open_demo(browser, node.url, room="norelay", name="Bob", relay=1)
        with pytest.raises(AssertionError, match="no decoded video"):
            await wait_decoding(ann, timeout=8)
    assert turn.allocations() == 0
