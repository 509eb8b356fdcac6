"""Fault injection (issue 8): two real nodes, 200 conversations, ~5,100 messages at
250/s from staff and patient sockets on both nodes; one fault mid-stream; recovery; then
the checker (nothing lost, duplicated or out of order; every SMS sent exactly once).
Results and what each fault means: docs/reliability.md."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator

import pytest

from loadtest.bench_nodes import cpu_seconds
from loadtest.nodes import terminate_backends
from server.services.sms_worker import CLAIM_BATCH
from tests.conftest import PrivateRedis
from tests.faults.checker import Verdict, check
from tests.faults.client import FaultClient
from tests.faults.conftest import Template
from tests.faults.harness import FaultRun, fault_run
from tests.sms.support import HANG, OK, SERVER_ERROR

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

PROVIDER_OUTAGE_SECONDS = 30.0
REDIS_PAUSE_SECONDS = 10.0
DROP_EVERY_SECONDS = 2.0


@pytest.fixture
async def run(request: pytest.FixtureRequest, fault_template: Template, master_key: bytes,
              private_redis: PrivateRedis) -> AsyncIterator[FaultRun]:
    """``request.param``: the fault's name (each test passes it through ``fault``)."""
    name = request.param
    async with fault_run(name, fault_template.name, fault_template.world, master_key,
                         private_redis) as started:
        yield started


def fault(name: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("run", [name], indirect=True)


def passed(verdict: Verdict) -> None:
    """Nothing lost, doubled or out of order; every SMS sent once (or, only where a node
    was SIGKILLed, possibly twice: see ``check``)."""
    assert verdict.problems == [], verdict.problems
    assert (verdict.lost, verdict.duplicated, verdict.gaps) == (0, 0, 0), verdict.line()
    # docs/protocol.md: a socket gets each message once, and a resume replays only
    # seq > after_seq; so a re-delivered frame breaks the contract even if a client
    # that drops seq <= last would not show it.
    assert verdict.raw_duplicate_frames == 0, verdict.line()
    assert verdict.sms_expected > 1_000, verdict.line()
    assert verdict.sms_sent_once + verdict.sms_repeated_after_crash == verdict.sms_expected, \
        verdict.line()
    assert verdict.messages >= 5_000 and verdict.conversations == 200, verdict.line()


async def streamed(run: FaultRun, fault, sms_repeat_window=lambda: None) -> Verdict:
    """Stream, let ``fault(run)`` inject (and end) its fault mid-stream, settle, check."""
    stream = asyncio.create_task(run.stream())
    cpu = time.process_time()
    try:
        began = time.monotonic()
        await fault(run)
        await stream
    finally:
        stream.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stream
    await run.settle()
    verdict = await check(run, sms_repeat_window=sms_repeat_window())
    print(f"  {run.name}: stream+fault {time.monotonic() - began:.1f} s; after the fault "
          f"ended: nodes ready {run.ready_after:.1f} s, every send acked and delivered "
          f"{run.drained_after:.1f} s, every SMS sent {run.sms_done_after:.1f} s; CPU s: "
          f"test process {time.process_time() - cpu:.0f}, nodes "
          f"{[round(cpu_seconds(node.pid)) for node in run.nodes]}")
    for node in run.nodes:
        print(f"  {node.name} error lines: {len(node.errors())}", *node.errors()[:5], sep="\n    ")
    return verdict


@fault("redis-kill")
async def test_redis_killed_and_restarted(run: FaultRun) -> None:
    async def fault(run: FaultRun) -> None:
        await run.reached(0.3)
        await asyncio.to_thread(run.redis.kill)
        await run.reached(0.6)
        await asyncio.to_thread(run.redis.start)
        run.fault_over()

    passed(await streamed(run, fault))


@fault("redis-pause")
async def test_redis_paused_ten_seconds(run: FaultRun) -> None:
    async def fault(run: FaultRun) -> None:
        await run.reached(0.3)
        run.redis.pause()
        await asyncio.sleep(REDIS_PAUSE_SECONDS)  # the fault's length, not a wait on state
        run.redis.resume()
        run.fault_over()

    passed(await streamed(run, fault))


@fault("node-kill")
async def test_node_killed_clients_resume_on_the_other(run: FaultRun) -> None:
    """node1 is SIGKILLed; its clients reconnect to node2 and resume; node1 is started
    again (same port) while the stream goes on, and serves whoever comes next."""
    on_node1 = clients_on(run, 0)
    window: list[range] = []

    async def fault(run: FaultRun) -> None:
        await run.reached(0.3)
        await run.nodes[0].kill()
        taken = len(run.twilio.requests)
        # What node1 may have had in flight: one claim batch of each node's worker.
        window.append(range(max(1, taken - 2 * CLAIM_BATCH), taken + 1))
        await run.wait(lambda: moved(on_node1), 60, "node1's clients moved")
        await run.reached(0.5)
        await run.nodes[0].start()
        run.fault_over()

    verdict = await streamed(run, fault, sms_repeat_window=lambda: window[0])
    passed(verdict)
    assert verdict.closes[1006] >= len(on_node1), verdict.line()


@fault("node-term")
async def test_node_stopped_clients_get_1012_and_resume(run: FaultRun) -> None:
    """node1 gets SIGTERM (graceful): its clients get 1012, resume on node2; node1 is
    started again while the stream goes on."""
    on_node1 = clients_on(run, 0)

    async def fault(run: FaultRun) -> None:
        await run.reached(0.3)
        await run.nodes[0].stop()
        await run.wait(lambda: moved(on_node1), 60, "node1's clients moved")
        await run.reached(0.5)
        await run.nodes[0].start()
        run.fault_over()

    verdict = await streamed(run, fault)
    passed(verdict)
    assert verdict.closes[1012] >= len(on_node1), verdict.line()
    assert all(1012 in c.closes for c in on_node1)


@fault("pg-terminate")
async def test_postgres_connections_dropped_twice(run: FaultRun) -> None:
    ended: list[int] = []

    async def fault(run: FaultRun) -> None:
        for share in (0.3, 0.5):
            await run.reached(share)
            ended.append(await terminate_backends(run.database_url))
        run.fault_over()

    passed(await streamed(run, fault))
    assert all(n > 0 for n in ended), ended  # the nodes' connections were there to end


@fault("twilio-outage")
async def test_twilio_errors_and_timeouts_for_thirty_seconds(run: FaultRun) -> None:
    """For 30 s the fake Twilio answers every other request 500 and holds the others
    past the node's 10 s HTTP timeout without taking them (the "never reached the
    provider" case: such a request is not a sent SMS); then it recovers."""
    def half(answer: object):
        return lambda r: r.number % 2 == answer

    async def fault(run: FaultRun) -> None:
        await run.reached(0.2)
        outage_from = len(run.twilio.requests)
        run.twilio.always(SERVER_ERROR, match=half(0))
        run.twilio.always(HANG, match=half(1))
        await asyncio.sleep(PROVIDER_OUTAGE_SECONDS)  # the fault's length
        run.twilio.clear_scripts()
        run.fault_over()
        failed = [r for r in run.twilio.requests[outage_from:] if r.status != OK]
        assert len(failed) > 20, len(failed)  # the outage was met, by both kinds

    passed(await streamed(run, fault))


@fault("client-drops")
async def test_clients_drop_their_sockets_every_few_seconds(run: FaultRun) -> None:
    """Every 2 s, 10 clients (staff and patients) lose their socket abruptly (TCP abort,
    no close frame) while they send and receive."""
    picker = random.Random(7)
    dropped = 0

    async def fault(run: FaultRun) -> None:
        nonlocal dropped
        await run.reached(0.1)
        while run.started < 0.9 * len(run.sends):
            for client in picker.sample(run.clients, 10):
                dropped += client.drop()
            await asyncio.sleep(DROP_EVERY_SECONDS)  # the drop cadence, not a wait on state
        run.fault_over()

    verdict = await streamed(run, fault)
    passed(verdict)
    assert dropped >= 50 and verdict.closes[1006] >= dropped * 0.9, (dropped, verdict.line())


def clients_on(run: FaultRun, index: int) -> list[FaultClient]:
    """The clients whose socket is on that node now."""
    return [c for c in run.clients if c.live and c.url == run.nodes[index].url]


def moved(clients: list[FaultClient]) -> bool:
    """Each has a new socket (on another node), subscribed again."""
    return all(c.live and c.sockets >= 2 for c in clients)
