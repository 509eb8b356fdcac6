"""The staff REST API (``/api``): thin routes that authenticate, decode and call services."""

from __future__ import annotations

from datetime import datetime

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from server import audit
from server.auth import StaffPrincipal
from server.clock import rfc3339
from server.errors import AppError, ErrorCode, invalid, not_found
from server.protocol import (
    Ack,
    CreatePatientRequest,
    CreateStaffRequest,
    LoginRequest,
    SegmentsRequest,
    Sender,
    SendRequest,
    SettingsUpdate,
)
from server.runtime import Services
from server.services.audit_records import AuditQuery
from server.sms import segments
from server.web import cookies
from server.web.context import runtime
from server.web.http import JSONResponse, decode_body, request_actor

# Requests with this header are not the user's doing (background refresh) and do not
# extend the idle limit (HIPAA automatic logoff counts user activity only).
BACKGROUND_HEADER = "x-securechat-background"
MAX_INT = 2**63 - 1


def _services(request: Request) -> Services:
    return runtime(request).services


async def staff_principal(request: Request, *, admin: bool = False) -> StaffPrincipal:
    """The signed-in staff member, or AppError 401 (403 when ``admin`` and not one)."""
    services = _services(request)
    token = request.cookies.get(cookies.staff_cookie_name(services.settings))
    activity = request.headers.get(BACKGROUND_HEADER) != "1"
    principal = await services.auth.authenticate(token, activity=activity)
    if admin and not principal.is_admin:
        raise AppError(ErrorCode.FORBIDDEN, "administrators only")
    return principal


def _actor(request: Request, principal: StaffPrincipal) -> audit.Actor:
    return request_actor(request, "staff", principal.staff_id)


def _int_param(request: Request, name: str, default: int | None) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(f"{name}: must be an integer") from None
    # The store's integers are signed 64-bit; past them the driver fails (a 500).
    if not -MAX_INT <= value <= MAX_INT:
        raise invalid(f"{name}: out of range")
    return value


def _text_param(request: Request, name: str) -> str | None:
    """A text filter (absent or empty: None). PostgreSQL text cannot hold NUL."""
    raw = request.query_params.get(name) or None
    if raw is not None and "\x00" in raw:
        raise invalid(f"{name}: must not contain NUL")
    return raw


def _path_id(request: Request, name: str, what: str) -> str:
    """An id from the path; one holding NUL names nothing (and cannot be looked up)."""
    value = request.path_params[name]
    if "\x00" in value:
        raise not_found(what)
    return value


def _rfc3339_param(name: str, raw: str) -> str:
    """A time bound in the store's own format (RFC 3339 UTC, microseconds, Z)."""
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"{name}: not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise invalid(f"{name}: needs a UTC offset or Z")
    try:
        return rfc3339(moment)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise invalid(f"{name}: out of range") from None


# --- auth --------------------------------------------------------------------------------

async def login(request: Request) -> Response:
    services = _services(request)
    body = await decode_body(request, LoginRequest)
    try:
        token, principal = await services.auth.login(body.email, body.password,
                                                     request_actor(request))
    except AppError as exc:
        services.metrics.logins.labels(str(exc.code)).inc()
        raise
    services.metrics.logins.labels("ok").inc()
    response = JSONResponse(await _me(services, principal))
    cookies.set_staff(response, services.settings, token)
    return response


async def logout(request: Request) -> Response:
    services = _services(request)
    principal = await staff_principal(request)
    await services.auth.logout(principal, _actor(request, principal))
    response = Response(status_code=204)
    cookies.clear_staff(response, services.settings)
    return response


async def me(request: Request) -> Response:
    principal = await staff_principal(request)
    return JSONResponse(await _me(_services(request), principal))


async def _me(services: Services, principal: StaffPrincipal) -> dict:
    settings = await services.accounts.settings(principal.account_id)
    return {
        "staff": {"id": principal.staff_id, "name": principal.name, "email": principal.email,
                  "role": principal.role},
        "account": {"id": principal.account_id, "clinic_name": settings.clinic_name,
                    "portal_active": settings.portal_active},
        # The console signs itself out (with a warning) after this long without activity.
        "idle_timeout_seconds": services.settings.session_idle_seconds,
    }


# --- patients and conversations ----------------------------------------------------------

async def list_conversations(request: Request) -> Response:
    principal = await staff_principal(request)
    before = _text_param(request, "before")
    conversations = await _services(request).patients.inbox(
        principal.account_id, principal.staff_id,
        before=_rfc3339_param("before", before) if before else None,
        limit=_int_param(request, "limit", 50))
    return JSONResponse({"conversations": conversations})


async def create_patient(request: Request) -> Response:
    principal = await staff_principal(request)
    body = await decode_body(request, CreatePatientRequest)
    patient, conversation_id = await _services(request).patients.create(
        principal.account_id, body, _actor(request, principal))
    return JSONResponse({"patient": patient, "conversation_id": conversation_id},
                        status_code=201)


async def conversation_messages(request: Request) -> Response:
    principal = await staff_principal(request)
    services = _services(request)
    conversation_id = _path_id(request, "conversation_id", "conversation")
    if request.method == "GET":
        page = await services.messaging.history(
            principal.account_id, conversation_id,
            before_seq=_int_param(request, "before_seq", None),
            limit=_int_param(request, "limit", 50), actor=_actor(request, principal))
        return JSONResponse(page)
    body = await decode_body(request, SendRequest)
    sender = Sender("staff", principal.staff_id, principal.name)
    result = await runtime(request).sending.send(
        principal.account_id, sender, conversation_id, body, _actor(request, principal))
    message = result.message
    ack = Ack(client_msg_id=message.client_msg_id, message_id=message.id, seq=message.seq)
    return JSONResponse({"ack": ack, "message": message},
                        status_code=200 if result.duplicate else 201)


async def sms_segments(request: Request) -> Response:
    """How many SMS segments a draft takes, and in which encoding (for the composer)."""
    await staff_principal(request)
    body = await decode_body(request, SegmentsRequest)
    return JSONResponse(segments.count(body.body))


# --- admin -------------------------------------------------------------------------------

async def account_settings(request: Request) -> Response:
    principal = await staff_principal(request, admin=True)
    accounts = _services(request).accounts
    if request.method == "GET":
        return JSONResponse(await accounts.settings(principal.account_id))
    change = await decode_body(request, SettingsUpdate)
    return JSONResponse(await accounts.update_settings(principal.account_id, change,
                                                       _actor(request, principal)))


async def staff_members(request: Request) -> Response:
    principal = await staff_principal(request, admin=True)
    services = _services(request)
    if request.method == "GET":
        return JSONResponse({"staff": await services.accounts.staff(principal.account_id)})
    body = await decode_body(request, CreateStaffRequest)
    member = await services.accounts.add_staff(principal.account_id, body,
                                               _actor(request, principal))
    return JSONResponse({"staff": member}, status_code=201)


async def deactivate_staff(request: Request) -> Response:
    """Deactivate a member: their sessions end and their sockets close (4401) on every
    node at once."""
    principal = await staff_principal(request, admin=True)
    member, ended = await _services(request).accounts.deactivate_staff(
        principal.account_id, _path_id(request, "staff_id", "staff member"),
        _actor(request, principal))
    return JSONResponse({"staff": member, "ended_sessions": len(ended)})


async def audit_entries(request: Request) -> Response:
    """The account's audit log, newest first; ``format=csv`` exports every match."""
    principal = await staff_principal(request, admin=True)
    filters = {name: _text_param(request, name)
               for name in ("action", "actor_id", "patient_id", "since", "until")}
    for bound in ("since", "until"):
        if filters[bound] is not None:
            filters[bound] = _rfc3339_param(bound, filters[bound])
    query = AuditQuery(**filters, limit=_int_param(request, "limit", 100))
    records = _services(request).audit_records
    if request.query_params.get("format") == "csv":
        rows = await records.export(principal.account_id, _actor(request, principal), query)
        return StreamingResponse(
            rows, media_type="text/csv",
            headers={"content-disposition": 'attachment; filename="audit.csv"'})
    return JSONResponse(await records.page(principal.account_id, _actor(request, principal),
                                           query, _int_param(request, "before_seq", None)))


routes = [
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/logout", logout, methods=["POST"]),
    Route("/api/me", me, methods=["GET"]),
    Route("/api/conversations", list_conversations, methods=["GET"]),
    Route("/api/patients", create_patient, methods=["POST"]),
    Route("/api/conversations/{conversation_id}/messages", conversation_messages,
          methods=["GET", "POST"]),
    Route("/api/sms/segments", sms_segments, methods=["POST"]),
    Route("/api/account/settings", account_settings, methods=["GET", "PUT"]),
    Route("/api/staff", staff_members, methods=["GET", "POST"]),
    Route("/api/staff/{staff_id}/deactivate", deactivate_staff, methods=["POST"]),
    Route("/api/audit", audit_entries, methods=["GET"]),
]
