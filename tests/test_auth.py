"""Staff sign-in and sessions over the real server: lockout after five failures, idle and
absolute expiry, argon2id hashes (and their upgrade), logout, fixation and cookie flags.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select, update

from server.app import create_app
from server.clock import FakeClock
from server.runtime import Services
from server.settings import Settings, from_env
from server.store.tables import staff
from tests.conftest import ORIGIN, PASSWORD, Clinic, RunningServer, settings_for_tests
from tests.serving import serve_app

LOGIN = "/api/auth/login"
WRONG = "not the password, but long enough"
DEFAULT_ARGON2ID = re.compile(r"^\$argon2id\$v=19\$m=65536,t=3,p=4\$")
UNAUTHENTICATED = {"error": {"code": "unauthenticated", "message": "wrong email or password"}}


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD
                ) -> httpx.Response:
    return await client.post(LOGIN, json={"email": email, "password": password})


async def stored_hash(services: Services, staff_id: str) -> str:
    async with services.db.read() as conn:
        return (await conn.execute(select(staff.c.password_hash)
                                   .where(staff.c.id == staff_id))).scalar_one()


def set_cookie(response: httpx.Response) -> tuple[str, str, dict[str, str | None]]:
    """The single Set-Cookie of a response as (name, value, {lower-case attribute: value})."""
    headers = response.headers.get_list("set-cookie")
    assert len(headers) == 1, headers
    first, *attributes = [part.strip() for part in headers[0].split(";")]
    name, _, value = first.partition("=")
    parsed: dict[str, str | None] = {}
    for attribute in attributes:
        key, sep, val = attribute.partition("=")
        parsed[key.lower()] = val if sep else None
    return name, value, parsed


@contextlib.asynccontextmanager
async def serve(app) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on a free port; yields its base URL."""
    async with serve_app(app) as served:
        yield served.url


# --- lockout ------------------------------------------------------------------------------

async def test_wrong_password_and_unknown_email_answer_identically(
        server: RunningServer, clinic: Clinic) -> None:
    """A wrong password and an unknown email get the same status and body, five times."""
    async with server.client() as client:
        for _ in range(5):
            wrong = await login(client, clinic.staff_email, WRONG)
            unknown = await login(client, "nobody-" + clinic.staff_email, WRONG)
            assert wrong.status_code == unknown.status_code == 401
            assert wrong.json() == unknown.json() == UNAUTHENTICATED
            assert "set-cookie" not in wrong.headers


async def test_sixth_attempt_is_locked_even_with_the_right_password(
        server: RunningServer, clinic: Clinic, clock: FakeClock) -> None:
    """Five failures lock the email: the sixth attempt, right password or not, is 429."""
    async with server.client() as client:
        for _ in range(5):
            assert (await login(client, clinic.staff_email, WRONG)).status_code == 401
        sixth = await login(client, clinic.staff_email, WRONG)
        assert sixth.status_code == 429
        error = sixth.json()["error"]
        assert error["code"] == "rate_limited"
        assert error["retry_after_ms"] == 15 * 60 * 1000  # the clock has not moved
        assert sixth.headers["retry-after"] == str(15 * 60)

        right = await login(client, clinic.staff_email)
        assert right.status_code == 429
        assert right.json()["error"]["code"] == "rate_limited"
        assert "set-cookie" not in right.headers

        clock.advance(minutes=14)
        still = await login(client, clinic.staff_email)
        assert still.status_code == 429
        assert still.json()["error"]["retry_after_ms"] == 60 * 1000


async def test_unknown_email_is_locked_too(server: RunningServer, clinic: Clinic) -> None:
    """An email that does not exist locks like one that does (nothing tells them apart)."""
    async with server.client() as client:
        for email in ("nobody-" + clinic.staff_email, clinic.staff_email):
            answers = [await login(client, email, WRONG) for _ in range(6)]
            assert [a.status_code for a in answers] == [401] * 5 + [429]
        assert answers[-1].json()["error"]["code"] == "rate_limited"


async def test_lock_expires_and_success_resets_the_count(
        server: RunningServer, clinic: Clinic, clock: FakeClock) -> None:
    """After 16 minutes the right password works, and the count starts again from zero."""
    async with server.client() as client:
        for _ in range(6):
            await login(client, clinic.staff_email, WRONG)
        assert (await login(client, clinic.staff_email)).status_code == 429
        clock.advance(minutes=16)
        assert (await login(client, clinic.staff_email)).status_code == 200
        # A fresh budget of exactly five failures: the sixth attempt is locked again.
        answers = [await login(client, clinic.staff_email, WRONG) for _ in range(6)]
        assert [a.status_code for a in answers] == [401] * 5 + [429]


async def test_failure_after_an_expired_lock_counts_afresh(
        server: RunningServer, clinic: Clinic, clock: FakeClock) -> None:
    """A wrong password after the lock ran out is a plain 401, not an instant re-lock."""
    async with server.client() as client:
        for _ in range(6):
            await login(client, clinic.staff_email, WRONG)
        clock.advance(minutes=16)
        answers = [await login(client, clinic.staff_email, WRONG) for _ in range(5)]
        assert [a.status_code for a in answers] == [401] * 5
        assert (await login(client, clinic.staff_email)).status_code == 429


async def test_overlong_password_is_refused(server: RunningServer, clinic: Clinic) -> None:
    """Passwords over 1,024 characters or bytes are refused with an error body."""
    async with server.client() as client:
        too_many_chars = await login(client, clinic.staff_email, "a" * 1025)
        too_many_bytes = await login(client, clinic.staff_email, "é" * 600)  # 1,200 bytes
    for response in (too_many_chars, too_many_bytes):
        assert response.status_code in (401, 422), response.text
        error = response.json()["error"]
        assert error["code"] == {401: "unauthenticated",
                                 422: "invalid_request"}[response.status_code]
        assert isinstance(error["message"], str) and error["message"]
    assert too_many_chars.status_code == 422
    assert too_many_chars.json()["error"]["message"].startswith("password:")


async def test_login_body_is_validated(server: RunningServer) -> None:
    """A login body with a missing or unknown field is 422 naming the field."""
    async with server.client() as client:
        missing = await client.post(LOGIN, json={"email": "a@b.test"})
        extra = await client.post(LOGIN, json={"email": "a@b.test", "password": "x",
                                               "remember": True})
    assert missing.status_code == extra.status_code == 422
    assert "password" in missing.json()["error"]["message"]
    assert "remember" in extra.json()["error"]["message"]


# --- sessions -----------------------------------------------------------------------------

async def test_idle_session_expires(server: RunningServer, clinic: Clinic,
                                    clock: FakeClock) -> None:
    """Activity keeps a session alive; 16 minutes without it ends the session."""
    async with server.login(clinic.staff_email) as client:
        clock.advance(minutes=14)
        assert (await client.get("/api/me")).status_code == 200
        clock.advance(minutes=14)
        assert (await client.get("/api/me")).status_code == 200
        clock.advance(minutes=16)
        expired = await client.get("/api/me")
        assert expired.status_code == 401
        assert expired.json()["error"]["code"] == "unauthenticated"
        clock.advance(minutes=1)  # and it stays ended
        assert (await client.get("/api/me")).status_code == 401


async def test_background_requests_do_not_extend_the_idle_limit(
        server: RunningServer, clinic: Clinic, clock: FakeClock) -> None:
    """A request marked ``x-securechat-background: 1`` is served but is not activity."""
    async with server.login(clinic.staff_email) as client:
        background = {"x-securechat-background": "1"}
        clock.advance(minutes=10)
        assert (await client.get("/api/me", headers=background)).status_code == 200
        clock.advance(minutes=4)
        assert (await client.get("/api/me", headers=background)).status_code == 200
        clock.advance(minutes=2)  # 16 minutes after the last user action
        assert (await client.get("/api/me", headers=background)).status_code == 401
    async with server.login(clinic.staff_email) as client:  # control: the same, as activity
        clock.advance(minutes=10)
        assert (await client.get("/api/me")).status_code == 200
        clock.advance(minutes=6)
        assert (await client.get("/api/me")).status_code == 200


async def test_absolute_limit_ends_an_active_session(server: RunningServer, clinic: Clinic,
                                                     clock: FakeClock) -> None:
    """A session used every 10 minutes still ends 12 hours after sign-in."""
    async with server.login(clinic.staff_email) as client:
        for _ in range(71):  # up to 11 h 50 min
            clock.advance(minutes=10)
            assert (await client.get("/api/me")).status_code == 200
        clock.advance(minutes=10)  # 12 h
        response = await client.get("/api/me")
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"


async def test_logout_ends_the_session(server: RunningServer, clinic: Clinic) -> None:
    """After logout the old cookie is refused, and the response clears the cookie."""
    async with server.login(clinic.staff_email) as client:
        token = client.cookies["sc_staff"]
        response = await client.post("/api/auth/logout")
        assert response.status_code == 204
        name, value, attributes = set_cookie(response)
        assert name == "sc_staff" and value in ("", '""')
        assert attributes["max-age"] == "0"
    async with server.client() as replay:
        response = await replay.get("/api/me", headers={"cookie": f"sc_staff={token}"})
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthenticated"
        assert (await replay.post("/api/auth/logout",
                                  headers={"cookie": f"sc_staff={token}"})).status_code == 401


async def test_session_fixation_is_impossible(server: RunningServer, clinic: Clinic) -> None:
    """Every sign-in issues a new random value; a value the client made up is ignored."""
    planted = "attacker-chosen-session-value-0123456789abcdef"
    async with server.client() as client:
        planted_cookie = {"cookie": f"sc_staff={planted}"}
        assert (await client.get("/api/me", headers=planted_cookie)).status_code == 401
        first = await client.post(LOGIN, headers=planted_cookie,
                                  json={"email": clinic.staff_email, "password": PASSWORD})
        second = await client.post(LOGIN, headers=planted_cookie,
                                   json={"email": clinic.staff_email, "password": PASSWORD})
    values = [set_cookie(r)[1] for r in (first, second)]
    assert planted not in values
    assert values[0] != values[1]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{43}", v) for v in values)  # 256 bits
    async with server.client() as client:
        for value in values:  # both are real sessions
            me = await client.get("/api/me", headers={"cookie": f"sc_staff={value}"})
            assert me.status_code == 200
        refused = await client.get("/api/me", headers={"cookie": f"sc_staff={planted}"})
        assert refused.status_code == 401


async def test_cookie_flags_over_http(server: RunningServer, clinic: Clinic) -> None:
    """Over http the cookie is ``sc_staff``: HttpOnly, SameSite=Strict, Path=/, no Domain,
    no expiry."""
    async with server.client() as client:
        response = await login(client, clinic.staff_email)
    assert response.status_code == 200
    name, _, attributes = set_cookie(response)
    assert name == "sc_staff"
    assert "httponly" in attributes
    assert (attributes["samesite"] or "").lower() == "strict"
    assert attributes["path"] == "/"
    assert "domain" not in attributes
    assert "secure" not in attributes
    assert "max-age" not in attributes and "expires" not in attributes


async def test_https_public_url_gives_a_host_prefixed_secure_cookie(
        database_url: str, master_key: bytes, clock: FakeClock, clinic: Clinic) -> None:
    """With an https PUBLIC_URL the cookie is ``__Host-sc_staff`` with Secure, and only
    that name is read back."""
    settings = settings_for_tests(database_url=database_url, public_url="https://clinic.example",
                                  allowed_origins=["https://clinic.example"],
                                  password_hash_concurrency=2)
    app = create_app(settings, master_key, clock=clock)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await login(client, clinic.staff_email)
        assert response.status_code == 200, response.text
        name, value, attributes = set_cookie(response)
        assert name == "__Host-sc_staff"
        assert "secure" in attributes and "httponly" in attributes
        assert (attributes["samesite"] or "").lower() == "strict"
        assert attributes["path"] == "/"
        assert "domain" not in attributes
        client.cookies.clear()  # httpx would not send a Secure cookie over http anyway
        me = await client.get("/api/me", headers={"cookie": f"__Host-sc_staff={value}"})
        assert me.status_code == 200
        assert me.json()["staff"]["email"] == clinic.staff_email
        plain = await client.get("/api/me", headers={"cookie": f"sc_staff={value}"})
        assert plain.status_code == 401


# --- password hashes ---------------------------------------------------------------------

class TestProductionCost:
    """At the default (production) argon2 cost, not the suite's cheap one."""

    @pytest.fixture
    def settings(self, database_url: str) -> Settings:
        return from_env({}, database_url=database_url, allowed_origins=[ORIGIN],
                        password_hash_concurrency=2)

    async def test_stored_hash_is_argon2id(self, services: Services, clinic: Clinic) -> None:
        """The stored password hash is argon2id with the RFC 9106 low-memory parameters."""
        assert DEFAULT_ARGON2ID.match(await stored_hash(services, clinic.staff_id))

    async def test_weak_hash_is_upgraded_at_sign_in(self, server: RunningServer,
                                                    services: Services, clinic: Clinic) -> None:
        """A hash made with weaker parameters is replaced by a default one at the next
        sign-in."""
        weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
        async with services.db.write() as conn:
            await conn.execute(update(staff).where(staff.c.id == clinic.staff_id)
                               .values(password_hash=weak))
        assert await stored_hash(services, clinic.staff_id) == weak
        async with server.login(clinic.staff_email) as client:
            assert (await client.get("/api/me")).status_code == 200
        upgraded = await stored_hash(services, clinic.staff_id)
        assert upgraded != weak
        assert DEFAULT_ARGON2ID.match(upgraded)
        async with server.login(clinic.staff_email):  # the new hash verifies the same password
            pass
