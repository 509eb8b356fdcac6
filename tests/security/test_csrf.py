"""The Origin (CSRF) check on every state-changing route, generated from the route table:
a foreign, ``null`` or lookalike Origin, a foreign Referer without Origin and a
cross-site form post are 403 ``forbidden`` and change nothing; the allowed origin and
non-browser callers (neither header) go through. Twilio's webhooks, and only they, are
exempt: they are checked by signature instead.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from server.audit import SYSTEM
from server.clock import FakeClock
from server.web import webhooks
from server.web.http import EdgeMiddleware
from tests.conftest import ORIGIN, Clinic, RunningServer, make_clinic
from tests.patient.support import DOB, new_link, run_node
from tests.security.routes import CONFIGS, STATE_CHANGING, every_route, routes
from tests.security.state import snapshot, sqlite_only
from tests.security.test_authorization import CASES, url
from tests.sms.support import new_phone

EVIL = "https://evil.example"
BAD_ORIGINS = [
    EVIL,
    "null",
    "http://testserver.local.evil.com",  # lookalike: the allowed host as a prefix
    "http://testserver.local:8080",      # same host, other port
    "https://testserver.local",          # same host, other scheme
    "http://evil.com@testserver.local",  # not an origin at all
]
BAD_REFERERS = ["https://evil.example/page", "http://testserver.local.evil.com/",
                "http://testserver.local:8080/app", "null"]
# What a hostile page can make a browser send; each must be refused.
ATTACKS: dict[str, dict[str, str]] = {
    "foreign origin": {"origin": EVIL},
    "null origin": {"origin": "null"},  # no Sec-Fetch-Site: same-origin with it
    "cross-site form": {"origin": EVIL, "sec-fetch-site": "cross-site",
                        "content-type": "application/x-www-form-urlencoded"},
    "foreign referer, no origin": {"referer": f"{EVIL}/phish"},
}
PATIENT = {"name": "Casey Csrf", "phone": "(415) 555-0161", "date_of_birth": "1988-08-08"}


@dataclass
class Victim:
    """Signed-in staff and patient cookies, a live link and the clinic they belong to."""

    clinic: Clinic
    staff_cookie: str
    patient_cookie: str
    link: str


@dataclass(frozen=True)
class Target:
    """A request that would change state when it came from the allowed origin."""

    cookie: Callable[[Victim], str]
    body: Callable[[Victim], dict[str, str]]
    url: Callable[[Victim], str]
    ok: int
    form: bool = False  # the route reads a form, not JSON


def _api_target(method: str, path: str) -> Target:
    case = CASES[(method, path)]
    return Target(lambda v: v.staff_cookie,
                  lambda v: case.body(v.clinic) if case.body else {},
                  lambda v: url(path, v.clinic), case.ok)


OTHER_TARGETS: dict[tuple[str, str], Target] = {
    ("POST", "/s/{token}/verify"): Target(lambda v: "", lambda v: {"date_of_birth": DOB},
                                          lambda v: f"/s/{v.link}/verify", 204),
    ("POST", "/s/logout"): Target(lambda v: v.patient_cookie, lambda v: {},
                                  lambda v: "/s/logout", 303),
    ("POST", "/dev/phone/reply"): Target(
        lambda v: "", lambda v: {"from": "+14155550100", "to": "+14155550123",
                                 "body": "forged reply"}, lambda v: "/dev/phone/reply", 303,
        form=True),
}


def exempt_prefixes() -> tuple[str, ...]:
    return inspect.signature(EdgeMiddleware).parameters["csrf_exempt_prefixes"].default


def targets() -> dict[tuple[str, str], Target]:
    """A target for every state-changing route that is not exempt."""
    found = {}
    for method, path in every_route():
        if method in STATE_CHANGING and not path.startswith(exempt_prefixes()):
            found[(method, path)] = (_api_target(method, path) if path.startswith("/api")
                                     else OTHER_TARGETS[(method, path)])
    return found


def forbidden(response: httpx.Response) -> bool:
    return (response.status_code == 403
            and response.json()["error"] == {"code": "forbidden",
                                             "message": "request origin is not allowed"})


async def send(client: httpx.AsyncClient, method: str, target: Target, victim: Victim,
               headers: dict[str, str]) -> httpx.Response:
    body = target.body(victim)
    cookie = {"cookie": target.cookie(victim)} if target.cookie(victim) else {}
    form = target.form or headers.get("content-type", "").startswith("application/x-www")
    content: Any = {"data": {k: str(v) for k, v in body.items()}} if form else {"json": body}
    return await client.request(method, target.url(victim), headers={**headers, **cookie},
                                **content)


def test_every_state_changing_route_has_a_target() -> None:
    """Generated: every POST/PUT/PATCH/DELETE route of every configuration either has a
    request below or is under an exempt prefix, and the exempt routes are exactly
    Twilio's signature-checked webhooks."""
    state_changing = {r for r in every_route() if r[0] in STATE_CHANGING}
    exempt = {r for r in state_changing if r[1].startswith(exempt_prefixes())}
    webhook_routes = {(m, r.path) for r in webhooks.routes for m in r.methods}
    assert exempt == webhook_routes == {("POST", "/sms/twilio/inbound"),
                                        ("POST", "/sms/twilio/status")}
    assert set(targets()) == state_changing - exempt
    assert set(OTHER_TARGETS) <= state_changing
    assert ("POST", "/dev/phone/reply") in routes("demo")  # the demo route is included


@sqlite_only
async def test_cross_site_requests_are_refused_on_every_route(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """Each attack on each state-changing route answers 403 before anything runs: the
    account's rows (sessions included) are unchanged; the same requests from the allowed
    origin then succeed, so the refused ones would have acted."""
    async with run_node(database_url, master_key, clock, demo=True) as node:
        clinic = await make_clinic(node.services)
        victim = await _victim(node, clinic)
        before = await snapshot(node.services, clinic.account_id)
        settings_before = await node.services.accounts.settings(clinic.account_id)
        wrong: list[str] = []
        async with node.client() as client:
            for (method, path), target in sorted(targets().items()):
                for attack, headers in ATTACKS.items():
                    response = await send(client, method, target, victim, headers)
                    if not forbidden(response):
                        wrong.append(f"{attack} {method} {path}: {response.status_code}")
            assert wrong == []
            assert await snapshot(node.services, clinic.account_id) == before
            assert await node.services.accounts.settings(clinic.account_id) \
                == settings_before
            # In the order written: verify before logout (after End session a link
            # needs the one-time code, issue 13).
            for (method, path), target in OTHER_TARGETS.items():
                response = await send(client, method, target, victim, {"origin": ORIGIN})
                assert response.status_code == target.ok, (path, response.text)
        assert await snapshot(node.services, clinic.account_id) != before


async def _victim(node: RunningServer, clinic: Clinic) -> Victim:
    async with node.login(clinic.admin_email) as admin:
        staff_cookie = f"sc_staff={admin.cookies['sc_staff']}"
    await node.services.accounts.assign_sms_number(clinic.account_id, new_phone())
    token, _ = await node.services.patient_sessions.open(
        clinic.account_id, clinic.patient_id, clinic.conversation_id, SYSTEM)
    return Victim(clinic, staff_cookie, f"sc_patient={token}", await new_link(node, clinic))


@sqlite_only
async def test_twilio_webhooks_are_exempt_but_signature_checked(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """A foreign Origin does not stop Twilio's webhooks at the CSRF check (Twilio sends
    none); the missing signature does: 403 from the signature check, nothing stored."""
    async with run_node(database_url, master_key, clock, **CONFIGS["twilio"]) as node:
        clinic = await make_clinic(node.services)
        before = await snapshot(node.services, clinic.account_id)
        async with node.client() as client:
            for path in ("/sms/twilio/inbound", "/sms/twilio/status"):
                response = await client.post(path, headers={"origin": EVIL}, data={
                    "To": "+14155550123", "From": "+14155550100", "Body": "hi",
                    "MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered"})
                assert response.status_code == 403
                assert response.json()["error"]["message"] == "bad or missing Twilio signature"
        assert await snapshot(node.services, clinic.account_id) == before


@sqlite_only
async def test_lookalike_origins_and_referers_are_refused(server: RunningServer,
                                                          clinic: Clinic) -> None:
    """A ``null``, lookalike, other-port, other-scheme or userinfo Origin, and (without
    Origin) such a Referer, is refused; a foreign Origin wins over our own Referer."""
    async with server.login(clinic.staff_email) as client:
        before = await inbox_size(client)
        attempts = [{"origin": origin} for origin in BAD_ORIGINS]
        attempts += [{"referer": referer} for referer in BAD_REFERERS]
        attempts.append({"origin": EVIL, "referer": f"{ORIGIN}/"})
        wrong = [h for h in attempts
                 if not forbidden(await client.post("/api/patients", json=PATIENT,
                                                    headers=h))]
        assert wrong == []
        assert await inbox_size(client) == before


@sqlite_only
async def test_allowed_and_non_browser_callers_go_through(server: RunningServer,
                                                          clinic: Clinic) -> None:
    """The allowed Origin, our own Referer without Origin, ``Origin: null`` with the
    browser's ``Sec-Fetch-Site: same-origin`` (a no-referrer page's own form post), and a
    caller with neither header (not a browser: it cannot ride a victim's cookie) may
    change state; the session check still applies to the last."""
    accepted = [{"origin": ORIGIN}, {"referer": f"{ORIGIN}/inbox?x=1"},
                {"origin": "null", "sec-fetch-site": "same-origin"}, {}]
    async with server.login(clinic.staff_email) as client:
        before = await inbox_size(client)
        for n, headers in enumerate(accepted):
            body = {**PATIENT, "phone": f"(415) 555-017{n}"}
            response = await client.post("/api/patients", json=body, headers=headers)
            assert response.status_code == 201, (headers, response.text)
        assert await inbox_size(client) == before + len(accepted)
    async with server.client() as anonymous:
        response = await anonymous.post("/api/patients", json=PATIENT)
        assert response.status_code == 401


@sqlite_only
async def test_reads_with_a_foreign_origin_are_not_blocked(server: RunningServer,
                                                           clinic: Clinic) -> None:
    """Reads change nothing, so a foreign Origin does not stop them (CORS keeps the
    answer from the foreign page: no Access-Control-Allow-Origin is ever sent)."""
    async with server.login(clinic.staff_email) as client:
        for path in ("/api/me", "/api/conversations"):
            response = await client.get(path, headers={"origin": EVIL})
            assert response.status_code == 200, response.text
            assert "access-control-allow-origin" not in response.headers


async def inbox_size(client: httpx.AsyncClient) -> int:
    response = await client.get("/api/conversations", params={"limit": "200"})
    assert response.status_code == 200
    return len(response.json()["conversations"])

