"""The Origin (CSRF) check on state-changing requests, over the real server: a foreign,
``null`` or lookalike Origin (or, without Origin, a foreign Referer) is 403 and changes
nothing; the allowed origin and non-browser callers go through.
"""

from __future__ import annotations

import httpx
import pytest

from server.services.container import Services
from server.web import api
from tests.conftest import ORIGIN, PASSWORD, Clinic, RunningServer

EVIL = "https://evil.example"
BAD_ORIGINS = [
    EVIL,
    "null",
    "http://testserver.local.evil.com",  # lookalike: the allowed host as a prefix
    "http://testserver.local:8080",      # same host, other port
    "https://testserver.local",          # same host, other scheme
    "http://evil.com@testserver.local",  # not an origin at all
]
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
PATIENT = {"name": "Casey Csrf", "phone": "(415) 555-0161", "date_of_birth": "1988-08-08"}


def forbidden(response: httpx.Response) -> bool:
    return (response.status_code == 403
            and response.json()["error"]["code"] == "forbidden")


async def inbox_size(client: httpx.AsyncClient) -> int:
    response = await client.get("/api/conversations", params={"limit": "200"})
    assert response.status_code == 200
    return len(response.json()["conversations"])


def test_every_state_changing_route_is_covered() -> None:
    """Each state-changing /api route has a case in the foreign-Origin test below."""
    routes = {(r.path, m) for r in api.routes for m in r.methods if m in STATE_CHANGING}
    assert routes == {
        ("/api/auth/login", "POST"), ("/api/auth/logout", "POST"), ("/api/patients", "POST"),
        ("/api/conversations/{conversation_id}/messages", "POST"),
        ("/api/account/settings", "PUT"), ("/api/sms/segments", "POST"),
        ("/api/conversations/{conversation_id}/links/revoke", "POST"),
        ("/api/staff", "POST"), ("/api/staff/{staff_id}/deactivate", "POST"),
    }


async def test_foreign_origin_changes_nothing(server: RunningServer, services: Services,
                                              clinic: Clinic) -> None:
    """Every state-changing route answers 403 to a foreign Origin and nothing changes."""
    evil = {"origin": EVIL}
    messages = f"/api/conversations/{clinic.conversation_id}/messages"
    async with server.login(clinic.admin_email) as client:
        patients_before = await inbox_size(client)
        settings_before = await services.accounts.settings(clinic.account_id)

        assert forbidden(await client.post("/api/patients", json=PATIENT, headers=evil))
        assert await inbox_size(client) == patients_before

        assert forbidden(await client.put("/api/account/settings", headers=evil,
                                          json={"clinic_name": "Evil Clinic",
                                                "portal_active": False}))
        assert await services.accounts.settings(clinic.account_id) == settings_before

        assert forbidden(await client.post(messages, headers=evil, json={
            "client_msg_id": "csrf-1", "body": "phishing link", "secure": False}))
        assert (await client.get(messages)).json()["messages"] == []

        assert forbidden(await client.post(
            f"/api/conversations/{clinic.conversation_id}/links/revoke", headers=evil))

        staff_before = await services.accounts.staff(clinic.account_id)
        assert forbidden(await client.post("/api/staff", headers=evil, json={
            "name": "Eve", "email": "eve@evil.example", "role": "admin",
            "password": PASSWORD}))
        assert forbidden(await client.post(f"/api/staff/{clinic.staff_id}/deactivate",
                                           headers=evil))
        assert await services.accounts.staff(clinic.account_id) == staff_before

        # Read-only in effect, but a POST all the same: refused like the others.
        assert forbidden(await client.post("/api/sms/segments", headers=evil,
                                           json={"body": "hello"}))

        assert forbidden(await client.post("/api/auth/logout", headers=evil))
        assert (await client.get("/api/me")).status_code == 200  # still signed in

        login = await client.post("/api/auth/login", headers=evil,
                                  json={"email": clinic.admin_email, "password": PASSWORD})
        assert forbidden(login)
        assert "set-cookie" not in login.headers


@pytest.mark.parametrize("origin", BAD_ORIGINS)
async def test_bad_origins_are_refused(server: RunningServer, clinic: Clinic,
                                       origin: str) -> None:
    """A ``null``, lookalike, other-port or other-scheme Origin is refused; no patient."""
    async with server.login(clinic.staff_email) as client:
        before = await inbox_size(client)
        response = await client.post("/api/patients", json=PATIENT, headers={"origin": origin})
        assert forbidden(response), response.text
        assert await inbox_size(client) == before


async def test_allowed_origin_goes_through(server: RunningServer, clinic: Clinic) -> None:
    """The configured origin may change state: the patient is created."""
    async with server.login(clinic.staff_email) as client:
        before = await inbox_size(client)
        response = await client.post("/api/patients", json=PATIENT, headers={"origin": ORIGIN})
        assert response.status_code == 201, response.text
        assert await inbox_size(client) == before + 1


@pytest.mark.parametrize("referer", [
    "https://evil.example/page", "http://testserver.local.evil.com/",
    "http://testserver.local:8080/app", "null"])
async def test_foreign_referer_without_origin_is_refused(
        server: RunningServer, clinic: Clinic, referer: str) -> None:
    """Without an Origin, a Referer from anywhere but the allowed origin is refused."""
    async with server.login(clinic.staff_email) as client:
        before = await inbox_size(client)
        response = await client.post("/api/patients", json=PATIENT,
                                     headers={"referer": referer})
        assert forbidden(response), response.text
        assert await inbox_size(client) == before


async def test_own_referer_without_origin_goes_through(server: RunningServer,
                                                       clinic: Clinic) -> None:
    """Without an Origin, a Referer from the allowed origin is accepted."""
    async with server.login(clinic.staff_email) as client:
        response = await client.post("/api/patients", json=PATIENT,
                                     headers={"referer": f"{ORIGIN}/inbox?x=1"})
        assert response.status_code == 201, response.text


async def test_origin_wins_over_referer(server: RunningServer, clinic: Clinic) -> None:
    """A foreign Origin is refused even when the Referer looks like our own page."""
    async with server.login(clinic.staff_email) as client:
        response = await client.post("/api/patients", json=PATIENT,
                                     headers={"origin": EVIL, "referer": f"{ORIGIN}/"})
        assert forbidden(response)


async def test_no_origin_and_no_referer_is_allowed(server: RunningServer,
                                                   clinic: Clinic) -> None:
    """With neither Origin nor Referer the caller is not a browser (browsers always send
    Origin on a cross-site POST), so it cannot ride a victim's cookie (``SameSite=Strict``
    besides): ``origin_allowed`` lets it through and the session alone decides."""
    async with server.login(clinic.staff_email) as client:
        before = await inbox_size(client)
        response = await client.post("/api/patients", json=PATIENT)
        assert response.status_code == 201, response.text
        assert await inbox_size(client) == before + 1
    async with server.client() as anonymous:  # and the session check still applies
        response = await anonymous.post("/api/patients", json=PATIENT)
        assert response.status_code == 401


async def test_get_with_foreign_origin_is_not_blocked(server: RunningServer,
                                                      clinic: Clinic) -> None:
    """Reads are not state-changing, so a foreign Origin does not stop them."""
    async with server.login(clinic.staff_email) as client:
        for path in ("/api/me", "/api/conversations"):
            response = await client.get(path, headers={"origin": EVIL})
            assert response.status_code == 200, response.text
