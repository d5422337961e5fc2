"""One exception tree; the edge maps each class to a protocol error code."""

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """The closed set of error codes a client can receive (docs/protocol.md)."""

    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    ROOM_FULL = "room_full"
    RATE_LIMITED = "rate_limited"
    CONFLICT = "conflict"
    UNAVAILABLE = "unavailable"
    INTERNAL = "internal"


class RtcError(Exception):
    """An error a client caused or must be told about; carries its wire code."""

    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code.value, "message": self.message}


class BadRequest(RtcError):
    code = ErrorCode.BAD_REQUEST


class Unauthorized(RtcError):
    code = ErrorCode.UNAUTHORIZED


class Forbidden(RtcError):
    code = ErrorCode.FORBIDDEN


class NotFound(RtcError):
    code = ErrorCode.NOT_FOUND


class RoomFull(RtcError):
    code = ErrorCode.ROOM_FULL


class RateLimited(RtcError):
    code = ErrorCode.RATE_LIMITED

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def to_wire(self) -> dict[str, Any]:
        return {**super().to_wire(), "retryAfter": self.retry_after_ms}

    @property
    def retry_after_ms(self) -> int:
        return max(1, round(self.retry_after * 1000))


class Conflict(RtcError):
    code = ErrorCode.CONFLICT


class Unavailable(RtcError):
    code = ErrorCode.UNAVAILABLE


class ConfigError(Exception):
    """Invalid configuration; raised at start-up, never at run time."""
