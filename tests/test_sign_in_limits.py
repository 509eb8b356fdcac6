"""The sign-in counters in the store (server/sign_in_limits.py, server/store/throttle.py):
reservations racing each other are counted one after another on both databases, and
the in-flight bounds per address and per email are exact."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from server.clock import FakeClock
from server.crypto import MasterKey
from server.errors import AppError, ErrorCode
from server.runtime import Services
from server.sign_in_limits import IN_FLIGHT_PER_ADDRESS, IN_FLIGHT_PER_EMAIL, SignInLimits


def limits(services: Services, master_key: bytes) -> SignInLimits:
    return SignInLimits(services.db, services.settings, MasterKey(master_key))


async def test_racing_reservations_admit_exactly_the_limit(
        services: Services, master_key: bytes, clock: FakeClock) -> None:
    """25 reservations at once for one email and address: exactly LOGIN_MAX_FAILURES
    are admitted; the rest are rate_limited with the lock's time left."""
    guard = limits(services, master_key)
    results = await asyncio.gather(
        *[guard.reserve("race@clinic.test", "192.0.2.1", clock.now()) for _ in range(25)],
        return_exceptions=True)
    admitted = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(admitted) == services.settings.login_max_failures
    assert sorted(r.failures for r in admitted) == list(range(1, len(admitted) + 1))
    assert all(isinstance(e, AppError) and e.code == ErrorCode.RATE_LIMITED
               and e.retry_after_ms == services.settings.login_lock_seconds * 1000
               for e in refused)


async def test_a_refund_frees_its_place_and_lifts_the_lock_it_set(
        services: Services, master_key: bytes, clock: FakeClock) -> None:
    """The reservation that reaches the limit locks; giving it back (never checked)
    unlocks, so the next attempt is admitted, and then the lock holds again."""
    guard = limits(services, master_key)
    email, address = "refund@clinic.test", "192.0.2.2"
    taken = [await guard.reserve(email, address, clock.now())
             for _ in range(services.settings.login_max_failures)]
    with pytest.raises(AppError):
        await guard.reserve(email, address, clock.now())
    await guard.refund(taken[-1])
    await guard.reserve(email, address, clock.now())
    with pytest.raises(AppError):
        await guard.reserve(email, address, clock.now())


async def test_in_flight_bounds_per_address_and_per_email(
        services: Services, master_key: bytes) -> None:
    """IN_FLIGHT_PER_EMAIL at once for one email, IN_FLIGHT_PER_ADDRESS for one address;
    a refused one holds nothing, and leaving frees the place."""
    guard = limits(services, master_key)
    with contextlib.ExitStack() as stack:
        for _ in range(IN_FLIGHT_PER_EMAIL):
            stack.enter_context(guard.in_flight("one@clinic.test", "192.0.2.3"))
        with pytest.raises(AppError):
            stack.enter_context(guard.in_flight("one@clinic.test", "192.0.2.4"))
        for n in range(IN_FLIGHT_PER_ADDRESS - IN_FLIGHT_PER_EMAIL):
            stack.enter_context(guard.in_flight(f"u{n}@clinic.test", "192.0.2.3"))
        with pytest.raises(AppError):
            stack.enter_context(guard.in_flight("other@clinic.test", "192.0.2.3"))
        stack.enter_context(guard.in_flight("other@clinic.test", "192.0.2.5"))
    with guard.in_flight("one@clinic.test", "192.0.2.3"):
        pass
