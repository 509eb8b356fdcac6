"""Twilio's webhooks: inbound SMS and delivery status callbacks.

Each request's ``X-Twilio-Signature`` is checked against the URL rebuilt from
``PUBLIC_URL`` (behind a TLS-terminating proxy the URL the app sees differs from the one
Twilio signed) over every form parameter received; a missing or wrong signature answers
403 and stores nothing. The routes exist only when ``SMS_PROVIDER=twilio``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.errors import AppError, ErrorCode, invalid
from server.web.context import runtime

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


async def _signed_form(request: Request) -> dict[str, str]:
    # Its size is bounded by the edge (EdgeMiddleware refuses bodies over 64 KiB).
    form = await request.form(max_files=0, max_fields=200)
    pairs = [(key, value) for key, value in form.multi_items() if isinstance(value, str)]
    node = runtime(request)
    url = node.services.settings.public_url.rstrip("/") + request.url.path
    if request.url.query:
        url += "?" + request.url.query
    # Over every pair received, repeats included: Twilio signs them all.
    signatures = node.twilio_signatures
    assert signatures is not None  # these routes exist only with Twilio
    if not signatures.valid(url, pairs, request.headers.get("x-twilio-signature")):
        raise AppError(ErrorCode.FORBIDDEN, "bad or missing Twilio signature")
    return dict(pairs)


def _field(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise invalid(f"{name}: missing")
    if "\x00" in value:  # never from Twilio; and PostgreSQL text cannot hold it
        raise invalid(f"{name}: must not contain NUL")
    return value


async def twilio_inbound(request: Request) -> Response:
    params = await _signed_form(request)
    await runtime(request).sms_inbound.receive(
        to=_field(params, "To"), from_=_field(params, "From"), body=params.get("Body", ""),
        sid=_field(params, "MessageSid"))
    return Response(EMPTY_TWIML, media_type="text/xml")


async def twilio_status(request: Request) -> Response:
    params = await _signed_form(request)
    await runtime(request).sms_inbound.status(
        sid=_field(params, "MessageSid"), provider_status=_field(params, "MessageStatus"),
        error_code=params.get("ErrorCode") or None)
    return Response(status_code=204)


routes = [
    Route("/sms/twilio/inbound", twilio_inbound, methods=["POST"]),
    Route("/sms/twilio/status", twilio_status, methods=["POST"]),
]
