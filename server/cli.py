"""The ``securechat`` command: the only place that starts processes.

Commands and their contract are in ``docs/protocol.md`` (Command line). Configuration
errors print one line naming the variable and exit 2; ``audit verify`` exits 1 on a
broken chain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import secrets
import signal
import sys
from collections.abc import Sequence

from server import audit, logs
from server.crypto import CryptoError, load_master_key
from server.errors import AppError, ErrorCode
from server.passwords import check_policy
from server.protocol import CreatePatientRequest
from server.services.container import Services, build_services
from server.settings import Settings, SettingsError, env_has, from_env
from server.store import migrate
from server.store.db import Database

DEMO_ACCOUNT = "Demo Clinic"
# How long SIGTERM waits for sockets to close with 1012 before uvicorn's own shutdown.
DRAIN_SECONDS = 5.0
DEMO_ADMIN = "admin@demo.clinic"
DEMO_MASTER_KEY_FILE = "./data/master.key"
# The demo clinic's SMS number (555-01xx numbers are reserved for fiction).
DEMO_SMS_NUMBER = "+12025550142"
DEMO_PATIENTS = (
    ("Alex Rivera", "+1 (415) 555-0134", "1984-03-12"),
    ("Sam Chen", "+1 (415) 555-0178", "1991-11-02"),
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (SettingsError, CryptoError, migrate.SchemaOutOfDate) as exc:
        print(f"securechat: error: {exc}", file=sys.stderr)
        return 2
    except AppError as exc:
        print(f"securechat: {exc.code}: {exc.message}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="securechat", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="command")

    for name, run, text in (("demo", _demo, "run a seeded demo on embedded defaults"),
                            ("serve", _serve, "run a production node, configured by env")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--host", default="127.0.0.1")
        command.add_argument("--port", type=int, default=8000)
        command.set_defaults(run=run)

    commands.add_parser("migrate", help="bring the schema up to date").set_defaults(
        run=_migrate)

    admin = commands.add_parser("create-admin", help="create an account's admin")
    admin.add_argument("--account", required=True, help="account name (created if new)")
    admin.add_argument("--email", required=True)
    admin.add_argument("--name", default=None, help="display name (default: the email)")
    admin.add_argument("--sms-number", default=None, help="the account's SMS number")
    admin.set_defaults(run=_create_admin)

    commands.add_parser("rotate-key", help="give every account a new data key").set_defaults(
        run=_rotate_key)

    audit_cmd = commands.add_parser("audit", help="audit log tools")
    audit_sub = audit_cmd.add_subparsers(required=True, metavar="action")
    audit_sub.add_parser("verify", help="check every hash chain").set_defaults(
        run=_audit_verify)
    return parser


# --- serving ---------------------------------------------------------------------------

def _serve(args: argparse.Namespace) -> int:
    settings = from_env()
    master = load_master_key(settings.master_key, settings.master_key_file, create=False)
    asyncio.run(_check_schema(settings))
    _run_server(settings, master, args.host, args.port)
    return 0


def _demo(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {"demo": True}
    env_settings = from_env()
    if env_settings.master_key is None and env_settings.master_key_file is None:
        overrides["master_key_file"] = DEMO_MASTER_KEY_FILE
    if not env_has("public_url"):
        overrides["public_url"] = f"http://{_url_host(args.host)}:{args.port}"
    settings = from_env(**overrides)
    master = load_master_key(settings.master_key, settings.master_key_file, create=True)
    migrate.upgrade(settings.database_url)
    password = asyncio.run(_seed_demo(settings, master))
    base = settings.public_url
    print(f"""
SecureChat demo
  Console:   {base}/   (staff sign-in below)
  API:       {base}/api   (health: {base}/healthz, WebSocket: {base.replace("http", "ws", 1)}/ws)
  Phones:    {base}/dev/phone   (what the SMS simulator sent; answer as a patient)
  Sign in:   {DEMO_ADMIN}
  Password:  {password}
  Try it:    curl -si -c /tmp/sc.cookies -H 'content-type: application/json' \\
               -d '{{"email":"{DEMO_ADMIN}","password":"{password}"}}' {base}/api/auth/login
  Data:      {settings.database_url} (demo only; key in {settings.master_key_file})
""", flush=True)
    _run_server(settings, master, args.host, args.port)
    return 0


async def _seed_demo(settings: Settings, master: bytes) -> str:
    """Create the demo clinic, its admin and two patients once; give the admin a fresh
    password on every start (it is printed, never stored in plain text)."""
    services = build_services(settings, master)
    password = secrets.token_urlsafe(15)
    try:
        account_id, created = await services.accounts.ensure_account(
            DEMO_ACCOUNT, portal_active=True, sms_number=DEMO_SMS_NUMBER)
        if created:
            await services.accounts.create_staff(account_id, email=DEMO_ADMIN,
                                                 name="Demo Admin", role="admin",
                                                 password=password)
            for name, phone, born in DEMO_PATIENTS:
                await services.patients.create(
                    account_id, CreatePatientRequest(name, phone, born), audit.SYSTEM)
        else:
            await services.accounts.reset_password(DEMO_ADMIN, password)
    finally:
        await services.db.close()
    return password


async def _check_schema(settings: Settings) -> None:
    db = Database(settings.database_url)
    try:
        await migrate.check_current(db)
    finally:
        await db.close()


def _draining_server_class():
    import uvicorn

    class DrainingServer(uvicorn.Server):
        """On SIGTERM: stop accepting, close every socket with 1012 through the app (a
        proper close handshake, so clients see 1012 rather than a reset), then let
        uvicorn finish its own shutdown."""

        async def shutdown(self, sockets=None) -> None:
            for server in self.servers:
                server.close()
            hub = getattr(getattr(self.config.loaded_app, "state", None), "hub", None)
            if hub is None:  # the app may be wrapped by middleware: find the Starlette one
                hub = getattr(getattr(_starlette_app(self.config.loaded_app), "state", None),
                              "hub", None)
            if hub is not None:
                await hub.drain(DRAIN_SECONDS)
            await super().shutdown(sockets)

        def handle_exit(self, sig: int, frame) -> None:
            """uvicorn re-raises the signal it stopped on once shut down, so the process
            dies "killed by SIGTERM" (143). A finished drain is a clean exit: 0, which
            orchestrators and ``docker stop`` read as "stopped as asked"."""
            super().handle_exit(sig, frame)
            if sig == signal.SIGTERM:
                with contextlib.suppress(AttributeError, ValueError):
                    self._captured_signals.remove(sig)

    return DrainingServer


def _starlette_app(app):
    """Walk uvicorn's wrappers (proxy headers, message logger) down to the Starlette app."""
    for _ in range(5):
        if hasattr(app, "state"):
            return app
        app = getattr(app, "app", None)
    return None


def _run_server(settings: Settings, master: bytes, host: str, port: int) -> None:
    import uvicorn

    from server.app import create_app

    logs.configure(settings.log_level)
    config = uvicorn.Config(
        create_app(settings, master), host=host, port=port, lifespan="on",
        log_config=None, access_log=False,
        # Compression off (it costs 25-100 KB per socket and opens CRIME-style attacks);
        # frames over 64 KiB close with 1009 (the protocol's limit).
        ws="websockets-sansio", ws_per_message_deflate=False, ws_max_size=64 * 1024,
        timeout_graceful_shutdown=10,
    )
    server = _draining_server_class()(config)
    server.run()
    if not server.started:
        raise SystemExit(1)


# --- administration --------------------------------------------------------------------

def _migrate(args: argparse.Namespace) -> int:
    settings = from_env()
    migrate.upgrade(settings.database_url)
    print(f"schema is at revision {migrate.head_revision()}")
    return 0


def _create_admin(args: argparse.Namespace) -> int:
    settings = from_env()
    master = load_master_key(settings.master_key, settings.master_key_file, create=False)
    password = _read_password()
    check_policy(password)  # before the account is made, so a refusal leaves nothing

    async def run(services: Services) -> str:
        if await services.accounts.email_taken(args.email):  # before making an account
            raise AppError(ErrorCode.CONFLICT, "a staff member with this email exists")
        account_id, _ = await services.accounts.ensure_account(
            args.account, sms_number=args.sms_number)
        await services.accounts.create_staff(account_id, email=args.email,
                                             name=args.name or args.email, role="admin",
                                             password=password)
        return account_id

    print(_with_services(settings, master, run))
    return 0


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Again: "):
        raise SettingsError("the two passwords differ")
    return first


def _rotate_key(args: argparse.Namespace) -> int:
    settings = from_env()
    master = load_master_key(settings.master_key, settings.master_key_file, create=False)
    rotated = _with_services(settings, master, lambda s: s.accounts.rotate_keys())
    for account_id, key_id in rotated.items():
        print(f"account {account_id}: data key {key_id} is now active")
    print(f"rotated {len(rotated)} account(s); old keys still decrypt what they sealed")
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    settings = from_env()

    async def run() -> int:
        db = Database(settings.database_url)
        failures = 0
        try:
            async with db.read() as conn:
                async for result in audit.verify(conn):
                    if isinstance(result, audit.ChainBreak):
                        failures += 1
                        print(f"FAIL {result}")
                    else:
                        print(f"ok   stream {result}")
        finally:
            await db.close()
        return failures

    failures = asyncio.run(run())
    print("audit log verified" if not failures else f"{failures} broken chain(s)")
    return 1 if failures else 0


def _with_services(settings: Settings, master: bytes, work):
    async def run():
        services = build_services(settings, master)
        try:
            return await work(services)
        finally:
            await services.db.close()

    return asyncio.run(run())


def _url_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - display only


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

