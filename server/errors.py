"""Domain errors carrying their public code (STYLE rule 7).

The codes are the protocol's table (``docs/protocol.md``); each has the HTTP status it
maps to at the edge. Exceptions become HTTP bodies or ``error`` frames only in ``web/``.
Messages are written for clients: they never hold PHI, tokens or internal details.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.StrEnum):
    INVALID_FRAME = "invalid_frame"
    INVALID_REQUEST = "invalid_request"
    UNAUTHENTICATED = "unauthenticated"
    ACCOUNT_DEACTIVATED = "account_deactivated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    RATE_LIMITED = "rate_limited"
    PORTAL_INACTIVE = "portal_inactive"
    OPTED_OUT = "opted_out"
    INVALID_VERIFICATION = "invalid_verification"
    LOCKED = "locked"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNAVAILABLE = "unavailable"
    DATA_INTEGRITY = "data_integrity"
    INTERNAL = "internal"


HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_FRAME: 400,
    ErrorCode.INVALID_REQUEST: 422,
    ErrorCode.UNAUTHENTICATED: 401,
    # 401, not 403: the session is over and clients go back to sign-in, as for 401.
    ErrorCode.ACCOUNT_DEACTIVATED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.PORTAL_INACTIVE: 409,
    ErrorCode.OPTED_OUT: 409,
    ErrorCode.INVALID_VERIFICATION: 401,
    ErrorCode.LOCKED: 423,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.DATA_INTEGRITY: 500,
    ErrorCode.INTERNAL: 500,
}


class AppError(Exception):
    """An error a client may see: a code from the table and a PHI-free message."""

    def __init__(self, code: ErrorCode, message: str, *, retry_after_ms: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after_ms = retry_after_ms

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]


def not_found(what: str = "resource") -> AppError:
    """The same answer for "does not exist" and "not yours", so ids cannot be probed."""
    return AppError(ErrorCode.NOT_FOUND, f"no such {what}")


def invalid(message: str) -> AppError:
    return AppError(ErrorCode.INVALID_REQUEST, message)
