"""Password hashing: argon2id, bounded so a login flood cannot exhaust memory.

The cost comes from the settings, whose defaults are argon2-cffi's (RFC 9106 low-memory
profile: t=3, m=64 MiB, p=4), above OWASP's floor of 19 MiB / 2 passes; tests lower it.
Each hash holds its memory (64 MiB by default) for ~50 ms, so at most
``concurrency`` run at once (in worker threads, off the event loop) and at most
``queue`` more wait; beyond that the caller is told to retry (429) instead of queueing
without bound.
"""

from __future__ import annotations

import asyncio
import unicodedata
from typing import TYPE_CHECKING

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from server import password_blocklist
from server.errors import AppError, ErrorCode, invalid

if TYPE_CHECKING:
    from server.settings import Settings

# NIST SP 800-63B-4: at least 15 characters for a password-only account; no composition
# rules. Long inputs are refused before hashing so they cost nothing (1,024 bytes).
MIN_PASSWORD_CHARS = 15
MAX_PASSWORD_BYTES = 1024


def normalise(password: str) -> str:
    """NFKC, as 800-63B asks, so the same password typed on two keyboards matches."""
    return unicodedata.normalize("NFKC", password)


def check_policy(password: str, context: tuple[str, ...] = ()) -> None:
    """Raises AppError(invalid_request) when a new password is unacceptable: outside the
    length rules, or guessable (:mod:`server.password_blocklist`; ``context`` holds the
    member's email and name and the account's names, which it must not contain)."""
    if len(password.encode()) > MAX_PASSWORD_BYTES:
        raise invalid(f"password is longer than {MAX_PASSWORD_BYTES} bytes")
    if len(normalise(password)) < MIN_PASSWORD_CHARS:
        raise invalid(f"password must be at least {MIN_PASSWORD_CHARS} characters")
    reason = password_blocklist.refusal(password, context)
    if reason is not None:
        raise invalid(reason)


class PasswordHashing:
    def __init__(self, concurrency: int, queue: int, hasher: PasswordHasher | None = None):
        self._hasher = hasher or PasswordHasher()
        self._slots = asyncio.Semaphore(concurrency)
        self._capacity = concurrency + queue
        self._in_use = 0
        # Verified against when the email is unknown, so both cases cost the same time.
        self._dummy = self._hasher.hash("not a password: used to even out timing")

    @classmethod
    def from_settings(cls, settings: Settings) -> PasswordHashing:
        """The node's hashing: its cost and its bounds, as configured."""
        return cls(settings.password_hash_concurrency, settings.password_hash_queue,
                   PasswordHasher(time_cost=settings.password_hash_time_cost,
                                  memory_cost=settings.password_hash_memory_kib,
                                  parallelism=settings.password_hash_parallelism))

    async def hash(self, password: str) -> str:
        return await self._run(self._hasher.hash, normalise(password))

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        """Constant work whether or not ``stored_hash`` exists (None: unknown user)."""
        if len(password.encode()) > MAX_PASSWORD_BYTES:
            return False
        return await self._run(self._verify_sync, stored_hash, normalise(password))

    def needs_rehash(self, stored_hash: str) -> bool:
        return self._hasher.check_needs_rehash(stored_hash)

    def _verify_sync(self, stored_hash: str | None, password: str) -> bool:
        try:
            self._hasher.verify(self._dummy if stored_hash is None else stored_hash, password)
        except (VerificationError, InvalidHashError):
            return False
        return stored_hash is not None

    async def _run(self, fn, *args):
        if self._in_use >= self._capacity:
            raise AppError(ErrorCode.RATE_LIMITED, "too many sign-ins at once; try again",
                           retry_after_ms=1000)
        self._in_use += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(fn, *args)
        finally:
            self._in_use -= 1
