"""What the benchmark runs against: ``securechat serve`` processes and a private
PostgreSQL database (both from ``loadtest/nodes.py``), and readings of a process's memory
and CPU from /proc."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")

# --- /proc readings ------------------------------------------------------------------------

def rss_kib(pid: int) -> int:
    """Resident set size (VmRSS) of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_limit(pid: int) -> int:
    """The process's hard limit on open files."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[4])
    raise RuntimeError(f"no open-files limit for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


class CpuMeter:
    """CPU use of some processes over an interval, in percent of one core."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self._pids = dict(pids)
        self._start = time.perf_counter()
        self._cpu = {name: self._read(pid) for name, pid in self._pids.items()}

    @staticmethod
    def _read(pid: int) -> float:
        if pid == os.getpid():
            return time.process_time()
        try:
            return cpu_seconds(pid)
        except OSError:
            return 0.0

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self._start

    def percent(self) -> dict[str, float]:
        elapsed = max(1e-9, time.perf_counter() - self._start)
        return {name: round(100 * (self._read(pid) - self._cpu[name]) / elapsed, 1)
                for name, pid in self._pids.items()}
