"""Helpers shared by the media tests: polling for a condition, finding media tasks."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def eventually(check: Callable[[], bool], timeout: float = 5.0,
                     interval: float = 0.02) -> None:
    """Poll `check` until it holds; TimeoutError after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:
            if check():
                return
            await asyncio.sleep(interval)


def media_tasks() -> list[asyncio.Task[Any]]:
    """The live tasks of the media package (all named "media-...")."""
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("media-") and not t.done()]
