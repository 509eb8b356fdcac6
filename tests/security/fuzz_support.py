"""The fuzzers' harness: a real ``securechat serve`` process on PostgreSQL to throw inputs
at, the clinic it serves, and the checks every fuzz test ends with (the process lives,
``/healthz`` answers, its log holds no error from the inputs).

The fuzz tests are synchronous (sync httpx and websocket-client are the simplest drivers
for hypothesis), so the node's asyncio side (its log pump, the in-process services that
seed the clinic) runs on an event loop in a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import pytest
from hypothesis import HealthCheck, settings

from server.clock import SystemClock
from server.notify import Offline
from server.runtime import Services, build_services
from tests.conftest import (
    IN_CI,
    ORIGIN,
    Clinic,
    RunningServer,
    clear_sign_in_counters,
    make_clinic,
    settings_for_tests,
)
from tests.patient.support import new_link
from tests.realtime.cluster_nodes import ServeProcess, login_cookie, node_env
from tests.realtime.wsclient import patient_cookie
from tests.sms.support import new_phone

T = TypeVar("T")

EXAMPLES = 2000
# derandomize on CI: the same 2,000 inputs every run, so a red CI run is reproducible
# and never flaky; locally each run draws new inputs (and replays saved failures first),
# which is where fresh bugs are found.
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=IN_CI,
                database=None if IN_CI else settings.default.database,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])
# The node must never throttle the fuzzer (every frame must reach the handlers), and logs
# warnings and worse only: a line per request would cost more than the request.
NODE_SETTINGS = {"ws_rate_per_second": "1000000", "ws_rate_burst": "1000000",
                 "log_level": "WARNING"}
# What a bad input may be answered with: documented client errors, never a 5xx.
ERROR_CODES = frozenset({
    "invalid_frame", "invalid_request", "unauthenticated", "account_deactivated",
    "forbidden", "not_found",
    "conflict", "rate_limited", "portal_inactive", "opted_out", "invalid_verification",
    "locked", "payload_too_large"})


class LoopThread:
    """An event loop running in a daemon thread; ``run`` waits for a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


@dataclass
class FuzzNode:
    """A node process and what the fuzzers use on it: an admin's session cookie, the
    admin's clinic and its patient's phone, a second clinic (other accounts' ids), a
    patient session and a secure link token (of the second clinic's patient)."""

    process: ServeProcess
    loop: LoopThread
    services: Services
    clinic: Clinic
    patient_phone: str
    other: Clinic
    admin_cookie: str
    patient_cookie: str
    link_token: str

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/ws"

    def log_mark(self) -> int:
        return len(self.process.lines)

    def bad_log_lines(self, since: int = 0) -> list[str]:
        """Log lines from ``since`` on that show an error: level error or worse, an
        exception (``exc_type``), or a raw traceback."""
        bad = []
        for line in self.process.lines[since:]:
            if "Traceback" in line or "exc_type" in line:
                bad.append(line)
                continue
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("level") in ("error", "critical"):
                    bad.append(line)
        return bad

    def assert_survived(self, since: int) -> None:
        """The process still runs, answers ``/healthz`` 200, and logged no error while
        the fuzzer ran."""
        assert self.process.process is not None
        assert self.process.process.returncode is None, \
            "node exited:\n" + "\n".join(self.process.lines[-30:])
        response = httpx.get(self.url + "/healthz", timeout=10)
        assert response.status_code == 200, response.text
        assert response.json() == {"status": "ok"}
        bad = self.bad_log_lines(since)
        assert bad == [], "errors in the node's log:\n" + "\n".join(bad[:20])

    def client(self, cookie: str | None = None) -> Http:
        """One keep-alive connection for a whole fuzz run, CSRF-valid (our Origin)."""
        headers = {"origin": ORIGIN}
        if cookie:
            headers["cookie"] = cookie
        return Http(self.process.port, headers)


@dataclass
class Answer:
    status_code: int
    headers: dict[str, str]  # names in lower case
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


class Http:
    """A keep-alive HTTP/1.1 connection to the node over the standard library: a fuzz
    run's rate is bounded by the fuzzer's own CPU, and this spends a fraction of what
    httpx spends per request."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self._conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self._headers = headers

    def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                content: bytes | None = None, headers: dict[str, str] | None = None
                ) -> Answer:
        target = f"{path}?{urlencode(params)}" if params else path
        self._conn.request(method, target, body=content,
                           headers={**self._headers, **(headers or {})})
        response = self._conn.getresponse()
        body = response.read()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()},
                      body.decode("utf-8", "replace"))

    def post(self, path: str, **kw: Any) -> Answer:
        return self.request("POST", path, **kw)

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc: object) -> None:
        self._conn.close()


async def _seed(database_url: str, master_key: bytes
                ) -> tuple[Services, Clinic, str, Clinic, str]:
    """Two clinics made through the services (as every test makes them), a patient
    session in the first one's conversation, and a link for the second one's patient."""
    settings = settings_for_tests(database_url=database_url, allowed_origins=[ORIGIN])
    services = build_services(settings, master_key, SystemClock(), notifier=Offline())
    phone = new_phone()
    clinic = await make_clinic(services, phone=phone)
    other = await make_clinic(services, phone=new_phone())
    cookie = await patient_cookie(services, clinic)
    return services, clinic, phone, other, cookie


@contextlib.contextmanager
def fuzz_node(database_url: str, redis_url: str, master_key: bytes, name: str,
              **env: str) -> Iterator[FuzzNode]:
    """``securechat serve`` on ``database_url``, unthrottled, seeded with two clinics."""
    loop = LoopThread()
    process = ServeProcess(name, node_env(database_url=database_url, redis_url=redis_url,
                                          master_key=master_key, **{**NODE_SETTINGS, **env}))
    services = None
    try:
        services, clinic, phone, other, patient = loop.run(_seed(database_url, master_key))
        token = loop.run(new_link(RunningServer("", services), other))
        loop.run(process.start())
        # Another fuzz module's sign-in fuzzing may have locked 127.0.0.1 on this shared
        # database (server/sign_in_limits.py): start from no counts.
        clear_sign_in_counters(database_url)
        admin = loop.run(login_cookie(process.url, clinic.admin_email))
        yield FuzzNode(process, loop, services, clinic, phone, other, admin, patient, token)
    finally:
        with contextlib.suppress(Exception):
            loop.run(process.stop())
        if services is not None:
            loop.run(services.db.close())
        loop.close()
        clear_sign_in_counters(database_url)  # this module's fuzzed sign-ins, for the next


Job = Callable[[], int]  # runs one entry point's fuzzing; returns the examples it ran
# A fuzz test's rate line travels in its report under this name (tests/security/conftest.py
# prints them all at the end, from the test process or from every xdist worker's).
RATE = "fuzz rate"


def run_fuzz(node: FuzzNode, name: str, job: Job, request: pytest.FixtureRequest) -> None:
    """Run one entry point's fuzzing here, in the test's own thread, then check that the
    node survived it (lives, answers ``/healthz``, logged no error). Its line (examples,
    seconds, examples/s) is kept in the test's report.

    Never side by side in threads: hypothesis sets the interpreter-wide recursion limit
    around every example, and on CPython 3.11 a thread that is past a limit another
    thread just lowered (these inputs nest to the limit on purpose) can end the whole
    process with "Fatal Python error: Cannot recover from stack overflow" (SIGABRT);
    the ``ast`` module's state is shared by threads as well (a spurious
    ``SystemError: AST constructor recursion depth mismatch`` from hypothesis's own
    parsing). Entry points run in parallel as separate tests under pytest-xdist instead,
    each worker with a node of its own.

    Raises:
        The fuzzing's failure (hypothesis's falsifying example), or AssertionError when
        fewer than EXAMPLES ran or the node did not survive.
    """
    mark = node.log_mark()
    started = time.perf_counter()
    try:
        count = job()
    except BaseException:
        _record(request, name, f"failed after {time.perf_counter() - started:.1f}s")
        raise
    elapsed = time.perf_counter() - started
    _record(request, name, f"{count} examples in {elapsed:.1f}s ({count / elapsed:.0f}/s)")
    assert count >= EXAMPLES, f"{name}: only {count} examples ran"
    node.assert_survived(mark)


def _record(request: pytest.FixtureRequest, name: str, line: str) -> None:
    request.node.user_properties.append((RATE, f"fuzz {name}: {line}"))
