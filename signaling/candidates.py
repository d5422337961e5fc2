"""ICE candidates that name private addresses, for nodes told not to relay them
(`MIKOTO_RTC_DROP_PRIVATE_CANDIDATES`): a participant then learns no other's LAN or
loopback address, and calls connect through public (server-reflexive or relay)
candidates only."""

from __future__ import annotations

import ipaddress


def is_private(candidate: str) -> bool:
    """Whether an SDP candidate (`candidate:F C PROTO PRIO ADDRESS PORT typ ...`, with
    or without `a=`) names a private, loopback, link-local or unspecified address, or
    an mDNS name (`*.local`, which only resolves on the LAN)."""
    fields = candidate.split()
    if len(fields) < 5:
        return False
    address = fields[4]
    if address.lower().endswith(".local"):
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified


def without_private(sdp: str) -> str:
    """The session description without its private `a=candidate` lines."""
    if "a=candidate:" not in sdp:
        return sdp
    lines = sdp.split("\r\n")
    return "\r\n".join(line for line in lines
                       if not (line.startswith("a=candidate:") and is_private(line[2:])))
