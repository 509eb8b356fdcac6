"""Cross-site WebSocket hijacking: a page on another origin opening ``/ws`` with the
victim's cookies is refused before the upgrade (HTTP 403, docs/protocol.md), for staff and
patient cookies alike; only the exact allowed origin is accepted."""

from __future__ import annotations

import websockets

from server.audit import SYSTEM
from server.runtime import Services
from tests.conftest import ORIGIN, Clinic, RunningServer
from tests.realtime.wsclient import connect, staff_cookie
from tests.security.state import sqlite_only

HOSTILE_ORIGINS = [
    "https://evil.example",
    "null",                               # sandboxed iframes, file: pages
    "http://testserver.local.evil.com",   # the allowed host as a prefix
    "http://evil.testserver.local",       # a subdomain of it
    "http://testserver.local:8080",       # another port
    "https://testserver.local",           # another scheme
    None,                                 # no Origin at all
]


async def cookies(server: RunningServer, services: Services, clinic: Clinic
                  ) -> dict[str, str]:
    token, _ = await services.patient_sessions.open(
        clinic.account_id, clinic.patient_id, clinic.conversation_id, SYSTEM)
    return {"staff": await staff_cookie(server, clinic.staff_email),
            "patient": f"sc_patient={token}"}


@sqlite_only
async def test_hostile_origins_are_refused_before_the_upgrade(
        server: RunningServer, services: Services, clinic: Clinic) -> None:
    """Every hostile or missing Origin gets HTTP 403 and no socket, whoever's cookie."""
    accepted = []
    for role, cookie in (await cookies(server, services, clinic)).items():
        for origin in HOSTILE_ORIGINS:
            try:
                async with connect(server.url, cookie, origin=origin):
                    accepted.append((role, origin))
            except websockets.InvalidStatus as exc:
                assert exc.response.status_code == 403, (role, origin)
    assert accepted == []


@sqlite_only
async def test_the_allowed_origin_is_accepted(server: RunningServer, services: Services,
                                              clinic: Clinic) -> None:
    """The configured origin (hosts are case-insensitive) opens a socket for either role:
    the first frame is ``ready`` with that role."""
    for role, cookie in (await cookies(server, services, clinic)).items():
        for origin in (ORIGIN, ORIGIN.upper()):
            async with connect(server.url, cookie, origin=origin) as ws:
                assert (await ws.wait_type("ready"))["role"] == role
