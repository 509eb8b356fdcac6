"""Staff's routes for a conversation's secure links: revoke them all, or send the patient
a new one. Thin: they authenticate and call :class:`server.services.links.SecureLinks`,
which tells every console (and closes ended patient sockets) on every node."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.auth import StaffPrincipal
from server.errors import not_found
from server.web.api import staff_principal
from server.web.context import runtime
from server.web.http import JSONResponse, request_actor


def _conversation_id(request: Request) -> str:
    """The id from the path; one holding NUL names nothing (and cannot be looked up)."""
    value = request.path_params["conversation_id"]
    if "\x00" in value:
        raise not_found("conversation")
    return value


def _actor(request: Request, principal: StaffPrincipal):
    return request_actor(request, "staff", principal.staff_id)


async def revoke_links(request: Request) -> Response:
    """Revoke the conversation's secure links and end its patient sessions at once (their
    sockets close on every node)."""
    principal = await staff_principal(request)
    revoked, ended = await runtime(request).links.revoke(
        principal.account_id, _conversation_id(request), _actor(request, principal))
    return JSONResponse({"revoked_links": revoked, "ended_sessions": len(ended)})


async def resend_link(request: Request) -> Response:
    """"Send a new link": a fresh link SMS is queued now (202; the SMS worker is woken),
    whatever the notification window; every console of the account is told
    (``link_resent`` notice), so a lock banner elsewhere does not keep asking for it."""
    principal = await staff_principal(request)
    await runtime(request).links.resend(principal.account_id, _conversation_id(request),
                                        principal.staff_id, _actor(request, principal))
    return JSONResponse({"status": "queued"}, status_code=202)


routes = [
    Route("/api/conversations/{conversation_id}/links/revoke", revoke_links,
          methods=["POST"]),
    Route("/api/conversations/{conversation_id}/links/resend", resend_link,
          methods=["POST"]),
]
