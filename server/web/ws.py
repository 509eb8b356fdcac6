"""``GET /ws``: the WebSocket endpoint. Authenticates before accepting, then reads the
socket's frames in one task while the endpoint coroutine itself writes its outbox: two
tasks per socket (uvicorn's, which runs this endpoint, and the reader), not three.

Handshake policy: a ``Host`` that is not this service's is refused (HTTP 400, DNS
rebinding); a missing or foreign ``Origin`` is refused before the upgrade (HTTP
403: a hijacking page learns nothing); so is an address that already holds
``WS_MAX_PER_ADDRESS`` open sockets on this node (HTTP 429 ``rate_limited``); a missing or
expired session is accepted and closed at once with 4401, so the page can tell "sign in
again" from a network failure. Nothing is sent before that close.
"""

from __future__ import annotations

import asyncio
import logging
import time

from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from server.auth import StaffPrincipal
from server.errors import AppError, ErrorCode
from server.frames import FrameHandler
from server.patient_auth import PatientPrincipal
from server.protocol import AccountInfo, CloseCode, Ready, User, encode
from server.realtime.connection import Connection
from server.realtime.limits import TokenBucket
from server.realtime.outbox import Outbox
from server.web import cookies
from server.web.context import runtime
from server.web.http import error_response, host_allowed, host_refused, security_headers

log = logging.getLogger("securechat.ws")

# The protocol's frame limit; uvicorn enforces it on the wire (ws_max_size), this
# check holds whatever server runs the app.
MAX_FRAME_BYTES = 64 * 1024
# How long a closing socket may take to flush what is queued before it is abandoned.
CLOSE_TIMEOUT = 10.0


async def websocket_endpoint(websocket: WebSocket) -> None:
    running = runtime(websocket)
    services, frames = running.services, running.frames
    settings = services.settings
    if not host_allowed(dict(websocket.scope["headers"]), settings.hosts):
        await _deny(websocket, host_refused(), settings.secure_cookies)
        return
    origin = websocket.headers.get("origin")
    if origin is None or origin.lower() not in settings.origins:
        # Before accept: the client gets HTTP 403.
        await websocket.close(code=CloseCode.FORBIDDEN)
        return
    ip = websocket.client.host if websocket.client else None
    addresses = running.ws_addresses
    if not addresses.acquire(ip or ""):
        await _deny(websocket, error_response(AppError(
            ErrorCode.RATE_LIMITED, "too many connections from this address")),
            settings.secure_cookies)
        return
    # One coroutine for the socket's whole life (no helper frame kept on its stack).
    try:
        who = await _authenticate(websocket)
        if who is None:
            await websocket.accept()
            await websocket.close(code=CloseCode.UNAUTHENTICATED, reason="sign in first")
            return
        await websocket.accept()
        _release_handshake(websocket)
        conn = await _connection(services, who, settings)
        try:
            await frames.opened(conn)  # inside: a failed attach is undone too
            reader = asyncio.create_task(_read(websocket, conn, frames, ip))
            try:
                await _write(websocket, conn, frames)
            finally:
                reader.cancel()
                await asyncio.gather(reader, return_exceptions=True)
        finally:
            await frames.closed(conn)
            if conn.close_code is not None:
                services.metrics.ws_closes.labels(str(conn.close_code)).inc()
    finally:
        addresses.release(ip or "")


async def _deny(websocket: WebSocket, response: Response, hsts: bool) -> None:
    """Refuse the upgrade with an HTTP error carrying the security headers (the edge
    middleware never sees /ws; uvicorn supports the ASGI denial-response extension); a
    server without it gets a plain close before accept (HTTP 403)."""
    if "websocket.http.response" in (websocket.scope.get("extensions") or {}):
        response.raw_headers.extend(security_headers(hsts))
        await websocket.send_denial_response(response)
    else:
        await websocket.close(code=CloseCode.FORBIDDEN)


async def _authenticate(websocket: WebSocket
                        ) -> tuple[StaffPrincipal, AccountInfo] | PatientPrincipal | None:
    """The socket's principal (for staff, with the account's state for ``ready``, read in
    the same query), or None. Not user activity: it does not extend the session."""
    services = runtime(websocket).services
    staff_token = websocket.cookies.get(cookies.staff_cookie_name(services.settings))
    patient_token = websocket.cookies.get(cookies.patient_cookie_name(services.settings))
    try:
        if staff_token:
            principal, portal_active, clinic_name = \
                await services.auth.authenticate_socket(staff_token)
            return principal, AccountInfo(portal_active, clinic_name)
        if patient_token:
            return await services.patient_sessions.authenticate(patient_token,
                                                                activity=False)
    except AppError:
        return None
    return None


async def _connection(services, who, settings) -> Connection:
    outbox = Outbox(settings.ws_outbox_frames, settings.ws_outbox_bytes)
    bucket = TokenBucket(settings.ws_rate_per_second, settings.ws_rate_burst, time.monotonic())
    if isinstance(who, tuple):
        principal, account = who
        conn = Connection("staff", principal.account_id, principal.staff_id, principal.name,
                          principal.session_id, outbox, bucket)
        # The account as it is now: a console that was offline catches up on a change.
        conn.push(encode(Ready(role="staff", user=User(principal.staff_id, principal.name),
                               account=account)))
        return conn
    principal = who
    summary = await services.streams.summary(principal.account_id, principal.conversation_id)
    name = summary.display_name if summary is not None else ""
    conn = Connection("patient", principal.account_id, principal.patient_id, name,
                      principal.session_id, outbox, bucket,
                      conversation_id=principal.conversation_id)
    conn.push(encode(Ready(role="patient", user=User(principal.patient_id, name),
                           conversation_id=principal.conversation_id)))
    return conn


async def _read(websocket: WebSocket, conn: Connection, frames, ip: str | None) -> None:
    try:
        while conn.close_code is None:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            text = message.get("text")
            if text is None:
                conn.close(CloseCode.UNSUPPORTED, "text frames only")
                break
            if len(text) > MAX_FRAME_BYTES:  # characters >= bytes/4; the wire caps bytes
                conn.close(CloseCode.TOO_LARGE, "frame too large")
                break
            await frames.handle(conn, text, ip)
    except (WebSocketDisconnect, OSError, RuntimeError):
        pass
    finally:
        conn.outbox.close()


async def _write(websocket: WebSocket, conn: Connection, frames: FrameHandler) -> None:
    """Drain the outbox until it closes; then flush what is still queued (nothing, after
    an overflow) and close the socket, taking at most ``CLOSE_TIMEOUT`` for that."""
    try:
        while not conn.outbox.done and await _write_some(websocket, conn, frames):
            pass
        async with asyncio.timeout(CLOSE_TIMEOUT):
            while await _write_some(websocket, conn, frames):
                pass
            if conn.close_code is not None:
                await websocket.close(code=conn.close_code, reason=conn.close_reason)
    except (WebSocketDisconnect, OSError, RuntimeError, TimeoutError):
        pass


async def _write_some(websocket: WebSocket, conn: Connection, frames: FrameHandler
                      ) -> bool:
    """Write what is queued (waiting for some); False once there is nothing more."""
    items = await conn.outbox.take()
    if not items:
        return False
    delivered = []
    for frame, delivered_id in items:
        await websocket.send_text(frame)
        if delivered_id is not None:
            delivered.append(delivered_id)
    if delivered:
        frames.written(delivered)
    return True


class _Route:
    """The route's ASGI app. Given a plain function, Starlette would wrap it in a session
    closure and one more exception-handling layer, both kept on the stack for the
    socket's life (~1.5 KiB each socket); the router's own exception layer still
    handles what escapes."""

    __name__ = "websocket_endpoint"  # the route name in logs and metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await websocket_endpoint(WebSocket(scope, receive=receive, send=send))


routes = [WebSocketRoute("/ws", _Route())]


class Direct:
    """Wraps the whole app so that ``/ws`` sockets skip Starlette's middleware and router
    (~3.5 KiB of frames and closures held for each socket's life, docs/performance.md):
    none of it acts on a WebSocket scope (the edge middleware, the error pages and the
    HTTP CSRF check are HTTP only; the Origin check and authentication are the
    endpoint's own, above). Everything else, the lifespan included, goes to ``app``.
    """

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def __getattr__(self, name: str):
        """The wrapped app's attributes (``state``, ``routes``) read through."""
        return getattr(self.app, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            scope["app"] = self.app
            await websocket_endpoint(WebSocket(scope, receive=receive, send=send))
        else:
            await self.app(scope, receive, send)


def _release_handshake(websocket: WebSocket) -> None:
    """uvicorn's websockets-sansio protocol keeps the upgrade request and response (their
    headers: ~3.5 KiB) for the socket's life, and never reads them once the handshake
    is complete. Drop them. Only reachable when ``send`` is the protocol's own (the
    socket came through :class:`Direct`); tests/realtime/test_ws_memory.py checks that
    the installed uvicorn still matches."""
    protocol = getattr(websocket._send, "__self__", None)
    if (any(cls.__name__ == "WebSocketsSansIOProtocol" for cls in type(protocol).__mro__)
            and getattr(protocol, "handshake_complete", False)
            and hasattr(protocol, "request") and hasattr(protocol, "response")):
        protocol.request = protocol.response = None
