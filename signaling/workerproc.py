"""Child processes of `mikoto-rtc serve`: the media workers it runs beside the node (the
embedded default), and the node processes of `serve --workers N`.

Each media worker is a child process (`python -m signaling media-worker`) given the
node's URL and secret through its environment (not argv, which any local user can
read), so it mints itself a fresh service token for every connect. A child that exits
unexpectedly is started again after a capped backoff; on shutdown each one gets
SIGTERM, then SIGKILL if it lingers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from .config import Config

log = logging.getLogger(__name__)

STOP_TIMEOUT = 5.0
_BACKOFF = (0.5, 10.0)


# Given a child's index: its argv and its environment.
Spawn = Callable[[int], tuple[list[str], dict[str, str]]]


class Children:
    """`count` child processes kept running: one that exits unexpectedly is started again
    after a capped backoff; `stop()` sends SIGTERM, then SIGKILL after `stop_timeout`."""

    def __init__(self, name: str, count: int, spawn: Spawn,
                 stop_timeout: float = STOP_TIMEOUT) -> None:
        self._name = name
        self._spawn = spawn
        self._stop_timeout = stop_timeout
        self._procs: list[asyncio.subprocess.Process | None] = [None] * count
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._keep(i), name=f"{self._name}-proc:{i}")
                       for i in range(len(self._procs))]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None and p.returncode is None]

    async def _keep(self, index: int) -> None:
        delay, longest = _BACKOFF
        while not self._stopping.is_set():
            argv, env = self._spawn(index)
            proc = await asyncio.create_subprocess_exec(*argv, env=env)
            self._procs[index] = proc
            log.info("%s %d started (pid %d)", self._name, index, proc.pid)
            code = await proc.wait()
            if self._stopping.is_set():
                return
            log.warning("%s %d (pid %d) exited with %s; restarting in %.1fs",
                        self._name, index, proc.pid, code, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, longest)

    async def stop(self) -> None:
        self._stopping.set()
        for proc in self._procs:
            if proc is not None and proc.returncode is None:
                proc.terminate()
        for proc in self._procs:
            if proc is None:
                continue
            try:
                await asyncio.wait_for(proc.wait(), self._stop_timeout)
            except TimeoutError:
                log.warning("%s pid %d ignored SIGTERM; killing it", self._name, proc.pid)
                proc.kill()
                await proc.wait()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def embedded_workers(config: Config) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx entry running `config.media_workers` workers against this node."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(config.host, config.host)
    url = f"http://[{host}]:{config.port}" if ":" in host else f"http://{host}:{config.port}"

    async def run(app: web.Application) -> AsyncIterator[None]:
        secret = config.secret
        assert secret is not None

        def spawn(index: int) -> tuple[list[str], dict[str, str]]:
            env = {**os.environ, "MIKOTO_RTC_WORKER_URL": url, "MIKOTO_RTC_SECRET": secret,
                   "MIKOTO_RTC_WORKER_CAPACITY": str(config.worker_capacity),
                   "MIKOTO_RTC_LOG_LEVEL": config.log_level,
                   "MIKOTO_RTC_LOG_FORMAT": config.log_format}
            return [sys.executable, "-m", "signaling", "media-worker",
                    "--parent", str(os.getpid())], env

        procs = Children("media worker", config.media_workers, spawn)
        procs.start()
        yield
        await procs.stop()

    return run
