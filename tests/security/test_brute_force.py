"""Guessing limits: staff sign-in (``LOGIN_MAX_FAILURES``), the secure link's date of birth
and its one-time codes (``services.links.MAX_FAILURES``). Each locks after N failures;
the right secret is then refused too; no answer says which factor was wrong; asking for a
new code does not reset the count. The counters are rows locked in the store, so the
sign-in and code tests run on both databases."""

from __future__ import annotations

import httpx

from server.clock import FakeClock
from server.services.links import MAX_FAILURES
from tests.conftest import PASSWORD, make_clinic
from tests.patient.support import (
    DOB,
    WRONG_DOB,
    codes_sent,
    new_link,
    require_code,
    run_node,
    verify,
)
from tests.security.state import sqlite_only

WRONG_PASSWORD = "not the password, but long enough"
LOGIN_FAILURES = 3  # not the default (5): the lock follows the setting


def answer(response: httpx.Response) -> tuple[int, str]:
    """Everything a guesser learns: the status and the body."""
    return response.status_code, response.text


async def test_staff_sign_in_locks_after_the_configured_failures(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """A wrong password and an unknown email answer alike; after LOGIN_MAX_FAILURES
    failures the right password is 429 ``rate_limited`` (with Retry-After), the same
    answer as a wrong one, and no cookie is set."""
    async with run_node(database_url, master_key, clock,
                        login_max_failures=LOGIN_FAILURES) as node, node.client() as client:
        clinic = await make_clinic(node.services)

        async def login(email: str, password: str) -> httpx.Response:
            return await client.post("/api/auth/login",
                                     json={"email": email, "password": password})

        unknown = await login("nobody@clinic.test", WRONG_PASSWORD)
        failures = [await login(clinic.staff_email, WRONG_PASSWORD)
                    for _ in range(LOGIN_FAILURES)]
        assert {answer(r) for r in [unknown, *failures]} == {answer(unknown)}
        assert answer(unknown)[0] == 401
        right, wrong = (await login(clinic.staff_email, PASSWORD),
                        await login(clinic.staff_email, WRONG_PASSWORD))
        assert answer(right) == answer(wrong)
        assert right.status_code == 429 and right.json()["error"]["code"] == "rate_limited"
        assert int(right.headers["retry-after"]) > 0
        assert "set-cookie" not in right.headers


@sqlite_only
async def test_date_of_birth_guesses_lock_the_link(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """MAX_FAILURES wrong dates: the earlier ones 401 ``invalid_verification``, the last
    423 ``locked``; then the right date is 423 too and no session is opened."""
    async with run_node(database_url, master_key, clock) as node, node.client() as client:
        clinic = await make_clinic(node.services)
        link = await new_link(node, clinic)
        codes = [(await verify(client, link, WRONG_DOB)) for _ in range(MAX_FAILURES)]
        assert [r.status_code for r in codes] == [401] * (MAX_FAILURES - 1) + [423]
        assert codes[-1].json()["error"]["code"] == "locked"
        right = await verify(client, link, DOB)
        assert right.status_code == 423 and "set-cookie" not in right.headers


async def test_wrong_codes_count_with_wrong_dates_and_a_new_code_resets_nothing(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """With a code required: wrong dates and wrong codes answer identically and count
    together; asking for a new code between them does not reset the count; the
    MAX_FAILURES-th failure locks, after which the right date with the right (latest)
    code is refused."""
    async with run_node(database_url, master_key, clock) as node, node.client() as client:
        clinic = await make_clinic(node.services)
        await require_code(node, clinic)
        link = await new_link(node, clinic)
        assert (await verify(client, link, DOB)).status_code == 202  # a code is texted
        wrong_date = await verify(client, link, WRONG_DOB, "000000")
        wrong_code = await verify(client, link, DOB, "000000")
        assert answer(wrong_date) == answer(wrong_code)
        assert wrong_date.json()["error"]["code"] == "invalid_verification"
        failures = 2
        while failures < MAX_FAILURES - 1:
            assert (await verify(client, link, DOB)).status_code == 202  # a new code
            assert (await verify(client, link, DOB, "000001")).status_code == 401
            failures += 1
        assert (await verify(client, link, DOB)).status_code == 202
        assert (await verify(client, link, WRONG_DOB)).status_code == 423  # the last try
        latest = (await codes_sent(node, clinic))[-1]
        refused = await verify(client, link, DOB, latest)
        assert refused.status_code == 423 and "set-cookie" not in refused.headers
