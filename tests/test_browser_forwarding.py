"""Forwarded rooms from the demo: Chromium pages (fake camera and microphone) and aiortc
HeadlessPeers in one room above the mesh limit, publishing once to an in-process
forwarding worker and receiving each other from it (docs/protocol.md, "Forwarding")."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any

import pytest
from playwright.async_api import Page

from media import HeadlessPeer, SyntheticMedia
from media.forward import ForwardJob
from media.worker import MediaWorker
from signaling.ids import ParticipantId

from .browser import chromium, open_demo, peer_stats, wait_decoding
from .conftest import Node, NodeFactory
from .media_fixtures import eventually, media_worker, peer_joiner

pytestmark = [pytest.mark.browser, pytest.mark.media]

MEDIA = SyntheticMedia(320, 240, fps=15)
# The demo's camera parameters: small, for several pages on two cores.
SMALL = {"width": 320, "height": 240, "fps": 15}
FORWARDING = "#room-mode[data-mode=forward]"


def forward_job(worker: MediaWorker) -> ForwardJob:
    [job] = [j for j in worker.jobs.values() if isinstance(j, ForwardJob)]
    return job


def watch_page_errors(page: Page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


async def self_id(page: Page) -> ParticipantId:
    return ParticipantId(await page.evaluate("() => window.mikotoDemo.selfId"))


async def wait_forwarding(page: Page, worker: str | None = None) -> None:
    """The page shows "via server" and keeps no peer connection with anyone."""
    await page.wait_for_selector(FORWARDING, state="visible", timeout=15_000)
    assert await page.evaluate("() => window.mikotoDemo.mode") == "forward"
    assert await page.evaluate("() => Object.keys(window.mikotoDemo.peers())") == []
    if worker is not None:
        assert await page.evaluate("() => window.mikotoDemo.forwardWorker") == worker


def decoded(stats: dict[str, Any]) -> dict[str, int]:
    return {p: s["video"]["framesDecoded"] for p, s in stats.items()}


async def wait_more_frames(page: Page, participants: Collection[str], more: int = 10,
                           timeout: float = 20.0) -> None:
    """Each of `participants`' video decodes `more` frames from now on."""
    before = decoded(await peer_stats(page))
    now: dict[str, int] = {}
    try:
        async with asyncio.timeout(timeout):
            while True:
                now = decoded(await peer_stats(page))
                if all(now.get(p, 0) >= before.get(p, 0) + more for p in participants):
                    return
                await asyncio.sleep(0.25)
    except TimeoutError:
        raise AssertionError(f"video stalled: {before} -> {now}") from None


async def wait_more_peer_frames(peer: HeadlessPeer, participants: Collection[ParticipantId],
                                more: int = 10, timeout: float = 20.0) -> None:
    before = {p: s.video_frames for p, s in peer.stats().items()}
    await peer.wait_for_media(
        min_video_frames=max(before.get(p, 0) for p in participants) + more,
        participants=participants, timeout=timeout)


ECHO_JS = """async () => {
  const test = await window.mikotoDemo.room.echoTest({ duration: 2 });
  try {
    const report = await test.wait();
    return { verdict: report.verdict, frames: report.video ? report.video.frames : 0 };
  } finally {
    await test.stop();
  }
}"""


async def test_chromium_and_aiortc_subscribers_receive_a_chromium_publisher_forwarded(
        make_node: NodeFactory) -> None:
    node = await make_node(mesh_max_participants=2)
    room = "forwarded"
    async with (media_worker(node, "forwarder") as worker, chromium() as browser,
                peer_joiner(node, media=MEDIA, room=room) as join):
        publisher = await open_demo(browser, node.url, room=room, name="Pub",
                                    token=node.token("pub", record=True), **SMALL)
        errors = watch_page_errors(publisher)
        pub = await self_id(publisher)
        first = await open_demo(browser, node.url, room=room, name="Sub1", media=0)
        errors += watch_page_errors(first)
        await wait_decoding(first, participants=[pub])  # two: a mesh
        assert await first.evaluate("() => window.mikotoDemo.mode") == "mesh"
        assert await first.is_hidden("#room-mode")

        robot = await join("robot")  # three: above the limit, the room forwards
        await eventually(lambda: robot.forwarded is not None, timeout=15)
        assert robot.forwarded is not None
        worker_id = robot.forwarded.worker
        for page in (publisher, first):
            await wait_forwarding(page, worker_id)
        # Everyone decodes the publisher: two Chromium subscribers and an aiortc one.
        stats = await wait_decoding(first, frames=10, participants=[pub])
        assert stats[pub]["connectionState"] == "connected"
        await first.wait_for_selector(
            f".tile[data-participant-id='{pub}'][data-connection-state=connected]")
        await robot.wait_for_media(min_video_frames=10, min_audio_frames=10,
                                   participants=[pub], timeout=30)
        await wait_decoding(publisher, frames=10, participants=[robot.id])
        # The publisher sent once, VP8, over its `up` connection.
        codecs = await publisher.evaluate("""async () => {
          const { up } = window.mikotoDemo.forwardConnections();
          const out = [];
          (await up.getStats()).forEach((s) => { if (s.type === 'codec') out.push(s.mimeType); });
          return out; }""")
        assert "video/VP8" in codecs, codecs

        # A late subscriber joins a forwarded room: it offers to nobody, and has the
        # publisher's video within a second of its `down` connection connecting.
        late = await open_demo(browser, node.url, room=room, name="Late", media=0)
        errors += watch_page_errors(late)
        await wait_forwarding(late, worker_id)
        await wait_decoding(late, participants=[pub, robot.id])
        await late.wait_for_function(
            "(id) => window.mikotoDemo.timings().firstVideoAt[id] !== undefined", arg=pub)
        timings = await late.evaluate("() => window.mikotoDemo.timings()")
        delay = timings["firstVideoAt"][pub] - timings["downConnectedAt"]
        # Seen by two callbacks: the first frame's poll may run a moment before the
        # `connected` event's (measured: 1 ms before).
        assert -100 <= delay < 1000, timings
        assert not robot.links  # no mesh offer from the late page reached it
        # Two publishers (audio + video in), the four get the others' tracks (12 out).
        assert forward_job(worker).load == 4 + 12

        # The echo test works beside the two connections; a recording of a forwarded room
        # is taken from what the worker forwards, with no upstream connection.
        echo = await publisher.evaluate(ECHO_JS)
        assert echo["frames"] > 0, echo
        await publisher.click("#record-start")
        await publisher.wait_for_selector("#recording", timeout=20_000)
        await eventually(lambda: len(list(node.config.recordings_dir.glob("*/*.webm"))) >= 4,
                         timeout=20)
        assert await publisher.evaluate("() => window.mikotoDemo.recordingConnection()") is None
        await wait_decoding(late, frames=10, participants=[pub])
        await publisher.click("#record-stop")
        await publisher.wait_for_selector("#recording", state="hidden", timeout=10_000)
        await wait_more_frames(late, [pub])
        assert errors == []


async def test_a_six_person_call_through_a_worker_and_a_leave_renegotiates(node: Node) -> None:
    """Three Chromium pages and three aiortc peers, the default mesh limit (4): a mesh
    until the fifth join, then forwarded; everyone decodes everyone; one page leaves."""
    room = "six"
    async with (media_worker(node, "forwarder") as worker, chromium() as browser,
                peer_joiner(node, media=MEDIA, room=room) as join):
        pages = [await open_demo(browser, node.url, room=room, name=f"Page {i}", **SMALL)
                 for i in (1, 2)]
        errors: list[str] = []
        for page in pages:
            errors += watch_page_errors(page)
        robots = [await join("robot-1"), await join("robot-2")]  # four: a mesh
        await wait_decoding(pages[0], peers=3)
        assert await pages[0].evaluate("() => window.mikotoDemo.mode") == "mesh"
        assert len(await pages[0].evaluate("() => Object.keys(window.mikotoDemo.peers())")) == 3

        pages.append(await open_demo(browser, node.url, room=room, name="Page 3", **SMALL))
        errors += watch_page_errors(pages[2])
        robots.append(await join("robot-3"))  # six
        page_ids = [await self_id(page) for page in pages]
        everyone = page_ids + [robot.id for robot in robots]
        assert len(set(everyone)) == 6
        await eventually(lambda: all(r.forwarded is not None for r in robots), timeout=15)
        forwarded = robots[0].forwarded
        assert forwarded is not None
        worker_id = forwarded.worker
        for page in pages:
            await wait_forwarding(page, worker_id)
        for page, me in zip(pages, page_ids, strict=True):
            others = [p for p in everyone if p != me]
            stats = await wait_decoding(page, frames=10, participants=others, timeout=60)
            assert set(stats) == set(others)
            assert all(stats[p]["audio"]["packetsReceived"] > 0 for p in others), stats
            assert await page.inner_text("#participant-count") == "6"
        for robot in robots:
            assert robot.forwarded is not None and not robot.links
            await robot.wait_for_media(min_video_frames=10, min_audio_frames=10, timeout=60,
                                       participants=[p for p in everyone if p != robot.id])
        # Each publishes once (6 x audio + video in) and gets the 5 others (60 out).
        assert forward_job(worker).load == 12 + 60

        # A page leaves: the others lose its tile, the worker's re-offer turns its two
        # transceivers inactive, and everyone keeps decoding the four left.
        leaver, leaver_id = pages.pop(), page_ids.pop()
        await leaver.click("#leave-button")
        await leaver.wait_for_selector("#status[data-state=left]")
        rest = [p for p in everyone if p != leaver_id]
        for page, me in zip(pages, page_ids, strict=True):
            await page.wait_for_selector(f".tile[data-participant-id='{leaver_id}']",
                                         state="detached", timeout=10_000)
            await page.wait_for_function("""() => {
              const { down } = window.mikotoDemo.forwardConnections();
              return down.getTransceivers().filter((t) => t.currentDirection === 'inactive')
                .length === 2; }""", timeout=15_000)
            others = [p for p in rest if p != me]
            await wait_more_frames(page, others)
            assert set(await peer_stats(page)) == set(others)
            assert await page.inner_text("#participant-count") == "5"
        for robot in robots:
            await eventually(lambda r=robot: leaver_id not in r.stats(), timeout=10)  # type: ignore[misc]
            await wait_more_peer_frames(robot, [p for p in rest if p != robot.id])
        await eventually(lambda: forward_job(worker).load == 10 + 40, timeout=10)
        assert errors == []


async def test_losing_the_worker_meshes_the_pages_again(make_node: NodeFactory) -> None:
    """`room:mode mesh`: the forward connections close and every pair meshes again, the
    participant whose id sorts first offering (Chromium with Chromium, and with aiortc)."""
    node = await make_node(mesh_max_participants=2)
    room = "fallback"
    async with (media_worker(node, "forwarder") as worker, chromium() as browser,
                peer_joiner(node, media=MEDIA, room=room) as join):
        pages = [await open_demo(browser, node.url, room=room, name=f"Page {i}", **SMALL)
                 for i in (1, 2)]
        errors = watch_page_errors(pages[0]) + watch_page_errors(pages[1])
        robot = await join("robot")
        ids = [await self_id(page) for page in pages] + [robot.id]
        for page, me in zip(pages, ids[:2], strict=True):
            await wait_forwarding(page)
            await wait_decoding(page, participants=[p for p in ids if p != me])

        await worker._client.drop_transport()  # no other worker: back to mesh
        for page, me in zip(pages, ids[:2], strict=True):
            others = [p for p in ids if p != me]
            await page.wait_for_function("() => window.mikotoDemo.mode === 'mesh'",
                                         timeout=15_000)
            assert await page.is_hidden("#room-mode")
            assert await page.evaluate("() => window.mikotoDemo.forwardConnections()") is None
            stats = await wait_decoding(page, frames=10, participants=others)
            assert set(stats) == set(await page.evaluate(
                "() => Object.keys(window.mikotoDemo.peers())")) == set(others)
        await eventually(lambda: robot.forwarded is None, timeout=10)
        await robot.wait_for_media(min_video_frames=10, participants=ids[:2], timeout=30)
        assert errors == []
