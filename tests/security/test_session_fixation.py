"""Session fixation: a session id an attacker planted before sign-in (staff) or before
verification (patient) is neither kept nor made valid; each gets a fresh value, and the
planted one opens nothing afterwards, over HTTP or the socket. (tests/test_auth.py also
checks that two staff sign-ins give two values.)"""

from __future__ import annotations

from server.clock import FakeClock
from tests.conftest import PASSWORD, make_clinic
from tests.patient.support import DOB, new_link, run_node, verify
from tests.realtime.wsclient import connect
from tests.security.state import sqlite_only

PLANTED = "attacker-chosen-session-value-0123456789abc"  # the shape of a real one


async def socket_close_code(url: str, cookie: str) -> int | None:
    async with connect(url, cookie) as ws:
        return (await ws.close_code())[0]


@sqlite_only
async def test_planted_cookies_are_replaced_and_stay_invalid(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """Staff: the planted ``sc_staff`` is sent with the login; the answer sets another
    value, which works, while the planted one is 401 and its socket closes 4401. Patient:
    likewise with ``sc_patient`` through verification, and with a real patient session of
    the same browser: verifying again issues a new value."""
    async with run_node(database_url, master_key, clock) as node, node.client() as client:
        clinic = await make_clinic(node.services)
        client.cookies.set("sc_staff", PLANTED)
        login = await client.post("/api/auth/login", json={"email": clinic.staff_email,
                                                           "password": PASSWORD})
        assert login.status_code == 200
        staff_value = login.cookies["sc_staff"]
        assert staff_value != PLANTED
        me = await client.get("/api/me", headers={"cookie": f"sc_staff={staff_value}"})
        assert me.status_code == 200
        planted = await client.get("/api/me", headers={"cookie": f"sc_staff={PLANTED}"})
        assert planted.status_code == 401
        assert await socket_close_code(node.url, f"sc_staff={PLANTED}") == 4401

        client.cookies.set("sc_patient", PLANTED)
        first = await verify(client, await new_link(node, clinic), DOB)
        assert first.status_code == 204
        patient_value = first.cookies["sc_patient"]
        assert patient_value != PLANTED
        client.cookies.clear()
        assert (await client.get("/s/chat", headers={
            "cookie": f"sc_patient={patient_value}"})).status_code == 200
        assert (await client.get("/s/chat", headers={
            "cookie": f"sc_patient={PLANTED}"})).status_code == 401
        assert await socket_close_code(node.url, f"sc_patient={PLANTED}") == 4401

        client.cookies.set("sc_patient", patient_value)
        again = await verify(client, await new_link(node, clinic), DOB)
        assert again.cookies["sc_patient"] not in (patient_value, PLANTED)
