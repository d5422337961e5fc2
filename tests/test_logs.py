"""Structured logs: a real `mikoto-rtc serve` with MIKOTO_RTC_LOG_FORMAT=json writes one
JSON object per line, each naming the connection or HTTP request it is about."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from signaling import logs

from .processes import mint, serving


def _lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


async def test_json_lines_name_their_connection_and_request(tmp_path: Path) -> None:
    log = tmp_path / "node.log"
    with serving(log, MIKOTO_RTC_LOG_FORMAT="json", MIKOTO_RTC_MEDIA_WORKERS="0") as node:
        client = socketio.AsyncClient(reconnection=False)
        await client.connect(node.url, auth={"token": mint("ann")}, transports=["websocket"])
        try:
            ack = await client.call("room:join", {"room": "bad room"}, timeout=5)
            assert ack["error"]["code"] == "bad_request"
            sid = client.get_sid()
        finally:
            await client.disconnect()
        async with aiohttp.ClientSession() as http:
            async with http.get(node.url + "/api/admin/rooms",
                                headers={"X-Request-Id": "backend-42"}) as resp:
                assert resp.status == 401 and resp.headers["X-Request-Id"] == "backend-42"
            async with http.get(node.url + "/api/admin/rooms",
                                headers={"X-Request-Id": "no spaces please"}) as resp:
                made = resp.headers["X-Request-Id"]
                assert made != "no spaces please" and len(made) == 16
        await asyncio.sleep(0.3)
    lines = _lines(log)  # every line is JSON, or this raises
    assert all({"ts", "level", "logger", "context", "msg"} <= set(line) for line in lines)
    mine = [line for line in lines if line["context"] == f"c:{sid}"]
    assert any("refused room:join" in line["msg"] for line in mine)
    assert any(line["msg"].startswith("connect ") for line in mine)
    assert any(line["context"] == "r:backend-42" and "admin GET" in line["msg"]
               for line in lines)
    assert any(line["context"] == f"r:{made}" for line in lines)


def test_a_text_line_names_its_context_and_a_json_line_its_exception(
        capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure("INFO", "json")
        logs.CONTEXT.set("c:abc")
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("t").exception("failed")
        line = json.loads(capsys.readouterr().err)
        assert (line["context"], line["msg"], line["level"]) == ("c:abc", "failed", "ERROR")
        assert "ValueError: boom" in line["exc"]
        logs.configure("INFO", "text")
        logging.getLogger("t").info("hello")
        assert "[c:abc]: hello" in capsys.readouterr().err
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
