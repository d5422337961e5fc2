"""The HTTP relay for files that cannot go peer to peer: upload, download, expiry.

Files live under one directory; with several nodes it must be shared by all of them
(an upload may reach one node and the download another).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from aiohttp import web

from .auth import Identity
from .errors import Conflict, ErrorCode, Forbidden, NotFound, RtcError
from .files import FileService, Transfer, TransferState
from .front import route
from .httputil import ascii_filename, error_response, error_status, identity

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
REPORT_EVERY = 0.1  # seconds between progress reports while uploading


class FileRelay:
    """Stores relayed files under `root` for `ttl` seconds; owned by the app's lifecycle."""

    def __init__(self, root: Path, max_bytes: int, ttl: float, secret: str, files: FileService,
                 changed: Callable[[Transfer], Awaitable[None]]) -> None:
        self._root = root
        self._max = max_bytes
        self._ttl = ttl
        self._secret = secret
        self._files = files
        self._changed = changed
        self._sweeper: asyncio.Task[None] | None = None
        self._uploading: set[str] = set()

    def add_routes(self, app: web.Application) -> None:
        route(app, "PUT", "/api/files/{id}", self.upload)
        route(app, "GET", "/api/files/{id}", self.download)
        app.cleanup_ctx.append(self._lifecycle)

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        self._root.mkdir(parents=True, exist_ok=True)
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="file-relay-sweeper")
        yield
        self._sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sweeper

    def _identity(self, request: web.Request) -> Identity:
        return identity(request, self._secret)

    async def upload(self, request: web.Request) -> web.StreamResponse:
        try:
            who = self._identity(request)
            transfer = await self._files.get(request.match_info["id"])
            if transfer.sender_user != who.user:
                raise Forbidden("only the sender uploads")
            if transfer.final or transfer.relay_done:
                raise Forbidden(f"transfer is {transfer.state.value}")
            if transfer.id in self._uploading:
                raise Conflict("an upload of this transfer is under way")
        except RtcError as exc:
            return error_response(exc)
        self._uploading.add(transfer.id)
        try:
            return await self._receive(request, transfer)
        finally:
            self._uploading.discard(transfer.id)

    async def _receive(self, request: web.Request, transfer: Transfer) -> web.StreamResponse:
        limit = min(self._max, transfer.offer.size)
        if request.content_length is not None and request.content_length > limit:
            return error_status(413, ErrorCode.BAD_REQUEST, f"larger than {limit} bytes")
        path = self._root / transfer.id
        received, reported = 0, 0.0
        try:
            with path.open("wb") as out:
                async for chunk in request.content.iter_chunked(CHUNK):
                    received += len(chunk)
                    if received > limit:
                        return error_status(413, ErrorCode.BAD_REQUEST,
                                             f"larger than {limit} bytes")
                    await asyncio.to_thread(out.write, chunk)
                    if time.monotonic() - reported >= REPORT_EVERY:
                        reported = time.monotonic()
                        transfer = await self._files.relay_progress(transfer.id, received)
                        await self._changed(transfer)
        finally:
            if received > limit or transfer.final:
                path.unlink(missing_ok=True)
        if received != transfer.offer.size:
            path.unlink(missing_ok=True)
            return error_status(400, ErrorCode.BAD_REQUEST,
                                 f"got {received} of {transfer.offer.size} bytes")
        transfer = await self._files.relay_progress(transfer.id, received, complete=True)
        await self._changed(transfer)
        log.info("relayed file %s (%d bytes) for room %s", transfer.id, received, transfer.room)
        return web.json_response({"ok": True, "bytes": received})

    async def download(self, request: web.Request) -> web.StreamResponse:
        try:
            who = self._identity(request)
            transfer = await self._files.get(request.match_info["id"])
            if not any(r.user == who.user for r in transfer.receivers.values()):
                raise Forbidden("only a receiver downloads")
            path = self._root / transfer.id
            if not transfer.relay_done or not path.exists():
                raise NotFound("the file is not on the relay")
        except RtcError as exc:
            return error_response(exc)
        return web.FileResponse(path, headers={
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f'attachment; filename="{ascii_filename(transfer.offer.name)}"',
        })

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(min(self._ttl, 60.0))
            try:
                await self.sweep()
            except RtcError as exc:
                log.warning("file relay sweep skipped: %s", exc.message)

    async def sweep(self) -> None:
        """Delete relayed files past their TTL, and those of cancelled or failed transfers."""
        now = time.time()
        for path in self._root.iterdir():
            try:
                transfer = await self._files.get(path.name)
            except NotFound:
                transfer = None
            gone = transfer is None or transfer.state in (TransferState.CANCELLED,
                                                          TransferState.FAILED)
            if gone or now - path.stat().st_mtime > self._ttl:
                path.unlink(missing_ok=True)
                if transfer is not None:
                    await self._files.relay_gone(transfer.id)
