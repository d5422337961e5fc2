"""A real coturn on loopback, configured like production (TURN REST shared secret)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .helpers import free_port, wait_port


@dataclass(frozen=True)
class Turn:
    port: int
    secret: str
    log: Path

    @property
    def urls(self) -> tuple[str, ...]:
        return (f"turn:127.0.0.1:{self.port}?transport=udp",)

    def allocations(self) -> int:
        """How many relay allocations coturn has granted so far (read from its log)."""
        return self.log.read_text(errors="replace").count("ALLOCATE processed, success")


@contextmanager
def coturn(workdir: Path, secret: str = "turn-test-secret") -> Iterator[Turn]:
    binary = shutil.which("turnserver")
    if binary is None:
        raise RuntimeError("coturn is not installed: run ./scripts/test, which installs it")
    port = free_port()
    log = workdir / "turn.log"
    proc = subprocess.Popen(
        [binary, "-n", "--listening-ip=127.0.0.1", f"--listening-port={port}",
         "--relay-ip=127.0.0.1", "--min-port=50000", "--max-port=50999",
         "--use-auth-secret", f"--static-auth-secret={secret}", "--realm=mikoto.test",
         "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers", "--verbose",
         f"--userdb={workdir / 'turndb'}", f"--log-file={log}", "--simple-log",
         f"--pidfile={workdir / 'turn.pid'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_port("127.0.0.1", port)
        yield Turn(port=port, secret=secret, log=log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
