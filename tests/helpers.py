"""Small shared test helpers: a waiting event log for SDK clients, readiness polling,
the process's open UDP sockets."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import Any, TypeVar

from signaling.client import Event, SignalingClient

E = TypeVar("E")


class EventLog:
    """Records every event a client receives, and lets a test wait for one."""

    def __init__(self, client: SignalingClient) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Event()
        client.subscribe(self._record)

    def _record(self, event: Event) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(self, kind: type[E], where: Callable[[E], bool] = lambda e: True,
                       timeout: float = 10.0) -> E:
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if isinstance(event, kind) and where(event):
                        return event
                self._changed.clear()
                await self._changed.wait()

    async def wait_count(self, kind: type[E], count: int, timeout: float = 10.0) -> list[E]:
        async with asyncio.timeout(timeout):
            while len(self.of(kind)) < count:
                self._changed.clear()
                await self._changed.wait()
        return self.of(kind)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float = 20.0, proto: Any = socket.SOCK_STREAM) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{host}:{port} did not accept connections") from None
            time.sleep(0.05)


def open_udp_sockets() -> set[tuple[int, int]]:
    """This process's open UDP sockets, as (file descriptor, socket inode) pairs."""
    inodes = set()
    for table in ("udp", "udp6"):
        with open(f"/proc/self/net/{table}") as f:
            inodes.update(int(line.split()[9]) for line in list(f)[1:])
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except FileNotFoundError:  # the listing's own descriptor, closed by now
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            found.add((int(fd), int(target[8:-1])))
    return found
