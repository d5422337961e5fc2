"""The application factory: one config in, one aiohttp app out, owning everything it starts."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator

import socketio
from aiohttp import web

from .admin import AdminApi
from .config import Config
from .edge import SignalingEdge
from .errors import RtcError
from .fastjson import TextPacket
from .filerelay import FileRelay
from .forward_edge import ForwardEdge
from .front import Front, route
from .heartbeat import NODE, Heartbeat
from .http import CONFIG, add_routes
from .media_edge import MediaEdge
from .memstore import MemoryStore
from .metrics import NodeMetrics
from .openapi import openapi_json
from .protocol import ClientEvent
from .push import LogPush, PushHook, WebhookPush
from .recording_edge import RecordingEdge
from .recordings import RecordingStore
from .redismanager import RedisManager
from .redisstore import RedisStore
from .sioserver import SignalingServer
from .store import Store
from .timeline import Timelines
from .webhooks import Webhooks
from .workers import WorkerRegistry

log = logging.getLogger(__name__)

STORE = web.AppKey("store", Store)
HEARTBEAT = web.AppKey("heartbeat", Heartbeat)
MANAGER = web.AppKey("manager", RedisManager)
SIO = web.AppKey("sio", socketio.AsyncServer)
EDGE = web.AppKey("edge", SignalingEdge)
RELAY = web.AppKey("relay", FileRelay)
WORKERS = web.AppKey("workers", WorkerRegistry)
RECORDINGS = web.AppKey("recordings", RecordingEdge)
TIMELINES = web.AppKey("timelines", Timelines)
WEBHOOKS = web.AppKey("webhooks", Webhooks)

# Relayed at high rates and quick to handle: run in the connection's reader task.
INLINE_EVENTS = frozenset({ClientEvent.SIGNAL.value, ClientEvent.PARTICIPANT_UPDATE.value,
                           ClientEvent.FILE_PROGRESS.value, ClientEvent.PING.value})

# engine.io's own frame cap: an SDP at the cap plus JSON framing must fit.
PACKET_OVERHEAD = 16 * 1024


def create_app(config: Config) -> web.Application:
    """Build a signaling node. A dev config without a secret gets an ephemeral one here."""
    config = config.with_runtime_secret()
    assert config.secret is not None
    app = web.Application()
    Front(config).install(app)
    node = "N" + secrets.token_hex(6)
    store: Store
    manager: RedisManager | None = None
    if config.redis_url:
        store = RedisStore(config.redis_url, config.redis_prefix, config.room_log_size,
                           config.room_log_age)
        manager = app[MANAGER] = RedisManager(config.redis_url,
                                              channel=config.redis_prefix + ":socketio")
        app[HEARTBEAT] = Heartbeat(store, node, config.node_heartbeat, config.node_timeout)
    else:
        store = MemoryStore(config.room_log_size, config.room_log_age)
    sio = SignalingServer(
        inline_events=INLINE_EVENTS,
        ws_deflate=config.ws_deflate,
        tasks=store.needs_task,
        async_mode="aiohttp",
        client_manager=manager,
        serializer=TextPacket,
        cors_allowed_origins=list(config.cors_origins) or None,
        max_http_buffer_size=config.max_sdp_bytes + PACKET_OVERHEAD,
        ping_interval=config.ping_interval,
        ping_timeout=config.ping_timeout,
    )
    webhooks = app[WEBHOOKS] = Webhooks(config, node)
    push: PushHook = WebhookPush(webhooks.push) if webhooks.push else LogPush()
    sio.attach(app)
    app[CONFIG] = config
    app[STORE] = store
    app[SIO] = sio
    edge = app[EDGE] = SignalingEdge(sio, config, store, node, push)
    webhooks.observe(edge.observers)
    store.on_timer(NODE, edge.node_lost)
    workers = app[WORKERS] = WorkerRegistry(store)
    media = MediaEdge(edge, workers, config)
    forwarding = ForwardEdge(edge, media, config.mesh_max_participants)
    recordings = app[RECORDINGS] = RecordingEdge(edge, media,
                                                 RecordingStore(config.recordings_dir),
                                                 config.secret, forwarding)
    recordings.add_routes(app)
    timelines = app[TIMELINES] = Timelines(store, config.timeline_size, config.timeline_age)
    edge.observers.subscribe(timelines.watch)
    edge.observers.subscribe_signals(timelines.signal)
    AdminApi(config, edge, recordings, timelines).add_routes(app)
    NodeMetrics(config, edge, workers, recordings, webhooks,
                lambda: store.healthy).add_routes(app)
    route(app, "GET", "/api/openapi.json", openapi_json)
    relay = app[RELAY] = FileRelay(config.file_dir, config.file_relay_max_bytes,
                                   config.file_ttl, config.secret, edge.files, edge.file_changed)
    relay.add_routes(app)
    add_routes(app, config)
    route(app, "GET", "/readyz", _readyz)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_drain)
    return app


async def _readyz(request: web.Request) -> web.Response:
    """Ready for new connections: the store (with the Redis client manager's feed, when
    there are several nodes) answers and the node is not draining. A load balancer sends
    new clients elsewhere while this is 503."""
    app = request.app
    manager = app.get(MANAGER)
    store = app[STORE].healthy and (manager is None or manager.subscribed)
    draining = app[EDGE].draining
    try:
        workers = len(await app[WORKERS].all()) if store else 0
    except RtcError:
        workers = 0
    ready = store and not draining and (workers > 0 or not app[CONFIG].ready_needs_worker)
    return web.json_response({"ok": ready, "store": store, "draining": draining,
                              "workers": workers}, status=200 if ready else 503)


async def _drain(app: web.Application) -> None:
    # Runs after the listener is closed: tell clients to go, then close what is left, since
    # open websockets would otherwise hold shutdown for the runner's whole timeout.
    await app[EDGE].drain()


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    store = app[STORE]
    await store.start()
    heartbeat = app.get(HEARTBEAT)
    if heartbeat is not None:
        await heartbeat.start()
    log.info("signaling node %s up (env=%s, store=%s)", app[EDGE].sessions.node, config.env,
             "redis" if config.redis_url else "memory")
    if config.dev:
        log.warning("DEV MODE: ephemeral or development secret, /api/dev/token enabled")
    app[TIMELINES].start()
    await app[WEBHOOKS].start()
    yield
    await app[EDGE].aclose()
    await app[WEBHOOKS].aclose()  # after the edge: what it said last is still sent
    await app[TIMELINES].aclose()
    if heartbeat is not None:
        await heartbeat.aclose()
    await app[SIO].shutdown()
    manager = app.get(MANAGER)
    if manager is not None:
        await manager.aclose()
    await store.aclose()
