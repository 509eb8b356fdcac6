"""Sign-in limits under attack (issue 13's probe): racing attempts cannot slip past the
lock, one address flooding sign-ins cannot starve another's, and the counts are per
(email, address), per address and per email (server/sign_in_limits.py).

Clients come from distinct loopback addresses (127.0.0.x, bound with httpx's
``local_address``): the address the app counts is the one uvicorn reports, so these are
real different clients, not a header the app might or might not trust."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator

import httpx

from server.clock import FakeClock
from tests.conftest import PASSWORD, make_clinic
from tests.patient.support import Node, run_node

WRONG = "not the password, but long enough"
LIMIT = 5  # the default LOGIN_MAX_FAILURES


@contextlib.asynccontextmanager
async def client_at(node: Node, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose connections come from ``address`` (a loopback address)."""
    transport = httpx.AsyncHTTPTransport(local_address=address,
                                         limits=httpx.Limits(max_connections=100))
    async with httpx.AsyncClient(base_url=node.url, transport=transport, timeout=60) as client:
        yield client


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/api/auth/login", json={"email": email, "password": password})


def codes(responses: list[httpx.Response]) -> list[int]:
    return sorted(r.status_code for r in responses)


async def test_racing_attempts_check_at_most_the_limit(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """Waves of 25 wrong passwords with the right one among them, each wave sent at
    once from one address: over all waves at most LIMIT attempts are checked (401),
    every other one is refused unchecked (429), the right one never signs in, and
    afterwards the right password is refused."""
    async with run_node(database_url, master_key, clock) as node, \
            client_at(node, "127.0.0.2") as client:
        clinic = await make_clinic(node.services)
        answers: list[httpx.Response] = []
        for _ in range(LIMIT + 1):  # enough waves to lock even one check per wave
            attempts = [login(client, clinic.staff_email, WRONG) for _ in range(25)]
            attempts.insert(12, login(client, clinic.staff_email, PASSWORD))
            answers += await asyncio.gather(*attempts)
        statuses = codes(answers)
        assert 200 not in statuses
        assert statuses.count(401) <= LIMIT, statuses
        assert set(statuses) <= {401, 429}
        assert all(r.json()["error"]["code"] == "rate_limited"
                   for r in answers if r.status_code == 429)
        after = await login(client, clinic.staff_email, PASSWORD)
        assert after.status_code == 429 and "set-cookie" not in after.headers


async def test_one_address_flooding_sign_ins_does_not_starve_another(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """60 sign-ins for random emails at once from one address (more than the whole hash
    pool, 2 + 32): once that address is being turned away, the admin's right password
    from another address still signs in."""
    async with run_node(database_url, master_key, clock) as node, \
            client_at(node, "127.0.0.2") as flood, client_at(node, "127.0.0.3") as admin:
        clinic = await make_clinic(node.services)
        attempts = [asyncio.create_task(login(flood, f"{secrets.token_hex(6)}@x.test", WRONG))
                    for _ in range(60)]
        try:
            async with asyncio.timeout(60):
                for done in asyncio.as_completed(attempts):  # the first refusal: the flood
                    if (await done).status_code == 429:     # has filled what it may
                        break
                else:
                    raise AssertionError("the flood was never refused")
            right = await login(admin, clinic.admin_email, PASSWORD)
            assert right.status_code == 200, right.text
        finally:
            answers = await asyncio.gather(*attempts)
        assert set(codes(answers)) <= {401, 429}


async def test_a_guesser_cannot_lock_a_colleague_out_from_elsewhere(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """LIMIT wrong passwords for a colleague's email from one address lock that email
    *there* (the right password is refused from it too); from another address the
    colleague signs in."""
    async with run_node(database_url, master_key, clock) as node, \
            client_at(node, "127.0.0.2") as guesser, \
            client_at(node, "127.0.0.3") as colleague:
        clinic = await make_clinic(node.services)
        wrong = [await login(guesser, clinic.staff_email, WRONG) for _ in range(LIMIT)]
        assert codes(wrong) == [401] * LIMIT
        assert (await login(guesser, clinic.staff_email, PASSWORD)).status_code == 429
        assert (await login(colleague, clinic.staff_email, PASSWORD)).status_code == 200


async def test_one_address_spraying_emails_is_locked(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """LOGIN_MAX_ADDRESS_FAILURES (here 4) failures over different emails lock the
    address: its next attempt, even a right password, is 429; another address is not
    affected; the lock runs out after LOGIN_LOCK_SECONDS."""
    async with run_node(database_url, master_key, clock,
                        login_max_address_failures=4) as node, \
            client_at(node, "127.0.0.2") as sprayer, client_at(node, "127.0.0.3") as other:
        clinic = await make_clinic(node.services)
        wrong = [await login(sprayer, f"user{n}@clinic.test", WRONG) for n in range(4)]
        assert codes(wrong) == [401] * 4
        locked = await login(sprayer, clinic.staff_email, PASSWORD)
        assert locked.status_code == 429 and "set-cookie" not in locked.headers
        assert (await login(other, clinic.staff_email, PASSWORD)).status_code == 200
        clock.advance(minutes=16)
        assert (await login(sprayer, clinic.staff_email, PASSWORD)).status_code == 200


async def test_an_email_is_locked_after_failures_from_many_addresses(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """LOGIN_MAX_EMAIL_FAILURES (here 6) failures for one email, spread over addresses
    that each stay under their own limit, lock the email everywhere."""
    async with run_node(database_url, master_key, clock,
                        login_max_email_failures=6) as node:
        clinic = await make_clinic(node.services)
        for address in ("127.0.0.2", "127.0.0.3"):
            async with client_at(node, address) as client:
                wrong = [await login(client, clinic.staff_email, WRONG) for _ in range(3)]
                assert codes(wrong) == [401] * 3
        async with client_at(node, "127.0.0.4") as fresh:
            right = await login(fresh, clinic.staff_email, PASSWORD)
        assert right.status_code == 429


async def test_a_right_password_gives_back_its_count(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """Signing in does not use up the address's or the email's budget: with an address
    limit of 3, any number of right passwords leave room for 3 failures."""
    async with run_node(database_url, master_key, clock,
                        login_max_address_failures=3) as node, \
            client_at(node, "127.0.0.2") as client:
        clinic = await make_clinic(node.services)
        for _ in range(4):
            assert (await login(client, clinic.staff_email, PASSWORD)).status_code == 200
        wrong = [await login(client, clinic.admin_email, WRONG) for _ in range(4)]
        assert codes(wrong) == [401] * 3 + [429]
