"""Push hooks: wake a callee who has no connected device (a mobile app in the background)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any, Protocol

import aiohttp

from .ids import UserId

log = logging.getLogger(__name__)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Mikoto-Signature value: HMAC-SHA256 over "<timestamp>.<body>"."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class PushHook(Protocol):
    def ring(self, user: UserId, call: dict[str, Any]) -> None:
        """Tell `user`'s devices elsewhere about an incoming call; must not block."""

    async def aclose(self) -> None: ...


class LogPush:
    """The default: only a log line, for deployments without a push service."""

    def ring(self, user: UserId, call: dict[str, Any]) -> None:
        log.info("push (not configured): call %s for offline user %s", call.get("callId"), user)

    async def aclose(self) -> None:
        return None


class WebhookPush:
    """POSTs `{type: "call.incoming", user, call}` signed with HMAC-SHA256 to a URL."""

    def __init__(self, url: str, secret: str, timeout: float = 5.0) -> None:
        self._url = url
        self._secret = secret
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def ring(self, user: UserId, call: dict[str, Any]) -> None:
        task = asyncio.create_task(self._post({"type": "call.incoming", "user": user,
                                               "call": call}))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, event: dict[str, Any]) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        body = json.dumps(event, separators=(",", ":")).encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Mikoto-Timestamp": timestamp,
                   "X-Mikoto-Signature": sign(self._secret, timestamp, body)}
        try:
            async with self._session.post(self._url, data=body, headers=headers) as resp:
                if resp.status >= 300:
                    log.warning("push hook answered %d for user %s", resp.status, event["user"])
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.warning("push hook failed for user %s: %s", event["user"], exc)

    async def aclose(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)
        for task in self._tasks:
            task.cancel()
        if self._session is not None:
            await self._session.close()
