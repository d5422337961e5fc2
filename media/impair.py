"""Network impairment for tests and probes: lose a fraction of the RTP a peer sends.

Used to check that what measures a call (the echo report, monitoring built on the
probe) notices a lossy network. It drops packets at the last step before
encryption, on one peer connection's transport, so NACK retransmissions are lost
at the same rate, as on a real lossy link; RTCP is never dropped.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any

from aiortc import RTCPeerConnection
from aiortc.rtp import is_rtcp

_HOOKED = "_mikoto_loss"


def lose_outgoing_rtp(pc: RTCPeerConnection, fraction: float,
                      rng: random.Random | None = None) -> None:
    """From now on drop `fraction` (0-1) of the RTP packets `pc` sends."""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be within 0 and 1, got {fraction}")
    chance = rng or random.Random()
    for transceiver in pc.getTransceivers():
        transport = transceiver.sender.transport
        if transport is None or getattr(transport, _HOOKED, False):
            continue
        send: Callable[[bytes], Awaitable[None]] = transport._send_rtp

        async def lossy(data: bytes, send: Any = send) -> None:
            if is_rtcp(data) or chance.random() >= fraction:
                await send(data)

        transport._send_rtp = lossy  # type: ignore[method-assign]
        setattr(transport, _HOOKED, True)
