"""The security suite's fixtures live in tests/conftest.py and its modules; this file
prints the fuzzers' rates at the end of a run."""

from __future__ import annotations

import pytest

from tests.security.fuzz_support import RATE


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Each fuzz test's line (examples, seconds, examples/s), also from xdist workers
    (their reports carry it in ``user_properties``)."""
    lines = [value for reports in terminalreporter.stats.values() for report in reports
             if getattr(report, "when", None) == "call"
             for name, value in getattr(report, "user_properties", ()) if name == RATE]
    if lines:
        terminalreporter.section("fuzz rates")
        for line in sorted(lines):
            terminalreporter.write_line(line)
