"""Recording a call: recording:start/stop, per-track files checked with PyAV, the REST API."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import av
import pytest

from media import HeadlessPeer, SyntheticMedia, SyntheticVideoTrack, read_frame_index
from media.worker import MediaWorker
from signaling.app import WORKERS
from signaling.client import RecordingState, RequestError

from .conftest import Node, StartWorker
from .helpers import EventLog
from .media_fixtures import JoinPeer, eventually, peer_joiner
from .processes import cli_env

pytestmark = pytest.mark.media

FPS = 15
MEDIA = SyntheticMedia(320, 240, fps=FPS)
ROOM = "rec-room"


def decode(path: Path) -> tuple[int, float, str]:
    """Frames PyAV decodes from a file, their span in seconds, and the stream type."""
    with av.open(str(path)) as container:
        stream = container.streams[0]
        kind = str(stream.type)  # read before closing: PyAV streams die with their container
        times = [float(f.time) for f in container.decode(stream) if f.time is not None]
    return len(times), (times[-1] - times[0]) if times else 0.0, kind


def first_frame_index(path: Path) -> int:
    """The frame index SyntheticVideoTrack drew into a file's first picture."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return read_frame_index(frame)


def catalog(directory: Path) -> dict[str, Any]:
    [found] = list(directory.glob("R*/catalog.json"))
    return dict(json.loads(found.read_text()))


@pytest.fixture
async def worker(start_worker: StartWorker) -> MediaWorker:
    return cast(MediaWorker, await start_worker("recorder"))


@pytest.fixture
async def join(node: Node) -> AsyncIterator[JoinPeer]:
    async with peer_joiner(node, media=MEDIA, room=ROOM) as join:
        yield join


async def joined_with_record_grant(node: Node, join: JoinPeer) -> HeadlessPeer:
    peer = HeadlessPeer(await node.client("alice", record=True), media=MEDIA)
    await peer.join(ROOM)
    return peer


async def test_a_two_party_call_is_recorded_track_by_track(
        node: Node, worker: MediaWorker, join: JoinPeer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mikoto.audit")
    alice = await joined_with_record_grant(node, join)
    bob = await join("bob")
    bob_log = EventLog(bob._client)
    await alice.wait_for_media(min_video_frames=5)
    state = await alice._client.start_recording(ROOM)
    assert state["active"] is True and state["by"] == "alice" and state["worker"]
    started = await bob_log.wait_for(RecordingState)
    assert started.active and started.worker == state["worker"]
    directory = node.config.recordings_dir / state["recording"]
    await eventually(lambda: len(catalog(node.config.recordings_dir)["tracks"]) == 4,
                     timeout=20)
    upstreams = [p.upstream for p in (alice, bob)]
    assert all(u is not None for u in upstreams)
    sources = [s for u in upstreams if u is not None for s in u.sources]
    await asyncio.sleep(5)
    stopped = await alice._client.stop_recording(ROOM)
    assert stopped["recording"] == state["recording"]
    ended = await bob_log.wait_for(RecordingState, lambda e: not e.active)
    assert ended.by == "alice" and ended.reason == "stopped"
    audited = [json.loads(r.getMessage()) for r in caplog.records if r.name == "mikoto.audit"]
    assert [(a["event"], a["user"], a["room"], a["recording"]) for a in audited
            if a["event"].startswith("recording_")] == [
        ("recording_start", "alice", ROOM, state["recording"]),
        ("recording_stop", "alice", ROOM, state["recording"])]
    await eventually(lambda: catalog(node.config.recordings_dir)["state"] == "complete",
                     timeout=10)
    await eventually(lambda: all(p.upstream is None for p in (alice, bob)))

    cat = catalog(node.config.recordings_dir)
    assert cat["room"] == ROOM and cat["by"] == "alice" and cat["stoppedAt"] > cat["startedAt"]
    assert sorted(p["user"] for p in cat["participants"]) == ["alice", "bob"]
    video_sent = [s.frame_count for s in sources if isinstance(s, SyntheticVideoTrack)]
    assert len(video_sent) == 2
    for user in ("alice", "bob"):
        mine = {t["kind"]: t for t in cat["tracks"] if t["user"] == user}
        assert len([t for t in cat["tracks"] if t["user"] == user]) == 2, cat["tracks"]
        assert set(mine) == {"audio", "video"} and all(t["complete"] for t in mine.values())
        frames, span, kind = decode(directory / mine["video"]["file"])
        assert kind == "video"
        # Within 5% of what the peer's upstream connection sent, over the same time,
        # and as long as the call sent media to the recorder.
        assert any(abs(frames - n) <= 0.05 * n for n in video_sent), (frames, video_sent)
        assert any(abs(span - n / FPS) < 0.5 for n in video_sent), (span, video_sent)
        assert abs(span - mine["video"]["duration"]) < 0.5
        audio_frames, audio_span, kind = decode(directory / mine["audio"]["file"])
        assert kind == "audio" and audio_frames > 100
        assert abs(audio_span - span) < 0.5  # both tracks last the call
        # Aligned from RTCP sender reports: the peer's synthetic audio and video start
        # together, so its video file starts first_index / FPS after its audio file (a
        # video file starts at the first keyframe it got, not always frame 0).
        offset = mine["video"]["senderStart"] - mine["audio"]["senderStart"]
        expected = first_frame_index(directory / mine["video"]["file"]) / FPS
        assert abs(offset - expected) < 0.1, (offset, expected)
        assert mine["video"]["sizes"] == [[320, 240]]


async def test_the_rest_api_lists_downloads_and_deletes(node: Node, worker: MediaWorker,
                                                        join: JoinPeer) -> None:
    alice = await joined_with_record_grant(node, join)
    await join("bob")
    state = await alice._client.start_recording(ROOM)
    await eventually(lambda: len(catalog(node.config.recordings_dir)["tracks"]) == 4,
                     timeout=20)
    await eventually(lambda: len(catalog(node.config.recordings_dir)["files"]) == 4, timeout=10)
    rec = state["recording"]
    base = f"{node.url}/api/recordings"
    reader = {"Authorization": "Bearer " + node.token("ops", record=True)}
    async with aiohttp.ClientSession() as http:
        async with http.delete(f"{base}/{rec}", headers=reader) as resp:
            assert resp.status == 409  # still running
        await alice._client.stop_recording(ROOM)
        await eventually(lambda: catalog(node.config.recordings_dir)["state"] == "complete",
                         timeout=10)
        async with http.get(base) as resp:
            assert resp.status == 401
        async with http.get(base, headers={"Authorization": "Bearer " + node.token("bob")}) as r:
            assert r.status == 403
        other = {"Authorization": "Bearer " + node.token("ops", rooms=("other",), record=True)}
        async with http.get(base, headers=other) as resp:
            assert (await resp.json())["recordings"] == []
        async with http.get(f"{base}/{rec}", headers=other) as resp:
            assert resp.status == 404
        async with http.get(base, headers=reader) as resp:
            [listed] = (await resp.json())["recordings"]
        assert listed["id"] == rec and len(listed["files"]) == 4
        name = listed["files"][0]
        async with http.get(f"{base}/{rec}/files/{name}", headers=reader) as resp:
            assert resp.status == 200 and resp.content_type == "video/webm"
            body = await resp.read()
        assert body == (node.config.recordings_dir / rec / name).read_bytes()
        for bad in ("catalog.json.tmp", "..%2Fcatalog.json", "nope.webm"):
            async with http.get(f"{base}/{rec}/files/{bad}", headers=reader) as resp:
                assert resp.status == 404, bad
        async with http.delete(f"{base}/{rec}", headers=reader) as resp:
            assert resp.status == 200
        async with http.get(f"{base}/{rec}", headers=reader) as resp:
            assert resp.status == 404
    assert not (node.config.recordings_dir / rec).exists()


async def test_recording_rules(node: Node, join: JoinPeer,
                               start_worker: StartWorker) -> None:
    alice = await joined_with_record_grant(node, join)
    bob = await join("bob")
    with pytest.raises(RequestError) as err:
        await alice._client.start_recording(ROOM)
    assert err.value.code == "unavailable"  # no worker yet
    await start_worker()
    with pytest.raises(RequestError) as err:
        await bob._client.start_recording(ROOM)
    assert err.value.code == "forbidden"
    with pytest.raises(RequestError) as err:
        await alice._client.stop_recording(ROOM)
    assert err.value.code == "not_found"
    await alice._client.start_recording(ROOM)
    with pytest.raises(RequestError) as err:
        await alice._client.start_recording(ROOM)
    assert err.value.code == "conflict"
    # A late joiner learns of the recording from its join ack and sends its media too.
    carol = await join("carol")
    assert carol.upstream is not None
    await eventually(lambda: {t["user"] for t in catalog(node.config.recordings_dir)["tracks"]}
                     == {"alice", "bob", "carol"}, timeout=20)
    # The recording is the room's: it goes on when its starter leaves, ends when all have.
    await alice.close()
    await asyncio.sleep(0.5)
    assert catalog(node.config.recordings_dir)["state"] == "recording"
    await bob.close()
    await carol.close()
    await eventually(lambda: catalog(node.config.recordings_dir)["state"] == "complete",
                     timeout=10)


async def test_kill_9_of_the_worker_leaves_decodable_files_and_the_recording_moves(
        node: Node, join: JoinPeer, start_worker: StartWorker) -> None:
    workers = node.server.app[WORKERS]
    env = cli_env(MIKOTO_RTC_WORKER_TOKEN=node.token("doomed", service=True),
                  MIKOTO_RTC_RECORDINGS_DIR=str(node.config.recordings_dir))
    doomed = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "signaling", "media-worker", "--url", node.url, env=env)
    try:

        async def registered() -> bool:
            return len(await workers.all()) == 1

        await eventually(registered, timeout=30)
        alice = await joined_with_record_grant(node, join)
        bob = await join("bob")
        bob_log = EventLog(bob._client)
        state = await alice._client.start_recording(ROOM)
        await eventually(lambda: len(catalog(node.config.recordings_dir)["files"]) == 4,
                         timeout=20)
        await asyncio.sleep(3)
        await start_worker()  # the one the recording can move to
        doomed.send_signal(signal.SIGKILL)
    finally:
        if doomed.returncode is None:
            doomed.kill()
        await doomed.wait()
    moved = await bob_log.wait_for(RecordingState, lambda e: e.data.get("moved") is True,
                                   timeout=15)
    assert moved.active and moved.worker != state["worker"]
    directory = node.config.recordings_dir / state["recording"]
    killed = [t for t in catalog(node.config.recordings_dir)["tracks"] if t["file"]]
    assert len(killed) == 4 and not any(t["complete"] for t in killed)
    for track in killed:
        frames, span, kind = decode(directory / track["file"])
        assert kind == track["kind"] and span > 2.0, (track, frames, span)
    # The new worker records on into the same recording, after the old files.
    await eventually(lambda: len(catalog(node.config.recordings_dir)["files"]) == 8, timeout=20)
    await alice._client.stop_recording(ROOM)
    await eventually(lambda: catalog(node.config.recordings_dir)["state"] == "complete",
                     timeout=10)
    final = catalog(node.config.recordings_dir)
    assert final["moves"] == 1 and len(set(final["files"])) == 8


async def test_an_echo_test_in_a_recorded_room_leaves_the_recording_alone(
        node: Node, worker: MediaWorker, join: JoinPeer) -> None:
    alice = await joined_with_record_grant(node, join)
    await join("bob")
    await alice._client.start_recording(ROOM)
    await eventually(lambda: len(catalog(node.config.recordings_dir)["files"]) == 4, timeout=20)

    def alice_video_packets() -> int:
        return sum(t["packets"] for t in catalog(node.config.recordings_dir)["tracks"]
                   if t["user"] == "alice" and t["kind"] == "video")

    # Same worker, same participant: the signals' `pc` tag keeps the two connections apart.
    result = await alice.echo_test(duration=2)
    assert result.report is not None and result.report["verdict"] == "good"
    assert alice.upstream is not None and alice.upstream.connection_state == "connected"
    before = alice_video_packets()
    await eventually(lambda: alice_video_packets() > before + 15, timeout=10)


async def test_an_operator_records_a_room_through_the_admin_api(
        node: Node, worker: MediaWorker, join: JoinPeer) -> None:
    ann = await join("ann")  # nobody in the room may record: the operator does
    await join("bob")
    ann_log = EventLog(ann._client)
    base = f"{node.url}/api/admin/rooms/{ROOM}/recording"
    ops = {"Authorization": "Bearer " + node.token("ops", admin=True)}
    async with aiohttp.ClientSession(headers=ops) as http:
        async with http.post(base) as resp:
            assert resp.status == 200, await resp.text()
            state = await resp.json()
        assert state["active"] is True and state["by"] == "ops"
        started = await ann_log.wait_for(RecordingState)
        assert started.active and started.recording == state["recording"]
        await eventually(lambda: len(catalog(node.config.recordings_dir)["tracks"]) == 4,
                         timeout=20)
        async with http.post(base) as resp:
            assert resp.status == 409  # recorded already
        async with http.delete(base) as resp:
            assert resp.status == 200 and (await resp.json())["recording"] == state["recording"]
        ended = await ann_log.wait_for(RecordingState, lambda e: not e.active)
        assert (ended.by, ended.reason) == ("ops", "stopped")
        async with http.get(f"{node.url}/api/recordings") as resp:  # admins list them too
            assert [r["id"] for r in (await resp.json())["recordings"]] == [state["recording"]]
