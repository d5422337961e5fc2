"""The demo's "Test my camera, mic and network" page: real Chromium (fake camera and
microphone) runs the echo test against an in-process media worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from playwright.async_api import Page

from media.worker import MediaWorker

from .browser import ECHO_STATS_JS, chromium, open_page, wait_decoding
from .conftest import Node
from .media_fixtures import eventually

pytestmark = [pytest.mark.browser, pytest.mark.media]


@pytest.fixture
async def worker(node: Node) -> AsyncIterator[MediaWorker]:
    worker = MediaWorker(node.url, node.token("worker-1", service=True))
    await worker.start()
    try:
        yield worker
    finally:
        await worker.close()


def watch_page_errors(page: Page) -> list[str]:
    """Uncaught exceptions in the page: a crash would show up here."""
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


async def echo_report(page: Page, timeout: float = 30.0) -> dict[str, Any]:
    await page.wait_for_function("() => window.mikotoDemo.echoReport !== null",
                                 timeout=timeout * 1000)
    report: dict[str, Any] = await page.evaluate("() => window.mikotoDemo.echoReport")
    return report


async def test_echo_page_plays_the_echo_and_shows_the_report(node: Node,
                                                            worker: MediaWorker) -> None:
    async with chromium() as browser:
        page = await open_page(browser, node.url, echo=1, duration=3, name="Ann")
        errors = watch_page_errors(page)
        # Our own camera decodes in the page, back from the worker, with our microphone.
        stats = await wait_decoding(page, frames=10, stats_js=ECHO_STATS_JS)
        [(worker_id, link)] = stats.items()
        assert link["audio"]["packetsReceived"] > 0
        assert link["video"]["frameWidth"] > 0
        video_id = await page.evaluate("() => window.mikotoDemo.echoVideoId")
        await page.wait_for_function(
            """(id) => { const v = document.getElementById(id);
                         return v.srcObject !== null && v.videoWidth > 0 && v.currentTime > 0; }""",
            arg=video_id, timeout=10_000)
        # The worker is a hidden participant: its signals went to the echo connection only.
        room = await page.evaluate("""() => { const r = window.mikotoDemo.echoRoom;
            return {participants: r.participants.size, peers: r.peerConnections().size}; }""")
        assert room == {"participants": 0, "peers": 0}
        assert await page.evaluate("() => window.mikotoDemo.echoTest.worker") == worker_id
        [job] = worker.jobs.values()

        report = await echo_report(page)
        # Chromium may lower resolution or frame rate under load: degraded is acceptable.
        assert report["verdict"] in ("good", "degraded"), report["reasons"]
        conn = report["connection"]
        assert conn["state"] == "connected"
        assert conn["local"] == "host" and conn["turn"] is False
        assert isinstance(report["rttMs"], int | float)
        video, audio = report["video"], report["audio"]
        assert video["width"] > 0 and video["height"] > 0, video
        assert video["frameRate"] > 5 and video["keyframes"] >= 1, video
        assert audio["packets"] > 0, audio
        assert 2.0 <= report["duration"] <= 5.0

        # The page shows it: the verdict, the reasons, the numbers.
        await page.wait_for_selector("#echo-state[data-state=reported]")
        assert await page.get_attribute("#echo-verdict", "data-verdict") == report["verdict"]
        assert await page.inner_text("#echo-verdict") != ""
        assert await page.locator("#echo-reasons li").all_inner_texts() == report["reasons"]
        rows = await page.evaluate("""() => Object.fromEntries(
            [...document.querySelectorAll('#echo-numbers tr')]
              .map((tr) => [tr.dataset.field, tr.querySelector('td').textContent]))""")
        assert rows["turn"] == "no"
        assert rows["candidates"].startswith("host")
        assert rows["video.resolution"] == f"{video['width']} \u00d7 {video['height']}"
        assert rows["rtt"] == f"{report['rttMs']} ms"
        assert await page.is_hidden("#error")

        # Stop releases the job: the worker ends it and leaves.
        await page.click("#echo-stop")
        await eventually(lambda: job.id not in worker.jobs, timeout=10)
        assert await page.evaluate("() => window.mikotoDemo.echoTest.state") == "ended"
        assert await page.evaluate("() => window.mikotoDemo.echoTest.endReason") == "stopped"
        assert await page.get_attribute("#echo-state", "data-state") == "reported"
        assert errors == []


async def test_echo_page_without_a_worker_shows_unavailable(node: Node) -> None:
    async with chromium() as browser:
        page = await open_page(browser, node.url, echo=1, duration=3)
        errors = watch_page_errors(page)
        await page.wait_for_selector("#echo-state[data-state=error]", timeout=20_000)
        assert await page.get_attribute("#error", "data-code") == "unavailable"
        assert await page.is_visible("#error")
        echo_error = await page.evaluate("() => window.mikotoDemo.echoError")
        assert echo_error["code"] == "unavailable"
        assert await page.evaluate("() => window.mikotoDemo.echoReport") is None
        # Still usable: the camera is released and the test can run again, failing the same way.
        assert await page.evaluate("() => window.mikotoDemo.echoRoom") is None
        assert await page.is_enabled("#echo-start")
        await page.evaluate("() => window.mikotoDemo.startEcho()")
        assert await page.get_attribute("#error", "data-code") == "unavailable"
        assert await page.get_attribute("#echo-state", "data-state") == "error"
        assert errors == []


async def test_echo_page_reports_a_worker_lost_mid_test(node: Node,
                                                        worker: MediaWorker) -> None:
    async with chromium() as browser:
        page = await open_page(browser, node.url, echo=1, duration=30)
        errors = watch_page_errors(page)
        await wait_decoding(page, stats_js=ECHO_STATS_JS)
        await worker._client.drop_transport()  # as a crash or a network loss would
        await page.wait_for_selector("#echo-state[data-state=error]", timeout=10_000)
        assert await page.get_attribute("#error", "data-code") == "unavailable"
        assert await page.evaluate("() => window.mikotoDemo.echoTest.endReason") == "worker_lost"
        assert await page.evaluate("() => window.mikotoDemo.echoReport") is None
        assert errors == []
