"""Real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, and demo helpers."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

from playwright.async_api import Browser, Page, async_playwright

FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
]


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError("chromium is not installed: run ./scripts/test, which installs it")
    return path


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    # Playwright gives every launch a fresh temporary profile (the --user-data-dir).
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=chromium_path(), headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


async def open_page(browser: Browser, base_url: str, **params: Any) -> Page:
    """Open the demo with these query parameters in its own context (own sessionStorage,
    so its own user), without waiting for anything but the load."""
    context = await browser.new_context(permissions=["camera", "microphone"])
    page = await context.new_page()
    page.on("console", lambda msg: _console(page, msg.type, msg.text))
    await page.goto(f"{base_url}/?{urlencode(params)}")
    return page


async def open_demo(browser: Browser, base_url: str, **params: Any) -> Page:
    """Open the demo in its own context (own sessionStorage, so its own user) and autojoin."""
    page = await open_page(browser, base_url, autojoin=1, **params)
    await page.wait_for_function("() => window.mikotoDemo && window.mikotoDemo.selfId",
                                 timeout=20_000)
    return page


def _console(page: Page, kind: str, text: str) -> None:
    if kind in ("error", "warning"):
        print(f"[{page.url[-40:]}] console.{kind}: {text}")


# Summed inbound-rtp counters per remote side: the room's peers, or the echo test's connection.
ROOM_STATS_JS = "() => window.mikotoDemo.stats()"
ECHO_STATS_JS = "() => window.mikotoDemo.echoStats()"


async def peer_stats(page: Page, stats_js: str = ROOM_STATS_JS) -> dict[str, Any]:
    stats: dict[str, Any] = await page.evaluate(stats_js)
    return stats


async def wait_decoding(page: Page, peers: int = 1, frames: int = 1,
                        timeout: float = 30.0, *, stats_js: str = ROOM_STATS_JS,
                        participants: Collection[str] | None = None) -> dict[str, Any]:
    """Wait until `peers` remote participants' video has `frames` decoded frames each
    (`participants`: these ones, each of them; `stats_js=ECHO_STATS_JS`: the echo test's
    connection instead)."""
    stats: dict[str, Any] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                stats = await peer_stats(page, stats_js)
                decoding = {p for p, s in stats.items() if s["video"]["framesDecoded"] >= frames}
                if (len(decoding) >= peers if participants is None
                        else decoding.issuperset(participants)):
                    return stats
                await asyncio.sleep(0.25)
    except TimeoutError:
        raise AssertionError(f"no decoded video within {timeout}s: {stats}") from None


SELECTED_PAIRS_JS = """
async () => {
  const out = {};
  for (const [id, pc] of Object.entries(window.mikotoDemo.peers())) {
    const report = await pc.getStats();
    let pairId = null;
    report.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId)
      pairId = s.selectedCandidatePairId; });
    const pair = pairId && report.get(pairId);
    const local = pair && report.get(pair.localCandidateId);
    const remote = pair && report.get(pair.remoteCandidateId);
    out[id] = {local: local ? local.candidateType : null,
               remote: remote ? remote.candidateType : null};
  }
  return out;
}
"""


async def selected_candidate_types(page: Page) -> dict[str, dict[str, str | None]]:
    result: dict[str, dict[str, str | None]] = await page.evaluate(SELECTED_PAIRS_JS)
    return result
