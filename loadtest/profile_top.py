"""Summarise a py-spy profile of a server: where the samples went.

    py-spy record --pid PID --duration 30 --rate 250 --format raw -o /tmp/server.raw
    python -m loadtest.profile_top /tmp/server.raw [--top 25] [--under server/]

py-spy's raw format is one collapsed stack per line (frames ``function (file:line)``
joined by ``;``) and a sample count. This prints the share of samples per thread kind
(the event loop versus worker threads such as aiosqlite's), the frames that were on CPU
themselves ("self"), and the frames of the project's own code that the samples passed
through ("inclusive", one count per sample however deep the recursion), each with its
file:line.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

_FRAME = re.compile(r"^(?P<function>.*) \((?P<where>[^()]*)\)$")


def parse(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    stacks = []
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        stacks.append((stack.split(";"), int(count)))
    return stacks


LOOP = "event loop (main thread)"
GREENLET = "event loop, SQLAlchemy greenlet (the sync half of each query)"
NO_FRAME = "no Python frame (C code: uvloop, drivers, GIL hand-offs)"


def thread_kind(stack: Sequence[str]) -> str:
    first = stack[0] if stack else ""
    if first.startswith("_run_module_as_main") or first.startswith("<module>"):
        return LOOP
    if not first:
        return NO_FRAME
    if "sqlalchemy/" in first:  # greenlet_spawn runs these on the loop's thread
        return GREENLET
    text = ";".join(stack[:6])
    if "aiosqlite" in text:
        return "aiosqlite worker threads"
    if "ThreadPoolExecutor" in text or "_worker (concurrent" in text:
        return "thread pool (to_thread, argon2...)"
    return "other threads"


PACKAGES = ("server/", "sqlalchemy/", "asyncpg/", "aiosqlite/", "uvicorn/", "websockets/",
            "starlette/", "msgspec/", "cryptography/", "redis/", "asyncio/", "uvloop/")


def package(frame: str) -> str:
    match = _FRAME.match(frame)
    where = match["where"] if match else frame
    for name in PACKAGES:
        if where.startswith(name):
            return name.rstrip("/")
    return "stdlib/other"


def summarise(stacks: list[tuple[list[str], int]], top: int, under: str) -> str:
    total = sum(count for _, count in stacks) or 1
    kinds: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaf_package: Counter[str] = Counter()
    package_inclusive: Counter[str] = Counter()
    for stack, count in stacks:
        kind = thread_kind(stack)
        kinds[kind] += count
        if kind in (LOOP, GREENLET):
            leaf[stack[-1]] += count
            leaf_package[package(stack[-1])] += count
            for name in {package(frame) for frame in stack}:
                package_inclusive[name] += count
            seen = set()
            for frame in stack:
                match = _FRAME.match(frame)
                if match and match["where"].startswith(under) and frame not in seen:
                    seen.add(frame)
                    inclusive[frame] += count
    loop_total = (kinds[LOOP] + kinds[GREENLET]) or 1
    out = [f"{total} samples"]
    out += [f"  {n / total:6.1%}  {kind}" for kind, n in kinds.most_common()]
    out += ["", "event loop incl. greenlets, by package (% of those samples):",
            "  self    inclusive  package"]
    out += [f"  {leaf_package[name] / loop_total:6.1%}  {n / loop_total:6.1%}     {name}"
            for name, n in package_inclusive.most_common(12) if name != "stdlib/other"]
    out += ["", f"event loop incl. greenlets, self (top {top}; % of those samples):"]
    out += [f"  {n / loop_total:6.1%}  {frame}" for frame, n in leaf.most_common(top)]
    out += ["", f"event loop, inclusive, frames under {under} (top {top}):"]
    out += [f"  {n / loop_total:6.1%}  {frame}" for frame, n in inclusive.most_common(top)]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.profile_top",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("raw", help="py-spy --format raw output")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--under", default="server/", help="path prefix of own code")
    args = parser.parse_args(argv)
    print(summarise(parse(Path(args.raw).read_text().splitlines()), args.top, args.under))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
