"""The benchmark's data: conversations seeded through the services (each with a staff
and a patient session), and the store readings the scenarios check against."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from loadtest.nodes import ORIGIN
from loadtest.seed import seed
from server.notify import Offline
from server.runtime import Services, build_services
from server.settings import from_env
from server.store.tables import messages


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    account_id: str
    staff_cookie: str  # a session of the account's staff member, for this thread's socket
    patient_cookie: str


class World:
    """Seeded accounts: ``per_account`` conversations each, one staff member per account
    with one session per conversation (and one more for the storm's writer socket)."""

    def __init__(self, services: Services, conversations: list[Conversation],
                 writers: dict[str, str]) -> None:
        self.services = services
        self.conversations = conversations
        self.writers = writers  # account id -> staff cookie of a session of its own

    @classmethod
    async def seed(cls, database_url: str, master_key: bytes, conversations: int,
                   per_account: int) -> World:
        settings = from_env({}, database_url=database_url, allowed_origins=[ORIGIN],
                            public_url=ORIGIN)
        services = build_services(settings, master_key, notifier=Offline())
        accounts = -(-conversations // per_account)
        data = await seed(services, accounts=accounts, staff_per_account=1,
                          patients_per_account=per_account, staff_sessions=per_account + 1)
        staff = {member["account_id"]: member for member in data["staff"]}
        made: list[Conversation] = []
        for i, patient in enumerate(data["patients"][:conversations]):
            sessions = staff[patient["account_id"]]["sessions"]
            made.append(Conversation(patient["conversation_id"], patient["account_id"],
                                     f"sc_staff={sessions[i % per_account]}",
                                     f"sc_patient={patient['session']}"))
        writers = {account_id: f"sc_staff={member['sessions'][-1]}"
                   for account_id, member in staff.items()}
        return cls(services, made, writers)

    async def count_messages(self) -> int:
        async with self.services.db.read() as conn:
            return (await conn.execute(select(func.count()).select_from(messages))
                    ).scalar_one()

    async def positions(self) -> dict[str, int]:
        """Each conversation's last stored ``seq``."""
        ids = [c.id for c in self.conversations]
        found: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            found.update(await self.services.streams.positions(ids[start:start + 500]))
        return {cid: found.get(cid, 0) for cid in ids}

    async def close(self) -> None:
        await self.services.db.close()
