"""How much guessing and hashing one staff sign-in may cost, per email and per address.

Two kinds of bound, both taken *before* the slow password hash:

* **Attempts over time** (the store's ``login_throttle``, counted atomically by
  :mod:`server.store.throttle`): an attempt is counted on three keys before it is
  checked, and refused (429, nothing counted) when any of them is over its limit:

  - the email *from this address*: ``LOGIN_MAX_FAILURES`` (5). This is the lock a
    guesser meets; it does not lock the colleague signing in from elsewhere.
  - this address, across emails: ``LOGIN_MAX_ADDRESS_FAILURES`` (20), so one address
    cannot spray a password over every email either.
  - the email, from every address: ``LOGIN_MAX_EMAIL_FAILURES`` (50), so a guesser
    with many addresses is still slowed (to 50 per lock window), and locking someone
    out needs ten addresses rather than one.

  A successful sign-in clears the (email, address) count and gives back its attempt on
  the other two (it was not a failure), so a guesser holding one valid account cannot
  wipe their address's count by signing in to it. A right password for a deactivated
  account keeps its count, like a failure.

* **Hashes in flight** (this node's memory): at most :data:`IN_FLIGHT_PER_ADDRESS` per
  address and :data:`IN_FLIGHT_PER_EMAIL` per email wait for or run a hash at once, on
  top of the global pool (``PASSWORD_HASH_CONCURRENCY`` + ``PASSWORD_HASH_QUEUE``), so
  one address flooding sign-ins fills at most its own share of the pool and another
  address's sign-in still gets a place.

The address is the one uvicorn reports (behind a proxy, see docs/security.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta

import msgspec

from server.address_limits import AddressLimit
from server.crypto import MasterKey
from server.errors import AppError, ErrorCode
from server.settings import Settings
from server.store import throttle
from server.store.db import Database

# A clinic behind one NAT may have a few people pressing "Sign in" in the same second;
# 8 is four times the default hashing concurrency yet a quarter of the default pool
# (2 + 32), so at least five flooding addresses are needed to fill it.
IN_FLIGHT_PER_ADDRESS = 8
# A person signs in once at a time; 2 allows a double-click.
IN_FLIGHT_PER_EMAIL = 2
TOO_MANY_AT_ONCE = "too many sign-ins at once; try again"
LOCKED = "too many failed sign-ins; try again later"


class Scope(msgspec.Struct, frozen=True):
    """One counter an attempt is charged to."""

    key: str
    limit: int


class Reservation(msgspec.Struct, frozen=True):
    """The attempt as counted: the (email, address) scope first, then address, email."""

    pair: Scope
    others: tuple[Scope, ...]
    failures: int  # attempts counted for the email from this address, this one included


class SignInLimits:
    def __init__(self, db: Database, settings: Settings, master: MasterKey) -> None:
        self._db = db
        self._settings = settings
        self._master = master
        self._addresses = AddressLimit(IN_FLIGHT_PER_ADDRESS)
        self._emails = AddressLimit(IN_FLIGHT_PER_EMAIL)

    @contextlib.contextmanager
    def in_flight(self, email: str, address: str) -> Iterator[None]:
        """Hold a place for one sign-in from ``address`` for ``email`` while it runs.

        Raises:
            AppError(rate_limited): the address or the email has its share in flight.
        """
        if not self._addresses.acquire(address):
            raise AppError(ErrorCode.RATE_LIMITED, TOO_MANY_AT_ONCE, retry_after_ms=1000)
        try:
            if not self._emails.acquire(email):
                raise AppError(ErrorCode.RATE_LIMITED, TOO_MANY_AT_ONCE,
                               retry_after_ms=1000)
            try:
                yield
            finally:
                self._emails.release(email)
        finally:
            self._addresses.release(address)

    def scopes(self, email: str, address: str) -> tuple[Scope, Scope, Scope]:
        """The three counters, in the order every transaction takes their rows (so two
        concurrent reservations on PostgreSQL cannot deadlock). Keys are blind indexes:
        the table holds no email or address."""
        s = self._settings
        index = self._master.blind_index
        return (Scope(index("login-pair", "-", f"{address}|{email}"), s.login_max_failures),
                Scope(index("login-address", "-", address), s.login_max_address_failures),
                Scope(index("login", "-", email), s.login_max_email_failures))

    async def reserve(self, email: str, address: str, now: datetime) -> Reservation:
        """Count this attempt on every scope, atomically and before any hashing.

        Raises:
            AppError(rate_limited): a scope is locked; ``retry_after_ms`` says until when.
                Nothing was counted (the transaction rolled back).
        """
        window = timedelta(seconds=self._settings.login_lock_seconds)
        pair, *others = self.scopes(email, address)
        counts: list[int] = []
        async with self._db.write() as conn:
            for scope in (pair, *others):
                failures, locked_until = await throttle.reserve(
                    conn, scope.key, limit=scope.limit, now=now, lock_until=now + window,
                    stale_before=now - window)
                if failures > scope.limit:  # raising rolls the whole reservation back
                    until = locked_until or now + window
                    raise AppError(ErrorCode.RATE_LIMITED, LOCKED, retry_after_ms=max(
                        1, int((until - now).total_seconds() * 1000)))
                counts.append(failures)
        return Reservation(pair, tuple(others), counts[0])

    async def refund(self, reservation: Reservation) -> None:
        """Give the attempt back on every scope (it was never checked)."""
        async with self._db.write() as conn:
            for scope in (reservation.pair, *reservation.others):
                await throttle.refund(conn, scope.key, scope.limit)

    @staticmethod
    async def succeeded(conn, reservation: Reservation) -> None:
        """In the sign-in's own transaction: clear the (email, address) count and give
        the attempt back on the others."""
        await throttle.clear(conn, reservation.pair.key)
        for scope in reservation.others:
            await throttle.refund(conn, scope.key, scope.limit)
