"""Idle sockets held by helper processes.

One process may hold at most its open-files limit of sockets (20,000 on this machine, a
hard limit it cannot raise), so the idle scenario spreads its sockets over several
generator processes of at most :data:`PER_PROCESS` each. Each connects its share
(authenticated: it waits for ``ready``), reports, holds them until told, then counts
how many the server kept open and drops them.

Many sockets to one server address need many local ports: each connection is bound to
one of several loopback source addresses (127.0.0.1-127.0.0.8), each with its own
ephemeral port range.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import resource
import time
from collections import Counter
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from loadtest.bench_client import Socket, connect

PER_PROCESS = 9_000
SOURCE_IPS = tuple(f"127.0.0.{i}" for i in range(1, 9))


def raise_fd_limit() -> tuple[int, int]:
    """Raise this process's soft open-files limit to its hard limit; returns both."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def use_uvloop() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def _hold(pipe: Connection, url: str, origin: str, cookies: Sequence[str], first: int,
                concurrency: int) -> None:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    sockets: list[Socket] = []
    failures: Counter[str] = Counter()

    async def one(i: int, cookie: str) -> None:
        async with gate:
            try:
                sockets.append(await connect(url, cookie, origin, lambda _s, _f: None,
                                             local_ip=SOURCE_IPS[(first + i) % len(SOURCE_IPS)],
                                             timeout=60))
            except Exception as exc:
                failures[type(exc).__name__ + ": " + str(exc)[:80]] += 1

    started = time.time()
    await asyncio.gather(*(one(i, cookie) for i, cookie in enumerate(cookies)))
    pipe.send({"connected": len(sockets), "failures": dict(failures), "started": started,
               "ended": time.time()})
    await loop.run_in_executor(None, pipe.recv)  # "release"
    still_open = sum(1 for sock in sockets if sock.open)
    codes = Counter(str(sock.closed.result()) for sock in sockets if sock.closed.done())
    for sock in sockets:
        sock.abort()
    await asyncio.sleep(0.5)
    pipe.send({"still_open": still_open, "closed_codes": dict(codes)})


def _worker(pipe: Connection, url: str, origin: str, cookies: Sequence[str], first: int,
            concurrency: int) -> None:
    raise_fd_limit()
    use_uvloop()
    try:
        asyncio.run(_hold(pipe, url, origin, cookies, first, concurrency))
    finally:
        pipe.close()


class IdleFleet:
    """Helper processes holding ``len(cookies)`` sockets between ``connect`` and
    ``release``."""

    def __init__(self, url: str, origin: str, cookies: Sequence[str], concurrency: int):
        ctx = multiprocessing.get_context("spawn")
        self._procs: list[Any] = []
        self._pipes: list[Connection] = []
        per_proc_gate = max(1, concurrency // max(1, -(-len(cookies) // PER_PROCESS)))
        for first in range(0, len(cookies), PER_PROCESS):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=_worker, daemon=True, args=(
                theirs, url, origin, list(cookies[first:first + PER_PROCESS]), first,
                per_proc_gate))
            self._procs.append(proc)
            self._pipes.append(mine)

    async def connect(self) -> dict[str, Any]:
        for proc in self._procs:
            proc.start()
        reports = await asyncio.gather(*(asyncio.to_thread(pipe.recv) for pipe in self._pipes))
        failures: Counter[str] = Counter()
        for report in reports:
            failures.update(report["failures"])
        return {"connected": sum(r["connected"] for r in reports),
                "failures": dict(failures),
                "seconds": max(r["ended"] for r in reports) - min(r["started"] for r in reports),
                "processes": len(self._procs)}

    async def release(self) -> dict[str, Any]:
        for pipe in self._pipes:
            pipe.send("release")
        reports = await asyncio.gather(*(asyncio.to_thread(pipe.recv) for pipe in self._pipes))
        codes: Counter[str] = Counter()
        for report in reports:
            codes.update(report["closed_codes"])
        await asyncio.gather(*(asyncio.to_thread(proc.join, 30) for proc in self._procs))
        return {"still_open": sum(r["still_open"] for r in reports),
                "closed_codes": dict(codes)}

    def kill(self) -> None:
        for proc in self._procs:
            if proc.is_alive():
                proc.kill()
        for pipe in self._pipes:
            with contextlib.suppress(OSError):
                pipe.close()
