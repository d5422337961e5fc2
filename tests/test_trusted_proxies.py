"""Behind trusted reverse proxies (signaling/clientaddr.py), per-address limits and the
audit log name the client, not the proxy; a client cannot choose its own address."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from signaling.clientaddr import client_address, parse_networks

from .conftest import Node, NodeFactory
from .nginx import nginx

PROXIES = parse_networks(["10.0.0.0/8", "2001:db8::1"])


@pytest.mark.parametrize(("remote", "forwarded", "client"), [
    ("10.1.1.1", "198.51.100.7", "198.51.100.7"),
    # What a client wrote itself comes before what the proxies appended: not believed.
    ("10.1.1.1", "6.6.6.6, 198.51.100.7", "198.51.100.7"),
    # Through two trusted proxies.
    ("10.1.1.1", "198.51.100.7, 10.2.2.2", "198.51.100.7"),
    ("2001:db8::1", "2001:db8::77", "2001:db8::77"),
    # Not from a trusted proxy: the header is the client's own word, ignored.
    ("198.51.100.9", "6.6.6.6", "198.51.100.9"),
    ("10.1.1.1", None, "10.1.1.1"),
    ("10.1.1.1", "10.2.2.2", "10.2.2.2"),  # all trusted: the first one
    (None, None, "unknown"),
])
def test_the_client_is_the_first_untrusted_hop(remote: str | None, forwarded: str | None,
                                               client: str) -> None:
    assert client_address(remote, forwarded, PROXIES) == client
    assert client_address(remote, forwarded, ()) == (remote or "unknown")


def test_bad_proxy_networks_are_refused() -> None:
    with pytest.raises(ValueError, match="nginx"):
        parse_networks(["10.0.0.0/8", "nginx"])


async def _connect(node: Node, url: str, source: str,
                   headers: dict[str, str] | None = None) -> Any:
    """Connect from the loopback address `source`; the session event or the refusal."""
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))
    node.cleanups.append(http.close)
    client = socketio.AsyncClient(reconnection=False, http_session=http)
    node.cleanups.append(client.disconnect)
    refusals: list[Any] = []
    client.on("connect_error", refusals.append)
    try:
        await client.connect(url, auth={"token": node.token(source.replace(".", "-"))},
                             headers=headers or {}, transports=["websocket"])
    except socketio.exceptions.ConnectionError:
        return refusals[0]["data"]
    return await client.call("room:join", {"room": "lobby"}, timeout=5)


@pytest.mark.parametrize("trusted", [True, False])
async def test_connect_limits_and_audit_behind_nginx(make_node: NodeFactory, tmp_path: Path,
                                                     trusted: bool) -> None:
    audit = tmp_path / "audit.jsonl"
    node = await make_node(rate_connect="0.01/2", audit_log=str(audit),
                           trusted_proxies=("127.0.0.1",) if trusted else ())
    port = node.server.port
    assert port is not None
    with nginx([port, port], tmp_path / "nginx") as url:
        first = [await _connect(node, url, "127.0.0.3") for _ in range(2)]
        assert all(ack["ok"] for ack in first)
        spoofed = await _connect(node, url, "127.0.0.3", {"X-Forwarded-For": "198.51.100.7"})
        assert spoofed["code"] == "rate_limited", "a client cannot pick a fresh address"
        other = await _connect(node, url, "127.0.0.4")
    if not trusted:
        # Without it every client is nginx, and one client's connects use up everyone's.
        assert other["code"] == "rate_limited"
        return
    assert other["ok"], "another client behind the same proxy has its own limit"
    joins = [json.loads(line) for line in audit.read_text().splitlines()
             if '"join"' in line]
    assert [j["ip"] for j in joins] == ["127.0.0.3", "127.0.0.3", "127.0.0.4"]
