"""The benchmark's scenarios: idle sockets, stepped throughput, and a reconnect storm.

Each takes a seeded :class:`World` and running nodes and returns a JSON-able result.
Nothing here decides pass or fail; ``bench.py`` compares the results with the targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from loadtest.bench_idle import SOURCE_IPS, IdleFleet
from loadtest.bench_nodes import CpuMeter, fd_limit, loadavg, open_fds, rss_kib
from loadtest.bench_report import progress
from loadtest.bench_traffic import Follower, StepStats, Traffic, percentile
from loadtest.bench_world import World
from loadtest.nodes import ORIGIN, ServeProcess

# Descriptors the server needs besides its sockets (log pipe, database files, epoll,
# the broker...): the idle scenario stays this far below the server's fd limit.
FD_MARGIN = 64


@dataclass
class Sizes:
    """Every size the scenarios use (``--quick`` scales them all down)."""

    idle_sockets: int = 20_000
    idle_hold: float = 30.0
    conversations: int = 1_000
    per_account: int = 10
    rates: tuple[int, ...] = (100, 250, 500, 1_000, 2_500, 5_000, 10_000, 15_000)
    step_seconds: float = 10.0
    drain_seconds: float = 10.0
    stop_p99_ms: float = 2_000.0
    storm_sockets: int = 10_000
    storm_deadline: float = 300.0
    connect_concurrency: int = 500


async def bounded(limit: int, jobs: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(run(job) for job in jobs)))


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


# --- idle ----------------------------------------------------------------------------------

async def idle(world: World, node: ServeProcess, sizes: Sizes) -> dict[str, Any]:
    """Hold authenticated sockets (each got its ``ready``; none subscribes) and read the
    server's memory before and after."""
    traffic = Traffic(ORIGIN)
    first = world.conversations[0]
    for cookie, role in ((first.staff_cookie, "staff"), (first.patient_cookie, "patient")):
        warm = Follower(role, first.id, cookie, node.ws_url)
        (await traffic.open(warm)).close()  # imports and caches warmed before the baseline
    await asyncio.sleep(1.0)
    rss_before, fds = rss_kib(node.pid), open_fds(node.pid)
    limit = fd_limit(node.pid)
    wanted = sizes.idle_sockets
    count = min(wanted, limit - fds - FD_MARGIN)
    cookies = [c.staff_cookie if i % 2 == 0 else c.patient_cookie
               for i, c in zip(range(count), itertools.cycle(world.conversations))]
    fleet = IdleFleet(node.ws_url, ORIGIN, cookies, sizes.connect_concurrency)
    meter = CpuMeter({"server": node.pid})
    try:
        connected = await fleet.connect()
        cpu = meter.percent()
        rss_connected = rss_kib(node.pid)
        load = loadavg()
        peak = rss_connected
        held_from = time.perf_counter()
        while time.perf_counter() - held_from < sizes.idle_hold:
            await asyncio.sleep(min(1.0, sizes.idle_hold))
            peak = max(peak, rss_kib(node.pid))
        rss_held = rss_kib(node.pid)
        released = await fleet.release()
    finally:
        fleet.kill()
    held = connected["connected"]
    return {
        "requested": wanted, "sockets": count,
        "capped_by_fd_limit": count < wanted, "server_fd_limit": limit,
        "server_fds_before": fds, "connected": held,
        "connect_failures": connected["failures"],
        "generator_processes": connected["processes"],
        "source_addresses": len(SOURCE_IPS),
        "connect_seconds": round(connected["seconds"], 2),
        "handshakes_per_second": round(held / connected["seconds"]) if held else 0,
        "server_cpu_percent_while_connecting": cpu["server"],
        "hold_seconds": sizes.idle_hold,
        "still_open_after_hold": released["still_open"],
        "closed_by_server": released["closed_codes"],
        "rss_kib_before": rss_before, "rss_kib_connected": rss_connected,
        "rss_kib_after_hold": rss_held, "rss_kib_peak": peak,
        "rss_kib_per_socket": round((rss_held - rss_before) / held, 2) if held else None,
        "load_average": load,
    }


# --- throughput ----------------------------------------------------------------------------

async def throughput(world: World, staff_node: ServeProcess, patient_node: ServeProcess,
                     sizes: Sizes) -> dict[str, Any]:
    """Each conversation has a staff socket (on ``staff_node``) and a patient socket (on
    ``patient_node``); both send, at stepped total rates, open loop (on a clock, never
    waiting for acks), so a slow server shows as latency rather than a slower sender."""
    traffic = Traffic(ORIGIN)
    positions = await world.positions()
    pairs: list[Follower] = []
    for convo in world.conversations:
        staff = Follower("staff", convo.id, convo.staff_cookie, staff_node.ws_url)
        patient = Follower("patient", convo.id, convo.patient_cookie, patient_node.ws_url)
        staff.peer, patient.peer = patient, staff
        pairs += (staff, patient)
    setup_from = time.perf_counter()

    retries = await bounded(sizes.connect_concurrency, [
        lambda i=i, f=f: _join(traffic, f, i, positions[f.conversation_id], sizes)
        for i, f in enumerate(pairs)])
    setup = time.perf_counter() - setup_from
    pids = {"server": staff_node.pid, "client": os.getpid()}
    if patient_node is not staff_node:
        pids = {"server": staff_node.pid, "server2": patient_node.pid,
                "client": os.getpid()}
    senders = itertools.cycle(pairs)
    steps: list[dict[str, Any]] = []
    stopped = "all steps ran"
    for rate in sizes.rates:
        stats = StepStats(rate, sizes.step_seconds)
        stored_before = await world.count_messages()
        frames_before = traffic.frames.copy()
        meter, load = CpuMeter(pids), loadavg()
        lag = await _pace(traffic, senders, stats)
        await _until(lambda stats=stats: not traffic.step_pending(stats), sizes.drain_seconds)
        cpu, cpu_seconds = meter.percent(), meter.seconds
        late = traffic.step_pending(stats)
        stored = await world.count_messages() - stored_before
        steps.append(_step_row(stats, stored, late, cpu, max(load, loadavg()), lag))
        frames = traffic.frames - frames_before
        steps[-1]["frames_received_per_message"] = {
            kind: round(n / max(1, stats.sent), 2) for kind, n in frames.most_common()}
        server_cpu = sum(v for k, v in cpu.items() if k.startswith("server"))
        steps[-1]["server_cpu_ms_per_message"] = round(
            server_cpu / 100 * cpu_seconds / max(1, stats.sent) * 1000, 2)
        progress(f"  {rate}/s: sent {stats.sent}, delivered {stats.delivered}, late {late}, "
                 f"p99 {steps[-1]['p99_ms']} ms, CPU {cpu}, load {steps[-1]['load_average']}")
        if late:
            stopped = f"stopped after {rate}/s: {late} messages not delivered within " \
                      f"{sizes.drain_seconds:g} s"
            break
        if (steps[-1]["p99_ms"] or 0) > sizes.stop_p99_ms:
            stopped = f"stopped after {rate}/s: p99 above {sizes.stop_p99_ms:g} ms"
            break
        await asyncio.sleep(1.0)
    # Whatever was late gets more time, as long as deliveries keep coming: what never
    # arrives is lost.
    await _drained(traffic, quiet=15.0, cap=300.0)
    lost = sum(1 for p in traffic.pending.values() if not p.delivered)
    unacked = sum(1 for p in traffic.pending.values() if not p.acked)
    _close_all(pairs)
    await asyncio.sleep(0.5)
    passing = [s for s in steps if s["lost"] == 0 and s["late"] == 0
               and s["p99_ms"] is not None and s["p99_ms"] <= 50.0
               and s["sent_per_second"] >= 0.95 * s["rate"]]
    return {
        "conversations": len(world.conversations), "sockets": len(pairs),
        "conversations_per_account": sizes.per_account,
        "nodes": 1 if patient_node is staff_node else 2,
        "setup_seconds": round(setup, 2), "setup_retries": sum(retries),
        "steps": steps, "stopped": stopped,
        "lost": lost, "unacked": unacked,
        "gaps": sum(f.gaps for f in pairs), "duplicates": sum(f.dups for f in pairs),
        "errors": dict(traffic.errors), "unexpected_closes": dict(traffic.closes),
        "sends_skipped_on_closed_sockets": traffic.skipped, "resent": traffic.resent,
        "best_rate_p99_50ms": max((s["rate"] for s in passing), default=0),
    }


async def _pace(traffic: Traffic, senders: itertools.cycle, stats: StepStats) -> float:
    """Send ``stats.rate`` messages a second for ``stats.seconds``; returns the longest
    pause of the generator's loop (ms): above a few ms the generator, not the server,
    is the bottleneck."""
    start = stats.started = time.perf_counter()
    sent = 0
    last = start
    longest = 0.0
    while (now := time.perf_counter()) - start < stats.seconds:
        longest = max(longest, now - last)
        last = now
        due = int((now - start) * stats.rate) - sent
        for _ in range(due):
            traffic.send(next(senders), stats)
        sent += due
        await asyncio.sleep(0.002)
    stats.seconds = time.perf_counter() - start
    return longest * 1000


def _step_row(stats: StepStats, stored: int, late: int, cpu: dict[str, float], load: float,
              lag_ms: float) -> dict[str, Any]:
    span = max(1e-9, (stats.last_delivery or stats.started) - stats.started)
    return {
        "rate": stats.rate, "seconds": round(stats.seconds, 2), "sent": stats.sent,
        "sent_per_second": round(stats.sent / stats.seconds),
        "acked": stats.acked, "stored": stored, "delivered": stats.delivered,
        "delivered_per_second": round(stats.delivered / span),
        "late": late, "lost": stats.sent - stats.delivered - late,
        "p50_ms": _ms(percentile(stats.deliver_ms, 0.50)),
        "p99_ms": _ms(percentile(stats.deliver_ms, 0.99)),
        "max_ms": _ms(max(stats.deliver_ms, default=None)),
        "ack_p50_ms": _ms(percentile(stats.ack_ms, 0.50)),
        "ack_p99_ms": _ms(percentile(stats.ack_ms, 0.99)),
        "cpu_percent": cpu, "load_average": load,
        "generator_longest_pause_ms": round(lag_ms, 1),
    }


# --- reconnect storm -----------------------------------------------------------------------

async def storm(world: World, node: ServeProcess, sizes: Sizes) -> dict[str, Any]:
    """Sockets following conversations are all dropped at once (aborted: no close
    handshake), a message is sent to every conversation while they are away, and all
    reconnect and resume with ``after_seq`` = the last ``seq`` each had."""
    traffic = Traffic(ORIGIN)
    conversations = world.conversations
    positions = await world.positions()
    followers = []
    for j in range(sizes.storm_sockets):
        convo = conversations[j % len(conversations)]
        staff = (j // len(conversations)) % 2 == 0
        followers.append(Follower("staff" if staff else "patient", convo.id,
                                  convo.staff_cookie if staff else convo.patient_cookie,
                                  node.ws_url))
    setup_from = time.perf_counter()

    setup_retries = await bounded(sizes.connect_concurrency, [
        lambda i=i, f=f: _join(traffic, f, i, positions[f.conversation_id], sizes)
        for i, f in enumerate(followers)])
    setup = time.perf_counter() - setup_from

    # Writers: one staff socket per account, sending into each of its conversations.
    writer_socks = {}
    for account_id, cookie in world.writers.items():
        convo = next(c for c in conversations if c.account_id == account_id)
        writer = Follower("staff", convo.id, cookie, node.ws_url)
        writer_socks[account_id] = await traffic.open(writer)
    writers = []
    for convo in conversations:
        writer = Follower("staff", convo.id, "", node.ws_url)
        writer.sock = writer_socks[convo.account_id]
        writers.append(writer)

    async def send_round(expect: int) -> float:
        for writer in writers:
            traffic.send(writer)
        return await _until(lambda: all(positions[f.conversation_id] + expect <= f.last_seq
                                        for f in followers), 120)

    live_seconds = await send_round(1)  # every socket is live before the drop
    dropped = list(followers)
    drop_at = time.perf_counter()
    for follower in dropped:
        sock, follower.sock = follower.sock, None
        if sock is not None:
            sock.abort()
    for writer in writers:  # sent while everyone is away
        traffic.send(writer)
    resumed_at: list[float] = []
    gate = asyncio.Semaphore(sizes.connect_concurrency)

    async def come_back(i: int, follower: Follower) -> int:
        retried = await _join(traffic, follower, i, follower.last_seq, sizes, gate)
        if follower.sock is not None:
            resumed_at.append(time.perf_counter() - drop_at)
        return retried

    retries = sum(await asyncio.gather(*(come_back(i, f) for i, f in enumerate(dropped))))
    final = await world.positions()
    caught_up = await _until(lambda: all(f.last_seq >= final[f.conversation_id]
                                         for f in followers), 120)
    caught_up_at = time.perf_counter() - drop_at
    missing = sum(max(0, final[f.conversation_id] - f.last_seq) for f in followers)
    _close_all(followers)
    for sock in writer_socks.values():
        sock.close()
    await asyncio.sleep(0.5)
    return {
        "sockets": len(followers), "conversations": len(conversations),
        "connect_concurrency": sizes.connect_concurrency,
        "setup_seconds": round(setup, 2), "setup_retries": sum(setup_retries),
        "live_before_drop_seconds": round(live_seconds, 2),
        "resumed": len(resumed_at),
        "all_resumed_seconds": round(max(resumed_at), 2) if resumed_at else None,
        "median_resume_seconds": round(sorted(resumed_at)[len(resumed_at) // 2], 2)
        if resumed_at else None,
        "all_caught_up_seconds": round(caught_up_at, 2) if caught_up >= 0 else None,
        "retries": retries, "missing": missing,
        "gaps": sum(f.gaps for f in followers), "duplicates": sum(f.dups for f in followers),
        "errors": dict(traffic.errors), "load_average": loadavg(),
    }


async def _join(traffic: Traffic, follower: Follower, i: int, after_seq: int, sizes: Sizes,
                gate: asyncio.Semaphore | None = None) -> int:
    """Connect and subscribe from ``after_seq``, retrying what fails (refused, reset,
    timed out) with full-jitter backoff as a browser client does (0-100 ms doubling, 5 s
    at most) until ``sizes.storm_deadline``; returns the number of retries."""
    started = time.perf_counter()
    for attempt in itertools.count():
        try:
            async with gate or contextlib.nullcontext():
                await traffic.open(follower, SOURCE_IPS[i % len(SOURCE_IPS)], timeout=120)
                await traffic.subscribe_retrying(follower, after_seq)
            return attempt
        except Exception:
            if follower.sock is not None:
                follower.sock.abort()
                follower.sock = None
            if time.perf_counter() - started > sizes.storm_deadline:
                return attempt + 1
            await asyncio.sleep(random.uniform(0, min(5.0, 0.1 * 2 ** attempt)))  # noqa: S311
    raise AssertionError("unreachable")


async def _drained(traffic: Traffic, quiet: float, cap: float) -> None:
    """Wait until nothing is pending, or nothing arrived for ``quiet`` seconds."""
    start = last_change = time.perf_counter()
    left = len(traffic.pending)
    while traffic.pending and time.perf_counter() - start < cap:
        await asyncio.sleep(0.1)
        if len(traffic.pending) != left:
            left, last_change = len(traffic.pending), time.perf_counter()
        elif time.perf_counter() - last_change > quiet:
            return


def _close_all(followers: Sequence[Follower]) -> None:
    """Close cleanly; the sockets are forgotten first, so these closes are not counted
    as unexpected."""
    for follower in followers:
        sock, follower.sock = follower.sock, None
        if sock is not None:
            sock.close()


async def _until(check: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``check()`` held, or -1 after ``timeout``."""
    start = time.perf_counter()
    while not check():
        if time.perf_counter() - start > timeout:
            return -1.0
        await asyncio.sleep(0.05)
    return time.perf_counter() - start
