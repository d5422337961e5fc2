"""The application factory: one config in, one aiohttp app out, owning everything it starts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import socketio
from aiohttp import web

from .config import Config
from .edge import SignalingEdge
from .http import CONFIG, add_routes
from .rooms import RoomService

log = logging.getLogger(__name__)

ROOMS = web.AppKey("rooms", RoomService)
SIO = web.AppKey("sio", socketio.AsyncServer)
EDGE = web.AppKey("edge", SignalingEdge)

# engine.io's own frame cap: an SDP at the cap plus JSON framing must fit.
PACKET_OVERHEAD = 16 * 1024


def create_app(config: Config) -> web.Application:
    """Build a signaling node. A dev config without a secret gets an ephemeral one here."""
    config = config.with_runtime_secret()
    app = web.Application()
    rooms = RoomService(config.room_max_participants)
    sio = socketio.AsyncServer(
        async_mode="aiohttp",
        cors_allowed_origins=list(config.cors_origins) or None,
        max_http_buffer_size=config.max_sdp_bytes + PACKET_OVERHEAD,
    )
    sio.attach(app)
    app[CONFIG] = config
    app[ROOMS] = rooms
    app[SIO] = sio
    app[EDGE] = SignalingEdge(sio, config, rooms)
    add_routes(app, config)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_disconnect_all)
    return app


async def _disconnect_all(app: web.Application) -> None:
    # Open websockets would otherwise hold shutdown for the runner's whole timeout.
    sio = app[SIO]
    for sid in app[EDGE].connections():
        await sio.disconnect(sid)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    config = app[CONFIG]
    log.info("signaling node up (env=%s)", config.env)
    if config.dev:
        log.warning("DEV MODE: ephemeral or development secret, /api/dev/token enabled")
    yield
    await app[SIO].shutdown()
