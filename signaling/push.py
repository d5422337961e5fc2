"""Push hooks: wake a callee who has no connected device (a mobile app in the background)."""

from __future__ import annotations

import logging
from typing import Any, Protocol

from .ids import UserId
from .webhooks import WebhookSender
from .webhooks import sign as sign  # re-exported: receivers' tests import it from here

log = logging.getLogger(__name__)


class PushHook(Protocol):
    def ring(self, user: UserId, call: dict[str, Any]) -> None:
        """Tell `user`'s devices elsewhere about an incoming call; must not block."""


class LogPush:
    """The default: only a log line, for deployments without a push service."""

    def ring(self, user: UserId, call: dict[str, Any]) -> None:
        log.info("push (not configured): call %s for offline user %s", call.get("callId"), user)


class WebhookPush:
    """Sends `{id, type: "call.incoming", at, node, user, call}` through a webhook sender:
    signed, and retried while the call still rings (docs/webhooks.md)."""

    def __init__(self, sender: WebhookSender) -> None:
        self._sender = sender

    def ring(self, user: UserId, call: dict[str, Any]) -> None:
        self._sender.send("call.incoming", {"user": user, "call": call})
