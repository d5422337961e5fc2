"""Running the console script as a user would: `python -m signaling ...` in real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .helpers import free_port, wait_port

SECRET = "cli-secret-0123456789-0123456789-abcdef"


def cli_env(**extra: str) -> dict[str, str]:
    """This environment without any MIKOTO_RTC_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIKOTO_RTC_")}
    env.update(extra)
    return env


def run_cli(*args: str, timeout: float = 30, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "signaling", *args], env=cli_env(**env),
                          capture_output=True, text=True, timeout=timeout)


def mint(user: str, *flags: str) -> str:
    out = run_cli("token", "--user", user, *flags, MIKOTO_RTC_SECRET=SECRET)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@dataclass
class Served:
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def children(self) -> list[int]:
        """Pids of the processes serve started (its media workers)."""
        found: list[int] = []
        for task in os.listdir(f"/proc/{self.proc.pid}/task"):
            with open(f"/proc/{self.proc.pid}/task/{task}/children") as f:
                found.extend(int(pid) for pid in f.read().split())
        return found

    def listening(self) -> list[int]:
        """Pids of serve's processes that hold a listening socket on its port."""
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                for row in f.readlines()[1:]:
                    cols = row.split()  # cols[1] local address, [3] state, [9] inode
                    if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == self.port:
                        inodes.add(f"socket:[{cols[9]}]")
        held = []
        for pid in self.children():
            try:
                fds = os.listdir(f"/proc/{pid}/fd")
                if any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in fds):
                    held.append(pid)
            except OSError:  # the process or the descriptor is gone
                continue
        return held


@contextmanager
def serving(log: Path | None = None, **env: str) -> Iterator[Served]:
    """`mikoto-rtc serve` on a free port, stopped with SIGTERM (killed if it hangs); its
    log (standard error) goes to `log` when given."""
    port = free_port()
    out = log.open("wb") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "signaling", "serve", "--port", str(port)],
        env=cli_env(MIKOTO_RTC_SECRET=SECRET, MIKOTO_RTC_SHUTDOWN_TIMEOUT="2",
                    MIKOTO_RTC_DRAIN_TIMEOUT="2", **env),
        stdout=subprocess.DEVNULL, stderr=out,
    )
    if log is not None:
        out.close()  # type: ignore[union-attr]  # the child has its own copy
    try:
        wait_port("127.0.0.1", port)
        yield Served(port, proc)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        finally:
            proc.kill()
