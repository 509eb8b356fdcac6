"""SIGTERM to a real ``securechat serve`` process while its clients send (issue 8): it
stops accepting, closes every socket with 1012, finishes the request in progress, and
exits 0 within the grace period; every acknowledged send is in the store, nothing is
stored twice or out of nowhere, and no SMS is left half-sent (``sending``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import pytest
import websockets
from sqlalchemy import select

from server.notify import Offline
from server.runtime import build_services
from server.store.tables import sms_outbox
from tests.conftest import ORIGIN, settings_for_tests
from tests.ops.support import seeded_node
from tests.realtime.cluster_nodes import login_cookie
from tests.realtime.wsclient import WSClient, ws_url

# docker-compose.yml's stop_grace_period: the node must be gone well inside it.
GRACE_SECONDS = 40.0
IN_FLIGHT = 20  # unacknowledged sends per socket
BEFORE_SIGTERM = 40  # acks each socket has before the signal


class Sender:
    """A socket that sends (pipelined) until the server closes it, recording its acks."""

    def __init__(self, name: str, client: WSClient, conversation_id: str, secure: bool):
        self.name = name
        self.client = client
        self.conversation_id = conversation_id
        self.secure = secure
        self.sent: list[str] = []

    def acked(self) -> dict[str, dict]:
        return {f["client_msg_id"]: f for f in self.client.of_type("ack")}

    async def run(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed, AssertionError):
            for i in range(100_000):
                if i >= IN_FLIGHT:  # AssertionError: closed before the ack came
                    oldest = self.sent[i - IN_FLIGHT]
                    await self.client.wait_for(
                        lambda f, oldest=oldest: f["type"] in ("ack", "error")
                        and f.get("client_msg_id") == oldest, 20)
                client_msg_id = f"{self.name}-{i}"
                self.sent.append(client_msg_id)
                await self.client.ws.send(json.dumps({
                    "type": "send", "conversation_id": self.conversation_id,
                    "client_msg_id": client_msg_id, "body": f"drain {i}",
                    "secure": self.secure}))


async def open_sender(name: str, url: str, cookie: str, conversation_id: str,
                      secure: bool) -> Sender:
    ws = await websockets.connect(ws_url(url), origin=ORIGIN,
                                  additional_headers={"cookie": cookie}, max_queue=None)
    client = WSClient(ws)
    await client.wait_type("ready", 10)
    return Sender(name, client, conversation_id, secure)


LOGIN = json.dumps({"email": "nobody@clinic.test", "password": "not the password"}).encode()


async def start_slow_request(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A login whose body is only half sent: a request in progress at SIGTERM."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /api/auth/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % len(LOGIN) + LOGIN[:10])
    await writer.drain()
    return reader, writer


async def stored(database_url: str, master_key: bytes, account_id: str,
                 conversation_id: str) -> tuple[list[str], list[str]]:
    """The conversation's stored client_msg_ids in seq order, and its SMS rows' states."""
    services = build_services(settings_for_tests(database_url=database_url,
                                                 allowed_origins=[ORIGIN]), master_key,
                              notifier=Offline())
    try:
        ids: list[str] = []
        while page := await services.streams.replay(account_id, conversation_id,
                                                    len(ids), 500):
            ids += [message.client_msg_id or "" for message in page]
        async with services.db.read() as conn:
            states = list((await conn.execute(select(sms_outbox.c.status).where(
                sms_outbox.c.conversation_id == conversation_id))).scalars())
        return ids, states
    finally:
        await services.db.close()


@pytest.mark.slow
async def test_sigterm_drains_while_clients_send(
        postgresql_url: str, redis_url: str, master_key: bytes) -> None:
    async with seeded_node(postgresql_url, redis_url, master_key) as (node, seeded):
        clinic = seeded.clinic
        staff = await open_sender("staff", node.url,
                                  await login_cookie(node.url, clinic.staff_email),
                                  clinic.conversation_id, secure=False)  # SMS: the outbox
        patient = await open_sender("patient", node.url, seeded.patient_cookie,
                                    clinic.conversation_id, secure=True)
        senders = (staff, patient)
        running = [asyncio.create_task(s.run()) for s in senders]
        for s in senders:
            await s.client.wait_for(lambda f, s=s: len(s.acked()) >= BEFORE_SIGTERM, 30)
        slow = await start_slow_request(node.port)
        log_mark = len(node.lines)

        assert node.process is not None
        signalled = time.monotonic()
        node.process.terminate()
        closes = [await s.client.close_code(20) for s in senders]
        assert [code for code, _ in closes] == [1012, 1012], closes
        # The sockets are closed, the login still runs: the node lives, and refuses more.
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", node.port)
        reader, writer = slow
        writer.write(LOGIN[10:])
        await writer.drain()
        async with asyncio.timeout(20):
            answer = await reader.readline()
        writer.close()
        assert answer.startswith(b"HTTP/1.1 401"), answer  # answered after the refusal
        async with asyncio.timeout(GRACE_SECONDS):
            exit_code = await node.process.wait()
        took = time.monotonic() - signalled
        await asyncio.gather(*running)
        await asyncio.gather(*(s.client.aclose() for s in senders))
        # Read before the node's scratch database is dropped with the block.
        ids, sms_states = await stored(node.env["SECURECHAT_DATABASE_URL"], master_key,
                                       clinic.account_id, clinic.conversation_id)

    assert exit_code == 0, "\n".join(node.lines[-20:])
    assert took < GRACE_SECONDS
    shutdown_log = [json.loads(line) for line in node.lines[log_mark:] if line.strip()]
    assert not [e for e in shutdown_log if e["level"] in ("error", "critical")], shutdown_log

    sent = {i for s in senders for i in s.sent}
    acked = {i: ack for s in senders for i, ack in s.acked().items()}
    assert len(ids) == len(set(ids)), "a send was stored twice"
    assert set(ids) <= sent, "stored what no one sent"
    lost = set(acked) - set(ids)
    assert not lost, f"acknowledged but not stored: {sorted(lost)[:10]}"
    for client_msg_id, ack in acked.items():  # and at the position the ack said
        assert ids[ack["seq"] - 1] == client_msg_id
    assert len(acked) >= 2 * BEFORE_SIGTERM
    assert sms_states and "sending" not in sms_states, sms_states
