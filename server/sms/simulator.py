"""The built-in SMS provider for the demo and tests: it "sends" by storing the SMS
(encrypted, like everything else) so the demo's phone page can show what each number
received. It never touches a network."""

from __future__ import annotations

import secrets

from server.clock import Clock
from server.keys import KeyRing
from server.sms.base import Sent, SmsProvider
from server.store import sms as sms_store
from server.store.db import Database


def simulated_context(account_id: str, sid: str, field: str) -> str:
    return f"simsms/v1|{account_id}|{sid}|{field}"


class SimulatorProvider(SmsProvider):
    name = "simulator"

    def __init__(self, db: Database, keyring: KeyRing, clock: Clock) -> None:
        self._db = db
        self._keyring = keyring
        self._clock = clock

    async def send(self, *, account_id: str, to: str, from_: str, body: str) -> Sent:
        sid = "SM" + secrets.token_hex(16)
        async with self._db.write() as conn:
            await sms_store.insert_simulated(
                conn, sid=sid, account_id=account_id,
                to_index=self._keyring.master.blind_index("phone", account_id, to),
                to_enc=await self._keyring.seal(conn, account_id, to,
                                                simulated_context(account_id, sid, "to")),
                from_number=from_,
                body_enc=await self._keyring.seal(conn, account_id, body,
                                                  simulated_context(account_id, sid, "body")),
                created_at=self._clock.now())
        # A simulated handset receives at once.
        return Sent(sid=sid, status="delivered")

    async def inbox(self, limit: int = 200) -> list[dict]:
        """What the simulated phones received, newest first, decrypted (demo only)."""
        async with self._db.read() as conn:
            rows = await sms_store.simulated(conn, limit)
            return [{
                "sid": row["sid"], "account_id": row["account_id"],
                "to": await self._keyring.open(conn, row["account_id"], row["to_enc"],
                                               simulated_context(row["account_id"], row["sid"],
                                                                 "to")),
                "from": row["from_number"],
                "body": await self._keyring.open(conn, row["account_id"], row["body_enc"],
                                                 simulated_context(row["account_id"],
                                                                   row["sid"], "body")),
                "at": row["created_at"],
            } for row in rows]
