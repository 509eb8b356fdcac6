"""The fault runs' data: one seeded template database per test session, copied for each
run (``CREATE DATABASE … TEMPLATE``), so every fault starts from the same healthy state
without paying for the seed (argon2, 200 patients, their sessions) again."""

from __future__ import annotations

from dataclasses import dataclass

from loadtest.nodes import ORIGIN
from loadtest.seed import seed
from server.notify import Offline
from server.runtime import build_services
from tests.conftest import settings_for_tests

ACCOUNTS = 20
CONVERSATIONS_PER_ACCOUNT = 10  # 200 conversations, one patient each
# Conversations followed (and written to) per staff socket. A socket's sends are handled
# one after another, each waiting for its commit: one socket per account (8 sends/s at
# 250/s) built a backlog of acks over 20 s on this shared machine, two per socket don't.
PER_STAFF_SOCKET = 2


@dataclass(frozen=True, slots=True)
class Thread:
    conversation_id: str
    account_id: str
    patient_cookie: str


@dataclass(frozen=True, slots=True)
class World:
    """What the clients need: staff cookies per account, a patient cookie per thread."""

    threads: list[Thread]
    staff_cookies: dict[str, list[str]]  # account id -> its staff member's sessions

    def threads_of(self, account_id: str) -> list[Thread]:
        return [t for t in self.threads if t.account_id == account_id]


async def seed_world(database_url: str, master_key: bytes) -> World:
    """Accounts with one staff member (one session) and their patients, each with a
    verified patient session; through the services, as ``loadtest/seed.py`` does."""
    settings = settings_for_tests(database_url=database_url, allowed_origins=[ORIGIN],
                                  public_url=ORIGIN)
    services = build_services(settings, master_key, notifier=Offline())
    try:
        data = await seed(services, accounts=ACCOUNTS, staff_per_account=1,
                          patients_per_account=CONVERSATIONS_PER_ACCOUNT,
                          staff_sessions=-(-CONVERSATIONS_PER_ACCOUNT // PER_STAFF_SOCKET))
    finally:
        await services.db.close()
    staff_name, patient_name = data["cookies"]["staff"], data["cookies"]["patient"]
    return World(
        threads=[Thread(p["conversation_id"], p["account_id"],
                        f"{patient_name}={p['session']}") for p in data["patients"]],
        staff_cookies={m["account_id"]: [f"{staff_name}={token}" for token in m["sessions"]]
                       for m in data["staff"]})
