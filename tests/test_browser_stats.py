"""The demo's connection quality badges and stats overlays, between two Chromium pages:
peer to peer, and through a forwarding media worker."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import pytest
from playwright.async_api import Page

from .browser import chromium, open_demo
from .conftest import Node, NodeFactory

pytestmark = pytest.mark.browser

# The overlay as the user reads it: its rows' text by `data-field`, from the DOM.
OVERLAY_JS = """
(tile) => Object.fromEntries([...document.querySelectorAll(`${tile} .tile-stats tr[data-field]`)]
  .map((tr) => [tr.dataset.field, tr.querySelector('td').textContent]))
"""
# The overlay writes a size as 640 (multiplication sign) 480, and an en dash for
# what was not measured.
RESOLUTION = re.compile(r"\d+\u00d7\d+")
NONE = "\u2013"
Rows = dict[str, str]


def number(text: str | None, unit: str) -> float:
    match = re.fullmatch(rf"(\d+(?:\.\d+)?) {unit}", text or "")
    return float(match.group(1)) if match else 0.0


def receiving(rows: Rows) -> bool:
    return (number(rows.get("video.bitrate"), "kbps") > 0
            and number(rows.get("video.fps"), "fps") > 0
            and RESOLUTION.fullmatch(rows.get("video.resolution", "")) is not None
            and re.match(r"(host|srflx|prflx|relay) ↔ ", rows.get("candidates", "")) is not None
            and rows.get("quality") in ("good", "fair", "poor")
            and re.fullmatch(r"\d+(\.\d)? ms", rows.get("rtt", "")) is not None)


def sending(rows: Rows) -> bool:
    return (number(rows.get("video.bitrate"), "kbps") > 0
            and RESOLUTION.fullmatch(rows.get("video.resolution", "")) is not None)


async def wait_overlay(page: Page, tile: str, ready: Callable[[Rows], bool],
                       timeout: float = 20.0) -> Rows:
    """Wait until the overlay on `tile` reads as `ready`; its rows."""
    rows: Rows = {}
    try:
        async with asyncio.timeout(timeout):
            while not ready(rows := await page.evaluate(OVERLAY_JS, tile)):
                await asyncio.sleep(0.25)
    except TimeoutError:
        hook = await page.evaluate("() => window.mikotoDemo.tileStats()")
        raise AssertionError(f"{tile}: overlay {rows}, hook {hook}") from None
    return rows


async def test_stats_overlay_shows_the_other_participants_media_and_path(node: Node) -> None:
    async with chromium() as browser:
        ann = await open_demo(browser, node.url, room="stats", name="Ann", stats=1)
        bob = await open_demo(browser, node.url, room="stats", name="Bob")
        bob_id = await bob.evaluate("() => window.mikotoDemo.selfId")
        tile = f".tile[data-participant-id='{bob_id}']"

        rows = await wait_overlay(ann, tile, receiving)
        assert await ann.is_visible(f"{tile} .tile-stats")
        badge = f"{tile} .tile-quality"
        assert await ann.is_visible(badge)
        assert await ann.get_attribute(badge, "data-quality") == rows["quality"]
        assert rows["video.codec"] != NONE and "audio.bitrate" in rows
        await wait_overlay(ann, ".tile[data-local='true']", sending)

        # The button and the `s` key toggle the overlays; the badge stays.
        await ann.click("#toggle-stats")
        assert not await ann.is_visible(f"{tile} .tile-stats")
        assert await ann.is_visible(badge)
        await ann.keyboard.press("s")
        assert await ann.is_visible(f"{tile} .tile-stats")

        # Without `stats=1` the overlays start hidden, but the numbers are there.
        assert not await bob.is_visible(".tile[data-local='false'] .tile-stats")
        await bob.wait_for_selector(".tile[data-local='false'] .tile-quality[data-quality]")

        # Leaving stops the refreshes and forgets the numbers.
        await ann.evaluate("() => window.mikotoDemo.leave()")
        after = await ann.evaluate("() => window.mikotoDemo.tileStats()")
        assert after["running"] is False and after["remote"] == {} and after["local"] is None


@pytest.mark.media
async def test_stats_overlay_in_a_forwarded_room_shows_the_path_to_the_worker(
        make_node: NodeFactory) -> None:
    from .media_fixtures import media_worker  # only the media tests pay for importing aiortc

    node = await make_node(mesh_max_participants=1)  # two is above the limit: forwarded
    small = {"width": 320, "height": 240, "fps": 15}
    async with media_worker(node, "forwarder"), chromium() as browser:
        ann = await open_demo(browser, node.url, room="fwd-stats", name="Ann", stats=1, **small)
        bob = await open_demo(browser, node.url, room="fwd-stats", name="Bob", **small)
        await ann.wait_for_selector("#room-mode[data-mode=forward]", timeout=15_000)
        bob_id = await bob.evaluate("() => window.mikotoDemo.selfId")
        # Bob's media from the worker's `down` connection; ours to it over `up`.
        await wait_overlay(ann, f".tile[data-participant-id='{bob_id}']", receiving)
        await wait_overlay(ann, ".tile[data-local='true']", sending)
