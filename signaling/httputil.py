"""What the REST endpoints share: bearer-token identity and coded JSON errors."""

from __future__ import annotations

from aiohttp import web

from .auth import Identity, verify_token
from .errors import ErrorCode, RtcError

_STATUS = {ErrorCode.UNAUTHORIZED: 401, ErrorCode.FORBIDDEN: 403, ErrorCode.NOT_FOUND: 404,
           ErrorCode.BAD_REQUEST: 400, ErrorCode.CONFLICT: 409, ErrorCode.UNAVAILABLE: 503}


def identity(request: web.Request, secret: str) -> Identity:
    """The caller, from `Authorization: Bearer <token>` or a `token` query parameter (for
    links a browser follows, such as downloads); raises Unauthorized."""
    header = request.headers.get("Authorization", "")
    token = header[7:] if header.startswith("Bearer ") else request.query.get("token")
    return verify_token(secret, token)


def error_response(exc: RtcError) -> web.Response:
    return error_status(_STATUS.get(exc.code, 500), exc.code, exc.message)


def error_status(status: int, code: ErrorCode, message: str) -> web.Response:
    return web.json_response({"ok": False, "error": {"code": code.value, "message": message}},
                             status=status)


def ascii_filename(name: str) -> str:
    """A name safe inside Content-Disposition's quotes."""
    return "".join(c if c.isascii() and c.isprintable() and c != '"' else "_" for c in name)
