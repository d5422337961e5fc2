"""Fixtures: a real signaling node on a loopback port and factories for real clients."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from signaling.app import create_app
from signaling.auth import Grants, issue_token
from signaling.client import SignalingClient
from signaling.config import Config
from signaling.memstore import MemoryStore
from signaling.redisstore import RedisStore
from signaling.store import Store

from .helpers import open_udp_sockets
from .redis_server import RedisServer

TEST_SECRET = "test-secret-0123456789-0123456789-abcdef"


@pytest.fixture(autouse=True)
def no_udp_socket_left_open() -> Iterator[None]:
    """Every test closes the UDP sockets it opened (aiortc's ICE sockets, above all).

    A peer connection whose close was cut short leaves them open, and without this
    check they surface much later, as a ResourceWarning in whatever test the garbage
    collector happens to run in. Autouse fixtures are set up first and torn down last,
    so this runs after the test's own fixtures have closed everything.
    """
    before = open_udp_sockets()
    yield
    left = open_udp_sockets() - before
    assert not left, f"UDP sockets left open (descriptor, inode): {sorted(left)}"


@dataclasses.dataclass
class Node:
    """A running node plus helpers to mint tokens and connect clients to it."""

    server: TestServer
    config: Config
    clients: list[SignalingClient]
    cleanups: list[Callable[[], Awaitable[Any]]] = dataclasses.field(default_factory=list)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    def token(self, user: str = "alice", *, name: str | None = None,
              rooms: tuple[str, ...] = ("*",), ttl: int = 600, **grants: bool) -> str:
        g = Grants(rooms=rooms, **{"publish": True, "subscribe": True, **grants})
        assert self.config.secret is not None
        return issue_token(self.config.secret, user, name=name, grants=g, ttl=ttl)

    async def client(self, user: str = "alice", *, token: str | None = None,
                     connect: bool = True, request_timeout: float = 10.0,
                     **token_args: Any) -> SignalingClient:
        client = SignalingClient(self.url, token or self.token(user, **token_args),
                                 request_timeout=request_timeout)
        self.clients.append(client)
        if connect:
            await client.connect()
        return client


NodeFactory = Callable[..., Awaitable[Node]]


@pytest.fixture
def base_config(tmp_path: Path) -> Config:
    # Tests of features send in bursts no client would: rate limits are out of their way
    # (tests/test_ratelimit.py sets its own).
    unlimited = {f"rate_{kind}": "100000/100000"
                 for kind in ("signal", "presence", "file", "other", "connect", "auth_failures")}
    return Config(secret=TEST_SECRET, shutdown_timeout=0.5, file_dir=tmp_path / "relay-files",
                  recordings_dir=tmp_path / "recordings", **unlimited)


@pytest.fixture
async def make_node(aiohttp_server: Any, base_config: Config) -> AsyncIterator[NodeFactory]:
    nodes: list[Node] = []

    async def make(**overrides: Any) -> Node:
        config = dataclasses.replace(base_config, **overrides)
        server = await aiohttp_server(create_app(config), host="127.0.0.1")
        node = Node(server=server, config=config, clients=[])
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        for client in node.clients:
            await client.close()
        for cleanup in node.cleanups:
            await cleanup()


@pytest.fixture
async def node(make_node: NodeFactory) -> Node:
    return await make_node()


StartWorker = Callable[..., Awaitable[Any]]


@pytest.fixture
async def start_worker(node: Node) -> AsyncIterator[StartWorker]:
    """Start in-process media workers against `node` (`await start_worker(name, **options)`,
    recording into the node's recordings_dir); all closed after the test."""
    from .media_fixtures import media_worker  # only the media tests pay for importing aiortc

    async with contextlib.AsyncExitStack() as stack:
        async def start(name: str = "worker", **options: Any) -> Any:
            return await stack.enter_async_context(media_worker(node, name, **options))

        yield start


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole run; tests keep apart by key prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


_prefixes = itertools.count()


def redis_prefix() -> str:
    return f"t{next(_prefixes)}"


StoreFactory = Callable[..., Awaitable[Store]]


@pytest.fixture(params=["memory", "redis"])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[StoreFactory]:
    """Each store implementation in turn: `await make_store(log_size=..., log_age=...,
    prefix=...)` makes a started one (Redis ones sharing `prefix` share state)."""
    made: list[Store] = []
    default_prefix = redis_prefix()

    async def make(log_size: int = 4, log_age: float = 600.0,
                   prefix: str | None = None) -> Store:
        store: Store
        if request.param == "memory":
            store = MemoryStore(log_size=log_size, log_age=log_age)
        else:
            server: RedisServer = request.getfixturevalue("redis_server")
            store = RedisStore(server.url, prefix or default_prefix, log_size=log_size,
                               log_age=log_age)
        await store.start()
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


@pytest.fixture
async def store(make_store: StoreFactory) -> Store:
    return await make_store()
