"""docker/ stays correct without a Docker engine: compose validates, COPY sources exist."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
DOCKER = ROOT / "docker"
ENV = {"MIKOTO_RTC_SECRET": "x" * 40, "MIKOTO_RTC_TURN_SECRET": "y" * 40,
       "TURN_HOST": "turn.example.org", "TURN_EXTERNAL_IP": "203.0.113.7"}


def _compose() -> list[str]:
    # Compose v2 (`docker compose`) where the plugin exists, else the v1 tool from Debian.
    if shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise RuntimeError("no compose tool: ./scripts/test installs docker-compose")


def _config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ENV}
    return subprocess.run([*_compose(), "-f", str(DOCKER / "compose.yaml"), "config"],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_compose_file_is_accepted() -> None:
    out = _config(ENV)
    assert out.returncode == 0, out.stderr
    assert "coturn" in out.stdout and "MIKOTO_RTC_ENV: production" in out.stdout
    assert "media-worker" in out.stdout and "MIKOTO_RTC_WORKER_URL" in out.stdout


@pytest.mark.parametrize("missing", sorted(ENV))
def test_compose_refuses_to_run_without_its_secrets(missing: str) -> None:
    out = _config({k: v for k, v in ENV.items() if k != missing})
    assert out.returncode != 0


def test_dockerfile_copies_only_what_exists() -> None:
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not any(p.startswith("--from") for p in parts):
            for source in parts[1:-1]:
                assert (ROOT / source).exists(), source
