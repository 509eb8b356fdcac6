"""The key ring: each account's data keys, unwrapped on first use and cached.

The newest data key of an account is the active one (it seals); every older one still
opens what it sealed. A node re-reads which key is newest every ``refresh_seconds``, so
``securechat rotate-key`` run elsewhere reaches it within that time; until then it keeps
sealing under the previous key, which stays valid.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.ext.asyncio import AsyncConnection

from server import crypto
from server.clock import Clock
from server.store import accounts as account_store
from server.store.db import Database


class KeyRing:
    def __init__(self, master: crypto.MasterKey, clock: Clock, refresh_seconds: int) -> None:
        self.master = master
        self._clock = clock
        self._refresh = timedelta(seconds=refresh_seconds)
        self._keys: dict[int, tuple[str, AESGCM]] = {}
        self._active: dict[str, tuple[int, datetime]] = {}

    async def create_key(self, conn: AsyncConnection, account_id: str) -> int:
        """Add a new data key for the account, in the caller's transaction; it becomes the
        active one once committed. Nothing is cached here (the transaction may still
        roll back): call :meth:`forget_active` after the commit."""
        raw = crypto.new_data_key()
        return await account_store.insert_data_key(
            conn, account_id, self.master.wrap(raw, account_id), self._clock.now())

    def forget_active(self, account_id: str) -> None:
        """Re-read the account's newest key at the next seal (after a rotation here)."""
        self._active.pop(account_id, None)

    async def active_key_id(self, conn: AsyncConnection, account_id: str) -> int:
        cached = self._active.get(account_id)
        if cached is not None and cached[1] > self._clock.now():
            return cached[0]
        row = await account_store.newest_data_key(conn, account_id)
        if row is None:  # every account gets a key when it is made; this is a bug
            raise crypto.CryptoError(f"account {account_id} has no data key")
        self._active[account_id] = (row["id"], self._clock.now() + self._refresh)
        return row["id"]

    async def seal(self, conn: AsyncConnection, account_id: str, plaintext: str,
                   context: str) -> bytes:
        key_id = await self.active_key_id(conn, account_id)
        key = await self._key(conn, key_id, account_id)
        return crypto.seal(key, key_id, plaintext.encode(), context)

    async def open(self, conn: AsyncConnection, account_id: str, envelope: bytes,
                   context: str) -> str:
        """Decrypt an envelope of this account.

        Raises:
            crypto.DecryptError: altered, moved from another row, or sealed by a key
                that is not this account's.
        """
        key = await self._key(conn, crypto.envelope_key_id(envelope), account_id)
        return crypto.open_envelope(key, envelope, context).decode()

    async def open_with(self, db: Database, account_id: str, envelope: bytes,
                        context: str) -> str:
        """Like :meth:`open`, touching the store only when the key is not cached yet
        (the hot path: a node decrypting a publication once for all its sockets)."""
        cached = self._keys.get(crypto.envelope_key_id(envelope))
        if cached is not None and cached[0] == account_id:
            return crypto.open_envelope(cached[1], envelope, context).decode()
        async with db.read() as conn:
            return await self.open(conn, account_id, envelope, context)

    async def _key(self, conn: AsyncConnection, key_id: int, account_id: str) -> AESGCM:
        cached = self._keys.get(key_id)
        if cached is None:
            row = await account_store.data_key(conn, key_id)
            if row is None:
                raise crypto.DecryptError(f"data key {key_id} does not exist")
            cached = (row["account_id"],
                      AESGCM(self.master.unwrap(row["wrapped"], row["account_id"])))
            self._keys[key_id] = cached
        if cached[0] != account_id:
            raise crypto.DecryptError(f"data key {key_id} belongs to another account")
        return cached[1]
