"""Staff's "Send a new link" (``POST /api/conversations/{id}/links/resend``, issue 13
acceptance 2), end to end against the fake Twilio: after five wrong dates of birth the
new link SMS reaches the provider within seconds whatever the notification window, the
new link opens with the right date, the locked one stays locked, and the sixth resend in
the hour answers 429. Also what it refuses (portal off, STOP, a patient from an unknown
number) and that its audit entries hold no PHI."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import select, update

from server.services.links import MAX_FAILURES, MAX_RESENDS_PER_HOUR
from server.store.sms import set_notified
from server.store.tables import audit_log, patients, sms_outbox
from tests.conftest import ORIGIN
from tests.patient.support import DOB, TOKEN, WRONG_DOB, new_link, verify
from tests.sms.support import PUBLIC_URL, FakeTwilio, Node, sms_clinic

NEW_LINK_SMS = re.compile(rf"here is a new link to your secure messages: "
                          rf"{re.escape(PUBLIC_URL)}/s/({TOKEN})$")


def resend_path(conversation_id: str) -> str:
    return f"/api/conversations/{conversation_id}/links/resend"


async def resend(staff: httpx.AsyncClient, conversation_id: str) -> httpx.Response:
    return await staff.post(resend_path(conversation_id), headers={"origin": ORIGIN})


def new_links_to(fake: FakeTwilio, phone: str) -> list[str]:
    """The tokens of the "new link" SMS Twilio took for ``phone``, oldest first."""
    found = []
    for request in fake.sent(lambda r: r.form.get("To") == phone):
        match = NEW_LINK_SMS.search(request.form.get("Body", ""))
        if match:
            found.append(match.group(1))
    return found


async def test_a_locked_patient_gets_a_working_link_at_once(
        node: Node, fake_twilio: FakeTwilio) -> None:
    clinic = await sms_clinic(node.services)
    old = await new_link(node, clinic)
    async with node.client() as patient:
        tries = [await verify(patient, old, WRONG_DOB) for _ in range(MAX_FAILURES)]
        assert [r.status_code for r in tries] == [401] * (MAX_FAILURES - 1) + [423]

        async with node.login(clinic.staff_email) as staff:
            # A notification went out just now, so the window would hold one back; the
            # resend goes regardless.
            async with node.services.db.write() as conn:
                await set_notified(conn, clinic.conversation_id, node.services.clock.now(), 0)
            answer = await resend(staff, clinic.conversation_id)
            assert answer.status_code == 202, answer.text
            await fake_twilio.wait_for(lambda f: len(new_links_to(f, clinic.phone)) == 1,
                                       timeout=5)
            [fresh] = new_links_to(fake_twilio, clinic.phone)
            body = fake_twilio.sent(lambda r: r.form.get("To") == clinic.phone)[-1] \
                .form["Body"]
            assert body.startswith(f"{clinic.clinic_name}: ")  # the clinic and the link only

            opened = await verify(patient, fresh, DOB)
            assert opened.status_code == 204, opened.text
            still = await verify(patient, old, DOB)
            assert still.status_code == 423 and still.json()["error"]["code"] == "locked"
            assert (await patient.get(f"/s/{old}")).status_code == 423

            for _ in range(MAX_RESENDS_PER_HOUR - 1):
                assert (await resend(staff, clinic.conversation_id)).status_code == 202
            refused = await resend(staff, clinic.conversation_id)
            assert refused.status_code == 429, refused.text
            error = refused.json()["error"]
            assert error["code"] == "rate_limited" and error["retry_after_ms"] > 0
            assert int(refused.headers["retry-after"]) > 0
            await fake_twilio.wait_for(
                lambda f: len(new_links_to(f, clinic.phone)) == MAX_RESENDS_PER_HOUR,
                timeout=5)

    node.services.clock.advance(hours=1, seconds=1)  # the window has passed
    async with node.login(clinic.staff_email) as staff:
        assert (await resend(staff, clinic.conversation_id)).status_code == 202

    async with node.services.db.read() as conn:
        entries = (await conn.execute(select(audit_log).where(
            audit_log.c.stream == clinic.account_id,
            audit_log.c.action == "link.resent"))).mappings().all()
    assert len(entries) == MAX_RESENDS_PER_HOUR + 1
    assert {e["actor_id"] for e in entries} == {clinic.staff_id}
    text = repr([dict(e) for e in entries])
    assert not [s for s in (clinic.phone, DOB, "Pat", fresh, old) if s in text]


async def test_resend_refuses_what_cannot_be_sent(node: Node) -> None:
    """Portal off: 409 ``portal_inactive``; STOP: 409 ``opted_out``; a patient from an
    unknown number (no date of birth to verify with): 422; another account's or an
    unknown conversation: 404. None of them queues anything."""
    clinic = await sms_clinic(node.services)
    other = await sms_clinic(node.services)
    services = node.services
    async with node.login(clinic.admin_email) as admin:
        assert (await resend(admin, other.conversation_id)).status_code == 404
        assert (await resend(admin, "00000000-0000-4000-8000-000000000000")).status_code \
            == 404
        async with services.db.write() as conn:
            await conn.execute(update(patients).where(patients.c.id == clinic.patient_id)
                               .values(opted_out=True))
        answer = await resend(admin, clinic.conversation_id)
        assert (answer.status_code, answer.json()["error"]["code"]) == (409, "opted_out")
        async with services.db.write() as conn:
            await conn.execute(update(patients).where(patients.c.id == clinic.patient_id)
                               .values(opted_out=False, unknown=True))
        answer = await resend(admin, clinic.conversation_id)
        assert (answer.status_code, answer.json()["error"]["code"]) == (422,
                                                                        "invalid_request")
        off = await admin.put("/api/account/settings", json={"portal_active": False},
                              headers={"origin": ORIGIN})
        assert off.status_code == 200, off.text
        answer = await resend(admin, clinic.conversation_id)
        assert (answer.status_code, answer.json()["error"]["code"]) == (409,
                                                                        "portal_inactive")
    async with services.db.read() as conn:
        queued = (await conn.execute(select(sms_outbox.c.id).where(
            sms_outbox.c.conversation_id.in_([clinic.conversation_id,
                                              other.conversation_id])))).all()
    assert queued == []
