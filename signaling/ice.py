"""ICE server lists handed to clients, with TURN REST credentials (coturn `use-auth-secret`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from typing import Any

from .config import Config
from .ids import UserId


def turn_credentials(
    secret: str, user: UserId, ttl: int, now: float | None = None
) -> tuple[str, str]:
    """Return (username, credential) valid for `ttl` seconds on a coturn sharing this secret."""
    expiry = int(time.time() if now is None else now) + ttl
    username = f"{expiry}:{user}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(config: Config, user: UserId, now: float | None = None) -> list[dict[str, Any]]:
    servers: list[dict[str, Any]] = []
    if config.stun_urls:
        servers.append({"urls": list(config.stun_urls)})
    if config.turn_urls and config.turn_secret:
        username, credential = turn_credentials(config.turn_secret, user, config.turn_ttl, now)
        servers.append(
            {"urls": list(config.turn_urls), "username": username, "credential": credential}
        )
    return servers
