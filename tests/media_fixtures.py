"""Helpers shared by the media tests: joining peers, polling for a condition, media tasks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from media import HeadlessPeer, SyntheticMedia

from .conftest import Node


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


JoinPeer = Callable[..., Awaitable[HeadlessPeer]]


@asynccontextmanager
async def peer_joiner(node: Node, *, media: SyntheticMedia, room: str) -> AsyncIterator[JoinPeer]:
    """Join HeadlessPeers (`await join(user, room=..., **options)`); all closed on exit."""
    peers: list[HeadlessPeer] = []

    async def join(user: str, room: str = room, **options: Any) -> HeadlessPeer:
        peer = HeadlessPeer(await node.client(user), media=media, **options)
        peers.append(peer)
        await peer.join(room)
        return peer

    try:
        yield join
    finally:
        for peer in peers:
            await peer.close()
