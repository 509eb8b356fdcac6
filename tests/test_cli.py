"""The ``securechat`` command in real subprocesses (``python -m server``), each in a
temporary working directory with an environment free of the caller's ``SECURECHAT_*``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import secrets
import signal
import socket
import stat
import sys
from pathlib import Path

import httpx
import pytest

from loadtest import tether
from server.runtime import Services
from server.store import accounts as account_store
from server.store import migrate
from server.store.db import Database
from tests.cli import TIMEOUT, clean_env, run_cli
from tests.conftest import PASSWORD, RunningServer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sqlite_in(path: Path) -> str:
    return f"sqlite:///{path / 'securechat.db'}"


async def next_line(stream: asyncio.StreamReader, seen: list[str], pattern: str) -> re.Match:
    """Read lines into ``seen`` until one matches ``pattern``; fails at end of stream."""
    while True:
        raw = await stream.readline()
        if not raw:
            raise AssertionError(f"stream ended before {pattern!r}; got:\n" + "".join(seen))
        line = raw.decode()
        seen.append(line)
        if match := re.search(pattern, line):
            return match


async def drain(stream: asyncio.StreamReader, seen: list[str]) -> None:
    while raw := await stream.readline():
        seen.append(raw.decode())


# --- demo ---------------------------------------------------------------------------------

async def test_demo_serves_and_prints_a_working_login(tmp_path: Path) -> None:
    """``demo`` creates a 0600 master key, prints a login that works and the seeded
    patients' dates of birth, serves until told to stop, and shuts down gracefully."""
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        *tether.command(sys.executable, "-m", "server", "demo", "--port", str(port)),
        cwd=tmp_path, env=clean_env(), pass_fds=tether.pass_fds(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out: list[str] = []
    err: list[str] = []
    drains: list[asyncio.Task] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            email = (await next_line(process.stdout, out, r"Sign in:\s+(\S+)")).group(1)
            password = (await next_line(process.stdout, out, r"Password:\s+(\S+)")).group(1)
            drains.append(asyncio.create_task(drain(process.stdout, out)))
            await next_line(process.stderr, err, "Application startup complete")
            drains.append(asyncio.create_task(drain(process.stderr, err)))

        base = f"http://127.0.0.1:{port}"
        assert f"API:       {base}/api" in "".join(out)
        assert f"Console:   {base}/ " in "".join(out)
        # the seeded patients' dates of birth: the secure page cannot be passed without them
        for name, born in (("Alex Rivera", "1984-03-12"), ("Sam Chen", "1991-11-02")):
            assert re.search(rf"{name}\s+born {born}", "".join(out)), "".join(out)
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            assert (await client.get("/healthz")).json() == {"status": "ok"}
            console = await client.get("/")
            assert console.status_code == 200
            assert '<script type="module" src="/static/staff/main.js">' in console.text
            login = await client.post("/api/auth/login", headers={"origin": base},
                                      json={"email": email, "password": password})
            assert login.status_code == 200, login.text
            me = login.json()
            assert me["staff"]["role"] == "admin"
            assert me["account"] == {**me["account"], "clinic_name": "Demo Clinic",
                                     "portal_active": True}
            inbox = (await client.get("/api/conversations")).json()["conversations"]
            assert sorted(c["patient"]["display_name"] for c in inbox) == [
                "Alex Rivera", "Sam Chen"]

        key = tmp_path / "data" / "master.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert len(base64.b64decode(key.read_text().strip(), validate=True)) == 32
        assert (tmp_path / "data" / "securechat.db").exists()

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            code = await process.wait()
            await asyncio.gather(*drains)
        # uvicorn re-raises the signal after a graceful shutdown
        assert code in (0, -signal.SIGTERM), "".join(err)
        assert "Application shutdown complete" in "".join(err)
        # the printed password is never in the logs
        assert password not in "".join(err)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        for task in drains:
            task.cancel()


async def test_demo_restart_gives_a_fresh_password(tmp_path: Path) -> None:
    """A second ``demo`` start keeps the data and key but prints a new password."""
    passwords, keys = [], []
    for _ in range(2):
        process = await asyncio.create_subprocess_exec(
            *tether.command(sys.executable, "-m", "server", "demo", "--port", str(free_port())),
            cwd=tmp_path, env=clean_env(), pass_fds=tether.pass_fds(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out: list[str] = []
        err: list[str] = []
        try:
            async with asyncio.timeout(TIMEOUT):
                passwords.append(
                    (await next_line(process.stdout, out, r"Password:\s+(\S+)")).group(1))
                await next_line(process.stderr, err, "Application startup complete")
            keys.append((tmp_path / "data" / "master.key").read_text())
        finally:
            process.terminate()
            async with asyncio.timeout(15):
                await process.communicate()
    assert passwords[0] != passwords[1]
    assert keys[0] == keys[1]


# --- serve --------------------------------------------------------------------------------

async def test_serve_without_master_key_exits_2(tmp_path: Path) -> None:
    """``serve`` refuses to start without a master key, naming SECURECHAT_MASTER_KEY."""
    code, out, err = await run_cli("serve", "--port", str(free_port()), cwd=tmp_path,
                                   env=clean_env(database_url=sqlite_in(tmp_path)))
    assert code == 2, (out, err)
    assert "SECURECHAT_MASTER_KEY" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()  # the demo's key file is never made


async def test_serve_with_unmigrated_database_exits_2(tmp_path: Path) -> None:
    """``serve`` on a database behind this build exits 2 saying to run migrate."""
    key = base64.b64encode(os.urandom(32)).decode()
    code, out, err = await run_cli("serve", "--port", str(free_port()), cwd=tmp_path,
                                   env=clean_env(database_url=sqlite_in(tmp_path),
                                                 master_key=key))
    assert code == 2, (out, err)
    assert "securechat migrate" in err
    assert "Application startup" not in err


async def test_bad_master_key_exits_2(tmp_path: Path) -> None:
    """A master key that is not base64 of 32 bytes exits 2 naming the variable."""
    short = base64.b64encode(os.urandom(16)).decode()
    for key in ("not base64!", short):
        code, _, err = await run_cli("serve", cwd=tmp_path, env=clean_env(
            database_url=sqlite_in(tmp_path), master_key=key))
        assert code == 2
        assert "SECURECHAT_MASTER_KEY" in err


# --- migrate ------------------------------------------------------------------------------

async def test_migrate_is_idempotent(tmp_path: Path) -> None:
    """``migrate`` twice exits 0 both times and leaves the schema at the head revision."""
    env = clean_env(database_url=sqlite_in(tmp_path))
    for _ in range(2):
        code, out, err = await run_cli("migrate", cwd=tmp_path, env=env)
        assert code == 0, err
        assert f"schema is at revision {migrate.head_revision()}" in out
    db = Database(sqlite_in(tmp_path))
    try:
        await migrate.check_current(db)  # raises SchemaOutOfDate otherwise
    finally:
        await db.close()


async def test_migrate_on_the_test_database(tmp_path: Path, database_url: str) -> None:
    """``migrate`` on an up-to-date database (either backend) is a no-op that exits 0."""
    code, out, err = await run_cli("migrate", cwd=tmp_path,
                                   env=clean_env(database_url=database_url))
    assert code == 0, err
    assert migrate.head_revision() in out


# --- create-admin -------------------------------------------------------------------------

async def test_create_admin_then_sign_in(tmp_path: Path, database_url: str,
                                         master_key: bytes, server: RunningServer) -> None:
    """``create-admin`` with the password on stdin prints the account id; that admin can
    then sign in to a node on the same database."""
    tag = secrets.token_hex(4)
    account, email = f"CLI Clinic {tag}", f"Chief-{tag}@Clinic.Test"
    env = clean_env(database_url=database_url,
                    master_key=base64.b64encode(master_key).decode())
    code, out, err = await run_cli("create-admin", "--account", account, "--email", email,
                                   "--name", "Dr Chief", cwd=tmp_path, env=env,
                                   stdin=PASSWORD + "\n")
    assert code == 0, err
    account_id = out.strip()
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
                        account_id), out
    async with server.login(email.lower()) as client:
        me = (await client.get("/api/me")).json()
    assert me["staff"] == {**me["staff"], "role": "admin", "name": "Dr Chief",
                           "email": email.lower()}
    assert me["account"]["id"] == account_id
    assert me["account"]["clinic_name"] == account

    # A second admin in the same account: same id, and the account is not duplicated.
    code, out, err = await run_cli("create-admin", "--account", account, "--email",
                                   f"deputy-{tag}@clinic.test", cwd=tmp_path, env=env,
                                   stdin=PASSWORD + "\n")
    assert code == 0, err
    assert out.strip() == account_id

    # The same email again is a conflict, exit 2.
    code, out, err = await run_cli("create-admin", "--account", account, "--email", email,
                                   cwd=tmp_path, env=env, stdin=PASSWORD + "\n")
    assert code == 2
    assert "conflict" in err


async def test_create_admin_refuses_a_short_password(
        tmp_path: Path, database_url: str, master_key: bytes, services: Services) -> None:
    """A password under 15 characters is refused with a clear message, exit 2, and no
    account is left behind."""
    account = f"Short Clinic {secrets.token_hex(4)}"
    env = clean_env(database_url=database_url,
                    master_key=base64.b64encode(master_key).decode())
    code, out, err = await run_cli("create-admin", "--account", account, "--email",
                                   f"short-{secrets.token_hex(4)}@clinic.test",
                                   cwd=tmp_path, env=env, stdin="tooshort\n")
    assert code == 2, (out, err)
    assert "at least 15 characters" in err
    assert out == ""
    async with services.db.read() as conn:
        assert await account_store.account_by_name(conn, account) is None


async def test_create_admin_needs_the_master_key(tmp_path: Path, database_url: str) -> None:
    """``create-admin`` without a master key exits 2 naming it."""
    code, _, err = await run_cli("create-admin", "--account", "X", "--email", "x@y.test",
                                 cwd=tmp_path, env=clean_env(database_url=database_url),
                                 stdin=PASSWORD + "\n")
    assert code == 2
    assert "SECURECHAT_MASTER_KEY" in err


# --- configuration errors -----------------------------------------------------------------

@pytest.mark.parametrize(("variable", "value"), [
    ("SECURECHAT_PUBLIC_URL", "notaurl"),
    ("SECURECHAT_DATABASE_URL", "mysql://db/securechat"),
    ("SECURECHAT_SESSION_IDLE_SECONDS", "soon"),
    ("SECURECHAT_SESSION_IDLE_SECONDS", "0"),
    ("SECURECHAT_ALLOWED_ORIGINS", "https://clinic.example/app"),
    ("SECURECHAT_LOG_LEVEL", "LOUD"),
    ("SECURECHAT_NO_SUCH_SETTING", "1"),
])
@pytest.mark.parametrize("command", ["serve", "migrate"])
async def test_bad_setting_exits_2_naming_the_variable(tmp_path: Path, variable: str,
                                                       value: str, command: str) -> None:
    """A malformed or unknown SECURECHAT_ variable exits 2 with one line naming it."""
    env = {**clean_env(database_url=sqlite_in(tmp_path)), variable: value}
    code, out, err = await run_cli(command, cwd=tmp_path, env=env)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("securechat: error: ")
    assert variable in lines[0]
    assert not (tmp_path / "securechat.db").exists()
