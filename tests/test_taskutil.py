"""Closing that survives the cancellation of its caller (media/taskutil.py), down to
aiortc's ICE sockets: a close cut short leaves them open with nobody left to close them."""

from __future__ import annotations

import asyncio

import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

from media.taskutil import (
    cancel_and_wait,
    close_pc,
    finish,
    set_local_description,
    set_remote_description,
)

from .helpers import open_udp_sockets
from .media_fixtures import connect, eventually


async def _steps(done: list[int], count: int = 3) -> str:
    for step in range(count):
        await asyncio.sleep(0.01)
        done.append(step)
    return "closed"


async def test_finish_returns_what_the_work_returns_and_raises_what_it_raises() -> None:
    assert await finish(_steps([])) == "closed"

    async def fail() -> None:
        raise ValueError("no")

    with pytest.raises(ValueError):
        await finish(fail())


async def test_a_cancelled_caller_of_finish_returns_only_once_the_work_is_done() -> None:
    done: list[int] = []
    caller = asyncio.create_task(finish(_steps(done)))
    await asyncio.sleep(0.015)  # one step in
    caller.cancel()
    await asyncio.wait([caller])
    assert caller.cancelled()
    assert done == [0, 1, 2]


async def test_cancel_and_wait_on_a_task_in_finish_waits_for_the_work() -> None:
    done: list[int] = []
    task = asyncio.create_task(finish(_steps(done)))
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled() and done == [0, 1, 2]


@pytest.mark.media
async def test_a_connection_is_closed_whole_even_if_the_closer_is_cancelled() -> None:
    before = open_udp_sockets()
    ann, bob = RTCPeerConnection(), RTCPeerConnection()
    try:
        ann.createDataChannel("control")
        await connect(ann, bob)
        await eventually(lambda: ann.connectionState == bob.connectionState == "connected",
                         timeout=10)
        await bob.close()
        assert open_udp_sockets() - before  # ann's
        closing = asyncio.create_task(close_pc(ann))
        await asyncio.sleep(0)  # aiortc is stopping ann's senders and SCTP now
        closing.cancel()
        await asyncio.wait([closing])
        assert closing.cancelled()
        assert ann.connectionState == "closed" and open_udp_sockets() - before == set()
    finally:
        await ann.close()
        await bob.close()


@pytest.mark.media
async def test_closing_during_a_gather_closes_what_the_gather_opened() -> None:
    before = open_udp_sockets()
    pc = RTCPeerConnection()
    try:
        pc.createDataChannel("control")
        offering = asyncio.create_task(set_local_description(pc, await pc.createOffer()))
        await asyncio.sleep(0)  # the gather has started
        closing = asyncio.create_task(close_pc(pc))
        await asyncio.sleep(0)  # it waits for the gather
        closing.cancel()
        await asyncio.wait([closing, offering])
        assert closing.cancelled()
        assert pc.connectionState == "closed" and open_udp_sockets() - before == set()
    finally:
        await pc.close()


@pytest.mark.media
@pytest.mark.parametrize("steps", range(12))
async def test_an_answer_applied_halfway_still_closes_what_it_bundles_away(steps: int) -> None:
    # aiortc's offer has a transport per kind, each with its own sockets; the answer's
    # BUNDLE stops all but one of them inside setRemoteDescription.
    before = open_udp_sockets()
    ann, bob = RTCPeerConnection(), RTCPeerConnection()
    try:
        ann.addTrack(AudioStreamTrack())
        ann.addTrack(VideoStreamTrack())
        ann.createDataChannel("control")
        await set_local_description(ann, await ann.createOffer())
        await bob.setRemoteDescription(ann.localDescription)
        await set_local_description(bob, await bob.createAnswer())
        applying = asyncio.create_task(set_remote_description(ann, bob.localDescription))
        for _ in range(steps):  # cut in at every point of it in turn
            await asyncio.sleep(0)
        applying.cancel()
        await asyncio.wait([applying])
        await close_pc(ann)
        await close_pc(bob)
        assert open_udp_sockets() - before == set()
    finally:
        await ann.close()
        await bob.close()
