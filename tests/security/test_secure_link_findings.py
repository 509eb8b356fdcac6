"""Regression tests for the probe's secure-link findings (issue 13), each failing before
its fix:

* the link opened again after "End session" with the date of birth alone: now it asks
  for the one-time code as well (docs/security.md);
* older links stayed valid, each with its own five tries: a new link revokes the older
  unverified ones and wrong tries count per conversation;
* turning the portal off did not stop patient access: sessions end at once (an open
  socket is told and closed), links answer a neutral "please call" page;
* an untouched patient page never idled out while staff kept writing: the page's
  automatic read receipts no longer count as the patient's activity.
"""

from __future__ import annotations

import httpx

from server.audit import SYSTEM
from server.clock import FakeClock
from server.errors import AppError, ErrorCode
from server.protocol import Sender, SendRequest
from server.services.links import MAX_FAILURES
from tests.conftest import ORIGIN, make_clinic
from tests.patient.support import (
    DOB,
    WRONG_DOB,
    codes_sent,
    error_code,
    new_link,
    run_node,
    verify,
)
from tests.realtime.wsclient import connect


def patient_cookie(response: httpx.Response) -> str:
    assert response.status_code == 204, response.text
    return f"sc_patient={response.cookies['sc_patient']}"


async def test_after_end_session_the_link_needs_the_code(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """Verified, then "End session": the same link with the right date alone is 202
    ``code_required`` (a code is texted), not a session; with the code it opens."""
    async with run_node(database_url, master_key, clock) as node, node.client() as client:
        clinic = await make_clinic(node.services)
        token = await new_link(node, clinic)
        patient_cookie(await verify(client, token, DOB))
        ended = await client.post("/s/logout", headers={"origin": ORIGIN})
        assert ended.status_code == 303
        again = await verify(client, token, DOB)
        assert again.status_code == 202, again.text
        assert again.json() == {"code_required": True}
        assert "set-cookie" not in again.headers
        [code] = await codes_sent(node, clinic)
        patient_cookie(await verify(client, token, DOB, code))


async def test_tries_count_per_conversation_and_new_links_revoke_old_ones(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """The probe's path: wrong dates spread over links, then the right one on a further
    link. A new link revokes the older unverified one (404); the fifth wrong try over
    all of them locks (423); a link minted after that (an automatic notification) is
    locked too, for the right date as well."""
    async with run_node(database_url, master_key, clock) as node, node.client() as client:
        clinic = await make_clinic(node.services)
        first = await new_link(node, clinic)
        for _ in range(MAX_FAILURES - 2):
            assert error_code(await verify(client, first, WRONG_DOB)) == \
                "invalid_verification"
        second = await new_link(node, clinic)
        assert error_code(await verify(client, first, WRONG_DOB)) == "not_found"
        assert error_code(await verify(client, second, WRONG_DOB)) == "invalid_verification"
        locking = await verify(client, second, WRONG_DOB)
        assert (locking.status_code, error_code(locking)) == (423, "locked")
        third = await new_link(node, clinic)
        right = await verify(client, third, DOB)
        assert (right.status_code, error_code(right)) == (423, "locked")
        assert "set-cookie" not in right.headers
        assert (await client.get(f"/s/{third}")).status_code == 423


async def test_portal_off_ends_patient_access_at_once(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """An admin turns the portal off: the patient's open socket gets the ``account``
    frame and closes 4401; the chat page answers the neutral 409 page; a new socket is
    refused; the link shows "not available, please call <clinic>" (no form) and its
    verification is 409 ``portal_inactive`` without a cookie; a send racing the switch is
    refused; turning the portal back on does not revive the ended session."""
    async with run_node(database_url, master_key, clock) as node, node.client() as client:
        clinic = await make_clinic(node.services)
        clinic_name = (await node.services.accounts.settings(clinic.account_id)).clinic_name
        token = await new_link(node, clinic)
        cookie = patient_cookie(await verify(client, token, DOB))
        async with connect(node.url, cookie) as live:
            await live.wait_type("ready")
            await live.send(type="subscribe", conversation_id=clinic.conversation_id,
                            after_seq=0, ref="s")
            await live.wait_type("subscribed", ref="s")
            async with node.login(clinic.admin_email) as admin:
                off = await admin.put("/api/account/settings", headers={"origin": ORIGIN},
                                      json={"portal_active": False})
                assert off.status_code == 200, off.text
                told = await live.wait_type("account")
                assert told["portal_active"] is False
                assert (await live.close_code())[0] == 4401

                chat = await client.get("/s/chat")
                assert chat.status_code == 409
                assert "Secure messaging is not available" in chat.text
                assert f"Please call {clinic_name}." in chat.text
                page = await client.get(f"/s/{token}")
                assert page.status_code == 409 and f"Please call {clinic_name}." in page.text
                assert "<form" not in page.text and "<input" not in page.text
                refused = await verify(client, token, DOB)
                assert (refused.status_code, error_code(refused)) == (409, "portal_inactive")
                assert "set-cookie" not in refused.headers
                async with connect(node.url, cookie) as again:
                    assert (await again.close_code())[0] == 4401
                try:
                    await node.services.messaging.send(
                        clinic.account_id, Sender("patient", clinic.patient_id, ""),
                        clinic.conversation_id, SendRequest("late-1", "still there?", True),
                        SYSTEM)
                except AppError as exc:
                    assert exc.code is ErrorCode.PORTAL_INACTIVE
                else:
                    raise AssertionError("a patient's send was stored with the portal off")

                on = await admin.put("/api/account/settings", headers={"origin": ORIGIN},
                                     json={"portal_active": True})
                assert on.status_code == 200, on.text
        assert (await client.get("/s/chat")).status_code == 401


async def test_read_receipts_do_not_keep_an_untouched_page_signed_in(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """Staff keep writing; the patient's page answers every message with its automatic
    ``read`` (as client_web/patient does) and nothing else. Past the idle limit since
    the patient last did anything, the socket is closed 4401 and the session is over."""
    async with run_node(database_url, master_key, clock) as node, node.client() as client:
        clinic = await make_clinic(node.services)
        idle = node.services.settings.session_idle_seconds
        cookie = patient_cookie(await verify(client, await new_link(node, clinic), DOB))
        async with (connect(node.url, cookie) as page,
                    node.login(clinic.staff_email) as staff):
            await page.wait_type("ready")
            await page.send(type="subscribe", conversation_id=clinic.conversation_id,
                            after_seq=0, ref="s")
            await page.wait_type("subscribed", ref="s")
            for step in range(1, 4):  # up to three quarters of the idle limit
                clock.advance(seconds=idle / 4)
                sent = await staff.post(
                    f"/api/conversations/{clinic.conversation_id}/messages",
                    headers={"origin": ORIGIN},
                    json={"client_msg_id": f"staff-{step}", "body": f"Update {step}",
                          "secure": True})
                assert sent.status_code == 201, sent.text
                message = await page.wait_type("message", client_msg_id=f"staff-{step}")
                await page.send(type="read", conversation_id=clinic.conversation_id,
                                seq=message["seq"])
                await page.send(type="ping", ref=f"p{step}")
                await page.wait_type("pong", ref=f"p{step}")  # the read was handled
                await node.realtime.upkeep.check_sessions()  # records activity, as the loop does
                assert not page.closed.done(), f"closed early, at step {step}"
            clock.advance(seconds=idle / 4 + 1)  # the limit since the verification
            await node.realtime.upkeep.check_sessions()
            assert (await page.close_code())[0] == 4401
        assert (await client.get("/s/chat")).status_code == 401
