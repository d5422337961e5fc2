"""Wire-format ICE data (docs/protocol.md) to aiortc objects, and nothing else."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from aiortc import RTCConfiguration, RTCIceCandidate, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.rtcicetransport import parse_stun_turn_uri
from aiortc.sdp import candidate_from_sdp

log = logging.getLogger(__name__)


def rtc_configuration(ice_servers: Sequence[Mapping[str, Any]], *,
                      relay_only: bool = False) -> RTCConfiguration:
    """The join ack's `iceServers` as an aiortc configuration.

    An empty list stays empty: aiortc replaces a missing list with a public Google
    STUN server, which a self-hosted or offline deployment must not depend on.
    URLs aiortc cannot parse are dropped (it would raise when creating a transport);
    note that aiortc uses only the first STUN and the first TURN URL.
    """
    servers: list[RTCIceServer] = []
    for entry in ice_servers:
        urls = entry.get("urls", [])
        usable = [u for u in ([urls] if isinstance(urls, str) else urls) if _parses(u)]
        if usable:
            servers.append(RTCIceServer(urls=usable, username=entry.get("username"),
                                        credential=entry.get("credential")))
    policy = RTCIceTransportPolicy.RELAY if relay_only else RTCIceTransportPolicy.ALL
    if relay_only and not any(_is_turn(u) for s in servers for u in s.urls):
        log.warning("relay-only ICE without a TURN server: calls cannot connect")
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


def parse_candidate(wire: Mapping[str, Any] | None) -> RTCIceCandidate | None:
    """A wire candidate `{candidate, sdpMid?, sdpMLineIndex?}` as an aiortc candidate.

    Returns None for end-of-candidates (`null`, or an empty `candidate` string as
    browsers emit); raises ValueError for anything aiortc cannot use.
    """
    if wire is None:
        return None
    text = wire.get("candidate")
    if text is None or text == "":
        return None
    if not isinstance(text, str):
        raise ValueError(f"candidate is not a string: {text!r}")
    mid, index = wire.get("sdpMid"), wire.get("sdpMLineIndex")
    if mid is None and index is None:
        raise ValueError("candidate has neither sdpMid nor sdpMLineIndex")
    try:
        candidate = candidate_from_sdp(text.removeprefix("a=").removeprefix("candidate:"))
    except (AssertionError, IndexError, ValueError) as exc:  # it asserts on short lines
        raise ValueError(f"malformed candidate: {text!r}") from exc
    candidate.sdpMid = None if mid is None else str(mid)
    candidate.sdpMLineIndex = None if index is None else int(index)
    return candidate


def _parses(url: Any) -> bool:
    try:
        if not isinstance(url, str):
            raise TypeError(type(url).__name__)
        parse_stun_turn_uri(url)
    except (TypeError, ValueError):
        log.warning("ignoring ICE server URL aiortc cannot use: %r", url)
        return False
    return True


def _is_turn(url: str) -> bool:
    return url.startswith(("turn:", "turns:"))
