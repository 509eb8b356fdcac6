"""Staff management (``/api/staff``): admins add, list and deactivate members of their
own account; deactivation ends the member's sessions and closes their sockets at once.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

import httpx

from server.runtime import Services
from tests.conftest import ORIGIN, PASSWORD, Clinic, RunningServer, make_clinic
from tests.realtime.wsclient import connect

MEMBER_FIELDS = {"id", "name", "email", "role", "active", "created_at"}


@contextlib.asynccontextmanager
async def admin(server: RunningServer, clinic: Clinic) -> AsyncIterator[httpx.AsyncClient]:
    async with server.login(clinic.admin_email) as client:
        client.headers["origin"] = ORIGIN
        yield client


def new_member(**overrides: str) -> dict:
    return {"name": "Robin Reyes", "email": f"robin-{secrets.token_hex(4)}@clinic.test",
            "role": "staff", "password": PASSWORD, **overrides}


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


async def test_add_list_and_deactivate(server: RunningServer, clinic: Clinic) -> None:
    """A new member is listed (by name) and can sign in; deactivated, they stay listed
    as inactive, and the deactivation is audited."""
    body = new_member(name="Aaron Able", email=f"Aaron-{secrets.token_hex(4)}@Clinic.test")
    async with admin(server, clinic) as client:
        added = await client.post("/api/staff", json=body)
        assert added.status_code == 201, added.text
        member = added.json()["staff"]
        assert set(member) == MEMBER_FIELDS
        assert (member["name"], member["email"], member["role"], member["active"]) == (
            "Aaron Able", body["email"].lower(), "staff", True)

        listed = (await client.get("/api/staff")).json()["staff"]
        names = [m["name"] for m in listed]
        assert names == sorted(names) and names[0] == "Aaron Able"
        assert {m["id"] for m in listed} == {member["id"], clinic.admin_id, clinic.staff_id}

        async with server.login(body["email"]):
            pass  # the temporary password works

        gone = await client.post(f"/api/staff/{member['id']}/deactivate")
        assert gone.status_code == 200, gone.text
        assert gone.json() == {"staff": {**member, "active": False}, "ended_sessions": 1}
        listed = (await client.get("/api/staff")).json()["staff"]
        assert {m["id"]: m["active"] for m in listed}[member["id"]] is False

        entries = (await client.get("/api/audit", params={
            "action": "staff.deactivated"})).json()["entries"]
    assert [(e["actor_id"], e["object_id"]) for e in entries] == [
        (clinic.admin_id, member["id"])]


async def test_taken_email_is_409(server: RunningServer, services: Services,
                                  clinic: Clinic) -> None:
    """An email already used (in any account, in any case) is 409 conflict."""
    other = await make_clinic(services)
    async with admin(server, clinic) as client:
        for email in (clinic.staff_email, other.admin_email.upper()):
            response = await client.post("/api/staff", json=new_member(email=email))
            assert (response.status_code, error_code(response)) == (409, "conflict")


async def test_weak_password_and_bad_fields_are_invalid(server: RunningServer,
                                                        clinic: Clinic) -> None:
    """A password under the policy, an unknown role, a blank name, an email that is not
    one or an unknown field is 422 invalid_request naming the field; nobody is added."""
    async with admin(server, clinic) as client:
        before = (await client.get("/api/staff")).json()
        for body, field in ((new_member(password="short"), "password"),
                            (new_member(role="owner"), "role"),
                            (new_member(name="   "), "name"),
                            (new_member(email="not-an-email"), "email"),
                            ({**new_member(), "admin": True}, "admin")):
            response = await client.post("/api/staff", json=body)
            assert (response.status_code, error_code(response)) == (422, "invalid_request")
            assert field in response.json()["error"]["message"]
        assert (await client.get("/api/staff")).json() == before


async def test_deactivating_yourself_is_refused(server: RunningServer,
                                                clinic: Clinic) -> None:
    async with admin(server, clinic) as client:
        response = await client.post(f"/api/staff/{clinic.admin_id}/deactivate")
        assert (response.status_code, error_code(response)) == (422, "invalid_request")
        assert (await client.get("/api/me")).status_code == 200  # still signed in


async def test_another_accounts_member_is_not_found(server: RunningServer,
                                                    services: Services,
                                                    clinic: Clinic) -> None:
    """Another account's member answers as an id that does not exist, and stays active."""
    other = await make_clinic(services)
    async with admin(server, clinic) as client:
        theirs = await client.post(f"/api/staff/{other.staff_id}/deactivate")
        missing = await client.post("/api/staff/00000000-0000-4000-8000-000000000000"
                                    "/deactivate")
        listed = (await client.get("/api/staff")).json()["staff"]
    assert (theirs.status_code, error_code(theirs)) == (404, "not_found")
    assert theirs.json() == missing.json()
    assert other.staff_id not in {m["id"] for m in listed}
    async with server.login(other.staff_email) as nurse:
        assert (await nurse.get("/api/me")).status_code == 200


async def test_staff_role_is_forbidden(server: RunningServer, clinic: Clinic) -> None:
    async with server.login(clinic.staff_email) as nurse:
        nurse.headers["origin"] = ORIGIN
        for response in (await nurse.get("/api/staff"),
                         await nurse.post("/api/staff", json=new_member(role="admin")),
                         await nurse.post(f"/api/staff/{clinic.admin_id}/deactivate")):
            assert (response.status_code, error_code(response)) == (403, "forbidden")
    async with admin(server, clinic) as client:
        assert len((await client.get("/api/staff")).json()["staff"]) == 2


async def test_deactivation_signs_the_member_out_everywhere(server: RunningServer,
                                                            clinic: Clinic) -> None:
    """The member's open socket closes with 4401 at once, their cookie stops working
    (saying why: ``account_deactivated``) and they cannot sign in again: the right
    password says deactivated, a wrong one answers as for anyone (no enumeration)."""
    async with server.login(clinic.staff_email) as nurse:
        cookie = "; ".join(f"{name}={value}" for name, value in nurse.cookies.items())
        async with connect(server.url, cookie) as ws:
            await ws.wait_type("ready")  # written once the hub has the socket
            async with admin(server, clinic) as client:
                response = await client.post(f"/api/staff/{clinic.staff_id}/deactivate")
            assert response.status_code == 200, response.text
            assert response.json()["ended_sessions"] == 1
            code, _ = await ws.close_code(timeout=5)
            assert code == 4401
        me = await nurse.get("/api/me")
        assert (me.status_code, error_code(me)) == (401, "account_deactivated")
    async with server.client() as client:
        login = await client.post("/api/auth/login", json={"email": clinic.staff_email,
                                                           "password": PASSWORD})
        wrong = await client.post("/api/auth/login", json={
            "email": clinic.staff_email, "password": "not the password, but long enough"})
        unknown = await client.post("/api/auth/login", json={
            "email": "nobody-" + clinic.staff_email,
            "password": "not the password, but long enough"})
    assert (login.status_code, error_code(login)) == (401, "account_deactivated")
    assert "set-cookie" not in login.headers
    assert (wrong.status_code, wrong.json()) == (unknown.status_code, unknown.json())
    assert error_code(wrong) == "unauthenticated"
