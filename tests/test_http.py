import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import socketio
from aiohttp import ClientSession

from signaling.app import EDGE
from signaling.auth import verify_token
from signaling.config import Env

from .conftest import TEST_SECRET, Node


async def _post(node: Node, path: str, body: Any) -> tuple[int, Any]:
    async with ClientSession() as http, http.post(node.url + path, json=body) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


async def _get_text(node: Node, path: str) -> tuple[int, str]:
    async with ClientSession() as http, http.get(node.url + path) as resp:
        return resp.status, await resp.text()


async def test_healthz(node: Node) -> None:
    async with ClientSession() as http, http.get(node.url + "/healthz") as resp:
        assert (resp.status, await resp.json()) == (200, {"ok": True})


async def test_dev_token_mints_a_token_the_node_accepts(node: Node) -> None:
    status, body = await _post(node, "/api/dev/token", {"user": "u1", "name": "Ann",
                                                        "rooms": ["lobby"]})
    assert status == 200
    who = verify_token(TEST_SECRET, body["token"])
    assert (who.user, who.name, who.grants.rooms) == ("u1", "Ann", ("lobby",))
    assert who.grants.publish and who.grants.subscribe and not who.grants.admin
    assert who.grants.record  # dev mode: the demo can try recording
    client = await node.client(token=body["token"])
    assert (await client.join("lobby")).user == "u1"


@pytest.mark.parametrize("body", [None, [], {"user": ""}, {"user": 5}, {"user": "u", "rooms": "x"},
                                  {"user": "u", "rooms": ["bad room"]}, {"user": "u", "name": ""}])
async def test_dev_token_rejects_bad_bodies(node: Node, body: Any) -> None:
    status, reply = await _post(node, "/api/dev/token", body)
    assert status == 400 and reply["error"]["code"] == "bad_request"


async def test_dev_token_rejects_non_json(node: Node) -> None:
    async with ClientSession() as http:
        async with http.post(node.url + "/api/dev/token", data=b"\xff\xfe") as resp:
            assert resp.status == 400


async def test_production_has_no_dev_endpoint(make_node: Any) -> None:
    node = await make_node(env=Env.PRODUCTION)
    status, _ = await _post(node, "/api/dev/token", {"user": "u1"})
    assert status in (404, 405)


async def test_web_client_is_served_at_root(make_node: Any, tmp_path: Path) -> None:
    (tmp_path / "index.html").write_text("<!doctype html><title>demo</title>")
    (tmp_path / "app.js").write_text("console.log('hi')")
    node = await make_node(web_dir=tmp_path)
    status, text = await _get_text(node, "/")
    assert status == 200 and "<title>demo</title>" in text
    assert (await _get_text(node, "/app.js"))[0] == 200
    assert (await _get_text(node, "/missing.js"))[0] == 404


async def test_unbuilt_web_client_says_how_to_build(make_node: Any, tmp_path: Path) -> None:
    node = await make_node(web_dir=tmp_path / "nowhere")
    status, text = await _get_text(node, "/")
    assert status == 503 and "npm" in text


async def test_readyz_needs_a_media_worker_and_is_ready_until_the_node_drains(
        node: Node) -> None:
    async with ClientSession() as http:
        async with http.get(node.url + "/readyz") as resp:
            assert (resp.status, await resp.json()) == (
                503, {"ok": False, "store": True, "draining": False, "workers": 0})
        worker = await node.client("worker", service=True)
        await worker.request("worker:register", {"capacity": 10, "kinds": ["echo"]})
        async with http.get(node.url + "/readyz") as resp:
            assert (resp.status, await resp.json()) == (
                200, {"ok": True, "store": True, "draining": False, "workers": 1})
        await node.client("ann")  # someone to wait for, so the drain takes a while
        drain = asyncio.ensure_future(node.server.app[EDGE].drain())
        try:
            async with asyncio.timeout(5):
                while True:
                    async with http.get(node.url + "/readyz") as resp:
                        if resp.status == 503:
                            assert (await resp.json())["draining"] is True
                            break
                    await asyncio.sleep(0.02)
        finally:
            drain.cancel()


async def test_readyz_without_a_worker_when_told_so(make_node: Any) -> None:
    node = await make_node(ready_needs_worker=False)
    async with ClientSession() as http, http.get(node.url + "/readyz") as resp:
        assert resp.status == 200 and (await resp.json())["workers"] == 0


async def test_the_api_refuses_browsers_of_other_origins(make_node: Any) -> None:
    node = await make_node(cors_origins=("https://app.example",))
    body = json.dumps({"user": "u1"})
    async with ClientSession() as http:
        async with http.post(node.url + "/api/dev/token", data=body,
                             headers={"Origin": "https://evil.example"}) as resp:
            assert resp.status == 403 and (await resp.json())["error"]["code"] == "forbidden"
        async with http.post(node.url + "/api/dev/token", data=body,
                             headers={"Origin": node.url}) as resp:  # same origin
            assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers
        async with http.post(node.url + "/api/dev/token", data=body,
                             headers={"Origin": "https://app.example"}) as resp:
            assert resp.status == 200
            assert resp.headers["Access-Control-Allow-Origin"] == "https://app.example"
        async with http.options(node.url + "/api/recordings", headers={
                "Origin": "https://app.example", "Access-Control-Request-Method": "GET"}) as resp:
            assert resp.status == 204 and "Authorization" in resp.headers[
                "Access-Control-Allow-Headers"]
        async with http.post(node.url + "/api/dev/token", data=body) as resp:  # no Origin
            assert resp.status == 200


@pytest.mark.parametrize(("origin", "allowed"), [
    ("https://app.example", True), ("https://evil.example", False), (None, True)])
async def test_socketio_connects_only_from_allowed_origins(make_node: Any, origin: str | None,
                                                          allowed: bool) -> None:
    node = await make_node(cors_origins=("https://app.example",))
    client = socketio.AsyncClient(reconnection=False)
    connect = client.connect(node.url, auth={"token": node.token("ann")},
                             transports=["websocket"],
                             headers={"Origin": origin} if origin else {})
    if allowed:
        await connect
        assert (await client.call("ping", {"t": 1}, timeout=5))["ok"] is True
        await client.disconnect()
    else:
        with pytest.raises(socketio.exceptions.ConnectionError):
            await connect
        if client.eio.http is not None:  # refused before the upgrade: the client keeps it
            await client.eio.http.close()
