"""``/metrics`` of a real ``securechat serve`` process after real traffic (issue 8): every
metric docs/operations.md documents is exported, the traffic shows in the numbers, and no
label value is an id, a phone number or a message body."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from server.brokers.memory import MemoryBroker, MemoryBus
from server.clock import FakeClock
from server.realtime.connection import Connection
from server.realtime.limits import TokenBucket
from server.realtime.outbox import Outbox
from tests.conftest import make_clinic, repo_root
from tests.ops.support import Samples, scrape, seeded_node, total
from tests.realtime.cluster_client import Peer
from tests.realtime.cluster_nodes import Node, in_process_node, login_cookie, poll
from tests.realtime.test_cluster import cluster_settings

SECURE_EACH = 20  # secure messages each side sends
SMS = 5  # messages staff sends by SMS
_ID_LIKE = re.compile(r"[0-9a-f]{12,}|[0-9a-f]{8}-[0-9a-f]{4}-", re.I)
_PHONE_LIKE = re.compile(r"\+?\d[\d ().-]{6,}")


def documented_metrics() -> set[str]:
    """The metric names docs/operations.md lists (its monitoring table)."""
    text = (Path(repo_root()) / "docs" / "operations.md").read_text()
    return set(re.findall(r"`(securechat_[a-z_]+)", text))


def family(name: str) -> str:
    """A Prometheus family name as the parser reports it (counters lose ``_total``)."""
    return name.removesuffix("_total")


async def test_metrics_reflect_traffic_and_hold_no_phi(
        postgresql_url: str, redis_url: str, master_key: bytes) -> None:
    """Two sockets exchange 40 secure messages and staff sends 5 SMS: the counters move."""
    async with seeded_node(postgresql_url, redis_url, master_key) as (node, seeded):
        clinic = seeded.clinic
        _, before = await scrape(node.url)
        staff = Peer("staff", node.url, await login_cookie(node.url, clinic.staff_email),
                     clinic.conversation_id)
        patient = Peer("patient", node.url, seeded.patient_cookie, clinic.conversation_id)
        sms = Peer("staff-sms", node.url, staff.cookie, clinic.conversation_id, secure=False)
        peers = (staff, patient, sms)
        await asyncio.gather(*(peer.open() for peer in peers))
        try:
            await asyncio.gather(staff.send_many(range(SECURE_EACH)),
                                 patient.send_many(range(SECURE_EACH)),
                                 sms.send_many(range(SMS)))
            sent = 2 * SECURE_EACH + SMS
            await asyncio.gather(staff.wait_acked(SECURE_EACH, 30),
                                 patient.wait_acked(SECURE_EACH, 30),
                                 sms.wait_acked(SMS, 30),
                                 staff.wait_messages(sent, 30),
                                 patient.wait_messages(2 * SECURE_EACH, 30))

            async def sms_went() -> bool:
                return total((await scrape(node.url))[1], "securechat_sms_results_total",
                             result="sent") >= SMS
            await poll(sms_went, 30, "the simulator sent the SMS")
            names, after = await scrape(node.url)
            received = sum(sum(peer.counts.values()) for peer in peers)
        finally:
            await asyncio.gather(*(peer.close() for peer in peers))

    missing = {name for name in documented_metrics() if family(name) not in names}
    assert not missing, f"documented but not exported: {sorted(missing)}"

    def delta(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert total(after, "securechat_ws_connections") == len(peers)
    assert delta("securechat_ws_frames_in_total", type="send", outcome="ok") == sent
    # Every frame the clients read was handed to a writer (some, e.g. presence, may
    # still be on their way when the scrape is taken).
    assert delta("securechat_ws_frames_out_total") >= received > sent
    assert delta("securechat_messages_stored_total", channel="secure") == 2 * SECURE_EACH
    assert delta("securechat_messages_stored_total", channel="sms") == SMS
    assert delta("securechat_fanout_seconds_count") >= sent
    assert delta("securechat_sms_results_total", result="sent") == SMS
    assert total(after, "securechat_sms_outbox_pending") == 0
    assert total(after, "securechat_broker_up") == 1
    assert delta("securechat_http_requests_total", route="login", status="2xx") == 1

    labels = {value for (_, have) in after for _, value in have}
    secrets = {clinic.account_id, clinic.conversation_id, clinic.patient_id,
               clinic.staff_id, clinic.staff_email}
    for value in labels:
        assert value not in secrets and not _ID_LIKE.search(value), value
        assert not _PHONE_LIKE.fullmatch(value), value
        assert "says" not in value, value  # the bodies: "<peer> says <n>"


async def test_outbox_gauge_frames_out_and_broker_reconnects(
        sqlite_url: str, master_key: bytes, clock: FakeClock) -> None:
    """Frames queued for a socket show in ``securechat_ws_outbox_frames`` at scrape time,
    and move to ``securechat_ws_frames_out`` once its writer takes them; a broker that
    goes down and comes back counts one reconnect (its first start counts none)."""
    settings = cluster_settings(sqlite_url)
    broker = MemoryBroker(MemoryBus())
    async with in_process_node(settings, master_key, clock, broker) as node:
        assert total(scraped(node), "securechat_broker_reconnects_total") == 0
        broker.set_down(True)
        assert total(scraped(node), "securechat_broker_up") == 0
        broker.set_down(False)
        assert total(scraped(node), "securechat_broker_reconnects_total") == 1

        clinic = await make_clinic(node.services)
        conn = Connection("patient", clinic.account_id, clinic.patient_id, "",
                          "session-ops", Outbox(100, 1 << 20),
                          TokenBucket(1.0, 1, time.monotonic()),
                          conversation_id=clinic.conversation_id)
        await node.realtime.hub.attach(conn)
        try:
            before = scraped(node)
            for i in range(7):
                conn.push(f'{{"type":"notice","n":{i}}}')
            queued = scraped(node)
            assert total(queued, "securechat_ws_outbox_frames") == 7
            assert len(await conn.outbox.take()) == 7  # what the socket's writer does
            taken = scraped(node)
        finally:
            await node.realtime.hub.detach(conn)
    assert total(taken, "securechat_ws_outbox_frames") == 0
    assert total(taken, "securechat_ws_frames_out_total") - \
        total(before, "securechat_ws_frames_out_total") == 7


def scraped(node: Node) -> Samples:
    """The in-process node's metrics, rendered as a scrape would."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(
                node.services.metrics.render().decode())
            for s in family.samples}
