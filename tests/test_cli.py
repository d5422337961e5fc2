"""The console script, run as a user would: real processes, real ports."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from signaling.auth import verify_token
from signaling.client import SignalingClient

from .helpers import free_port, wait_port
from .processes import SECRET, Served, cli_env, mint, run_cli, serving


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, **env)


def test_token_command_mints_a_verifiable_token() -> None:
    out = _cli("token", "--user", "u7", "--name", "Ann", "--room", "a", "--room", "b-*",
               "--ttl", "120", MIKOTO_RTC_SECRET=SECRET)
    assert out.returncode == 0, out.stderr
    who = verify_token(SECRET, out.stdout.strip())
    assert (who.user, who.name, who.grants.rooms) == ("u7", "Ann", ("a", "b-*"))
    assert who.grants.publish and not who.grants.service


def test_token_command_mints_a_media_worker_token() -> None:
    who = verify_token(SECRET, mint("w1", "--service"))
    assert who.grants.service and not who.grants.publish and who.grants.rooms == ("*",)


def test_token_command_needs_the_secret() -> None:
    out = _cli("token", "--user", "u7")
    assert out.returncode == 2 and "MIKOTO_RTC_SECRET" in out.stderr


@pytest.mark.parametrize("env", [
    {"MIKOTO_RTC_ENV": "production"},
    {"MIKOTO_RTC_ENV": "production", "MIKOTO_RTC_SECRET": "dev-only-change-me"},
    {"MIKOTO_RTC_PORT": "not-a-port"},
    {"MIKOTO_RTC_PROCESSES": "2"},  # several processes share state only through Redis
    {"MIKOTO_RTC_SCHED_SLICE_US": "50"},  # below what the kernel takes
])
def test_serve_refuses_bad_configuration(env: dict[str, str]) -> None:
    out = _cli("serve", **env)
    assert out.returncode == 2 and "configuration error" in out.stderr


@pytest.fixture
def served() -> Iterator[Served]:
    with serving() as node:
        yield node


async def test_served_node_takes_calls_with_cli_tokens(served: Served) -> None:
    token = _cli("token", "--user", "u1", MIKOTO_RTC_SECRET=SECRET).stdout.strip()
    client = SignalingClient(f"http://127.0.0.1:{served.port}", token)
    await client.connect()
    try:
        assert (await client.join("lobby")).user == "u1"
    finally:
        await client.close()


def _slice(pid: int | str) -> int:
    with open(f"/proc/{pid}/sched") as f:
        for line in f:
            if line.startswith("se.slice"):
                return int(line.split(":")[1])
    pytest.skip("this kernel shows no scheduler slice (EEVDF custom slices: Linux 6.12)")


async def test_a_node_asks_for_short_slices_and_its_media_worker_does_not() -> None:
    default = _slice("self")
    with serving() as node:
        assert _slice(node.proc.pid) == 100_000  # 100 µs, the default setting
        async with asyncio.timeout(30):  # the media worker `serve` starts beside it
            while not node.children():
                await asyncio.sleep(0.1)
            (worker,) = node.children()
            while _slice(worker) != default:  # it inherits the node's, and gives it back
                await asyncio.sleep(0.1)
        assert default != 100_000
    with serving(MIKOTO_RTC_SCHED_SLICE_US="0") as node:
        assert _slice(node.proc.pid) == default


def test_sigterm_drains_clients_and_stops_within_the_bound(served: Served) -> None:
    token = _cli("token", "--user", "h", MIKOTO_RTC_SECRET=SECRET).stdout.strip()
    with subprocess.Popen([sys.executable, "-c", _HOLD, f"http://127.0.0.1:{served.port}", token],
                          stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "joined"
        served.proc.send_signal(signal.SIGTERM)
        # drain timeout 2 s + shutdown timeout 2 s, with room to spare on a busy machine
        assert served.proc.wait(timeout=8) == 0
        out, _ = holder.communicate(timeout=10)
        assert "Draining(reconnect_in=2000)" in out


_HOLD = """
import asyncio, sys
from signaling.client import SignalingClient
async def main():
    c = SignalingClient(sys.argv[1], sys.argv[2])
    await c.connect()
    await c.join("lobby")
    print("joined", flush=True)
    gone = asyncio.Event()
    def seen(event):
        print(event, flush=True)
        if getattr(event, "state", None) == "reconnecting":
            gone.set()
    c.subscribe(seen)
    await gone.wait()
    await c.close()
asyncio.run(main())
"""


def test_readme_serve_command_runs_the_demo_on_the_embedded_default() -> None:
    port = free_port()
    serve = Path(__file__).parent.parent / "scripts" / "serve"
    with subprocess.Popen([str(serve), "--port", str(port)], env=cli_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True) as proc:
        try:
            wait_port("127.0.0.1", port, timeout=120)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as resp:
                assert resp.status == 200 and b"<html" in resp.read().lower()
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/dev/token",
                                         data=b'{"user": "u1"}',
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert resp.status == 200 and b"token" in resp.read()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
