"""``GET /ws``: the WebSocket endpoint. Authenticates before accepting, then runs one
reader and one writer per socket.

Handshake policy: a missing or foreign ``Origin`` is refused before the upgrade (HTTP
403: a hijacking page learns nothing); a missing or expired session is accepted and
closed at once with 4401, so the page can tell "sign in again" from a network failure.
Nothing is sent before that close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from server.auth import StaffPrincipal
from server.errors import AppError
from server.patient_auth import PatientPrincipal
from server.protocol import AccountInfo, Ready, User
from server.realtime.connection import Connection
from server.realtime.hub import encode
from server.realtime.limits import TokenBucket
from server.realtime.outbox import Outbox
from server.web import cookies

log = logging.getLogger("securechat.ws")

# The protocol's frame limit; uvicorn enforces it on the wire (ws_max_size), this
# check holds whatever server runs the app.
MAX_FRAME_BYTES = 64 * 1024
# How long a closing socket may take to flush what is queued before it is abandoned.
CLOSE_TIMEOUT = 10.0


async def websocket_endpoint(websocket: WebSocket) -> None:
    app = websocket.app
    services, hub, frames = app.state.services, app.state.hub, app.state.frames
    settings = services.settings
    origin = websocket.headers.get("origin")
    if origin is None or origin.lower() not in settings.origins:
        await websocket.close(code=4403)  # before accept: the client gets HTTP 403
        return
    principal = await _authenticate(websocket)
    if principal is None:
        await websocket.accept()
        await websocket.close(code=4401, reason="sign in first")
        return
    await websocket.accept()
    conn = await _connection(services, principal, settings)
    await hub.attach(conn)
    ip = websocket.client.host if websocket.client else None
    writer = asyncio.create_task(_write(websocket, conn, hub))
    reader = asyncio.create_task(_read(websocket, conn, frames, ip))
    try:
        await conn.outbox.done.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(writer), CLOSE_TIMEOUT)
    finally:
        for task in (reader, writer):
            task.cancel()
        await asyncio.gather(reader, writer, return_exceptions=True)
        await hub.detach(conn)
        if conn.close_code is not None:
            services.metrics.ws_closes.labels(str(conn.close_code)).inc()


async def _authenticate(websocket: WebSocket) -> StaffPrincipal | PatientPrincipal | None:
    services = websocket.app.state.services
    staff_token = websocket.cookies.get(cookies.staff_cookie_name(services.settings))
    patient_token = websocket.cookies.get(cookies.patient_cookie_name(services.settings))
    try:
        if staff_token:
            return await services.auth.authenticate(staff_token, activity=False)
        if patient_token:
            return await services.patient_sessions.authenticate(patient_token,
                                                                activity=False)
    except AppError:
        return None
    return None


async def _connection(services, principal, settings) -> Connection:
    outbox = Outbox(settings.ws_outbox_frames, settings.ws_outbox_bytes)
    bucket = TokenBucket(settings.ws_rate_per_second, settings.ws_rate_burst, time.monotonic())
    if isinstance(principal, StaffPrincipal):
        conn = Connection("staff", principal.account_id, principal.staff_id, principal.name,
                          principal.session_id, outbox, bucket)
        # The account as it is now: a console that was offline catches up on a change.
        account = await services.accounts.settings(principal.account_id)
        conn.push(encode(Ready(role="staff", user=User(principal.staff_id, principal.name),
                               account=AccountInfo(account.portal_active,
                                                   account.clinic_name))))
        return conn
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
                conn.close(1003, "text frames only")
                break
            if len(text) > MAX_FRAME_BYTES:  # characters >= bytes/4; the wire caps bytes
                conn.close(1009, "frame too large")
                break
            await frames.handle(conn, text, ip)
    except (WebSocketDisconnect, OSError, RuntimeError):
        pass
    finally:
        conn.outbox.close()


async def _write(websocket: WebSocket, conn: Connection, hub) -> None:
    try:
        while True:
            items = await conn.outbox.take()
            if not items:
                break
            delivered = []
            for frame, delivered_id in items:
                await websocket.send_text(frame)
                if delivered_id is not None:
                    delivered.append(delivered_id)
            if delivered:
                hub.delivered(delivered)
        if conn.close_code is not None:
            await websocket.close(code=conn.close_code, reason=conn.close_reason)
    except (WebSocketDisconnect, OSError, RuntimeError):
        pass


routes = [WebSocketRoute("/ws", websocket_endpoint)]
