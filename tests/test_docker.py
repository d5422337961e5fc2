"""docker/ stays correct without a Docker engine: compose validates, COPY sources exist."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

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


COMPOSE_FILES = ("compose.yaml", "compose.cluster.yaml")


def _config(env: dict[str, str], file: str = "compose.yaml") -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ENV}
    return subprocess.run([*_compose(), "-f", str(DOCKER / file), "config"],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


def test_compose_file_is_accepted() -> None:
    out = _config(ENV)
    assert out.returncode == 0, out.stderr
    assert "coturn" in out.stdout and "MIKOTO_RTC_ENV: production" in out.stdout
    assert "media-worker" in out.stdout and "MIKOTO_RTC_WORKER_URL" in out.stdout


def test_cluster_compose_file_is_accepted() -> None:
    out = _config(ENV, "compose.cluster.yaml")
    assert out.returncode == 0, out.stderr
    services = yaml.safe_load(out.stdout)["services"]
    assert set(services) == {"redis", "node-1", "node-2", "nginx", "media-worker", "coturn"}
    for node in ("node-1", "node-2"):
        env = services[node]["environment"]
        assert env["MIKOTO_RTC_REDIS_URL"] == "redis://redis:6379/0"
        assert env["MIKOTO_RTC_SECRET"] == ENV["MIKOTO_RTC_SECRET"]
        assert "172.16.0.0/12" in env["MIKOTO_RTC_TRUSTED_PROXIES"]  # Docker's networks
    assert "--appendonly" in services["redis"]["command"]
    # nginx gets the shipped configuration, which names these very nodes.
    nginx_conf = (DOCKER / "nginx.conf").read_text()
    assert any("nginx.conf" in str(v) for v in services["nginx"]["volumes"])
    for node in ("node-1", "node-2"):
        assert f"server {node}:8080" in nginx_conf


@pytest.mark.parametrize("file", COMPOSE_FILES)
@pytest.mark.parametrize("missing", sorted(ENV))
def test_compose_refuses_to_run_without_its_secrets(missing: str, file: str) -> None:
    out = _config({k: v for k, v in ENV.items() if k != missing}, file)
    assert out.returncode != 0


def test_dockerfile_copies_only_what_exists() -> None:
    for line in (DOCKER / "Dockerfile").read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not any(p.startswith("--from") for p in parts):
            for source in parts[1:-1]:
                assert (ROOT / source).exists(), source
