"""The OpenAPI 3.1 document of the node's REST API, served at /api/openapi.json.

Written out here rather than generated, so it reads as the contract it is;
tests/test_admin.py checks that it names every /api route the node serves (and health and
metrics), and no other.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web


def _ok(description: str, **properties: Any) -> dict[str, Any]:
    schema = {"type": "object", "required": ["ok"],
              "properties": {"ok": {"const": True}, **properties}}
    return {"description": description,
            "content": {"application/json": {"schema": schema}}}


def _op(summary: str, ok: dict[str, Any], *, body: dict[str, Any] | None = None,
        errors: tuple[int, ...] = (400, 401, 403, 404), auth: bool = True) -> dict[str, Any]:
    refs = {str(e): {"$ref": f"#/components/responses/E{e}"} for e in errors}
    op: dict[str, Any] = {"summary": summary, "responses": {"200": ok, **refs}}
    if auth:
        op["security"] = [{"bearer": []}]
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"type": "object", "additionalProperties": False, **body}}}}
    return op


_ROOM = {"name": "room", "in": "path", "required": True,
         "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$"}}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_PARTICIPANT = {"type": "object", "properties": {
    "id": {"type": "string"}, "user": {"type": "string"}, "name": {"type": "string"},
    "state": {"type": "object"}, "connection": {"enum": ["connected", "reconnecting"]},
    "hidden": {"type": "boolean"}, "meta": {}}}
_TIMELINE = {"type": "array", "items": {"type": "object", "required": ["at", "event"],
                                        "properties": {"at": {"type": "integer"},
                                                       "event": {"type": "string"}}}}
_ANY: dict[str, Any] = {}  # any JSON value

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "mikoto-rtc HTTP API", "version": "1",
             "description": "Admin API (tokens with grant admin; their rooms grant bounds "
                            "what they see), recordings and the file relay. See docs/admin.md."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        "schemas": {"Error": {"type": "object", "required": ["ok", "error"], "properties": {
            "ok": {"const": False},
            "error": {"type": "object", "required": ["code", "message"],
                      "properties": {"code": {"type": "string"},
                                     "message": {"type": "string"}}}}}},
        "responses": {f"E{status}": {"description": text, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}}
            for status, text in [(400, "bad_request"), (401, "unauthorized"), (403, "forbidden"),
                                 (404, "not_found (also a room outside the token's grants)"),
                                 (409, "conflict"), (503, "unavailable")]},
    },
    "paths": {
        "/api/admin/rooms": {"get": _op("List rooms", _ok(
            "rooms", rooms={"type": "array", "items": {"type": "object", "properties": {
                "room": {"type": "string"}, "participants": {"type": "integer"},
                "seq": {"type": "integer"}}}}), errors=(401, 403))},
        "/api/admin/rooms/{room}": {
            "parameters": [_ROOM],
            "get": _op("A room's participants (hidden ones too) and recording", _ok(
                "the room", room={"type": "string"}, seq={"type": "integer"},
                participants={"type": "array", "items": _PARTICIPANT},
                hidden={"type": "array", "items": _PARTICIPANT}, recording=_ANY)),
            "delete": _op("Close a room: every participant is removed (reason closed)", _ok(
                "who was removed", removed={"type": "array", "items": {"type": "string"}})),
        },
        "/api/admin/rooms/{room}/participants/{id}": {
            "parameters": [_ROOM, _ID],
            "delete": _op("Kick a participant (reason kicked; audited)", _ok(
                "removed", removed={"type": "string"})),
        },
        "/api/admin/rooms/{room}/participants/{id}/mute": {
            "parameters": [_ROOM, _ID],
            "post": _op("Ask a participant to mute (it receives mute:request)", _ok(
                "whether its connection was reached", delivered={"type": "boolean"}),
                body={"properties": {"audio": {"type": "boolean"},
                                     "video": {"type": "boolean"}}}),
        },
        "/api/admin/rooms/{room}/data": {
            "parameters": [_ROOM],
            "post": _op("Send a data message to the room (room:data, at most 16 kB)", _ok(
                "the event's seq", seq={"type": "integer"}),
                body={"required": ["data"], "properties": {
                    "data": _ANY, "topic": {"type": "string", "maxLength": 64}}}),
        },
        "/api/admin/rooms/{room}/recording": {
            "parameters": [_ROOM],
            "post": _op("Start recording the room", _ok("the recording state",
                                                        recording={"type": "string"}),
                        errors=(400, 401, 403, 404, 409, 503)),
            "delete": _op("Stop recording the room", _ok("stopped", recording={"type": "string"},
                                                         seq={"type": "integer"})),
        },
        "/api/admin/rooms/{room}/timeline": {
            "parameters": [_ROOM],
            "get": _op("The room's timeline: joins, signals by kind and size, refusals, "
                       "leaves (never their contents)", _ok(
                           "oldest first", room={"type": "string"}, events=_TIMELINE)),
        },
        "/api/admin/calls/{id}/timeline": {
            "parameters": [_ID],
            "get": _op("A call's timeline (needs an admin token for every room)", _ok(
                "oldest first", call={"type": "string"}, events=_TIMELINE)),
        },
        "/api/admin/tokens": {"post": _op(
            "Mint a token (needs an admin token for every room; never grant service)",
            _ok("the token", token={"type": "string"}, ttl={"type": "integer"}),
            body={"required": ["user"], "properties": {
                "user": {"type": "string"}, "name": {"type": "string"},
                "grants": {"type": "object"}, "ttl": {"type": "integer"}}})},
        "/api/recordings": {"get": _op("List recordings (grant record or admin)", _ok(
            "recordings", recordings={"type": "array"}), errors=(401, 403))},
        "/api/recordings/{id}": {
            "parameters": [_ID],
            "get": _op("A recording's catalog", _ok("the catalog", recording={"type": "object"})),
            "delete": _op("Delete a recording", _ok("deleted"), errors=(401, 403, 404, 409)),
        },
        "/api/recordings/{id}/files/{name}": {
            "parameters": [_ID, {"name": "name", "in": "path", "required": True,
                                 "schema": {"type": "string"}}],
            "get": _op("Download one file of a recording",
                       {"description": "the file", "content": {"application/octet-stream": {}}}),
        },
        "/api/files/{id}": {
            "parameters": [_ID],
            "put": _op("Upload a relayed file (its sender only)", _ok("stored"),
                       errors=(400, 401, 403, 404, 409)),
            "get": _op("Download a relayed file (its receivers only)",
                       {"description": "the file", "content": {"application/octet-stream": {}}}),
        },
        "/api/dev/token": {"post": _op(
            "Development only (refused in production): a participant token",
            _ok("the token", token={"type": "string"}), errors=(400,), auth=False)},
        "/api/openapi.json": {"get": _op("This document", {"description": "OpenAPI 3.1"},
                                         errors=(), auth=False)},
        "/healthz": {"get": _op("The process serves", _ok("alive"), errors=(), auth=False)},
        "/readyz": {"get": _op(
            "Ready for new clients: store up, not draining, a media worker registered "
            "(unless MIKOTO_RTC_READY_NEEDS_WORKER=false)",
            _ok("ready", store={"type": "boolean"}, draining={"type": "boolean"},
                workers={"type": "integer"}), errors=(503,), auth=False)},
        "/metrics": {"get": {
            "summary": "Prometheus metrics (docs/admin.md); may need a bearer token or an "
                       "allowed address",
            "responses": {"200": {"description": "Prometheus text format",
                                  "content": {"text/plain": {}}},
                          "403": {"description": "not open to this caller"}}}},
    },
}


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(DOCUMENT)
