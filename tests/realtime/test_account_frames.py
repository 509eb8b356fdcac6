"""Live account state (issue 6): a settings change reaches every staff socket of the
account as an ``account`` frame, on every node, and never a patient's or another
account's socket; ``ready`` carries the state for a console that was offline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from server.brokers.base import Broker
from server.brokers.memory import MemoryBroker, MemoryBus
from server.clock import FakeClock
from server.runtime import Services
from tests.conftest import ORIGIN, Clinic, RunningServer, make_clinic
from tests.realtime.cluster_nodes import Node
from tests.realtime.test_cluster import two_nodes
from tests.realtime.wsclient import WSClient, connect, patient_cookie, staff_cookie

SETTINGS = "/api/account/settings"


async def put_settings(server: RunningServer, clinic: Clinic, **change: object) -> dict:
    async with server.login(clinic.admin_email) as client:
        response = await client.put(SETTINGS, json=change, headers={"origin": ORIGIN})
    assert response.status_code == 200, response.text
    return response.json()


async def ready(ws: WSClient, conversation_id: str) -> dict:
    """The ``ready`` frame (written once the hub has the socket and follows the
    account's channel), then a subscription to the conversation."""
    first = await ws.wait_type("ready")
    await ws.send(type="subscribe", conversation_id=conversation_id, ref="sub")
    await ws.wait_type("subscribed", ref="sub")
    return first


async def test_ready_carries_the_account(server: RunningServer, clinic: Clinic) -> None:
    """Staff ``ready`` holds the account as it is now; the patient's holds none; with
    the portal off a patient session no longer exists (issue 13)."""
    cookie = await patient_cookie(server.services, clinic)
    async with connect(server.url, cookie) as patient:
        assert "account" not in await patient.wait_type("ready")
    name = (await put_settings(server, clinic, portal_active=False))["clinic_name"]
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as staff, \
            connect(server.url, cookie) as patient:
        assert (await staff.wait_type("ready"))["account"] == {
            "portal_active": False, "clinic_name": name}
        assert (await asyncio.wait_for(patient.closed, 5))[0] == 4401


async def test_settings_change_reaches_every_staff_socket(
        server: RunningServer, services: Services, clinic: Clinic) -> None:
    """Both tabs of a nurse and the admin get the new state; the patient's socket and
    another account's staff get nothing. (The portal stays on: turning it off ends the
    patient's session, tests/security/test_secure_link_findings.py.)"""
    other = await make_clinic(services)
    nurse = await staff_cookie(server, clinic.staff_email)
    conversation = clinic.conversation_id
    async with connect(server.url, nurse) as tab1, connect(server.url, nurse) as tab2, \
            connect(server.url, await staff_cookie(server, clinic.admin_email)) as boss, \
            connect(server.url, await patient_cookie(services, clinic)) as patient, \
            connect(server.url, await staff_cookie(server, other.staff_email)) as stranger:
        for ws in (tab1, tab2, boss, patient):
            await ready(ws, conversation)
        await ready(stranger, other.conversation_id)

        portal = (await put_settings(server, clinic, clinic_name="Harbour Clinic")
                  )["portal_active"]
        assert portal is True
        want = {"type": "account", "portal_active": True, "clinic_name": "Harbour Clinic"}
        for ws in (tab1, tab2, boss):
            assert await ws.wait_type("account", timeout=2) == want

        # Barriers: each arrives after anything the hub dispatched for the change.
        await tab1.send(type="typing", conversation_id=conversation)
        await patient.wait_type("typing")
        theirs = await put_settings(server, other, clinic_name="Elsewhere Clinic")
        await stranger.wait_type("account", clinic_name="Elsewhere Clinic", timeout=2)
        assert patient.of_type("account") == []
        assert stranger.of_type("account") == [{
            "type": "account", "portal_active": theirs["portal_active"],
            "clinic_name": "Elsewhere Clinic"}]


@pytest.fixture(params=["memory", "redis"])
async def nodes(request: pytest.FixtureRequest, database_url: str, master_key: bytes,
                clock: FakeClock) -> AsyncIterator[tuple[Node, Node]]:
    """Two nodes on one store, through an in-memory bus or the real Redis."""
    if request.param == "memory":
        bus = MemoryBus()
        brokers: list[Broker] = [MemoryBroker(bus), MemoryBroker(bus)]
    else:
        from server.brokers.redis import RedisBroker
        url = request.getfixturevalue("redis_url")
        brokers = [RedisBroker(url), RedisBroker(url)]
    async with two_nodes(database_url, master_key, clock, brokers) as pair:
        yield pair


async def test_settings_change_crosses_nodes(nodes: tuple[Node, Node]) -> None:
    """A change made through node A reaches staff sockets on node B, and on A."""
    a, b = nodes
    clinic = await make_clinic(a.services)
    async with connect(b.url, await staff_cookie(b, clinic.staff_email)) as on_b, \
            connect(a.url, await staff_cookie(a, clinic.staff_email)) as on_a:
        for ws in (on_a, on_b):
            await ready(ws, clinic.conversation_id)
        async with a.login(clinic.admin_email) as client:
            response = await client.put(SETTINGS, json={"portal_active": False},
                                        headers={"origin": ORIGIN})
            assert response.status_code == 200, response.text
        for ws in (on_a, on_b):
            frame = await ws.wait_type("account", timeout=5)
            assert frame["portal_active"] is False


async def test_refused_change_sends_nothing(server: RunningServer, clinic: Clinic) -> None:
    """A PUT refused (bad value) publishes nothing."""
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as ws:
        await ready(ws, clinic.conversation_id)
        async with server.login(clinic.admin_email) as client:
            bad = await client.put(SETTINGS, json={"portal_active": "no"},
                                   headers={"origin": ORIGIN})
            assert bad.status_code == 422
            await client.put(SETTINGS, json={"clinic_name": "After"},
                             headers={"origin": ORIGIN})
        await ws.wait_type("account", clinic_name="After", timeout=2)
        assert len(ws.of_type("account")) == 1
