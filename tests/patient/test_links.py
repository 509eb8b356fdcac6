"""Secure links over HTTP: opening one changes nothing, unusable links all look alike,
five wrong answers lock, and the one-time code path (issue 5, items 2 and 6)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import update

from server.audit import SYSTEM
from server.clock import FakeClock
from server.services.links import MAX_CODES_PER_HOUR
from server.store.tables import patients
from tests.conftest import Clinic
from tests.patient.support import (
    DOB,
    WRONG_DOB,
    Node,
    codes_sent,
    error_code,
    link_row,
    new_link,
    patient_sessions,
    require_code,
    verify,
)
from tests.realtime.wsclient import connect, staff_cookie

UNKNOWN = "A" * 43


async def audit_actions(node: Node, clinic: Clinic, action: str) -> list[dict]:
    async with node.login(clinic.admin_email) as admin:
        response = await admin.get("/api/audit", params={"action": action})
    assert response.status_code == 200, response.text
    return response.json()["entries"]


async def test_opening_a_link_changes_nothing(node: Node, clinic: Clinic) -> None:
    """Link previews and scanners GET (and HEAD) links: no failure, no session, no cookie,
    and the form is still there after any number of them."""
    token = await new_link(node, clinic)
    async with node.client() as client:
        for _ in range(6):  # more than the lock's five
            page = await client.get(f"/s/{token}")
            head = await client.head(f"/s/{token}")
            assert (page.status_code, head.status_code) == (200, 200)
            assert "set-cookie" not in page.headers and "set-cookie" not in head.headers
            assert head.content == b""
        assert 'name="date_of_birth"' in page.text
        assert f'action="/s/{token}/verify"' in page.text
    row = await link_row(node, token)
    assert (row["failures"], row["locked_at"]) == (0, None)
    assert await patient_sessions(node, clinic) == 0


async def test_expired_revoked_and_unknown_links_look_alike(node: Node, clinic: Clinic,
                                                            clock: FakeClock) -> None:
    """One neutral page: same status and body whatever the reason, for GET, HEAD and the
    verification (JSON and form), with nothing to fill in."""
    expired = await new_link(node, clinic, ttl_hours=72)
    clock.advance(hours=72)
    revoked = await new_link(node, clinic)
    revoked_links, _ = await node.links.revoke(clinic.account_id, clinic.conversation_id,
                                               SYSTEM)
    # Minting ``revoked`` already revoked ``expired`` (a new link revokes the older
    # unverified ones): staff's revocation found one left.
    assert revoked_links == 1
    other = await new_link(node, clinic)  # minted after the revocation: usable
    async with node.client() as client:
        answers = {}
        for name, token in (("unknown", UNKNOWN), ("expired", expired),
                            ("revoked", revoked)):
            page = await client.get(f"/s/{token}")
            head = await client.head(f"/s/{token}")
            json_try = await verify(client, token, DOB)
            form_try = await client.post(f"/s/{token}/verify", data={"date_of_birth": DOB})
            answers[name] = (page.status_code, page.text, head.status_code,
                             json_try.status_code, json_try.text,
                             form_try.status_code, form_try.text)
            assert "set-cookie" not in json_try.headers
        assert len(set(answers.values())) == 1, answers
        status, text, head_status, json_status, json_text, _, _ = answers["unknown"]
        assert (status, head_status, json_status) == (404, 404, 404)
        assert "This link is not valid" in text
        assert "<form" not in text and "<input" not in text
        assert error_code_of(json_text) == "not_found"
        assert (await client.get(f"/s/{other}")).status_code == 200
    assert (await link_row(node, expired))["failures"] == 0
    assert await patient_sessions(node, clinic) == 0


def error_code_of(text: str) -> str:
    match = re.search(r'"code":"([a-z_]+)"', text)
    assert match is not None, text
    return match.group(1)


async def test_five_wrong_dates_lock_the_link(node: Node, clinic: Clinic) -> None:
    token = await new_link(node, clinic)
    async with node.client() as client:
        for attempt in range(1, 5):
            response = await verify(client, token, WRONG_DOB)
            assert response.status_code == 401, attempt
            assert error_code(response) == "invalid_verification"
        fifth = await verify(client, token, WRONG_DOB)
        assert (fifth.status_code, error_code(fifth)) == (423, "locked")
        right = await verify(client, token, DOB)
        assert (right.status_code, error_code(right)) == (423, "locked")
        assert "set-cookie" not in right.headers
        page = await client.get(f"/s/{token}")
        assert page.status_code == 423 and "This link is locked" in page.text
        assert "<input" not in page.text
        form = await client.post(f"/s/{token}/verify", data={"date_of_birth": DOB})
        assert form.status_code == 423 and "This link is locked" in form.text
    row = await link_row(node, token)
    assert row["failures"] == 5 and row["locked_at"] is not None
    assert await patient_sessions(node, clinic) == 0
    [locked] = await audit_actions(node, clinic, "link.locked")
    assert (locked["object_id"], locked["outcome"]) == (clinic.conversation_id, "denied")
    assert len(await audit_actions(node, clinic, "link.verify_failed")) == 4


async def test_malformed_form_entries_count_no_failure(node: Node, clinic: Clinic) -> None:
    """A blank or garbled date is not a wrong answer: the form asks again (400)."""
    token = await new_link(node, clinic)
    async with node.client() as client:
        for entry in ("", "17/05/1980", "1980-05-17<script>"):
            response = await client.post(f"/s/{token}/verify",
                                         data={"date_of_birth": entry})
            assert response.status_code == 400
            assert 'role="alert"' in response.text and "<script>" not in response.text
        bad_json = await client.post(f"/s/{token}/verify", json={"date_of_birth": "x"})
        assert bad_json.status_code == 422
    assert (await link_row(node, token))["failures"] == 0


async def test_right_date_opens_a_session(node: Node, clinic: Clinic) -> None:
    token = await new_link(node, clinic)
    async with node.client() as client:
        response = await verify(client, token, DOB)
        assert response.status_code == 204, response.text
        assert response.cookies.get("sc_patient")
        form = await client.post(f"/s/{token}/verify", data={"date_of_birth": DOB})
        assert (form.status_code, form.headers["location"]) == (303, "/s/chat")
        assert "sc_patient=" in form.headers["set-cookie"]
    assert await patient_sessions(node, clinic) == 2
    assert len(await audit_actions(node, clinic, "link.verified")) == 2


# --- the one-time code --------------------------------------------------------------------

async def test_require_code_setting_asks_for_a_code(node: Node, clinic: Clinic) -> None:
    """The admin's ``require_code`` setting (PUT /api/account/settings) makes a fresh
    link ask for a texted code; turned off, the date of birth is enough again."""
    async with node.login(clinic.admin_email) as admin, node.client() as patient:
        admin.headers["origin"] = node.url
        put = await admin.put("/api/account/settings", json={"require_code": True})
        assert put.status_code == 200 and put.json()["require_code"] is True
        asked = await verify(patient, await new_link(node, clinic), DOB)
        assert (asked.status_code, asked.json()) == (202, {"code_required": True})

        assert (await admin.put("/api/account/settings",
                                json={"require_code": False})).status_code == 200
        assert (await verify(patient, await new_link(node, clinic), DOB)).status_code == 204


async def test_code_when_the_account_requires_it(node: Node, clinic: Clinic,
                                                 clock: FakeClock) -> None:
    await require_code(node, clinic)
    token = await new_link(node, clinic)
    async with node.client() as client:
        asked = await verify(client, token, DOB)
        assert (asked.status_code, asked.json()) == (202, {"code_required": True})
        assert "set-cookie" not in asked.headers
        [code] = await codes_sent(node, clinic)
        assert re.fullmatch(r"\d{6}", code)

        ok = await verify(client, token, DOB, code)
        assert ok.status_code == 204 and ok.cookies.get("sc_patient")

        again = await verify(client, token, DOB, code)  # single use
        assert (again.status_code, error_code(again)) == (401, "invalid_verification")

        assert (await verify(client, token, DOB)).status_code == 202
        late = (await codes_sent(node, clinic))[-1]
        clock.advance(minutes=10)
        expired = await verify(client, token, DOB, late)
        assert (expired.status_code, error_code(expired)) == (401, "invalid_verification")

        assert (await verify(client, token, DOB)).status_code == 202
        in_time = (await codes_sent(node, clinic))[-1]
        clock.advance(minutes=9, seconds=59)
        assert (await verify(client, token, DOB, in_time)).status_code == 204
    assert (await link_row(node, token))["failures"] == 2
    assert await patient_sessions(node, clinic) == 2


async def test_code_when_the_link_is_older_than_a_day(node: Node, clinic: Clinic,
                                                      clock: FakeClock) -> None:
    token = await new_link(node, clinic, ttl_hours=72)
    clock.advance(hours=23, minutes=59)
    async with node.client() as client:
        assert (await verify(client, token, DOB)).status_code == 204
        clock.advance(minutes=2)
        asked = await verify(client, token, DOB)
        assert (asked.status_code, asked.json()) == (202, {"code_required": True})
        [code] = await codes_sent(node, clinic)
        assert (await verify(client, token, DOB, code)).status_code == 204


async def test_wrong_codes_count_toward_the_lock(node: Node, clinic: Clinic) -> None:
    """Dates and codes share the five tries; asking for a new code resets nothing; a
    wrong date with the right code spends no code but counts."""
    await require_code(node, clinic)
    token = await new_link(node, clinic)
    async with node.client() as client:
        assert (await verify(client, token, WRONG_DOB)).status_code == 401  # 1
        assert (await verify(client, token, DOB)).status_code == 202
        [first] = await codes_sent(node, clinic)
        wrong = f"{(int(first) + 1) % 10**6:06d}"
        assert (await verify(client, token, DOB, wrong)).status_code == 401  # 2
        assert (await verify(client, token, WRONG_DOB, first)).status_code == 401  # 3
        assert (await verify(client, token, DOB)).status_code == 202  # a new code
        assert (await link_row(node, token))["failures"] == 3
        latest = (await codes_sent(node, clinic))[-1]
        assert (await verify(client, token, DOB, wrong if wrong != latest else first)
                ).status_code == 401  # 4
        fifth = await verify(client, token, DOB, "000000" if latest != "000000"
                             else "111111")
        assert (fifth.status_code, error_code(fifth)) == (423, "locked")
        for code in (first, latest):
            refused = await verify(client, token, DOB, code)
            assert (refused.status_code, error_code(refused)) == (423, "locked")
        assert (await verify(client, token, DOB)).status_code == 423  # no more codes
    assert len(await codes_sent(node, clinic)) == 2
    assert await patient_sessions(node, clinic) == 0
    assert len(await audit_actions(node, clinic, "link.locked")) == 1


async def test_codes_per_hour_are_capped(node: Node, clinic: Clinic, clock: FakeClock
                                         ) -> None:
    """Knowing the date of birth does not let anyone flood the phone with codes."""
    await require_code(node, clinic)
    token = await new_link(node, clinic)
    async with node.client() as client:
        for _ in range(MAX_CODES_PER_HOUR):
            assert (await verify(client, token, DOB)).status_code == 202
            clock.advance(minutes=1)
        refused = await verify(client, token, DOB)
        assert (refused.status_code, error_code(refused)) == (429, "rate_limited")
        assert int(refused.headers["retry-after"]) == 55 * 60
        clock.advance(minutes=55)
        assert (await verify(client, token, DOB)).status_code == 202
    assert len(await codes_sent(node, clinic)) == MAX_CODES_PER_HOUR + 1
    assert (await link_row(node, token))["failures"] == 0


async def test_no_code_to_an_opted_out_phone(node: Node, clinic: Clinic) -> None:
    await require_code(node, clinic)
    async with node.services.db.write() as conn:
        await conn.execute(update(patients).where(patients.c.id == clinic.patient_id)
                           .values(opted_out=True))
    token = await new_link(node, clinic)
    async with node.client() as client:
        response = await verify(client, token, DOB)
        assert (response.status_code, error_code(response)) == (409, "opted_out")
    assert await codes_sent(node, clinic) == []
    assert (await link_row(node, token))["failures"] == 0


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_code_by_form(node: Node, clinic: Clinic) -> None:
    """Without JavaScript: the date, then the form asks for the code (keeping the date);
    a wrong code keeps asking for one; "Text me a new code" texts another."""
    await require_code(node, clinic)
    token = await new_link(node, clinic)
    async with node.client() as client:
        step = await client.post(f"/s/{token}/verify", data={"date_of_birth": DOB})
        assert step.status_code == 200
        assert 'name="code"' in step.text and f'value="{DOB}"' in step.text
        [code] = await codes_sent(node, clinic)
        wrong = f"{(int(code) + 1) % 10**6:06d}"
        bad = await client.post(f"/s/{token}/verify",
                                data={"date_of_birth": DOB, "code": wrong})
        assert bad.status_code == 401 and 'name="code"' in bad.text
        assert 'role="alert"' in bad.text and 'aria-invalid="true"' in bad.text
        resend = await client.post(f"/s/{token}/verify",
                                   data={"date_of_birth": DOB, "code": "", "resend": "1"})
        assert resend.status_code == 200 and 'name="code"' in resend.text
        assert len(await codes_sent(node, clinic)) == 2
        done = await client.post(f"/s/{token}/verify",
                                 data={"date_of_birth": DOB, "code": code})
        assert (done.status_code, done.headers["location"]) == (303, "/s/chat")
    assert (await link_row(node, token))["failures"] == 1


async def test_staff_are_told_when_a_link_locks(node: Node, clinic: Clinic) -> None:
    """The fifth wrong try pushes a ``notice`` (link_locked) to the account's staff."""
    token = await new_link(node, clinic)
    cookie = await staff_cookie(node, clinic.staff_email)
    async with connect(node.url, cookie, origin=node.url) as staff, \
            node.client() as client:
        await staff.wait_type("ready")
        for _ in range(5):
            await verify(client, token, WRONG_DOB)
        notice = await staff.wait_type("notice")
    assert (notice["conversation_id"], notice["notice"]) == (clinic.conversation_id,
                                                             "link_locked")
