"""Guessable staff passwords are refused wherever a password is set (issue 13's probe:
``aaaaaaaaaaaaaaa`` was accepted): an admin adding a member, a password reset and
``securechat create-admin``, each with a message that says why, and nothing stored."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest

from server.errors import AppError, ErrorCode
from server.runtime import Services
from server.store import accounts as account_store
from tests.conftest import ORIGIN, PASSWORD, Clinic, RunningServer
from tests.test_cli import clean_env, run_cli

GUESSABLE = ["aaaaaaaaaaaaaaa", "123456789012345", "Password123456!", "p@ssw0rd1234567",
             "qwertyuiopasdfgh", "iloveyouiloveyou", "correct horse battery staple"]


@pytest.mark.parametrize("password", GUESSABLE)
async def test_an_admin_cannot_give_a_member_a_guessable_password(
        server: RunningServer, clinic: Clinic, password: str) -> None:
    """422 ``invalid_request`` saying it is too easy to guess; the member is not added."""
    email = f"robin-{secrets.token_hex(4)}@clinic.test"
    async with server.login(clinic.admin_email) as client:
        client.headers["origin"] = ORIGIN
        answer = await client.post("/api/staff", json={
            "name": "Robin Reyes", "email": email, "role": "staff", "password": password})
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "invalid_request"
        assert "too easy to guess" in answer.json()["error"]["message"]
        listed = (await client.get("/api/staff")).json()["staff"]
    assert email not in {member["email"] for member in listed}


async def test_a_password_holding_the_clinic_name_or_email_is_refused(
        services: Services, clinic: Clinic) -> None:
    """The account's name (make_clinic's ``Clinic <tag>``), the member's own email or its
    local part: refused when adding a member and when resetting a password."""
    tag = clinic.admin_email.split("-", 1)[1].split("@", 1)[0]
    email = f"robinreyes-{tag}@clinic.test"
    for password in (f"welcome to clinic {tag} today", f"{email} is my password",
                     f"robinreyes-{tag} likes tea"):
        with pytest.raises(AppError) as info:
            await services.accounts.create_staff(clinic.account_id, email=email,
                                                 name="Robin Reyes", role="staff",
                                                 password=password)
        assert info.value.code == ErrorCode.INVALID_REQUEST
        assert "clinic's name" in info.value.message
    with pytest.raises(AppError) as info:
        await services.accounts.reset_password(clinic.staff_email, f"clinic {tag} forever ok")
    assert "clinic's name" in info.value.message
    with pytest.raises(AppError):
        await services.accounts.reset_password(clinic.staff_email, "aaaaaaaaaaaaaaaa")
    await services.accounts.reset_password(clinic.staff_email, PASSWORD)  # a fine one


async def test_create_admin_refuses_a_guessable_password(
        tmp_path: Path, database_url: str, master_key: bytes, services: Services) -> None:
    """``securechat create-admin`` refuses ``aaaaaaaaaaaaaaa`` (15 characters, so only
    the blocklist stops it) with exit 2 and a clear message; no account is made."""
    account = f"Blocked Clinic {secrets.token_hex(4)}"
    env = clean_env(database_url=database_url,
                    master_key=base64.b64encode(master_key).decode())
    code, out, err = await run_cli("create-admin", "--account", account, "--email",
                                   f"blocked-{secrets.token_hex(4)}@clinic.test",
                                   cwd=tmp_path, env=env, stdin="aaaaaaaaaaaaaaa\n")
    assert code == 2, (out, err)
    assert "too easy to guess" in err
    async with services.db.read() as conn:
        assert await account_store.account_by_name(conn, account) is None
