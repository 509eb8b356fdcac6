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
from pathlib import Path

from sqlalchemy.engine import make_url

from server import audit, logs
from server.crypto import CryptoError, MasterKey, load_master_key
from server.errors import AppError, ErrorCode
from server.notify import Offline
from server.passwords import check_policy
from server.protocol import CreatePatientRequest
from server.runtime import Services, build_services
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
    admin.add_argument("--sms-number", default=None, help="the account's own SMS number")
    admin.set_defaults(run=_create_admin)

    number = commands.add_parser("set-sms-number",
                                 help="assign an account its own SMS number, or clear it")
    number.add_argument("--account", required=True, help="account name")
    choice = number.add_mutually_exclusive_group(required=True)
    choice.add_argument("--number", help="E.164, e.g. +14155550100")
    choice.add_argument("--clear", action="store_true",
                        help="no number of its own: it texts from the shared number")
    number.set_defaults(run=_set_sms_number)

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
    _private_demo_files(settings.database_url)
    master = load_master_key(settings.master_key, settings.master_key_file, create=True)
    migrate.upgrade(settings.database_url)
    password = asyncio.run(_seed_demo(settings, master))
    base = settings.public_url
    print(f"""
SecureChat demo
  Console:   {base}/   (staff sign-in below)
  API:       {base}/api   (health: {base}/healthz, WebSocket: {base.replace("http", "ws", 1)}/ws)
  Phones:    {base}/dev/phone   (the patients' phones: texts both ways; answer as one)
{_demo_patients_text()}
  Sign in:   {DEMO_ADMIN}
  Password:  {password}
  Try it:    curl -si -c /tmp/sc.cookies -H 'content-type: application/json' \\
               -d '{{"email":"{DEMO_ADMIN}","password":"{password}"}}' {base}/api/auth/login
  Data:      {settings.database_url} (demo only; key in {settings.master_key_file})
""", flush=True)
    _run_server(settings, master, args.host, args.port)
    return 0


def _private_demo_files(database_url: str) -> None:
    """The demo's SQLite files readable by their owner only: new ones are made 0600 in
    a 0700 directory (server/store/db.py); ones made world-readable by earlier versions
    are tightened here, and so is the demo's own ``./data`` directory (never a directory
    an operator chose: that may be shared)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return
    path = Path(url.database)
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(FileNotFoundError):
            file.chmod(0o600)
    data = Path(DEMO_MASTER_KEY_FILE).parent
    if data.is_dir() and path.parent.resolve() == data.resolve():
        data.chmod(0o700)


def _demo_patients_text() -> str:
    """The seeded patients with the dates of birth their secure page asks for: fictional
    people, printed so a demo user can pass the check (never logged)."""
    width = max(len(name) for name, _, _ in DEMO_PATIENTS)
    return "\n".join(
        f"  {'Patients:' if i == 0 else '':<11}{name:<{width}}  born {born}   phone {phone}"
        for i, (name, phone, born) in enumerate(DEMO_PATIENTS))


async def _seed_demo(settings: Settings, master: bytes) -> str:
    """Create the demo clinic, its admin and two patients once; give the admin a fresh
    password on every start (it is printed, never stored in plain text)."""
    services = build_services(settings, master, notifier=Offline())
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

    from server.web.context import app_runtime

    class DrainingServer(uvicorn.Server):
        """On SIGTERM: stop accepting, close every socket with 1012 through the app (a
        proper close handshake, so clients see 1012 rather than a reset), then let
        uvicorn finish its own shutdown. uvicorn shuts down only a server that started,
        so the app's runtime is there."""

        async def shutdown(self, sockets=None) -> None:
            for server in self.servers:
                server.close()
            await app_runtime(self.config.app).drain(DRAIN_SECONDS)
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


def _run_server(settings: Settings, master: bytes, host: str, port: int) -> None:
    import uvicorn

    from server.app import create_app
    from server.web.protocols import protocol_classes

    logs.configure(settings.log_level)
    # uvicorn's own refusals (a malformed request, a broken WebSocket handshake) carry
    # the security headers too; ws is uvicorn's websockets-sansio protocol.
    http, ws = protocol_classes(hsts=settings.secure_cookies)
    config = uvicorn.Config(
        create_app(settings, master), host=host, port=port, lifespan="on",
        log_config=None, access_log=False, http=http,
        # Compression off (it costs 25-100 KB per socket and opens CRIME-style attacks);
        # frames over 64 KiB close with 1009 (the protocol's limit).
        ws=ws, ws_per_message_deflate=False, ws_max_size=64 * 1024,
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
    # Before the account is made, so a refusal leaves nothing.
    check_policy(password, (args.email, args.name or "", args.account))

    async def run(services: Services) -> str:
        if await services.accounts.email_taken(args.email):  # before making an account
            raise AppError(ErrorCode.CONFLICT, "a staff member with this email exists")
        number = args.sms_number and await services.accounts.checked_number(
            args.sms_number, _number_check(settings))
        account_id, _ = await services.accounts.ensure_account(
            args.account, sms_number=number or None)
        await services.accounts.create_staff(account_id, email=args.email,
                                             name=args.name or args.email, role="admin",
                                             password=password)
        return account_id

    print(_with_services(settings, master, run))
    return 0


def _set_sms_number(args: argparse.Namespace) -> int:
    settings = from_env()
    master = load_master_key(settings.master_key, settings.master_key_file, create=False)
    async def run(services: Services) -> tuple[str, str | None]:
        account_id = await services.accounts.account_id(args.account)
        return account_id, await services.accounts.assign_sms_number(
            account_id, None if args.clear else args.number, verify=_number_check(settings))

    account_id, number = _with_services(settings, master, run)
    if number is None:
        print(f"account {account_id}: no SMS number of its own; it texts from the shared "
              "number, and replies reach it when it texted that phone last")
    else:
        print(f"account {account_id}: SMS number {number}; replies to it reach this account")
    return 0


def _number_check(settings: Settings):
    """With Twilio, a number is assigned only if the Twilio account holds it
    (IncomingPhoneNumbers): a typo would otherwise route nobody's replies, or someone
    else's. The simulator holds every number."""
    if settings.sms_provider != "twilio":
        return None
    from server.sms.base import TransientFailure
    from server.sms.twilio import TwilioProvider

    async def holds(number: str) -> bool:
        assert settings.twilio_account_sid and settings.twilio_auth_token
        twilio = TwilioProvider(account_sid=settings.twilio_account_sid,
                                auth_token=settings.twilio_auth_token,
                                api_base=settings.twilio_api_base, status_callback="")
        try:
            return await twilio.owns_number(number)
        except TransientFailure as exc:
            raise AppError(ErrorCode.UNAVAILABLE,
                           f"Twilio could not be asked whether it holds the number "
                           f"({exc.error_code}); try again") from None
        finally:
            await twilio.close()

    return holds


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
    # The chain is keyed by the master key: verifying needs it (and so does forging).
    master = load_master_key(settings.master_key, settings.master_key_file, create=False)
    key = MasterKey(master).audit_key

    async def run() -> int:
        db = Database(settings.database_url)
        failures = 0
        try:
            async with db.read() as conn:
                async for result in audit.verify(conn, key):
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
        services = build_services(settings, master, notifier=Offline())
        try:
            return await work(services)
        finally:
            await services.db.close()

    return asyncio.run(run())


def _url_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "") else host  # noqa: S104 - display only


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

