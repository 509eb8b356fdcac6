"""The admin settings API: ``GET``/``PUT /api/account/settings``: partial updates,
validation naming the field, the audit entry and what ``/api/me`` shows. (That an admin
cannot change ``sms_number``: tests/security/test_inbound_routing.py.)
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

import httpx
import pytest

from server.errors import AppError
from server.runtime import Services
from tests.conftest import ORIGIN, Clinic, RunningServer, make_clinic

PATH = "/api/account/settings"


def unique_sms_number() -> str:
    """A valid US number no other test uses (``sms_number`` is unique across accounts)."""
    return f"+1650{secrets.choice(range(200, 1000))}{secrets.randbelow(10_000):04d}"


@contextlib.asynccontextmanager
async def admin(server: RunningServer, clinic: Clinic) -> AsyncIterator[httpx.AsyncClient]:
    async with server.login(clinic.admin_email) as client:
        client.headers["origin"] = ORIGIN
        yield client


async def test_get_returns_the_settings(server: RunningServer, clinic: Clinic) -> None:
    """GET answers every setting with its current value."""
    async with admin(server, clinic) as client:
        response = await client.get(PATH)
    assert response.status_code == 200
    body = response.json()
    assert body == {"portal_active": True, "clinic_name": body["clinic_name"],
                    "sms_number": None, "secure_link_ttl_hours": 72, "require_code": False}
    assert body["clinic_name"].startswith("Clinic ")


async def test_put_is_a_partial_update(server: RunningServer, services: Services,
                                       clinic: Clinic) -> None:
    """A PUT changes only the fields it names; the answer and the store agree."""
    number = unique_sms_number()
    async with admin(server, clinic) as client:
        before = (await client.get(PATH)).json()
        renamed = await client.put(PATH, json={"clinic_name": "Harbour Family Practice"})
        assert renamed.status_code == 200, renamed.text
        assert renamed.json() == {**before, "clinic_name": "Harbour Family Practice"}

        ttl = await client.put(PATH, json={"secure_link_ttl_hours": 24})
        assert ttl.json() == {**before, "clinic_name": "Harbour Family Practice",
                              "secure_link_ttl_hours": 24}

        # The operator assigns the number; sent back unchanged (any spelling) it is fine.
        await services.accounts.assign_sms_number(clinic.account_id, number)
        national = f"({number[2:5]}) {number[5:8]}-{number[8:]}"
        sms = await client.put(PATH, json={"sms_number": national})
        assert sms.status_code == 200, sms.text
        assert sms.json()["sms_number"] == number  # stored as E.164
        await services.accounts.assign_sms_number(clinic.account_id, None)
        cleared = await client.put(PATH, json={"sms_number": None})
        assert cleared.json()["sms_number"] is None

        code = await client.put(PATH, json={"require_code": True})
        assert code.json()["require_code"] is True
        assert (await client.get(PATH)).json()["require_code"] is True

        nothing = await client.put(PATH, json={})
        assert nothing.status_code == 200
        assert nothing.json() == (await client.get(PATH)).json()
    stored = await services.accounts.settings(clinic.account_id)
    assert (stored.clinic_name, stored.secure_link_ttl_hours, stored.sms_number,
            stored.portal_active, stored.require_code) == (
        "Harbour Family Practice", 24, None, True, True)


@pytest.mark.parametrize(("body", "field"), [
    ({"sms_number": 4155550100}, "sms_number"),
    ({"secure_link_ttl_hours": 0}, "secure_link_ttl_hours"),
    ({"secure_link_ttl_hours": 721}, "secure_link_ttl_hours"),
    ({"secure_link_ttl_hours": "24"}, "secure_link_ttl_hours"),
    ({"clinic_name": ""}, "clinic_name"),
    ({"clinic_name": "x" * 201}, "clinic_name"),
    ({"portal_active": "yes"}, "portal_active"),
    ({"portal_active": None}, "portal_active"),
    ({"require_code": "yes"}, "require_code"),
    ({"colour": "blue"}, "colour"),
])
async def test_bad_values_are_422_naming_the_field(
        server: RunningServer, services: Services, clinic: Clinic, body: dict,
        field: str) -> None:
    """A bad, out-of-range or unknown field is 422 naming it, and nothing changes."""
    before = await services.accounts.settings(clinic.account_id)
    async with admin(server, clinic) as client:
        response = await client.put(PATH, json={"clinic_name": "Changed", **body})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    assert field in error["message"]
    assert await services.accounts.settings(clinic.account_id) == before


async def test_body_that_is_not_an_object_is_422(server: RunningServer, clinic: Clinic
                                                 ) -> None:
    """A body that is not JSON, or not an object, is 422."""
    async with admin(server, clinic) as client:
        for content in (b"{not json", b"[]", b'"x"'):
            response = await client.put(PATH, content=content,
                                        headers={"content-type": "application/json"})
            assert response.status_code == 422, response.text
            assert response.json()["error"]["code"] == "invalid_request"


async def test_sms_number_taken_by_another_account_is_409(
        services: Services, clinic: Clinic) -> None:
    """Two accounts cannot share an SMS number (inbound SMS are routed by it): the
    operator's assignment is refused with conflict."""
    number = unique_sms_number()
    other = await make_clinic(services)
    assert await services.accounts.assign_sms_number(other.account_id, number) == number
    with pytest.raises(AppError) as refused:
        await services.accounts.assign_sms_number(clinic.account_id, number)
    assert refused.value.code == "conflict" and "sms_number" in refused.value.message
    assert (await services.accounts.settings(clinic.account_id)).sms_number is None


async def test_change_is_audited(server: RunningServer, clinic: Clinic) -> None:
    """A change writes one ``account.settings_changed`` entry naming the fields, by the
    admin; a PUT that changes nothing writes none."""
    async with admin(server, clinic) as client:
        await client.put(PATH, json={"portal_active": False, "secure_link_ttl_hours": 48})
        await client.put(PATH, json={})
        entries = (await client.get("/api/audit", params={
            "action": "account.settings_changed"})).json()["entries"]
    assert len(entries) == 1
    entry = entries[0]
    assert entry["actor_kind"] == "staff" and entry["actor_id"] == clinic.admin_id
    assert entry["object_type"] == "account" and entry["object_id"] == clinic.account_id
    assert entry["outcome"] == "ok"
    assert '"fields":"portal_active,secure_link_ttl_hours"' in entry["details"]


async def test_me_reflects_portal_active(server: RunningServer, clinic: Clinic) -> None:
    """Turning the portal off (and on) shows in ``/api/me`` for every staff member."""
    async with admin(server, clinic) as client, server.login(clinic.staff_email) as nurse:
        assert (await nurse.get("/api/me")).json()["account"]["portal_active"] is True
        assert (await client.put(PATH, json={"portal_active": False})).status_code == 200
        assert (await nurse.get("/api/me")).json()["account"]["portal_active"] is False
        assert (await client.get("/api/me")).json()["account"]["portal_active"] is False
        await client.put(PATH, json={"portal_active": True, "clinic_name": "Bayside"})
        account = (await nurse.get("/api/me")).json()["account"]
        assert account["portal_active"] is True
        assert account["clinic_name"] == "Bayside"


async def test_portal_off_refuses_secure_messages(server: RunningServer, clinic: Clinic
                                                  ) -> None:
    """With the portal off a Secure Chat send is 409 portal_inactive; SMS still works."""
    path = f"/api/conversations/{clinic.conversation_id}/messages"
    async with admin(server, clinic) as client:
        await client.put(PATH, json={"portal_active": False})
        secure = await client.post(path, json={"client_msg_id": "p-1", "body": "hi",
                                               "secure": True})
        sms = await client.post(path, json={"client_msg_id": "p-2", "body": "hi",
                                            "secure": False})
    assert secure.status_code == 409
    assert secure.json()["error"]["code"] == "portal_inactive"
    assert sms.status_code == 201
