"""Health, readiness and metrics, and the headers every response carries."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from server.app import create_app
from server.clock import FakeClock
from server.settings import Settings
from server.store import migrate
from tests.conftest import ORIGIN, PG_ADMIN_URL, Clinic, RunningServer, settings_for_tests
from tests.serving import serve_app

CANARY_NAME = "Ottoline Canaryfeather"
CANARY_PHONE = "(415) 555-0173"
CANARY_BODY = "canary-metrics Zanzibar dosage"
# /metrics needs the operator's token outside the demo (docs/operations.md).
METRICS_TOKEN = "health-test-metrics-token-0123"
BEARER = {"authorization": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture
def settings(database_url: str) -> Settings:
    """conftest's settings, with a metrics token."""
    return settings_for_tests(database_url=database_url, allowed_origins=[ORIGIN],
                              password_hash_concurrency=2, metrics_token=METRICS_TOKEN)


@contextlib.asynccontextmanager
async def serve(app) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on a free port; yields its base URL."""
    async with serve_app(app) as served:
        yield served.url


async def pg_admin(statement: str) -> None:
    url = make_url(PG_ADMIN_URL).set(drivername="postgresql")
    conn = await asyncpg.connect(url.render_as_string(hide_password=False), timeout=5)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def test_healthz(server: RunningServer) -> None:
    """``/healthz`` answers 200 ``{"status": "ok"}``."""
    async with server.client() as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_when_the_store_answers(server: RunningServer) -> None:
    """``/readyz`` answers 200 with the store check ``ok``."""
    async with server.client() as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"store": "ok", "broker": "ok"}}


@contextlib.asynccontextmanager
async def node_on_scratch_database(master_key: bytes, clock: FakeClock
                                   ) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """A running node on a PostgreSQL database of its own: (client, database name)."""
    name = f"securechat_ready_{secrets.token_hex(4)}"
    await pg_admin(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
        await asyncio.to_thread(migrate.upgrade, url)
        settings = settings_for_tests(database_url=url, allowed_origins=[ORIGIN],
                                      metrics_token=METRICS_TOKEN)
        app = create_app(settings, master_key, clock=clock)
        async with serve(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
            yield client, name
    finally:
        await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_readyz_names_an_unreachable_store(postgresql_url: str, master_key: bytes,
                                                 clock: FakeClock) -> None:
    """When the node's PostgreSQL database disappears under it, ``/readyz`` answers 503
    naming ``store`` while ``/healthz`` stays 200."""
    async with node_on_scratch_database(master_key, clock) as (client, name):
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        await pg_admin(f'DROP DATABASE "{name}" WITH (FORCE)')
        down = await client.get("/readyz")
        assert down.status_code == 503, down.text
        assert down.json() == {"status": "unavailable",
                               "checks": {"store": "unavailable", "broker": "ok"}}
        assert (await client.get("/healthz")).status_code == 200
        metrics = (await client.get("/metrics", headers=BEARER)).text
        assert re.search(r"^securechat_store_up 0\.0$", metrics, re.MULTILINE)


async def test_unexpected_error_is_a_500_with_the_usual_headers(
        postgresql_url: str, master_key: bytes, clock: FakeClock) -> None:
    """An unhandled failure (the store vanished mid-life) answers the ``internal`` error
    body, still with a request id and the security headers."""
    async with node_on_scratch_database(master_key, clock) as (client, name):
        await pg_admin(f'DROP DATABASE "{name}" WITH (FORCE)')
        response = await client.get("/api/me", headers={"cookie": "sc_staff=some-session",
                                                        "x-request-id": "trace-500"})
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal",
                                         "message": "internal error; it was logged"}}
    assert response.headers.get("x-request-id") == "trace-500"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name
    assert "content-security-policy" in response.headers


async def test_metrics_are_prometheus_text_without_phi(server: RunningServer,
                                                       clinic: Clinic) -> None:
    """``/metrics`` is Prometheus text with request counts by route name; no PHI, no ids."""
    async with server.login(clinic.staff_email) as client:
        created = await client.post("/api/patients", headers={"origin": ORIGIN}, json={
            "name": CANARY_NAME, "phone": CANARY_PHONE, "date_of_birth": "1959-04-01"})
        conversation_id = created.json()["conversation_id"]
        path = f"/api/conversations/{conversation_id}/messages"
        await client.post(path, json={"client_msg_id": "metrics-1", "body": CANARY_BODY})
        await client.get(path)
        await client.get("/readyz")
        response = await client.get("/metrics", headers=BEARER)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert re.search(r"^# TYPE securechat_http_requests(_total)? counter$", text, re.MULTILINE)
    assert re.search(r'^securechat_http_requests_total\{method="POST",route="create_patient",'
                     r'status="2xx"\} 1\.0$', text, re.MULTILINE), text
    assert re.search(r'^securechat_logins_total\{outcome="ok"\} 1\.0$', text, re.MULTILINE)
    assert re.search(r'^securechat_messages_stored_total\{channel="sms"\} 1\.0$', text,
                     re.MULTILINE)
    assert re.search(r"^securechat_store_up 1\.0$", text, re.MULTILINE)
    for secret in ("Ottoline", "Canaryfeather", "555-0173", "5550173", "1959-04-01",
                   "Zanzibar", conversation_id, created.json()["patient"]["id"],
                   clinic.staff_email, clinic.account_id):
        assert secret not in text


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


async def test_every_response_has_the_security_headers(server: RunningServer,
                                                       clinic: Clinic) -> None:
    """Success, error, refused, unmatched and streamed responses all carry a request id,
    nosniff, no-store and a Content-Security-Policy."""
    async with server.client() as anonymous, server.login(clinic.admin_email) as admin:
        responses = {
            "healthz": await anonymous.get("/healthz"),
            "readyz": await anonymous.get("/readyz"),
            "metrics": await anonymous.get("/metrics", headers=BEARER),
            "401": await anonymous.get("/api/me"),
            "403 origin": await anonymous.post("/api/patients", headers={"origin": "null"}),
            "404 unmatched": await anonymous.get("/no/such/page"),
            "405": await anonymous.delete("/api/me"),
            "422": await anonymous.post("/api/auth/login", content=b"{"),
            "login": await anonymous.post("/api/auth/login", json={
                "email": clinic.staff_email, "password": "wrong but long enough!"}),
            "200": await admin.get("/api/me"),
            "201": await admin.post("/api/patients", json={
                "name": "Header Check", "phone": "(415) 555-0155",
                "date_of_birth": "1990-01-01"}),
            "csv": await admin.get("/api/audit", params={"format": "csv"}),
            "204": await admin.post("/api/auth/logout"),
        }
    for what, response in responses.items():
        headers = response.headers
        assert re.fullmatch(r"[0-9a-f]{16}", headers.get("x-request-id", "")), what
        for name, value in SECURITY_HEADERS.items():
            assert headers.get(name) == value, (what, name)
        csp = headers.get("content-security-policy", "")
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, what
    assert len({r.headers["x-request-id"] for r in responses.values()}) == len(responses)
    assert [r.status_code for r in responses.values()] == [
        200, 200, 200, 401, 403, 404, 405, 422, 401, 200, 201, 200, 204]


@pytest.mark.parametrize(("given", "echoed"), [
    ("trace-123.abc_DEF", True),
    ("x" * 64, True),
    ("x" * 65, False),
    ("bad id with spaces", False),
    ("<script>", False),
])
async def test_request_id_is_echoed_only_when_well_formed(server: RunningServer, given: str,
                                                          echoed: bool) -> None:
    """A well-formed ``x-request-id`` is echoed; anything else is replaced by a new one."""
    async with server.client() as client:
        response = await client.get("/healthz", headers={"x-request-id": given})
    returned = response.headers["x-request-id"]
    if echoed:
        assert returned == given
    else:
        assert returned != given
        assert re.fullmatch(r"[0-9a-f]{16}", returned)
