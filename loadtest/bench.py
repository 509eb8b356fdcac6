"""``make bench``: an asyncio load generator against real ``securechat serve`` nodes it
starts itself, printing a table and writing JSON.

Scenarios (``--scenarios``, all by default):

* ``idle``: authenticated sockets held (default 20,000 for 30 s): server RSS per socket
  (VmRSS delta from /proc/<pid>/status) and handshakes per second; SQLite.
* ``throughput``: conversations (default 1,000) each with a staff and a patient socket,
  both sending secure messages at stepped total rates: per step the messages stored,
  delivered per second, loss and p50/p99/max send-to-receive latency; the highest rate
  with p99 <= 50 ms and no loss. SQLite in a temporary directory.
* ``postgres``: the same on PostgreSQL (a private database created on ``--postgres`` and
  dropped afterwards).
* ``two-nodes``: the same on two nodes sharing PostgreSQL and Redis, each
  conversation's staff socket on node 1 and its patient socket on node 2.
* ``storm``: sockets (default 10,000) following conversations are dropped at once and
  reconnect and resume by ``after_seq``: seconds until all resumed, nothing lost.

Each node is one server process; the generator runs beside it on the same machine and
the output says so. ``--quick`` scales every size down to a few seconds (CI).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtest import bench_report
from loadtest.bench_idle import raise_fd_limit, use_uvloop
from loadtest.bench_scenarios import Sizes, idle, storm, throughput
from loadtest.bench_world import World
from loadtest.nodes import REPO, ServeProcess, node_env, private_postgres, running

SCENARIOS = ("idle", "throughput", "postgres", "two-nodes", "storm")
# Server settings that could throttle the benchmark, set explicitly (and printed).
# Per-socket rate: the protocol default (20/s, burst 40) is for people; an open-loop
# generator's bursts must not be refused. Outbox bounds stay at the protocol defaults,
# so a socket that falls behind is still closed with 4408 (and counted). No logins
# happen (sessions are opened through the services), so the login lockout is moot.
SERVER_SETTINGS = {
    "ws_rate_per_second": "1000",
    "ws_rate_burst": "1000",
    "ws_outbox_frames": "1000",
    "ws_outbox_bytes": str(1024 * 1024),
    "login_max_failures": "5",
    "session_idle_seconds": "900",
    "sync_interval_seconds": "5",
    "ws_session_check_seconds": "15",
    # Every client of the benchmark comes from a few loopback addresses: the default cap
    # of 100 open sockets per address would refuse them.
    "ws_max_per_address": "100000",
    "log_level": "WARNING",
}
QUICK = Sizes(idle_sockets=100, idle_hold=2.0, conversations=20, per_account=5,
              rates=(50, 150), step_seconds=2.0, drain_seconds=10.0, storm_sockets=100,
              storm_deadline=60.0, connect_concurrency=100)


def _machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = 0
    with contextlib.suppress(OSError):
        memory = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    commit = dirty = None
    git = shutil.which("git") or "git"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        # Fixed git commands, no outside input.
        commit = subprocess.run([git, "rev-parse", "--short", "HEAD"],  # noqa: S603
                                cwd=REPO, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = bool(subprocess.run([git, "status", "--porcelain", "server"],  # noqa: S603
                                    cwd=REPO, capture_output=True, text=True,
                                    check=True).stdout)
    return {"cores": os.cpu_count(), "cpu": model, "memory_mib": memory,
            "python": platform.python_version(), "kernel": platform.release(),
            "commit": commit, "server_tree_modified": dirty}


async def _run(args: argparse.Namespace, sizes: Sizes) -> dict[str, Any]:
    chosen = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"bench: unknown scenario(s): {', '.join(sorted(unknown))}")
    master = os.urandom(32)
    results: dict[str, Any] = {}
    say = bench_report.progress

    def env(url: str, redis: str | None = None) -> dict[str, str]:
        return node_env(database_url=url, master_key=master, redis_url=redis,
                        settings=SERVER_SETTINGS)

    if {"idle", "throughput", "storm"} & set(chosen):
        with tempfile.TemporaryDirectory(prefix="securechat-bench-") as tmp:
            from server.store import migrate

            url = f"sqlite:///{tmp}/bench.db"
            await asyncio.to_thread(migrate.upgrade, url)
            say(f"seeding SQLite: {sizes.conversations} conversations")
            world = await World.seed(url, master, sizes.conversations, sizes.per_account)
            try:
                for name, scenario in (("idle", idle), ("throughput", throughput),
                                       ("storm", storm)):
                    if name not in chosen:
                        continue
                    say(f"{name} (SQLite): starting a node")
                    async with running(ServeProcess(name, env(url))) as (node,):
                        say(f"{name}: node pid {node.pid} at {node.url}")
                        if scenario is throughput:
                            results[name] = await throughput(world, node, node, sizes)
                        else:
                            results[name] = await scenario(world, node, sizes)
                        results[name]["store"] = "sqlite"
                        results[name]["server_errors"] = node.errors()[:20]
                    say(f"{name}: done")
            finally:
                await world.close()

    if {"postgres", "two-nodes"} & set(chosen):
        async with private_postgres(args.postgres) as url:
            say(f"seeding PostgreSQL: {sizes.conversations} conversations")
            world = await World.seed(url, master, sizes.conversations, sizes.per_account)
            try:
                if "postgres" in chosen:
                    say("throughput (PostgreSQL): starting a node")
                    async with running(ServeProcess("pg", env(url))) as (node,):
                        say(f"postgres: node pid {node.pid} at {node.url}")
                        results["postgres"] = await throughput(world, node, node, sizes)
                        results["postgres"]["server_errors"] = node.errors()[:20]
                    results["postgres"]["store"] = "postgresql"
                if "two-nodes" in chosen:
                    say("throughput (two nodes, PostgreSQL + Redis): starting nodes")
                    async with running(ServeProcess("node1", env(url, args.redis)),
                                       ServeProcess("node2", env(url, args.redis))) as (one, two):
                        say(f"two-nodes: node pids {one.pid}, {two.pid}")
                        results["two-nodes"] = await throughput(world, one, two, sizes)
                        results["two-nodes"]["server_errors"] = (one.errors()
                                                                 + two.errors())[:20]
                    results["two-nodes"]["store"] = "postgresql+redis"
            finally:
                await world.close()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="every size scaled down to a few seconds (CI smoke run)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma list of {', '.join(SCENARIOS)}")
    parser.add_argument("--postgres", default=os.environ.get(
        "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"),
        help="a PostgreSQL server (URL of a database to connect to for CREATE DATABASE)")
    parser.add_argument("--redis", default=os.environ.get(
        "TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--out-dir", default=str(REPO / "loadtest" / "results"))
    for field in dataclasses.fields(Sizes):
        flag = "--" + field.name.replace("_", "-")
        kind = type(field.default)
        if kind is tuple:
            parser.add_argument(flag, default=None,
                                help=f"comma list (default {','.join(map(str, field.default))})")
        else:
            parser.add_argument(flag, type=kind, default=None,
                                help=f"default {field.default}")
    args = parser.parse_args(argv)
    sizes = dataclasses.replace(QUICK) if args.quick else Sizes()
    for field in dataclasses.fields(Sizes):
        value = getattr(args, field.name)
        if value is not None:
            if isinstance(field.default, tuple):
                value = tuple(int(v) for v in value.split(","))
            setattr(sizes, field.name, value)

    soft, hard = raise_fd_limit()
    loop_name = use_uvloop()
    meta = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(), "generator_loop": loop_name,
        "fd_limit": {"soft": soft, "hard": hard},
        "server_settings": {f"SECURECHAT_{k.upper()}": v for k, v in SERVER_SETTINGS.items()},
        "sizes": dataclasses.asdict(sizes), "quick": args.quick,
        "argv": list(sys.argv[1:] if argv is None else argv),
    }
    started = time.perf_counter()
    results = asyncio.run(_run(args, sizes))
    meta["seconds"] = round(time.perf_counter() - started, 1)
    report = {"meta": meta, "scenarios": results,
              "targets": bench_report.targets(results)}
    print(bench_report.table(report))
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\nJSON: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
