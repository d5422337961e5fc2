"""Fuzz: random event names and payloads from many clients at once (hypothesis). The
node stays up, answers every event with an ack (coded when refused), keeps its state
bounded, and an honest call beside it keeps relaying."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import socketio
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signaling.app import EDGE, SIO, create_app
from signaling.client import SignalingClient, SignalReceived
from signaling.config import Config
from signaling.errors import ErrorCode
from signaling.protocol import ClientEvent

from .conftest import TEST_SECRET
from .helpers import EventLog, free_port

T = TypeVar("T")
FUZZERS = 8
ROOMS = ["fuzz-a", "fuzz-b", "honest"]
OFFER = {"type": "offer", "sdp": "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"}
CODES = {code.value for code in ErrorCode}
FIELDS = ["room", "to", "description", "candidate", "state", "type", "sdp", "name", "meta",
          "hidden", "call", "callees", "file", "size", "bytes", "kind", "cid", "t",
          "reason", "recording", "job", "lastSeq", "sdpMid", "sdpMLineIndex", "restart", "pc"]

_scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True)
            | st.text(max_size=40) | st.sampled_from([*ROOMS, "*", "", "../x", "a" * 200]))
_json = st.recursive(
    _scalars,
    lambda inner: (st.lists(inner, max_size=4)
                   | st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8), inner,
                                     max_size=5)),
    max_leaves=12)
_events = st.sampled_from([e.value for e in ClientEvent]) | st.text(min_size=1, max_size=20)
# (which fuzzer, event, payload or no payload at all)
_batch = st.lists(st.tuples(st.integers(0, FUZZERS - 1), _events,
                            st.just(()) | _json.map(lambda p: (p,))),
                  min_size=100, max_size=150)


@dataclasses.dataclass
class Fuzz:
    loop: asyncio.AbstractEventLoop
    config: Config
    app: web.Application
    url: str
    fuzzers: list[socketio.AsyncClient]
    ann: SignalingClient
    bob: SignalingClient
    sent: int = 0

    def run(self, coro: Awaitable[T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzz]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    tmp: Path = tmp_path_factory.mktemp("fuzz")
    # Limits stay on, above what the fuzzers send, so they are not dropped midway.
    config = Config(secret=TEST_SECRET, shutdown_timeout=0.5, file_dir=tmp / "files",
                    recordings_dir=tmp / "recordings", media_workers=0,
                    rate_signal="5000/5000", rate_presence="5000/5000", rate_file="5000/5000",
                    rate_other="5000/5000")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = create_app(config)
    runner = web.AppRunner(app)

    async def start() -> Fuzz:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        from signaling.auth import Grants, issue_token

        def token(user: str) -> str:
            return issue_token(TEST_SECRET, user, grants=Grants(rooms=("*",), publish=True,
                                                                 subscribe=True, record=True))

        fuzzers = []
        for i in range(FUZZERS):
            client = socketio.AsyncClient(reconnection=False)
            await client.connect(url, auth={"token": token(f"fuzzer{i}")},
                                 transports=["websocket"])
            await client.call("room:join", {"room": ROOMS[i % 2]}, timeout=5)
            fuzzers.append(client)
        ann = SignalingClient(url, token("ann"))
        bob = SignalingClient(url, token("bob"))
        await ann.connect()
        await bob.connect()
        return Fuzz(loop, config, app, url, fuzzers, ann, bob)

    fuzz = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    yield fuzz

    async def stop() -> None:
        for client in fuzz.fuzzers:
            await client.disconnect()
        await fuzz.ann.close()
        await fuzz.bob.close()
        await runner.cleanup()

    fuzz.run(stop())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


async def _send(fuzz: Fuzz, batch: list[tuple[int, str, tuple[Any, ...]]]) -> list[Any]:
    """Every event of the batch at once; the acks, in order."""
    async def one(i: int, event: str, args: tuple[Any, ...]) -> Any:
        client = fuzz.fuzzers[i]
        if not client.connected:  # a fuzz event may end its own session: come back
            await client.connect(fuzz.url, auth=client.connection_auth, transports=["websocket"])
        return await client.call(event, *args, timeout=10)

    return list(await asyncio.gather(*(one(*e) for e in batch)))


def test_random_events_from_many_clients_get_acks_and_break_nothing(fuzz: Fuzz) -> None:
    @settings(max_examples=100, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(batch=_batch)
    def every_event_gets_a_coded_ack(batch: list[tuple[int, str, tuple[Any, ...]]]) -> None:
        acks = fuzz.run(_send(fuzz, batch))
        fuzz.sent += len(batch)
        for ack, (_, event, _) in zip(acks, batch, strict=True):
            assert isinstance(ack, dict) and isinstance(ack.get("ok"), bool), (event, ack)
            if not ack["ok"]:
                assert ack["error"]["code"] in CODES, (event, ack)

    every_event_gets_a_coded_ack()
    assert fuzz.sent >= 10_000

    # Afterwards the node is up, and an honest call relays every signal.
    async def honest() -> None:
        bob_log = EventLog(fuzz.bob)
        await fuzz.ann.join("honest")
        joined = await fuzz.bob.join("honest")
        for _ in range(20):
            await fuzz.ann.signal("honest", joined.self_id, description=OFFER)
        assert len(await bob_log.wait_count(SignalReceived, 20)) == 20

    fuzz.run(honest())
    # Bounded: no task or connection left behind by the fuzz.
    assert len(fuzz.app[SIO].eio.sockets) <= FUZZERS + 2
    assert len(fuzz.app[EDGE]._tasks) < 50
    assert fuzz.run(_count_tasks()) < 100


async def _count_tasks() -> int:
    return len(asyncio.all_tasks())
