"""Seed a store for a load test and write what the users need to a JSON file.

    python -m loadtest.seed --out loadtest/run.json --accounts 5 --staff-per-account 20 \\
        --patients 20

Runs against the store the server is configured for (the same ``SECURECHAT_*``
environment: ``DATABASE_URL``, ``MASTER_KEY``/``MASTER_KEY_FILE``, ``PUBLIC_URL``,
``ALLOWED_ORIGINS``) through :func:`server.runtime.build_services`, as the
``securechat`` command does. It creates accounts with the patient portal on, staff with
one known password (the locust ``StaffUser`` signs in with it over HTTP), patients with
their conversations, and a patient session per patient, so a ``PatientUser`` needs no
secure link, date of birth or SMS code.

The output file holds live session tokens and the staff password: it is written with
mode 0600 and should be deleted after the run. Patient sessions end like any other
(``SESSION_IDLE_SECONDS``, 15 min by default, after the seed): seed shortly before
the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from server import audit
from server.audit import SYSTEM
from server.auth import new_session_token
from server.crypto import load_master_key
from server.notify import Offline
from server.protocol import CreatePatientRequest
from server.runtime import Services, build_services
from server.settings import Settings, from_env
from server.store import accounts as account_store
from server.store import migrate
from server.store import sessions as session_store
from server.web import cookies

FORMAT_VERSION = 1
DEMO_MASTER_KEY_FILE = "./data/master.key"  # where `securechat demo` keeps its key
# US numbers 555-0000..9999 in one area code: 10,000 distinct valid phones per account
# (patients' phones are unique per account).
PHONE_PREFIX = "+1415555"
MAX_PATIENTS_PER_ACCOUNT = 10_000
DATE_OF_BIRTH = "1980-05-17"


def write_private_json(path: Path, data: Any) -> None:
    """Write ``data`` as JSON readable by the owner only (it holds session tokens)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when the file existed with wider permissions
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=1)
        out.write("\n")


async def _bounded(limit: int, jobs: Sequence[Callable[[], Awaitable[Any]]]) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return list(await asyncio.gather(*(run(job) for job in jobs)))


async def create_staff(services: Services, account_id: str, *, email: str, name: str,
                       password_hash: str) -> str:
    """A staff member, stored as ``Accounts.create_staff`` does but with a hash computed
    once for the whole seed (argon2id costs ~60 ms and 64 MiB per member)."""
    staff_id = str(uuid.uuid4())
    async with services.db.write() as conn:
        await account_store.insert_staff(
            conn, id=staff_id, account_id=account_id, email=email, name=name, role="staff",
            password_hash=password_hash, active=True, created_at=services.clock.now())
        await audit.append(conn, services.clock, stream=account_id, actor=SYSTEM,
                           action="staff.created", object_type="staff", object_id=staff_id,
                           details={"role": "staff", "via": "loadtest.seed"})
    return staff_id


async def open_staff_session(services: Services, account_id: str, staff_id: str) -> str:
    """A staff session opened without a password check (for the benchmark, which must
    not spend its time in argon2); stored and audited as a sign-in is."""
    token, sid = new_session_token()
    now = services.clock.now()
    async with services.db.write() as conn:
        await session_store.insert_session(
            conn, id=sid, kind="staff", account_id=account_id, staff_id=staff_id,
            created_at=now, last_seen_at=now,
            expires_at=now + timedelta(seconds=services.settings.session_absolute_seconds))
        await audit.append(conn, services.clock, stream=account_id,
                           actor=audit.Actor("staff", staff_id), action="auth.login",
                           object_type="staff", object_id=staff_id,
                           details={"via": "loadtest.seed"})
    return token


async def seed(services: Services, *, accounts: int, staff_per_account: int,
               patients_per_account: int, staff_sessions: int = 0,
               password: str | None = None, tag: str | None = None,
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Create the accounts, staff, patients, conversations and sessions of a run.

    Each account's conversations are shared out among its staff (patient ``p`` to staff
    member ``p % staff_per_account``). ``staff_sessions`` opens that many sessions per
    staff member without signing in (the benchmark's staff sockets); the locust users
    sign in over HTTP instead. Returns the JSON-able description the users read.
    """
    if not 1 <= patients_per_account <= MAX_PATIENTS_PER_ACCOUNT:
        raise ValueError(f"patients per account: 1 to {MAX_PATIENTS_PER_ACCOUNT}")
    if accounts < 1 or staff_per_account < 1:
        raise ValueError("at least one account and one staff member per account")
    tag = tag or secrets.token_hex(3)
    password = password or secrets.token_urlsafe(18)
    say = log or (lambda _text: None)
    limit = 8 if services.db.is_postgres else 1  # SQLite has one writer anyway
    password_hash = await services.hashing.hash(password)

    say(f"seed {tag}: {accounts} account(s)")
    account_ids = await _bounded(limit, [
        (lambda a=a: services.accounts.ensure_account(f"Load Clinic {tag}-{a}",
                                                      portal_active=True))
        for a in range(accounts)])
    staff: list[dict[str, Any]] = []
    patients: list[dict[str, Any]] = []
    say(f"seed {tag}: {accounts * staff_per_account} staff, "
        f"{accounts * patients_per_account} patients and conversations")
    for a, (account_id, _) in enumerate(account_ids):
        members = [{"account_id": account_id, "email": f"staff{s}.{a}@{tag}.loadtest",
                    "name": f"Nurse {a}-{s}", "conversations": [], "sessions": []}
                   for s in range(staff_per_account)]
        ids = await _bounded(limit, [
            (lambda m=m, account_id=account_id: create_staff(
                services, account_id, email=m["email"],
                                      name=m["name"], password_hash=password_hash))
            for m in members])
        for member, staff_id in zip(members, ids, strict=True):
            member["id"] = staff_id
        made = await _bounded(limit, [
            (lambda p=p, a=a, account_id=account_id: services.patients.create(
                account_id, CreatePatientRequest(f"Load Patient {a}-{p}",
                                                 f"{PHONE_PREFIX}{p:04d}", DATE_OF_BIRTH),
                SYSTEM))
            for p in range(patients_per_account)])
        for p, (summary, conversation_id) in enumerate(made):
            members[p % staff_per_account]["conversations"].append(conversation_id)
            patients.append({"account_id": account_id, "id": summary.id,
                             "conversation_id": conversation_id,
                             "staff_email": members[p % staff_per_account]["email"]})
        staff.extend(members)

    say(f"seed {tag}: {len(patients)} patient session(s), "
        f"{len(staff) * staff_sessions} staff session(s)")
    tokens = await _bounded(limit, [
        (lambda p=p: services.patient_sessions.open(p["account_id"], p["id"],
                                                     p["conversation_id"], SYSTEM))
        for p in patients])
    for patient, (token, _principal) in zip(patients, tokens, strict=True):
        patient["session"] = token
    if staff_sessions:
        opened = await _bounded(limit, [
            (lambda m=m: open_staff_session(services, m["account_id"], m["id"]))
            for m in staff for _ in range(staff_sessions)])
        for i, member in enumerate(staff):
            member["sessions"] = opened[i * staff_sessions:(i + 1) * staff_sessions]

    settings = services.settings
    return {
        "version": FORMAT_VERSION,
        "tag": tag,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "origin": sorted(settings.origins)[0],
        "hosts": [],
        "cookies": {"staff": cookies.staff_cookie_name(settings),
                    "patient": cookies.patient_cookie_name(settings)},
        "password": password,
        "session_idle_seconds": settings.session_idle_seconds,
        "accounts": [account_id for account_id, _ in account_ids],
        "staff": staff,
        "patients": patients,
    }


def _settings(args: argparse.Namespace) -> tuple[Settings, bytes]:
    overrides: dict[str, object] = {}
    env = from_env()
    if env.master_key is None and env.master_key_file is None \
            and Path(DEMO_MASTER_KEY_FILE).exists():
        overrides["master_key_file"] = DEMO_MASTER_KEY_FILE  # seeding `make demo`
    settings = from_env(**overrides)
    master = load_master_key(settings.master_key, settings.master_key_file, create=False)
    return settings, master


async def _main(args: argparse.Namespace) -> int:
    settings, master = _settings(args)
    services = build_services(settings, master, notifier=Offline())
    try:
        try:
            await migrate.check_current(services.db)
        except migrate.SchemaOutOfDate as exc:
            print(f"seed: {exc}", file=sys.stderr)
            return 2
        data = await seed(services, accounts=args.accounts,
                          staff_per_account=args.staff_per_account,
                          patients_per_account=args.patients, password=args.password,
                          log=lambda text: print(text, file=sys.stderr))
    finally:
        await services.db.close()
    if args.origin:
        data["origin"] = args.origin
    data["hosts"] = [h.strip().rstrip("/") for h in (args.hosts or "").split(",") if h.strip()]
    write_private_json(Path(args.out), data)
    print(f"wrote {args.out} (mode 0600: it holds session tokens and the staff password; "
          f"delete it after the run): {len(data['staff'])} staff, "
          f"{len(data['patients'])} patients with sessions")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.seed",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="loadtest/run.json")
    parser.add_argument("--accounts", type=int, default=5)
    parser.add_argument("--staff-per-account", type=int, default=20)
    parser.add_argument("--patients", type=int, default=20, help="patients per account")
    parser.add_argument("--password", default=None,
                        help="the staff password (default: a random one, in the file)")
    parser.add_argument("--origin", default=None,
                        help="Origin header to send (default: the first allowed origin)")
    parser.add_argument("--hosts", default=None,
                        help="comma list of node base URLs; users spread over them")
    args = parser.parse_args(argv)
    from server.crypto import CryptoError
    from server.settings import SettingsError
    try:
        return asyncio.run(_main(args))
    except (SettingsError, CryptoError, ValueError) as exc:
        print(f"seed: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
