"""Security headers on every page, asset and error the app serves, generated from the
route table and the static folder; HSTS and ``__Host-`` cookies when PUBLIC_URL is https.

Every response gets the same set from the edge (docs/protocol.md, Conventions): a CSP with
``frame-ancestors 'none'``, ``form-action 'self'`` and no inline script,
``X-Frame-Options: DENY``, ``nosniff``, ``Referrer-Policy: no-referrer`` and
``Cache-Control: no-store`` (PHI-bearing or not: the shells are cheap, and one rule cannot
be forgotten on a new route).
"""

from __future__ import annotations

import httpx

from server.app import client_dir
from server.audit import SYSTEM
from server.clock import FakeClock
from tests.conftest import ORIGIN, PASSWORD, make_clinic
from tests.patient.support import DOB, Node, new_link, run_node, verify
from tests.patient.test_session import assert_patient_headers, cookie_attributes
from tests.security.routes import every_route
from tests.security.state import sqlite_only

HSTS = "max-age=31536000"


def static_paths() -> list[str]:
    """Every file the static mount serves."""
    root = client_dir()
    return sorted(f"/static/{p.relative_to(root).as_posix()}" for p in root.rglob("*")
                  if p.is_file())


async def every_get(node: Node, client: httpx.AsyncClient) -> dict[str, int]:
    """A concrete URL for every GET route (each static file, the link page in each state,
    pages with and without a session), plus error pages; the status each should get."""
    clinic = await make_clinic(node.services)
    link = await new_link(node, clinic)
    token, _ = await node.services.patient_sessions.open(
        clinic.account_id, clinic.patient_id, clinic.conversation_id, SYSTEM)
    client.cookies.set("sc_patient", token)
    response = await client.post("/api/auth/login", json={"email": clinic.admin_email,
                                                          "password": PASSWORD})
    assert response.status_code == 200
    by_route = {
        "/": {"/": 200}, "/healthz": {"/healthz": 200}, "/readyz": {"/readyz": 200},
        "/metrics": {"/metrics": 200}, "/s/ended": {"/s/ended": 200},
        "/s/chat": {"/s/chat": 200},
        "/s/{token}": {f"/s/{link}": 200, "/s/" + "x" * 43: 404},
        "/static/{path}": dict.fromkeys(static_paths(), 200),
        "/api/me": {"/api/me": 200},
        "/api/conversations": {"/api/conversations": 200},
        "/api/conversations/{conversation_id}/messages": {
            f"/api/conversations/{clinic.conversation_id}/messages": 200},
        "/api/account/settings": {"/api/account/settings": 200},
        "/api/audit": {"/api/audit": 200}, "/api/staff": {"/api/staff": 200},
        "/dev/phone": {"/dev/phone": 200},  # demo only: the node here is one
    }
    gets = {path for method, path in every_route() if method == "GET"}
    assert gets == set(by_route), "GET routes without a header case"
    urls = {u: s for cases in by_route.values() for u, s in cases.items()}
    urls |= {"/no/such/page": 404, "/static/no-such-file.js": 404}
    return urls


def assert_headers(response: httpx.Response, what: str) -> None:
    assert_patient_headers(response, what)
    assert "access-control-allow-origin" not in response.headers, what
    # Forms post only here (issue 13): injected markup cannot send a form elsewhere.
    directives = [d.strip() for d in response.headers["content-security-policy"].split(";")]
    assert "form-action 'self'" in directives, what


@sqlite_only
async def test_every_page_asset_and_error_has_the_headers(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """Each GET route (every static file too), 404s, a 403 (CSRF refusal), a 405 and a
    413 carry the headers; over plain http there is no HSTS."""
    async with run_node(database_url, master_key, clock, demo=True) as node, \
            node.client() as client:
        urls = await every_get(node, client)
        assert len(urls) > 20
        for path, status in urls.items():
            response = await client.get(path)
            assert response.status_code == status, (path, response.status_code)
            assert_headers(response, path)
            assert "strict-transport-security" not in response.headers, path
        errors = [
            await client.post("/api/patients", json={}, headers={"origin": "https://x.example"}),
            await client.delete("/api/me", headers={"origin": ORIGIN}),
            await client.post("/api/patients", content=b"{" * (64 * 1024 + 1),
                              headers={"origin": ORIGIN, "content-type": "application/json"}),
        ]
        assert [r.status_code for r in errors] == [403, 405, 413]
        for response in errors:
            assert_headers(response, str(response.status_code))


@sqlite_only
async def test_https_public_url_adds_hsts_and_host_prefixed_cookies(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """With an https PUBLIC_URL every response (pages, API, errors) carries HSTS, and both
    session cookies are ``__Host-``, Secure, HttpOnly, SameSite=Strict, Path=/, with no
    Domain and no expiry (SameSite=Strict: the console and the secure page are never
    entered from another site's link with a session to ride; docs/protocol.md)."""
    async with run_node(database_url, master_key, clock,
                        public_url="https://clinic.example",
                        allowed_origins=[ORIGIN]) as node, node.client() as client:
        clinic = await make_clinic(node.services)
        login = await client.post("/api/auth/login", headers={"origin": ORIGIN},
                                  json={"email": clinic.staff_email, "password": PASSWORD})
        patient = await verify(client, await new_link(node, clinic), DOB)
        for response, name in ((login, "__Host-sc_staff"), (patient, "__Host-sc_patient")):
            assert response.status_code in (200, 204), response.text
            cookie_name, attributes = cookie_attributes(response.headers["set-cookie"])
            assert cookie_name == name
            assert {"secure", "httponly", "samesite=strict", "path=/"} <= attributes
            assert not any(a.startswith(("domain", "max-age", "expires"))
                           for a in attributes), attributes
        for path in ("/", "/s/chat", "/api/me", "/healthz", "/static/shared/socket.js",
                     "/no/such/page"):
            response = await client.get(path)
            assert response.headers.get("strict-transport-security") == HSTS, path
        assert login.headers.get("strict-transport-security") == HSTS
