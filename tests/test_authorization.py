"""Who may call what: every ``/api`` route, taken from the app's route table, refuses a
caller without a session; staff never reach another account's data; admin routes refuse
``staff``.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest
from starlette.routing import Route

from server.app import create_app
from server.services.container import Services
from server.settings import from_env
from server.web import api
from tests.conftest import ORIGIN, PASSWORD, Clinic, RunningServer, make_clinic

_msg_ids = itertools.count(1)


@dataclass(frozen=True)
class Case:
    """A valid request for one (path, method) and what a permitted caller gets."""

    ok: int
    body: Callable[[Clinic], dict] | None = None
    params: dict[str, str] = field(default_factory=dict)
    admin_only: bool = False
    # The one route reachable without a session (it opens one): without credentials it
    # must answer 401 like every other route.
    public: bool = False


CASES: dict[tuple[str, str], Case] = {
    ("/api/auth/login", "POST"): Case(
        200, lambda c: {"email": c.staff_email, "password": PASSWORD}, public=True),
    ("/api/auth/logout", "POST"): Case(204),
    ("/api/me", "GET"): Case(200),
    ("/api/conversations", "GET"): Case(200, params={"limit": "10"}),
    ("/api/patients", "POST"): Case(201, lambda c: {
        "name": "Robin Authz", "phone": "(415) 555-0142", "date_of_birth": "1970-02-03"}),
    ("/api/conversations/{conversation_id}/messages", "GET"): Case(
        200, params={"limit": "10"}),
    ("/api/conversations/{conversation_id}/messages", "POST"): Case(201, lambda c: {
        "client_msg_id": f"authz-{next(_msg_ids)}", "body": "Please call us back",
        "secure": False}),
    ("/api/sms/segments", "POST"): Case(200, lambda c: {"body": "See you at 3pm"}),
    ("/api/conversations/{conversation_id}/links/revoke", "POST"): Case(200),
    ("/api/account/settings", "GET"): Case(200, admin_only=True),
    ("/api/account/settings", "PUT"): Case(200, lambda c: {"clinic_name": "Renamed Clinic"},
                                           admin_only=True),
    ("/api/audit", "GET"): Case(200, params={"limit": "5"}, admin_only=True),
    ("/api/staff", "GET"): Case(200, admin_only=True),
    ("/api/staff", "POST"): Case(201, lambda c: {
        "name": "Sam Authz", "email": f"authz-{secrets.token_hex(4)}@clinic.test",
        "role": "staff", "password": PASSWORD}, admin_only=True),
    ("/api/staff/{staff_id}/deactivate", "POST"): Case(200, admin_only=True),
}


def api_routes() -> tuple[list[tuple[Route, str]], list[str]]:
    """Every (route, method) under /api that the assembled app serves, and the paths of
    anything under /api that is not an HTTP route. HEAD is left out: Starlette adds it to
    each GET route and answers it with the GET handler."""
    settings = from_env({}, database_url="sqlite:///unused.db", allowed_origins=[ORIGIN])
    app = create_app(settings, b"\0" * 32)  # not started: only its route table is read
    http, other = [], []
    for route in app.routes:
        path = getattr(route, "path", "")
        if not path.startswith("/api"):
            continue
        if isinstance(route, Route):
            http += [(route, method) for method in sorted(route.methods or ())
                     if method != "HEAD"]
        else:
            other.append(path)
    return http, other


ROUTES, NON_HTTP_ROUTES = api_routes()
ROUTE_IDS = [f"{method} {route.path}" for route, method in ROUTES]


def url_for(route: Route, clinic: Clinic) -> str:
    ids = {"conversation_id": clinic.conversation_id, "staff_id": clinic.staff_id}
    return route.path.format(**{name: ids[name] for name in route.param_convertors})


async def call(client: httpx.AsyncClient, route: Route, method: str, clinic: Clinic,
               **headers: str) -> httpx.Response:
    case = CASES[(route.path, method)]
    return await client.request(method, url_for(route, clinic), params=case.params,
                                json=case.body(clinic) if case.body else None,
                                headers={"origin": ORIGIN, **headers})


def test_every_api_route_has_a_case() -> None:
    """The table below covers exactly the app's /api routes, so a new route needs a case."""
    served = {(route.path, method) for route, method in ROUTES}
    assert {(r.path, m) for r in api.routes for m in r.methods if m != "HEAD"} <= served
    assert served - CASES.keys() == set(), "routes without an authorization case"
    assert CASES.keys() - served == set(), "cases for routes that no longer exist"
    assert NON_HTTP_ROUTES == [], "non-HTTP routes under /api need their own checks"


@pytest.mark.parametrize(("route", "method"), ROUTES, ids=ROUTE_IDS)
async def test_no_session_is_401(server: RunningServer, clinic: Clinic, route: Route,
                                 method: str) -> None:
    """Without a session cookie every /api route answers 401 unauthenticated."""
    case = CASES[(route.path, method)]
    async with server.client() as client:
        if case.public:
            body = {**case.body(clinic), "password": "a wrong password for this login"}
            response = await client.request(method, url_for(route, clinic), json=body,
                                            headers={"origin": ORIGIN})
        else:
            response = await call(client, route, method, clinic)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "unauthenticated"
        if not case.public:  # a cookie that is no session is the same as none
            again = await call(client, route, method, clinic, cookie="sc_staff=no-such-session")
            assert again.status_code == 401, again.text
            assert again.json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize(("route", "method"), ROUTES, ids=ROUTE_IDS)
async def test_staff_role_is_forbidden_on_admin_routes(
        server: RunningServer, clinic: Clinic, route: Route, method: str) -> None:
    """A ``staff`` member gets 403 forbidden on admin routes and succeeds on the others."""
    case = CASES[(route.path, method)]
    async with server.login(clinic.staff_email) as client:
        response = await call(client, route, method, clinic)
    if case.admin_only:
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "forbidden"
    else:
        assert response.status_code == case.ok, response.text


@pytest.mark.parametrize(("route", "method"), ROUTES, ids=ROUTE_IDS)
async def test_admin_may_call_every_route(server: RunningServer, clinic: Clinic,
                                          route: Route, method: str) -> None:
    """An ``admin`` succeeds on every route, admin-only or not."""
    async with server.login(clinic.admin_email) as client:
        response = await call(client, route, method, clinic)
    assert response.status_code == CASES[(route.path, method)].ok, response.text


async def test_admin_forbidden_does_not_change_settings(
        server: RunningServer, services: Services, clinic: Clinic) -> None:
    """A refused PUT by a ``staff`` member changes nothing."""
    before = await services.accounts.settings(clinic.account_id)
    async with server.login(clinic.staff_email) as client:
        response = await client.put("/api/account/settings", headers={"origin": ORIGIN},
                                    json={"clinic_name": "Hijacked", "portal_active": False})
    assert response.status_code == 403
    assert await services.accounts.settings(clinic.account_id) == before


@pytest.mark.parametrize("email", ["staff_email", "admin_email"])
async def test_other_accounts_conversations_are_not_found(
        server: RunningServer, services: Services, clinic: Clinic, email: str) -> None:
    """Staff (and admins) of account A get 404 for account B's conversation, read or write,
    with the same answer as for an id that does not exist."""
    other = await make_clinic(services)
    path = f"/api/conversations/{other.conversation_id}/messages"
    missing = "/api/conversations/00000000-0000-4000-8000-000000000000/messages"
    send = {"client_msg_id": "cross-1", "body": "wrong clinic", "secure": False}
    async with server.login(getattr(clinic, email)) as client:
        read = await client.get(path)
        write = await client.post(path, json=send, headers={"origin": ORIGIN})
        read_missing = await client.get(missing)
        write_missing = await client.post(missing, json=send, headers={"origin": ORIGIN})
        revoke = await client.post(f"/api/conversations/{other.conversation_id}/links/revoke",
                                   headers={"origin": ORIGIN})
        for response in (read, write, revoke):
            assert response.status_code == 404, response.text
            assert response.json()["error"]["code"] == "not_found"
        assert read.json() == read_missing.json()
        assert write.json() == write_missing.json()

        inbox = (await client.get("/api/conversations", params={"limit": "200"})).json()
        ids = {c["id"] for c in inbox["conversations"]}
        assert clinic.conversation_id in ids
        assert other.conversation_id not in ids
        patients = {c["patient"]["id"] for c in inbox["conversations"]}
        assert other.patient_id not in patients

    async with server.login(other.staff_email) as owner:  # nothing reached B's thread
        page = (await owner.get(path)).json()
        assert page["messages"] == []


async def test_audit_log_is_per_account(server: RunningServer, services: Services,
                                        clinic: Clinic) -> None:
    """An admin's audit log holds only the admin's own account's entries."""
    other = await make_clinic(services)
    async with server.login(clinic.admin_email) as client:
        entries = (await client.get("/api/audit", params={"limit": "1000"})).json()["entries"]
    objects = {e["object_id"] for e in entries}
    assert clinic.patient_id in objects
    assert other.patient_id not in objects and other.staff_id not in objects
