"""Two ``securechat serve`` processes (real uvicorn, their own ports) on one PostgreSQL
and one Redis (issue 3): a staff socket on node 1 and a patient socket on node 2 exchange
1,000 messages each way, and keep every message exactly once and in order through a
Redis outage."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from server.notify import Offline
from server.runtime import build_services
from tests.conftest import ORIGIN, Clinic, PrivateRedis, make_clinic, settings_for_tests
from tests.realtime.cluster_client import Peer, check_consistent, check_stream
from tests.realtime.cluster_nodes import (
    ServeProcess,
    login_cookie,
    node_env,
    poll,
    readiness,
    serve_processes,
)
from tests.realtime.wsclient import patient_cookie

EACH_WAY = 1000
IN_FLIGHT = 100  # unacknowledged sends per socket (well inside the outbox)
RAISED_LIMITS = {"ws_rate_per_second": "5000", "ws_rate_burst": "5000"}


class Seeded:
    def __init__(self, clinic: Clinic, patient_cookie: str) -> None:
        self.clinic = clinic
        self.patient_cookie = patient_cookie


async def seed(database_url: str, master_key: bytes) -> Seeded:
    """A clinic made through the services on the nodes' database, and a patient session."""
    services = build_services(settings_for_tests(database_url=database_url,
                                                 allowed_origins=[ORIGIN]), master_key,
                              notifier=Offline())
    try:
        clinic = await make_clinic(services)
        return Seeded(clinic, await patient_cookie(services, clinic))
    finally:
        await services.db.close()


async def open_peers(seeded: Seeded, staff_node: ServeProcess, patient_node: ServeProcess
                     ) -> tuple[Peer, Peer]:
    """Staff signs in over HTTP on node 1 and follows the thread there; the patient
    follows it on node 2."""
    clinic = seeded.clinic
    cookie = await login_cookie(staff_node.url, clinic.staff_email)
    staff = Peer("staff", staff_node.url, cookie, clinic.conversation_id, in_flight=IN_FLIGHT)
    patient = Peer("patient", patient_node.url, seeded.patient_cookie, clinic.conversation_id,
                   in_flight=IN_FLIGHT)
    await asyncio.gather(staff.open(), patient.open())
    return staff, patient


@pytest.fixture
async def closing() -> AsyncIterator[list[Peer]]:
    """Peers to close at the end, whatever happens."""
    peers: list[Peer] = []
    yield peers
    await asyncio.gather(*(peer.close() for peer in peers))


async def broker_state(node: ServeProcess) -> tuple[int, dict]:
    return await readiness(node.url)


@pytest.mark.slow
async def test_two_processes_exchange_a_thousand_messages_each_way(
        postgresql_url: str, redis_url: str, master_key: bytes, closing: list[Peer],
        capsys: pytest.CaptureFixture[str]) -> None:
    """Staff (node 1) and patient (node 2) each send 1,000: both get seq 1..2000 once, in order."""
    seeded = await seed(postgresql_url, master_key)
    env = node_env(database_url=postgresql_url, redis_url=redis_url, master_key=master_key,
                   **RAISED_LIMITS)
    async with serve_processes(("node1", env), ("node2", env)) as (node1, node2):
        staff, patient = await open_peers(seeded, node1, node2)
        closing.extend((staff, patient))
        started = time.perf_counter()
        await asyncio.gather(staff.send_many(range(EACH_WAY)),
                             patient.send_many(range(EACH_WAY)))
        await asyncio.gather(*(peer.wait_acked(EACH_WAY, 60) for peer in (staff, patient)),
                             *(peer.wait_messages(2 * EACH_WAY, 60)
                               for peer in (staff, patient)))
        elapsed = time.perf_counter() - started
        await asyncio.gather(staff.close(), patient.close())
    with capsys.disabled():
        print(f"\n2 nodes, 2x{EACH_WAY} messages: {elapsed:.2f} s, "
              f"{2 * EACH_WAY / elapsed:.0f} messages/s sent "
              f"({4 * EACH_WAY / elapsed:.0f} message frames/s delivered)")
    for peer in (staff, patient):
        check_stream(peer, 2 * EACH_WAY)
        assert len(peer.acks) == EACH_WAY and peer.errors == []
        assert peer.closes == [] and peer.sockets == 1, peer.closes
    check_consistent([staff, patient], 2 * EACH_WAY)


@pytest.mark.slow
async def test_two_processes_keep_every_message_through_a_redis_outage(
        postgresql_url: str, private_redis: PrivateRedis, master_key: bytes,
        closing: list[Peer], capsys: pytest.CaptureFixture[str]) -> None:
    """Redis dies mid-run: sends are acked, /readyz names the broker, nothing is lost or doubled."""
    seeded = await seed(postgresql_url, master_key)
    env = node_env(database_url=postgresql_url, redis_url=private_redis.url,
                   master_key=master_key, sync_interval_seconds="1", **RAISED_LIMITS)
    async with serve_processes(("node1", env), ("node2", env)) as (node1, node2):
        nodes = (node1, node2)
        staff, patient = await open_peers(seeded, node1, node2)
        peers = (staff, patient)
        closing.extend(peers)
        started = time.perf_counter()

        # 1. Both sides start sending 800; Redis is killed once 500 each are acked.
        senders = asyncio.gather(*(peer.send_many(range(800)) for peer in peers))
        await asyncio.gather(*(peer.wait_until(lambda p=peer: len(p.acks) >= 500, 30)
                               for peer in peers))
        await asyncio.to_thread(private_redis.kill)
        killed_at = max(len(peer.acks) for peer in peers)

        # 2. Both nodes report it: 503 naming the broker (the store is fine).
        for node in nodes:
            await poll(lambda node=node: _unready(node), 15, f"{node.name} 503")
            status, body = await broker_state(node)
            assert status == 503
            assert body["checks"] == {"store": "ok", "broker": "unavailable"}

        # 3. Sends go on and are acked from the store while Redis is down.
        await senders
        await asyncio.gather(*(peer.send_many(range(800, 900)) for peer in peers))
        await asyncio.gather(*(peer.wait_acked(900, 30) for peer in peers))
        # ... and reach the other node by the position sync alone.
        await asyncio.gather(*(peer.wait_messages(1800, 30) for peer in peers))
        for node in nodes:
            assert (await broker_state(node))[0] == 503  # Redis is still down

        # 4. Redis returns: both nodes become ready; the rest flows through it again.
        await asyncio.to_thread(private_redis.start)
        for node in nodes:
            await poll(lambda node=node: _ready(node), 20, f"{node.name} ready again")
        await asyncio.gather(*(peer.send_many(range(900, EACH_WAY)) for peer in peers))
        await asyncio.gather(*(peer.wait_acked(EACH_WAY, 30) for peer in peers),
                             *(peer.wait_messages(2 * EACH_WAY, 30) for peer in peers))
        elapsed = time.perf_counter() - started
        await asyncio.gather(staff.close(), patient.close())
        logs = {node.name: "\n".join(node.lines) for node in nodes}
    with capsys.disabled():
        print(f"\n2 nodes, 2x{EACH_WAY} messages through a Redis outage (killed after "
              f"~{killed_at} acks per side): {elapsed:.2f} s; sockets opened: staff "
              f"{staff.sockets}, patient {patient.sockets}")
    for name, log in logs.items():
        assert "redis link lost" in log and "redis link up" in log, name
    for peer in peers:
        check_stream(peer, 2 * EACH_WAY)
        assert len(peer.acks) == EACH_WAY and peer.errors == []
    check_consistent(list(peers), 2 * EACH_WAY)


async def _unready(node: ServeProcess) -> bool:
    return (await broker_state(node))[0] == 503


async def _ready(node: ServeProcess) -> bool:
    return (await broker_state(node))[0] == 200
