"""The media worker processes `mikoto-rtc serve` runs beside the node (the embedded default).

Each worker is a child process (`python -m signaling media-worker`) given the node's
URL and secret through its environment (not argv, which any local user can read), so
it mints itself a fresh service token for every connect. A worker that exits
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


class WorkerProcesses:
    def __init__(self, count: int, url: str, secret: str, capacity: int,
                 log_level: str) -> None:
        self._count = count
        self._url = url
        self._secret = secret
        self._capacity = capacity
        self._log_level = log_level
        self._procs: list[asyncio.subprocess.Process | None] = [None] * count
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._keep(i), name=f"media-worker-proc:{i}")
                       for i in range(self._count)]

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs if p is not None and p.returncode is None]

    async def _keep(self, index: int) -> None:
        delay, longest = _BACKOFF
        while not self._stopping.is_set():
            env = {**os.environ, "MIKOTO_RTC_WORKER_URL": self._url,
                   "MIKOTO_RTC_SECRET": self._secret,
                   "MIKOTO_RTC_WORKER_CAPACITY": str(self._capacity),
                   "MIKOTO_RTC_LOG_LEVEL": self._log_level}
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "signaling", "media-worker", "--parent", str(os.getpid()),
                env=env)
            self._procs[index] = proc
            log.info("media worker %d started (pid %d)", index, proc.pid)
            code = await proc.wait()
            if self._stopping.is_set():
                return
            log.warning("media worker %d (pid %d) exited with %s; restarting in %.1fs",
                        index, proc.pid, code, delay)
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
                await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                log.warning("media worker pid %d ignored SIGTERM; killing it", proc.pid)
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
        assert config.secret is not None
        procs = WorkerProcesses(config.media_workers, url, config.secret,
                                config.worker_capacity, config.log_level)
        procs.start()
        yield
        await procs.stop()

    return run
