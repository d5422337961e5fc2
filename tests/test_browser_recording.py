"""Recording from the demo: real Chromium (fake camera and microphone) and an aiortc peer
send their media to an in-process recording worker; the files are checked with PyAV."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import av
import pytest
from playwright.async_api import Page

from media import HeadlessPeer, SyntheticMedia
from media.worker import MediaWorker

from .browser import chromium, open_demo, wait_decoding
from .conftest import Node, StartWorker
from .media_fixtures import JoinPeer, eventually, peer_joiner

pytestmark = [pytest.mark.browser, pytest.mark.media]

MEDIA = SyntheticMedia(320, 240, fps=15)
ROOM = "rec-demo"
BADGE = "#recording[data-state=recording]"


@pytest.fixture
async def worker(start_worker: StartWorker) -> MediaWorker:
    return cast(MediaWorker, await start_worker("recorder"))


@pytest.fixture
async def join(node: Node) -> AsyncIterator[JoinPeer]:
    async with peer_joiner(node, media=MEDIA, room=ROOM) as join:
        yield join


@pytest.fixture
async def recorder_peer(node: Node) -> AsyncIterator[HeadlessPeer]:
    """An aiortc peer whose token has grant `record` (not joined yet)."""
    peer = HeadlessPeer(await node.client("alice", record=True), media=MEDIA)
    yield peer
    await peer.close()


def watch_page_errors(page: Page) -> list[str]:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return errors


def catalog(directory: Path) -> dict[str, Any]:
    return dict(json.loads((directory / "catalog.json").read_text()))


def tracks_by_user(cat: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """{user: {kind: track}}: the last track of each kind (one each in these tests)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for track in cat["tracks"]:
        out.setdefault(track["user"], {})[track["kind"]] = track
    return out


def recorded(directory: Path, *users: str) -> bool:
    """Every user's audio and video track has its file (its first packet arrived)."""
    if not (directory / "catalog.json").is_file():
        return False
    mine = tracks_by_user(catalog(directory))
    return all(set(mine.get(u, {})) == {"audio", "video"}
               and all(t["file"] for t in mine[u].values()) for u in users)


def decode_video(path: Path) -> tuple[list[tuple[int, int]], float]:
    """The size of every frame PyAV decodes from a file, and their span in seconds."""
    sizes: list[tuple[int, int]] = []
    times: list[float] = []
    with av.open(str(path)) as container:
        for frame in container.decode(container.streams.video[0]):
            sizes.append((frame.width, frame.height))
            if frame.time is not None:
                times.append(float(frame.time))
    return sizes, (times[-1] - times[0]) if times else 0.0


async def recording_state(page: Page) -> dict[str, Any] | None:
    state: dict[str, Any] | None = await page.evaluate("() => window.mikotoDemo.recording")
    return state


async def upstream_video(page: Page) -> dict[str, Any]:
    stats: dict[str, Any] | None = await page.evaluate("() => window.mikotoDemo.recordingStats()")
    assert stats is not None, "no upstream connection"
    video: dict[str, Any] = stats["video"]
    return video


# Scales what Chromium sends to the recorder only (the room's peers keep the full size).
SCALE_UPSTREAM_JS = """async (factor) => {
  const pc = window.mikotoDemo.recordingConnection();
  const sender = pc.getSenders().find((s) => s.track && s.track.kind === 'video');
  const params = sender.getParameters();
  params.encodings[0].scaleResolutionDownBy = factor;
  await sender.setParameters(params);
  return sender.track.getSettings().width;
}"""


def area(size: list[int] | tuple[int, int]) -> int:
    return size[0] * size[1]


async def test_recording_from_the_demo_with_a_size_change_mid_call(
        node: Node, worker: MediaWorker, join: JoinPeer, tmp_path: Path) -> None:
    bob = await join("bob")
    async with chromium() as browser:
        page = await open_demo(browser, node.url, room=ROOM, name="Alice",
                               token=node.token("alice", record=True))
        errors = watch_page_errors(page)
        await wait_decoding(page)
        assert await page.evaluate("() => window.mikotoDemo.userId") == "alice"
        assert await page.evaluate("() => window.mikotoDemo.canRecord") is True
        assert await page.is_hidden("#recording")
        assert await page.is_hidden("#record-stop")

        await page.click("#record-start")
        await page.wait_for_selector(BADGE, state="visible", timeout=20_000)
        state = await recording_state(page)
        assert state is not None and state["by"] == "alice" and state["active"] is True
        badge = await page.inner_text("#recording")
        assert "REC" in badge and "started by you" in badge, badge
        await page.wait_for_selector("#record-stop", state="visible")
        assert await page.is_hidden("#record-start")
        directory = node.config.recordings_dir / state["recording"]
        await eventually(lambda: recorded(directory, "alice", "bob"), timeout=20)
        # The worker is hidden: its signals went to the upstream connection, not a room peer.
        assert set(await page.evaluate("() => Object.keys(window.mikotoDemo.peers())")) == {bob.id}
        assert bob.upstream is not None
        await page.wait_for_selector("#recording[data-upstream=connected]")
        assert int(await page.get_attribute("#recording", "data-elapsed") or -1) >= 0

        # Some seconds at the size Chromium chose, then half of it, on the upstream only.
        await asyncio.sleep(3)
        before = await upstream_video(page)
        assert before["frameWidth"] > 0, before
        source_width = await page.evaluate(
            "() => window.mikotoDemo.localStream.getVideoTracks()[0].getSettings().width")
        await page.evaluate(SCALE_UPSTREAM_JS, 2 * source_width / before["frameWidth"])

        def smaller() -> bool:
            sizes = tracks_by_user(catalog(directory))["alice"]["video"]["sizes"]
            return bool(area(sizes[-1]) < before["frameWidth"] * before["frameHeight"])

        await eventually(smaller, timeout=15)
        after = await upstream_video(page)
        assert after["frameWidth"] * 2 == before["frameWidth"], (before, after)
        await asyncio.sleep(2)  # some seconds at the new size

        await page.click("#record-stop")
        await page.wait_for_selector("#recording", state="hidden", timeout=10_000)
        assert await recording_state(page) is None
        assert "Recording stopped by you" in await page.inner_text("#notice")
        await eventually(lambda: catalog(directory)["state"] == "complete", timeout=10)
        await page.wait_for_selector("#record-start", state="visible")
        assert await page.evaluate("() => window.mikotoDemo.recordingConnection()") is None
        await eventually(lambda: bob.upstream is None)
        # Only the upstream was scaled: the call to bob was not.
        assert await page.evaluate("""(id) => window.mikotoDemo.peers()[id].getSenders()
            .find((s) => s.track && s.track.kind === 'video')
            .getParameters().encodings[0].scaleResolutionDownBy ?? 1""", bob.id) == 1

        # The recordings panel lists it; its video downloads from there (and is checked
        # below from the download); Delete removes the recording.
        cat = catalog(directory)
        row = f"#recordings-list li[data-recording={directory.name}][data-state=complete]"
        await page.wait_for_selector(row, timeout=10_000)
        video_name = tracks_by_user(cat)["alice"]["video"]["file"]
        async with page.expect_download() as info:
            await page.click(f"{row} a[download='{video_name}']")
        downloaded = tmp_path / video_name
        await (await info.value).save_as(downloaded)
        assert downloaded.read_bytes() == (directory / video_name).read_bytes()
        await page.click(f"{row} button.danger")
        await page.wait_for_selector(row, state="detached", timeout=10_000)
        assert not directory.exists()
        assert errors == []

    assert cat["by"] == "alice" and cat["stoppedAt"] > cat["startedAt"]
    assert sorted(p["user"] for p in cat["participants"]) == ["alice", "bob"]
    mine = tracks_by_user(cat)
    for user in ("alice", "bob"):
        assert set(mine[user]) == {"audio", "video"}, mine
        assert all(t["complete"] and t["packets"] > 0 for t in mine[user].values())
    video = mine["alice"]["video"]
    assert video["codec"] == "vp8"
    sizes = [(w, h) for w, h in video["sizes"]]
    assert len(set(sizes)) >= 2, sizes
    assert (before["frameWidth"], before["frameHeight"]) in sizes
    assert sizes[-1] == (after["frameWidth"], after["frameHeight"])
    frames, span = decode_video(downloaded)
    assert set(frames) == set(sizes), (set(frames), sizes)
    assert abs(span - video["duration"]) < 0.5, (span, video["duration"])
    assert video["duration"] > 4


async def test_a_page_joining_a_recorded_room_shows_it_and_is_recorded(
        node: Node, worker: MediaWorker, recorder_peer: HeadlessPeer) -> None:
    alice = recorder_peer
    await alice.join(ROOM)
    started = await alice._client.start_recording(ROOM)
    directory = node.config.recordings_dir / started["recording"]
    async with chromium() as browser:
        # A token without grant `record`: no buttons; the indicator all the same.
        page = await open_demo(browser, node.url, room=ROOM, name="Carol",
                               token=node.token("carol"))
        errors = watch_page_errors(page)
        # The recording started before we joined: only the join ack can have told the page.
        await page.wait_for_selector(BADGE, state="visible", timeout=10_000)
        state = await recording_state(page)
        assert state is not None
        assert {k: state[k] for k in ("recording", "by", "worker")} == {
            k: started[k] for k in ("recording", "by", "worker")}
        assert "started by alice" in await page.inner_text("#recording")
        assert await page.evaluate("() => window.mikotoDemo.canRecord") is False
        assert await page.is_hidden("#record-start") and await page.is_hidden("#record-stop")
        await eventually(lambda: recorded(directory, "alice", "carol"), timeout=20)
        assert set(await page.evaluate("() => Object.keys(window.mikotoDemo.peers())")) == {
            alice.id}

        # A camera switch (a new track, sent with replaceTrack) reaches the recorder too.
        track_id = await page.evaluate("""async () => {
          const camera = await navigator.mediaDevices.getUserMedia(
            {video: {width: {exact: 320}, height: {exact: 240}}});
          const [video] = camera.getVideoTracks();
          const room = window.mikotoDemo.room;
          await room.setLocalStream(
            new MediaStream([...room.stream.getAudioTracks(), video]));
          return video.id;
        }""")
        sent = await page.evaluate("""() => window.mikotoDemo.recordingConnection().getSenders()
            .filter((s) => s.track && s.track.kind === 'video').map((s) => s.track.id)""")
        assert sent == [track_id]
        await eventually(lambda: tracks_by_user(catalog(directory))["carol"]["video"]["sizes"][-1]
                         == [320, 240], timeout=15)

        await alice._client.stop_recording(ROOM)
        await page.wait_for_selector("#recording", state="hidden", timeout=10_000)
        assert "Recording stopped by alice" in await page.inner_text("#notice")
        await eventually(lambda: catalog(directory)["state"] == "complete", timeout=10)
        assert await page.evaluate("() => window.mikotoDemo.recordingConnection()") is None
        assert errors == []

    carol = tracks_by_user(catalog(directory))["carol"]
    assert all(t["complete"] for t in carol.values())
    frames, span = decode_video(directory / carol["video"]["file"])
    assert (320, 240) in frames and len(set(frames)) >= 2, set(frames)
    assert abs(span - carol["video"]["duration"]) < 0.5
