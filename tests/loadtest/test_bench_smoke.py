"""The load tests cannot rot: the benchmark in ``--quick`` mode (SQLite, a few seconds,
a handful of sockets) and a tiny locust run against a real ``securechat serve``.

They assert what must hold at any speed: nothing lost, doubled or reordered, every idle
socket kept, every stormed socket resumed, no locust failure, and the report produced.
Speed is the benchmark's business, not CI's. Both run as subprocesses: locust
monkey-patches the standard library with gevent, which must not happen to pytest.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import sys
from pathlib import Path

import pytest

from loadtest import tether
from loadtest.nodes import ORIGIN, REPO, ServeProcess, node_env
from loadtest.seed import seed, write_private_json
from server.notify import Offline
from server.runtime import build_services
from server.store import migrate
from tests.conftest import CHEAP_HASHING, settings_for_tests


async def _run(*argv: str, timeout: float) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *tether.command(sys.executable, *argv), cwd=REPO, pass_fds=tether.pass_fds(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("SECURECHAT_")})
    try:
        async with asyncio.timeout(timeout):
            out, _ = await process.communicate()
    except TimeoutError:
        process.kill()
        out, _ = await process.communicate()
        raise AssertionError(f"{argv} took over {timeout}s:\n{out.decode()[-3000:]}") from None
    return process.returncode or 0, out.decode(errors="replace")


@pytest.mark.slow
async def test_quick_benchmark_loses_nothing_and_reports(tmp_path: Path) -> None:
    code, out = await _run("-m", "loadtest.bench", "--quick",
                           "--scenarios", "idle,throughput,storm",
                           "--out-dir", str(tmp_path), timeout=120)
    assert code == 0, out[-4000:]
    assert "SecureChat benchmark" in out and "share this machine" in out, out[-4000:]
    assert "targets (issue 7)" in out
    report = _only_report(tmp_path)
    results = report["scenarios"]
    assert report["meta"]["machine"]["cores"] == os.cpu_count()

    idle = results["idle"]
    assert idle["connected"] == idle["sockets"] == idle["still_open_after_hold"] > 0
    assert idle["rss_kib_per_socket"] is not None and idle["handshakes_per_second"] > 0

    run = results["throughput"]
    assert run["steps"] and run["steps"][0]["sent"] > 0
    assert (run["lost"], run["unacked"], run["gaps"], run["duplicates"]) == (0, 0, 0, 0), run
    # Refusals the protocol says to resend (the generator resends them) are not loss.
    assert set(run["errors"]) <= {"unavailable", "rate_limited"}, run
    assert run["unexpected_closes"] == {}, run
    for step in run["steps"]:
        if step["late"] == 0:  # a step still draining when measured is not comparable
            assert step["stored"] == step["acked"] == step["sent"], step

    storm = results["storm"]
    assert storm["resumed"] == storm["sockets"] > 0, storm
    assert storm["live_before_drop_seconds"] >= 0, storm  # all live before the drop
    assert (storm["missing"], storm["gaps"], storm["duplicates"]) == (0, 0, 0), storm


@pytest.mark.slow
async def test_tiny_locust_run_has_no_failures(tmp_path: Path, master_key: bytes) -> None:
    url = f"sqlite:///{tmp_path / 'locust.db'}"
    await asyncio.to_thread(migrate.upgrade, url)
    services = build_services(settings_for_tests(database_url=url, allowed_origins=[ORIGIN],
                                                 public_url=ORIGIN), master_key, notifier=Offline())
    try:
        data = await seed(services, accounts=1, staff_per_account=2, patients_per_account=2)
    finally:
        await services.db.close()
    seed_file = tmp_path / "run.json"
    write_private_json(seed_file, data)
    assert _mode(seed_file) == 0o600  # it holds session tokens

    node = ServeProcess("locust", node_env(database_url=url, master_key=master_key, redis_url=None,
                                   settings={**CHEAP_HASHING, "log_level": "WARNING"}))
    await node.start()
    try:
        code, out = await _run(
            "-m", "locust", "-f", "loadtest/locustfile.py", "--headless", "-u", "4",
            "-r", "4", "-t", "6s", "--host", node.url, "--seed-file", str(seed_file),
            "--only-summary", "--csv", str(tmp_path / "locust"), timeout=60)
    finally:
        await node.stop()
    assert code == 0, out[-4000:]
    rows = _locust_stats(tmp_path / "locust_stats.csv")
    assert int(rows["Aggregated"]["Failure Count"]) == 0, out[-4000:]
    for name in ("POST /api/auth/login", "connect", "subscribe", "send"):
        assert int(rows[name]["Request Count"]) > 0, (name, out[-3000:])
    delivered = [name for name in rows if name.startswith("deliver ")]
    assert delivered and all(int(rows[n]["Request Count"]) > 0 for n in delivered), rows


def _only_report(directory: Path) -> dict:
    reports = list(directory.glob("bench-*.json"))
    assert len(reports) == 1, reports
    return json.loads(reports[0].read_text())


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _locust_stats(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as stats_file:
        return {row["Name"]: row for row in csv.DictReader(stats_file)}
