"""The patient's secure pages: ``/s/{token}`` (the check form), its verification, the chat
page and "End session". Every response carries ``Cache-Control: no-store``,
``Referrer-Policy: no-referrer``, a strict CSP and ``X-Frame-Options: DENY`` (the edge
middleware adds them to all responses); the access log never records the token (it logs
route names, not paths).
"""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from server.errors import AppError, ErrorCode
from server.patient_auth import PortalOff
from server.protocol import VerifyRequest
from server.services.links import CodeSent, LinkState
from server.web import cookies, pages
from server.web.context import runtime
from server.web.http import decode_body, request_actor

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_CODE = re.compile(r"^\d{6}$")


async def link_page(request: Request) -> Response:
    token = request.path_params["token"]
    state, clinic = await runtime(request).links.state(token)
    if state is not LinkState.VALID:
        return _state_page(state, clinic)
    return HTMLResponse(pages.verify_page(token, clinic))


async def verify(request: Request) -> Response:
    """JSON: 204 (+ cookie), 202 ``{"code_required": true}``, or an error body (401
    ``invalid_verification``, 423 ``locked`` from the fifth wrong try on, 404 for an
    unusable link, 429 when too many codes were texted, 409 ``opted_out``). A form: 303
    to the chat page, the code step, the form again with what went wrong (400 for a
    malformed entry, which counts no failure), or the locked / not-valid page."""
    token = request.path_params["token"]
    is_json = request.headers.get("content-type", "").startswith("application/json")
    if is_json:
        body = await decode_body(request, VerifyRequest)
        dob, code = body.date_of_birth, body.code
    else:
        form = await request.form(max_files=0, max_fields=10)
        dob = str(form.get("date_of_birth") or "").strip()
        # "Text me a new code" sends the date alone: a code is asked for again.
        code = None if form.get("resend") else str(form.get("code") or "").strip() or None
    links = runtime(request).links
    if not is_json and not (_DATE.match(dob) and (code is None or _CODE.match(code))):
        # A malformed entry is not a wrong answer: it counts no failure.
        state, clinic = await links.state(token)
        if state is not LinkState.VALID:
            return _state_page(state, clinic)
        return HTMLResponse(pages.verify_page(
            token, clinic, code_required=code is not None,
            date_of_birth=dob if _DATE.match(dob) else "",
            error="Enter your date of birth as year, month and day"
            + (", and the 6-digit code from the text message" if code is not None else "")
            + "."), status_code=400)
    try:
        result = await links.verify(token, dob, code, request_actor(request, "anonymous"))
    except AppError as exc:
        if is_json:
            raise
        return _form_error(token, exc, await links.state(token), dob, code)
    if isinstance(result, CodeSent):
        if is_json:
            return Response('{"code_required":true}', status_code=202,
                            media_type="application/json")
        _, clinic = await links.state(token)
        return HTMLResponse(pages.verify_page(token, clinic, code_required=True,
                                              date_of_birth=dob))
    session_token, _ = result
    response = Response(status_code=204) if is_json else RedirectResponse("/s/chat", 303)
    cookies.set_patient(response, runtime(request).services.settings, session_token)
    return response


def _state_page(state: LinkState, clinic: str = "") -> Response:
    """The page of a link that cannot be used: one neutral page for unknown, expired and
    revoked links (same status, same body), another for a locked one, and "not
    available, please call" while the clinic's portal is off (409 ``portal_inactive``)."""
    if state is LinkState.UNAVAILABLE:
        return HTMLResponse(pages.portal_off_page(clinic), status_code=409)
    if state is LinkState.LOCKED:
        return HTMLResponse(pages.locked_page(), status_code=423)
    return HTMLResponse(pages.gone_page(), status_code=404)


def _form_error(token: str, exc: AppError, state, dob: str, code: str | None) -> Response:
    link_state, clinic = state
    if exc.code is ErrorCode.PORTAL_INACTIVE or link_state is LinkState.UNAVAILABLE:
        return _state_page(LinkState.UNAVAILABLE, clinic)
    if exc.code is ErrorCode.NOT_FOUND or link_state is LinkState.GONE:
        return _state_page(LinkState.GONE)
    if exc.code is ErrorCode.LOCKED or link_state is LinkState.LOCKED:
        return _state_page(LinkState.LOCKED)
    # After a wrong code the form keeps asking for one (with the date as typed), rather
    # than falling back to the date alone, which would text yet another code.
    with_code = code is not None
    return HTMLResponse(pages.verify_page(token, clinic, error=_sentence(exc.message),
                                          code_required=with_code,
                                          date_of_birth=dob if with_code else ""),
                        status_code=exc.http_status)


def _sentence(message: str) -> str:
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")


async def chat(request: Request) -> Response:
    services = runtime(request).services
    token = request.cookies.get(cookies.patient_cookie_name(services.settings))
    try:
        await services.patient_sessions.authenticate(token)
    except PortalOff as exc:
        return HTMLResponse(pages.portal_off_page(exc.clinic_name), status_code=409)
    except AppError:
        return HTMLResponse(pages.ended_page(), status_code=401)
    return HTMLResponse(pages.chat_page())


async def logout(request: Request) -> Response:
    services = runtime(request).services
    token = request.cookies.get(cookies.patient_cookie_name(services.settings))
    try:
        principal = await services.patient_sessions.authenticate(token, activity=False)
    except AppError:
        principal = None
    if principal is not None:
        await services.patient_sessions.end(principal)
    response = RedirectResponse("/s/ended", status_code=303)
    cookies.clear_patient(response, services.settings)
    # Ask the browser to forget this origin's cache and storage too.
    response.headers["clear-site-data"] = '"cache", "storage"'
    return response


async def ended(request: Request) -> Response:
    return HTMLResponse(pages.ended_page())


routes = [
    Route("/s/chat", chat, methods=["GET"]),
    Route("/s/ended", ended, methods=["GET"]),
    Route("/s/logout", logout, methods=["POST"]),
    Route("/s/{token}", link_page, methods=["GET"]),
    Route("/s/{token}/verify", verify, methods=["POST"]),
]
