"""HTTP plumbing shared by the routes: JSON in and out, errors at the edge, the
request-id / access-log / security-header middleware and the Origin (CSRF) check.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.audit import Actor
from server.errors import AppError, ErrorCode
from server.metrics import Metrics
from server.settings import host_name

log = logging.getLogger("securechat.http")
T = TypeVar("T")

# Request bodies above this are refused (413) by the edge, for every route, before they
# are read whole: the largest legitimate body, a message, is 10,000 characters (at most
# 40 KB of UTF-8 plus its envelope); forms (verification, Twilio's webhooks) are smaller.
MAX_JSON_BODY = 64 * 1024
_encoder = msgspec.json.Encoder()
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

# Sent on every response. The API and pages never need to be framed, sniffed or cached.
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy",
     b"default-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
     b"form-action 'self'"),
]
# Added when PUBLIC_URL is https: browsers then refuse plain http to this host for a year
# (OWASP's value). No includeSubDomains: the clinic's other hosts are not ours to decide.
HSTS = (b"strict-transport-security", b"max-age=31536000")


def security_headers(hsts: bool) -> list[tuple[bytes, bytes]]:
    """The headers every response carries (with HSTS when PUBLIC_URL is https)."""
    return [*SECURITY_HEADERS, HSTS] if hsts else list(SECURITY_HEADERS)


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _encoder.encode(content)


def error_body(code: ErrorCode, message: str, retry_after_ms: int | None = None) -> dict:
    error: dict[str, Any] = {"code": str(code), "message": message}
    if retry_after_ms is not None:
        error["retry_after_ms"] = retry_after_ms
    return {"error": error}


def error_response(exc: AppError) -> JSONResponse:
    headers = {}
    if exc.retry_after_ms is not None:
        headers["retry-after"] = str(max(1, -(-exc.retry_after_ms // 1000)))
    return JSONResponse(error_body(exc.code, exc.message, exc.retry_after_ms),
                        status_code=exc.http_status, headers=headers)


async def decode_body(request: Request, struct: type[T]) -> T:
    """Decode a JSON body straight into ``struct`` (its size is bounded by the edge,
    :class:`EdgeMiddleware`).

    Raises:
        AppError: ``payload_too_large`` or ``invalid_request`` naming the bad field.
    """
    try:
        return msgspec.json.decode(await request.body(), type=struct)
    except msgspec.ValidationError as exc:
        raise AppError(ErrorCode.INVALID_REQUEST, _field_message(str(exc))) from None
    except msgspec.DecodeError:
        raise AppError(ErrorCode.INVALID_REQUEST, "body is not valid JSON") from None


def _field_message(text: str) -> str:
    """msgspec's "Expected `str`, got `int` - at `$.name`" → "name: Expected ..."."""
    message, sep, where = text.rpartition(" - at `$.")
    return f"{where.rstrip('`')}: {message}" if sep else text


def request_actor(request: Request, kind: str = "anonymous", actor_id: str | None = None
                  ) -> Actor:
    client = request.client.host if request.client else None
    return Actor(kind, actor_id, client, request.scope.get("state", {}).get("request_id"))


def _too_large() -> AppError:
    return AppError(ErrorCode.PAYLOAD_TOO_LARGE, f"body is over {MAX_JSON_BODY} bytes")


def bounded_receive(receive: Receive, limit: int = MAX_JSON_BODY) -> Receive:
    """``receive`` that raises ``payload_too_large`` once more than ``limit`` body bytes
    arrived (a chunked body has no Content-Length to refuse up front), so no route ever
    holds more than that in memory."""
    size = 0

    async def bounded() -> Message:
        nonlocal size
        message = await receive()
        if message["type"] == "http.request":
            size += len(message.get("body", b""))
            if size > limit:
                raise _too_large()
        return message

    return bounded


def _declared_too_large(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length")
    return length is not None and (not length.isdigit() or int(length) > MAX_JSON_BODY)


def origin_allowed(headers: dict[bytes, bytes], allowed: frozenset[str]) -> bool:
    """CSRF policy for state-changing requests.

    A browser always sends ``Origin`` on a cross-site POST, so: a present Origin must be
    in the allowed set exactly (``null`` never is); without Origin a present Referer's
    origin must be; with neither, the caller is not a browser and cannot ride a victim's
    cookie (which is ``SameSite=Strict`` besides), so it is let through to the normal
    session check. One exception: pages served with ``Referrer-Policy: no-referrer``
    make browsers send ``Origin: null`` even on same-origin form posts; for those the
    browser's own ``Sec-Fetch-Site: same-origin`` (a header no page script can set)
    is the proof.
    """
    origin = headers.get(b"origin")
    if origin == b"null" and headers.get(b"sec-fetch-site") == b"same-origin":
        return True
    if origin is not None:
        return origin.decode("latin-1") in allowed
    referer = headers.get(b"referer")
    if referer is not None:
        parts = urlsplit(referer.decode("latin-1"))
        return f"{parts.scheme}://{parts.netloc}" in allowed
    return True


def host_allowed(headers: dict[bytes, bytes], allowed: frozenset[str]) -> bool:
    """DNS-rebinding policy: the ``Host`` header must name this service.

    ``allowed`` holds lower-case host names (:attr:`server.settings.Settings.hosts`);
    the port is ignored. A request without ``Host`` is refused too (every browser sends
    one).
    """
    raw = headers.get(b"host")
    return raw is not None and host_name(raw.decode("latin-1")) in allowed


def host_refused() -> JSONResponse:
    """The answer to a request whose ``Host`` is not this service's (HTTP 400)."""
    return JSONResponse(error_body(ErrorCode.INVALID_REQUEST, "host is not allowed"),
                        status_code=400)


class EdgeMiddleware:
    """Pure ASGI middleware: request id, Host check, body size limit, Origin check, security headers
    (HSTS too when the app's PUBLIC_URL is https), access log and request metrics. Logs
    name the route, never the raw path (it can hold a link token).
    """

    def __init__(self, app: ASGIApp, *, allowed_origins: frozenset[str],
                 allowed_hosts: frozenset[str], metrics: Metrics, hsts: bool = False,
                 csrf_exempt_prefixes: tuple[str, ...] = ("/sms/",)) -> None:
        self.app = app
        self.security_headers = security_headers(hsts)
        self.allowed_origins = allowed_origins
        self.allowed_hosts = allowed_hosts
        self.metrics = metrics
        self.csrf_exempt = csrf_exempt_prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                extra = [(b"x-request-id", request_id.encode())]
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra += [h for h in self.security_headers if h[0] not in present]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        try:
            if not host_allowed(headers, self.allowed_hosts):
                await host_refused()(scope, receive, send_with_headers)
            elif (scope["method"] in _STATE_CHANGING
                    and not scope["path"].startswith(self.csrf_exempt)
                    and not origin_allowed(headers, self.allowed_origins)):
                response = JSONResponse(
                    error_body(ErrorCode.FORBIDDEN, "request origin is not allowed"),
                    status_code=403)
                await response(scope, receive, send_with_headers)
            elif _declared_too_large(headers):  # refused before a byte of it is read
                await error_response(_too_large())(scope, receive, send_with_headers)
            else:
                await self.app(scope, bounded_receive(receive), send_with_headers)
        except Exception as exc:
            # Starlette answers unhandled errors in ServerErrorMiddleware, which sits
            # outside this one, so its 500 would lack the request id and security headers.
            if response_started:
                raise
            # Type and place only: a driver's message can quote the row it choked on.
            log.error("unhandled error", exc_info=exc, extra={"request_id": request_id})
            response = JSONResponse(error_body(ErrorCode.INTERNAL,
                                               "internal error; it was logged"),
                                    status_code=500)
            await response(scope, receive, send_with_headers)
        finally:
            route = getattr(scope.get("endpoint"), "__name__", "unmatched")
            elapsed = time.perf_counter() - started
            self.metrics.observe_request(route, scope["method"], status, elapsed)
            log.info("request", extra={"request_id": request_id, "route": route,
                                       "method": scope["method"], "status": status,
                                       "ms": round(elapsed * 1000, 2)})

