"""A client's address behind reverse proxies the operator trusts.

Behind nginx every connection comes from nginx: per-address rate limits would then
limit everyone together, and the audit log would name nginx. A proxy appends the
address it saw to `X-Forwarded-For`; a client can write anything before that. So the
client is the rightmost address there that is not a trusted proxy, and only when the
connection itself comes from a trusted proxy (`MIKOTO_RTC_TRUSTED_PROXIES`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(specs: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs or single addresses; raises ValueError naming a bad one."""
    networks = []
    for spec in specs:
        try:
            networks.append(ipaddress.ip_network(spec.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an address or network: {spec!r}") from None
    return tuple(networks)


def within(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def client_address(remote: str | None, forwarded_for: str | None,
                   proxies: tuple[Network, ...]) -> str:
    """REMOTE_ADDR, or through trusted proxies the first hop they did not add."""
    address = remote or "unknown"
    if not proxies or not forwarded_for or not within(address, proxies):
        return address
    for hop in reversed(forwarded_for.split(",")):
        address = hop.strip()
        if not within(address, proxies):
            break
    return address
