"""Shared fixtures: a migrated database per backend, the services on it, and a real
uvicorn server on a free port.

Every test that asks for ``database_url`` (directly or through ``services``/``server``)
runs twice: on SQLite and on the real PostgreSQL. PostgreSQL comes from
``TEST_POSTGRES_URL`` (default: the local server's ``test`` database); each
test session makes its own scratch database there and drops it at the end. When it is
missing the PostgreSQL half is skipped, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy.engine import make_url

from loadtest import tether
from loadtest.nodes import free_port, pg_execute
from server.app import create_app
from server.audit import SYSTEM
from server.clock import FakeClock
from server.notify import Offline
from server.protocol import CreatePatientRequest
from server.runtime import Services, build_services
from server.settings import Settings, from_env
from server.store import migrate
from server.web.context import app_runtime
from tests.serving import serve_app

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# A fatal signal writes every thread's traceback to a file CI prints (tests/crash_log.py).
pytest_plugins = ["tests.crash_log"]
PASSWORD = "velvet tundra pilots ninety lanterns"  # passes the policy (the XKCD
# "correct horse battery staple" is on every breach list, and the blocklist refuses it)
ORIGIN = "http://testserver.local"


def _unavailable(what: str, why: object) -> None:
    message = f"{what} is not reachable ({why})"
    if IN_CI:
        pytest.fail(f"{message}: CI must provide it", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """A migrated scratch database on the real PostgreSQL, dropped afterwards."""
    name = f"securechat_test_{os.getpid()}_{secrets.token_hex(3)}"
    try:
        asyncio.run(pg_execute(PG_ADMIN_URL, f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        _unavailable(f"PostgreSQL at {PG_ADMIN_URL}", exc)
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    yield url
    asyncio.run(pg_execute(PG_ADMIN_URL, f'DROP DATABASE "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'securechat.db'}"
    migrate.upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each test that uses the store runs on both backends.

    Afterwards the sign-in counters are emptied: tenants keep tests apart everywhere
    else, but every test signs in from 127.0.0.1, and the per-address count would carry
    one test's wrong passwords into the next (server/sign_in_limits.py)."""
    url = request.getfixturevalue(f"{request.param}_url")
    yield url
    clear_sign_in_counters(url)


def clear_sign_in_counters(url: str) -> None:
    if url.startswith("sqlite"):
        import sqlite3

        with contextlib.closing(sqlite3.connect(make_url(url).database)) as conn, conn:
            conn.execute("DELETE FROM login_throttle")
    else:
        asyncio.run(pg_execute(url, "DELETE FROM login_throttle"))


@pytest.fixture(scope="session")
def master_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# argon2id at its cheapest (8 KiB, one pass, one lane: microseconds where the production
# cost takes ~0.1-0.25 s here), for the thousands of hashes the suite makes. The production
# cost is tested on its own (tests/test_passwords.py, tests/test_auth.py).
# Strings, as a node's environment carries them (from_env converts them).
CHEAP_HASHING = {"password_hash_memory_kib": "8", "password_hash_time_cost": "1",
                 "password_hash_parallelism": "1"}
# The same as variables, for the environment of a process a test starts.
CHEAP_HASHING_ENV = {f"SECURECHAT_{name.upper()}": value for name, value in CHEAP_HASHING.items()}


def settings_for_tests(**overrides: object) -> Settings:
    """``from_env({}, **overrides)`` at the cheap argon2 cost (an override may set it)."""
    return from_env({}, **{**CHEAP_HASHING, **overrides})


@pytest.fixture
def settings(database_url: str) -> Settings:
    return settings_for_tests(database_url=database_url, allowed_origins=[ORIGIN],
                              password_hash_concurrency=2)


@pytest.fixture
async def services(settings: Settings, master_key: bytes, clock: FakeClock
                   ) -> AsyncIterator[Services]:
    built = build_services(settings, master_key, clock, notifier=Offline())
    yield built
    await built.db.close()


class Clinic:
    """One account with an admin, a staff member and a patient, made through the services
    (so each test has its own tenant and never sees another test's rows)."""

    def __init__(self, account_id: str, admin_email: str, staff_email: str,
                 patient_id: str, conversation_id: str, admin_id: str, staff_id: str):
        self.account_id = account_id
        self.admin_email = admin_email
        self.staff_email = staff_email
        self.patient_id = patient_id
        self.conversation_id = conversation_id
        self.admin_id = admin_id
        self.staff_id = staff_id


async def make_clinic(services: Services, *, portal_active: bool = True,
                      patient_name: str = "Pat Example", phone: str = "+14155550100",
                      dob: str = "1980-05-17") -> Clinic:
    tag = secrets.token_hex(4)
    account_id, _ = await services.accounts.ensure_account(f"Clinic {tag}",
                                                           portal_active=portal_active)
    admin_email, staff_email = f"admin-{tag}@clinic.test", f"staff-{tag}@clinic.test"
    admin_id = await services.accounts.create_staff(
        account_id, email=admin_email, name=f"Admin {tag}", role="admin", password=PASSWORD)
    staff_id = await services.accounts.create_staff(
        account_id, email=staff_email, name=f"Nurse {tag}", role="staff", password=PASSWORD)
    patient, conversation_id = await services.patients.create(
        account_id, CreatePatientRequest(patient_name, phone, dob), SYSTEM)
    return Clinic(account_id, admin_email, staff_email, patient.id, conversation_id,
                  admin_id, staff_id)


@pytest.fixture
async def clinic(services: Services) -> Clinic:
    return await make_clinic(services)


class RunningServer:
    def __init__(self, url: str, services: Services):
        self.url = url
        self.services = services

    def client(self, **kw) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, timeout=10, **kw)

    @contextlib.asynccontextmanager
    async def login(self, email: str, password: str = PASSWORD
                    ) -> AsyncIterator[httpx.AsyncClient]:
        """A client holding a fresh staff session cookie."""
        async with self.client() as client:
            response = await client.post("/api/auth/login",
                                         json={"email": email, "password": password})
            assert response.status_code == 200, response.text
            yield client


@pytest.fixture
async def server(settings: Settings, master_key: bytes, clock: FakeClock
                 ) -> AsyncIterator[RunningServer]:
    """The real app under real uvicorn on 127.0.0.1 and a free port, on the test's loop."""
    app = create_app(settings, master_key, clock=clock)
    async with serve_app(app) as served:
        yield RunningServer(served.url, app_runtime(app).services)


REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The shared Redis (fails under CI=true when it does not answer). Tests use unique
    channel names, so they never see each other's traffic."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        _unavailable(f"Redis at {REDIS_URL}", exc)
    finally:
        client.close()
    return REDIS_URL


class PrivateRedis:
    """A redis-server of the test's own on a free port, to kill, pause and restart
    (never the shared one); it dies with the test run (:mod:`loadtest.tether`)."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._tmp = tmp
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            tether.command("redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no", "--dir", str(self._tmp)),
            pass_fds=tether.pass_fds(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        assert self.process.stdout is not None
        for line in self.process.stdout:  # blocks until the server says it is ready
            if "Ready to accept connections" in line:
                # Keep draining its log so a full pipe never stalls it.
                threading.Thread(target=self.process.stdout.read, daemon=True).start()
                return
        raise RuntimeError("redis-server exited before it was ready")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if shutil.which("redis-server") is None:
        _unavailable("redis-server", "not on PATH")
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    if server.process is not None:
        server.resume()
    server.kill()


CHROMIUM = "/usr/bin/chromium"
# What the probe found Chromium needs here: no sandbox as root, no GPU, and no background
# connections (this machine's closed network refuses them, many at a time).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that drives Chromium (it uses ``browser``, directly or through
    another fixture) ``browser``, so ``make check`` can leave them out."""
    for item in items:
        if "browser" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """Headless system Chromium under Playwright (fails under CI=true when missing)."""
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 - one stat, before any I/O
        _unavailable("Chromium", f"{CHROMIUM} not found (apt-get install chromium)")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM,
                                                    args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
