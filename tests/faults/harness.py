"""One fault run: two ``securechat serve`` nodes on a private PostgreSQL database (a copy
of the seeded template), a private ``redis-server`` and the fake Twilio; a client per
staff account and per patient, spread over both nodes; an open-loop stream of sends.

A test starts :meth:`FaultRun.stream`, waits for :meth:`FaultRun.reached` to inject its
fault mid-stream, ends it with :meth:`FaultRun.fault_over`, then calls
:meth:`FaultRun.settle` and the checker.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import asyncpg

from loadtest.nodes import (
    ORIGIN,
    ServeProcess,
    node_env,
    poll,
    private_postgres,
    readiness,
)
from tests.conftest import CHEAP_HASHING, PG_ADMIN_URL, PrivateRedis
from tests.faults.client import FaultClient, Send
from tests.faults.seeding import PER_STAFF_SOCKET, World
from tests.sms.support import ACCOUNT_SID, AUTH_TOKEN, TWILIO_FROM, FakeTwilio

MESSAGES = 5_100
RATE = 250.0  # sends per second, open loop: the fault lands mid-stream whatever happens
KINDS = ("staff-secure", "staff-sms", "patient-secure")
NODE_SETTINGS = {
    **CHEAP_HASHING, "sms_provider": "twilio", "twilio_account_sid": ACCOUNT_SID,
    "twilio_auth_token": AUTH_TOKEN, "twilio_from": TWILIO_FROM,
    # Retries start fast and may go on for long: a 30 s provider outage is survived
    # (0.1 s doubling, full jitter: ~9 attempts in 30 s; 40 is far from running out).
    "sms_retry_base_seconds": "0.1", "sms_max_attempts": "40",
    "sync_interval_seconds": "1",  # repairs after a broker fault within a second
    "ws_rate_per_second": "200", "ws_rate_burst": "400",  # a staff socket sends ~8/s
    "ws_max_per_address": "1000",  # every client comes from 127.0.0.1
    "session_idle_seconds": "3600",  # the template's sessions outlive the whole suite
    "log_level": "WARNING",
}


@dataclass
class FaultRun:
    name: str
    database_url: str
    redis: PrivateRedis
    twilio: FakeTwilio
    nodes: list[ServeProcess]
    world: World
    clients: list[FaultClient] = field(default_factory=list)
    sends: list[Send] = field(default_factory=list)  # every send started, in order
    started: int = 0
    fault_ended_at: float | None = None
    ready_after: float | None = None  # seconds from the fault's end to both nodes ready
    drained_after: float | None = None  # ... to every send acked and every timeline whole
    sms_done_after: float | None = None  # ... to no SMS left to send
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _staff: dict[str, FaultClient] = field(default_factory=dict)  # by conversation
    _patients: dict[str, FaultClient] = field(default_factory=dict)

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    # --- clients --------------------------------------------------------------------------

    async def connect(self) -> None:
        """Staff sockets following ``PER_STAFF_SOCKET`` threads each, a patient socket
        per thread; staff on alternate nodes, each patient on the other node from its
        staff (so every message crosses the broker). Waits until all are subscribed."""
        n = 0
        for account_id, cookies in sorted(self.world.staff_cookies.items()):
            threads = self.world.threads_of(account_id)
            for k, cookie in enumerate(cookies):
                mine = threads[k * PER_STAFF_SOCKET:(k + 1) * PER_STAFF_SOCKET]
                staff = FaultClient(f"staff{n}", cookie, ORIGIN,
                                    [t.conversation_id for t in mine], self.urls, n,
                                    self.changed, sees_sms=True)
                for j, thread in enumerate(mine):
                    self._staff[thread.conversation_id] = staff
                    self._patients[thread.conversation_id] = FaultClient(
                        f"patient{n}.{j}", thread.patient_cookie, ORIGIN,
                        [thread.conversation_id], self.urls, n + 1, self.changed,
                        sees_sms=False)
                n += 1
        self.clients = [*dict.fromkeys(self._staff.values()), *self._patients.values()]
        for client in self.clients:
            client.start()
        await self.wait(lambda: all(c.live for c in self.clients), 60, "clients subscribed")

    def staff_for(self, conversation_id: str) -> FaultClient:
        return self._staff[conversation_id]

    def patient_for(self, conversation_id: str) -> FaultClient:
        return self._patients[conversation_id]

    async def wait(self, condition, timeout: float, what: str) -> None:
        """Until ``condition()`` holds, re-checked whenever a client changed."""
        try:
            async with asyncio.timeout(timeout), self.changed:
                await self.changed.wait_for(condition)
        except TimeoutError:
            raise AssertionError(f"{self.name}: {what}: not within {timeout}s; "
                                 f"{self._state()}") from None

    def _state(self) -> str:
        pending = sum(len(c.pending) for c in self.clients)
        live = sum(c.live for c in self.clients)
        return (f"started {self.started}/{len(self.sends)}, pending {pending}, "
                f"live clients {live}/{len(self.clients)}")

    # --- the stream -----------------------------------------------------------------------

    def plan(self, total: int = MESSAGES) -> None:
        """Every send of the run, decided up front: a thread and a kind, in turn."""
        threads = list(self.world.threads)
        random.Random(self.name).shuffle(threads)
        tag = secrets.token_hex(3)
        for k in range(total):
            thread = threads[k % len(threads)]
            kind = KINDS[k % len(KINDS)]
            # No PHI: a counter and a run tag are the whole body.
            self.sends.append(Send(f"{kind}.{k}", thread.conversation_id,
                                   f"{kind} {k} run {tag}", kind != "staff-sms"))

    def sender(self, send: Send) -> FaultClient:
        if send.client_msg_id.startswith("patient"):
            return self.patient_for(send.conversation_id)
        return self.staff_for(send.conversation_id)

    async def stream(self, rate: float = RATE) -> None:
        """Start the planned sends at ``rate`` per second (open loop: the schedule does
        not wait for acks, as independent users do not)."""
        begin = time.monotonic()
        senders = [self.sender(send) for send in self.sends]
        while self.started < len(self.sends):
            due = min(len(self.sends), int((time.monotonic() - begin) * rate) + 1)
            for k in range(self.started, due):
                await senders[k].submit(self.sends[k])
            self.started = due
            async with self.changed:
                self.changed.notify_all()
            await asyncio.sleep(0.02)  # the pacing tick of the schedule, not a wait

    async def reached(self, fraction: float, timeout: float = 120) -> None:
        """Until that share of the stream has been started."""
        count = int(fraction * len(self.sends))
        await self.wait(lambda: self.started >= count, timeout, f"{fraction:.0%} started")

    def fault_over(self) -> None:
        self.fault_ended_at = time.monotonic()

    # --- recovery -------------------------------------------------------------------------

    async def settle(self, sms_timeout: float = 120) -> None:
        """Until everything recovered: both nodes ready, every send acked, every client's
        timelines at the store's positions, and no SMS left to send."""
        assert self.fault_ended_at is not None, "the test never ended its fault"
        for node in self.nodes:
            await poll(lambda node=node: _ready(node), 60, f"{node.name} ready again")
        self.ready_after = time.monotonic() - self.fault_ended_at
        await self.wait(lambda: self.started == len(self.sends)
                        and not any(c.pending for c in self.clients), 120, "all acked")
        positions = await self.positions()
        try:
            await self.wait(lambda: all(c.last_seq(conv) >= positions.get((conv, c.sees_sms), 0)
                                        for c in self.clients for conv in c.timelines),
                            60, "timelines caught up")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; behind: {self.behind(positions)[:10]}") from None
        self.drained_after = time.monotonic() - self.fault_ended_at
        await poll(self._outbox_done, sms_timeout, "SMS outbox empty", every=0.5)
        self.sms_done_after = time.monotonic() - self.fault_ended_at

    def behind(self, positions: dict[tuple[str, bool], int]
               ) -> list[tuple[str, str, int, int]]:
        """(client, conversation, its last seq, the store's) wherever it lags."""
        return [(c.name, conv, c.last_seq(conv), positions.get((conv, c.sees_sms), 0))
                for c in self.clients for conv in c.timelines
                if c.last_seq(conv) < positions.get((conv, c.sees_sms), 0)]

    async def query(self, statement: str, *args: object) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(self.database_url, timeout=10)
        try:
            return await conn.fetch(statement, *args)
        finally:
            await conn.close()

    async def positions(self) -> dict[tuple[str, bool], int]:
        """Each conversation's last seq, as staff see it (``True``: every message) and as
        its patient does (``False``: no SMS-channel ones)."""
        rows = await self.query(
            "SELECT conversation_id, max(seq) AS everything, "
            "max(seq) FILTER (WHERE channel <> 'sms') AS secure "
            "FROM messages GROUP BY conversation_id")
        found = {}
        for row in rows:
            found[(row["conversation_id"], True)] = row["everything"]
            found[(row["conversation_id"], False)] = row["secure"] or 0
        return found

    async def _outbox_done(self) -> bool:
        rows = await self.query("SELECT count(*) AS n FROM sms_outbox "
                                "WHERE status IN ('pending', 'sending')")
        return rows[0]["n"] == 0

    async def close(self) -> None:
        await asyncio.gather(*(client.stop() for client in self.clients))


async def _ready(node: ServeProcess) -> bool:
    with contextlib.suppress(Exception):
        return (await readiness(node.url))[0] == 200
    return False


@contextlib.asynccontextmanager
async def fault_run(name: str, template: str, world: World, master_key: bytes,
                    redis: PrivateRedis) -> AsyncIterator[FaultRun]:
    """A healthy cluster with its clients connected and its stream planned."""
    async with FakeTwilio.running() as twilio, \
            private_postgres(PG_ADMIN_URL, prefix="securechat_fault",
                             template=template) as url:
        env = node_env(database_url=url, master_key=master_key, redis_url=redis.url,
                       settings=NODE_SETTINGS, twilio_api_base=twilio.url)
        nodes = [ServeProcess("node1", env), ServeProcess("node2", env)]
        run = FaultRun(name, url, redis, twilio, nodes, world)
        try:
            await asyncio.gather(*(node.start() for node in nodes))
            await run.connect()
            run.plan()
            yield run
        finally:
            await run.close()
            await asyncio.gather(*(node.stop() for node in nodes))
