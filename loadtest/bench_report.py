"""The benchmark's table and its verdict on the targets of issue 7."""

from __future__ import annotations

import sys
import time
from typing import Any

_T0 = time.perf_counter()

# Issue 7's targets (one server process on this 2-core machine, the generator beside it).
IDLE_SOCKETS = 20_000
IDLE_KIB_PER_SOCKET = 24.0
SQLITE_RATE = 10_000
POSTGRES_RATE = 5_000
STORM_SOCKETS = 10_000
STORM_SECONDS = 30.0


def progress(text: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {text}", file=sys.stderr, flush=True)


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target with what was measured and whether it is met (None: not run)."""
    rows = []
    r = results.get("idle")
    if r:
        rows.append({"target": f"{IDLE_SOCKETS:,} idle sockets, <= {IDLE_KIB_PER_SOCKET:g} "
                               "KiB RSS each",
                     "measured": f"{r['still_open_after_hold']:,} held, "
                                 f"{r['rss_kib_per_socket']} KiB each",
                     "met": r["still_open_after_hold"] >= IDLE_SOCKETS
                     and (r["rss_kib_per_socket"] or 1e9) <= IDLE_KIB_PER_SOCKET})
    for name, label, goal in (("throughput", "SQLite", SQLITE_RATE),
                              ("postgres", "PostgreSQL", POSTGRES_RATE)):
        r = results.get(name)
        if r:
            rows.append({"target": f"{label}: >= {goal:,} sent/s stored and delivered, "
                                   "p99 <= 50 ms, no loss",
                         "measured": f"{r['best_rate_p99_50ms']:,}/s "
                                     f"(lost {r['lost']}, gaps {r['gaps']})",
                         "met": r["best_rate_p99_50ms"] >= goal and _clean(r)})
    r = results.get("two-nodes")
    if r:
        single = (results.get("postgres") or {}).get("best_rate_p99_50ms", POSTGRES_RATE)
        rows.append({"target": "two nodes + Redis: no loss, p99 <= 50 ms at the single-node "
                               f"rate ({single:,}/s)",
                     "measured": f"{r['best_rate_p99_50ms']:,}/s (lost {r['lost']}, "
                                 f"gaps {r['gaps']})",
                     "met": _clean(r) and r["best_rate_p99_50ms"] >= max(1, single)})
    r = results.get("storm")
    if r:
        rows.append({"target": f"storm: {STORM_SOCKETS:,} sockets resumed in <= "
                               f"{STORM_SECONDS:g} s, nothing lost",
                     "measured": f"{r['resumed']:,}/{r['sockets']:,} in "
                                 f"{r['all_resumed_seconds']} s, missing {r['missing']}, "
                                 f"gaps {r['gaps']}",
                     "met": r["sockets"] >= STORM_SOCKETS and r["resumed"] == r["sockets"]
                     and (r["all_resumed_seconds"] or 1e9) <= STORM_SECONDS
                     and r["missing"] == 0 and r["gaps"] == 0 and r["duplicates"] == 0})
    return rows


def _clean(r: dict[str, Any]) -> bool:
    return r["lost"] == 0 and r["gaps"] == 0 and r["duplicates"] == 0


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _grid(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join("  " + line for line in lines)


def _per_message(steps: list[dict[str, Any]]) -> str:
    """Server CPU and frames per message, from the first step that sent anything."""
    step = next((s for s in steps if s["sent"]), None)
    if step is None:
        return "  nothing was sent"
    frames = ", ".join(f"{k} {v}" for k, v in step["frames_received_per_message"].items())
    return (f"  per message sent (at {step['rate']}/s): server CPU "
            f"{step['server_cpu_ms_per_message']} ms; frames received: {frames}")


def table(report: dict[str, Any]) -> str:
    meta, results = report["meta"], report["scenarios"]
    machine = meta["machine"]
    out = [
        "SecureChat benchmark" + (" (--quick: sizes scaled down, targets not judged)"
                                  if meta["quick"] else ""),
        f"  machine: {machine['cores']} cores ({machine['cpu']}), "
        f"{machine['memory_mib']:,} MiB; Python {machine['python']}; "
        f"commit {machine['commit']}"
        + (" with uncommitted changes under server/" if machine["server_tree_modified"]
           else ""),
        "  the load generator (this process, asyncio on "
        f"{meta['generator_loop']}) and the server share this machine; each node is ONE "
        "`securechat serve` process",
        f"  open-files limit: {meta['fd_limit']['hard']:,} per process (hard limit, raised "
        "the soft one to it with setrlimit; the server inherits it)",
        "  server settings set explicitly: " + ", ".join(
            f"{k}={v}" for k, v in meta["server_settings"].items()),
        f"  run took {meta['seconds']} s",
    ]
    r = results.get("idle")
    if r:
        out += ["", f"idle: authenticated sockets (ready, not subscribed) held "
                    f"{r['hold_seconds']:g} s, SQLite, {r['generator_processes']} generator "
                    f"process(es), {r['source_addresses']} source addresses",
                _grid(["sockets", "held", "handshakes/s", "RSS before MiB", "RSS after MiB",
                       "KiB/socket", "server CPU%", "load"],
                      [[r["sockets"], r["still_open_after_hold"], r["handshakes_per_second"],
                        r["rss_kib_before"] / 1024, r["rss_kib_after_hold"] / 1024,
                        r["rss_kib_per_socket"], r["server_cpu_percent_while_connecting"],
                        r["load_average"]]])]
        if r["capped_by_fd_limit"]:
            out.append(f"  capped at {r['sockets']:,} of {r['requested']:,}: the server's "
                       f"open-files hard limit is {r['server_fd_limit']:,}")
        if r["connect_failures"]:
            out.append(f"  connect failures: {r['connect_failures']}")
    for name, label in (("throughput", "SQLite, one node"),
                        ("postgres", "PostgreSQL, one node"),
                        ("two-nodes", "PostgreSQL + Redis, two nodes (staff on node 1, "
                                      "patients on node 2)")):
        r = results.get(name)
        if not r:
            continue
        out += ["", f"{name}: {label}; {r['conversations']:,} conversations "
                    f"({r['conversations_per_account']} per account), {r['sockets']:,} "
                    f"sockets, set up in {r['setup_seconds']} s; both sides send, open loop",
                _grid(["rate/s", "sent/s", "stored", "deliv/s", "late", "lost", "p50 ms",
                       "p99 ms", "max ms", "ack p99", "CPU% srv", "CPU% gen", "gen pause ms",
                       "load"],
                      [[s["rate"], s["sent_per_second"], s["stored"],
                        s["delivered_per_second"], s["late"], s["lost"], s["p50_ms"],
                        s["p99_ms"], s["max_ms"], s["ack_p99_ms"],
                        "/".join(_fmt(v) for k, v in s["cpu_percent"].items()
                                 if k.startswith("server")),
                        s["cpu_percent"]["client"], s["generator_longest_pause_ms"],
                        s["load_average"]] for s in r["steps"]]),
                _per_message(r["steps"]),
                f"  {r['stopped']}; highest rate with p99 <= 50 ms and no loss: "
                f"{r['best_rate_p99_50ms']:,}/s",
                f"  whole run: lost {r['lost']}, unacked {r['unacked']}, gaps {r['gaps']}, "
                f"duplicates {r['duplicates']}, errors {r['errors'] or 'none'} "
                f"({r['resent']} refusals resent with the same client_msg_id), "
                f"unexpected closes {r['unexpected_closes'] or 'none'}, sends skipped on "
                f"closed sockets {r['sends_skipped_on_closed_sockets']}"]
    r = results.get("storm")
    if r:
        out += ["", f"storm: {r['sockets']:,} subscribed sockets over {r['conversations']:,} "
                    f"conversations dropped at once (aborted), one message sent to each "
                    f"conversation meanwhile; reconnect {r['connect_concurrency']} at a "
                    f"time, resume by after_seq",
                _grid(["sockets", "setup s", "live s", "resumed", "all resumed s", "median s",
                       "caught up s", "retries", "missing", "gaps", "dups", "load"],
                      [[r["sockets"], r["setup_seconds"], r["live_before_drop_seconds"],
                        r["resumed"],
                        r["all_resumed_seconds"], r["median_resume_seconds"],
                        r["all_caught_up_seconds"], r["retries"], r["missing"], r["gaps"],
                        r["duplicates"], r["load_average"]]])]
    for name, r in results.items():
        if r.get("server_errors"):
            out += ["", f"{name}: server log errors (first {len(r['server_errors'])}):"]
            out += [f"  {line[:200]}" for line in r["server_errors"]]
    rows = report["targets"]
    if rows:
        out += ["", "targets (issue 7):",
                _grid(["target", "measured", "met"],
                      [[t["target"], t["measured"],
                        "n/a (quick)" if meta["quick"] else ("yes" if t["met"] else "NO")]
                       for t in rows])]
    return "\n".join(out)
