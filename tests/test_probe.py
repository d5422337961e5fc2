"""`mikoto-rtc serve` with its own media worker, and `mikoto-rtc probe`, as real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from signaling.client import MediaEnded, RequestError, SignalingClient

from .media_fixtures import eventually
from .processes import SECRET, Served, mint, run_cli, serving
from .turn import coturn

pytestmark = pytest.mark.media


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with serving() as node:
        yield node


def probe(url: str, *args: str) -> tuple[int, dict[str, object], str]:
    out = run_cli("probe", url, "--token", mint("prober"), *args, timeout=120,
                  MIKOTO_RTC_SECRET=SECRET)
    return out.returncode, json.loads(out.stdout), out.stderr


def test_probe_runs_the_echo_test_on_the_embedded_worker(served: Served) -> None:
    code, result, err = probe(served.url, "--duration", "2")
    assert code == 0, err
    report = result["report"]
    assert isinstance(report, dict) and report["verdict"] in ("good", "degraded")
    assert report["video"]["width"] == 640 and report["video"]["frameRate"] > 10
    assert report["audio"]["packets"] > 50
    echoed = result["echoed"]
    assert isinstance(echoed, dict) and echoed["videoFrames"] > 10


async def test_a_killed_worker_fails_its_job_and_is_started_again(served: Served) -> None:
    await eventually(lambda: len(served.children()) == 1, timeout=20)
    [pid] = served.children()
    client = SignalingClient(served.url, mint("alice"))
    await client.connect()
    try:
        ended: list[MediaEnded] = []
        client.subscribe(lambda e: isinstance(e, MediaEnded) and ended.append(e))
        await client.join("kill-room")
        job = await eventually_job(client)
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: bool(ended), timeout=10)
        assert (ended[0].job, ended[0].reason) == (job, "worker_lost")
        await eventually(lambda: served.children() not in ([], [pid]), timeout=20)
        assert await eventually_job(client)  # the new worker takes work
    finally:
        await client.close()


async def eventually_job(client: SignalingClient, timeout: float = 30.0) -> str:
    """The id of an echo job, once a worker has registered and accepted one."""
    async def ask() -> str | None:
        try:
            return (await client.request_media("kill-room", "echo", duration=30)).job
        except RequestError as exc:
            assert exc.code == "unavailable"
            return None

    async with asyncio.timeout(timeout):
        while (job := await ask()) is None:
            await asyncio.sleep(0.2)
    return job


def test_probe_without_a_worker_exits_3_with_unavailable() -> None:
    with serving(MIKOTO_RTC_MEDIA_WORKERS="0") as node:
        code, result, _ = probe(node.url, "--duration", "1")
    assert code == 3 and result["error"] == {
        "code": "unavailable", "message": "no media worker can do echo now"}


@pytest.mark.turn
def test_probe_with_a_wrong_turn_secret_fails_with_a_reason(tmp_path: Path) -> None:
    with coturn(tmp_path) as turn, serving(MIKOTO_RTC_TURN_URLS=turn.urls[0],
                                           MIKOTO_RTC_TURN_SECRET="not-the-turn-secret") as node:
        code, result, err = probe(node.url, "--duration", "2", "--relay-only")
    assert code == 1, err
    report = result["report"]
    assert isinstance(report, dict) and report["verdict"] == "failed"
    assert report["connection"]["state"] != "connected"
    assert any("TURN" in reason for reason in report["reasons"]), report["reasons"]
