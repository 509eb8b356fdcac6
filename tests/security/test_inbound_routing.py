"""Issue 13's inbound-SMS findings: who receives a patient's reply.

* High: an admin set their clinic's number to the shared ``TWILIO_FROM`` (or any number)
  by ``PUT /api/account/settings`` and received other clinics' patients' replies. The
  number is now the operator's to assign (``securechat set-sms-number``): a PUT that
  changes it is 403, and the shared number can be no clinic's own.
* Medium: replies to the shared number were dropped, STOP included. They now reach the
  clinic that texted that phone from it last, a STOP opts the phone out in every clinic
  that texted it from the shared number, and a clinic that never texted it gets nothing.
* Lower: a malformed ``MessageSid`` is refused (it is the de-duplication key); a body
  over 1,600 characters is cut and marked.

Real node, real database, fake Twilio (the only fake), real staff WebSockets.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from server.audit import SYSTEM
from server.clock import FakeClock
from server.runtime import Services
from server.services.inbound_sms import CUT_MARK, MAX_BODY
from server.settings import Settings
from server.store import accounts as account_store
from server.store.tables import conversations, patients
from tests.cli import clean_env, run_cli
from tests.conftest import ORIGIN, Clinic, make_clinic
from tests.sms.support import (
    ACCOUNT_SID,
    INBOUND_PATH,
    TWILIO_FROM,
    FakeTwilio,
    Node,
    count_messages,
    inbound,
    inbound_params,
    message_sid,
    new_phone,
    opted_out,
    post_signed,
    run_node,
    sent_ok,
    staff_socket,
    twilio_settings,
)

SETTINGS = "/api/account/settings"


@pytest.fixture
async def fake_twilio() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio.running() as fake:
        yield fake


@pytest.fixture
def settings(database_url: str, fake_twilio: FakeTwilio) -> Settings:
    return twilio_settings(database_url, fake_twilio)


@pytest.fixture
async def node(settings: Settings, master_key: bytes, clock: FakeClock
               ) -> AsyncIterator[Node]:
    async with run_node(settings, master_key, clock) as running:
        yield running


async def text_from_shared_number(node: Node, clinic: Clinic, body: str) -> None:
    """Staff of ``clinic`` (no number of its own) text their patient; returns once the
    SMS left, from the shared number."""
    async with staff_socket(node, clinic.staff_email, clinic.conversation_id) as ws, \
            node.login(clinic.staff_email) as client:
        message = await sent_ok(client, clinic.conversation_id, body,
                                secrets.token_hex(8))
        await ws.wait_type("status", message_id=message["id"], status="sent", timeout=10)


async def thread_bodies(services: Services, conversation_id: str) -> list[str]:
    """The inbound messages of a thread, decrypted, oldest first."""
    async with services.db.read() as conn:
        account_id = (await conn.execute(select(conversations.c.account_id).where(
            conversations.c.id == conversation_id))).scalar_one()
    page = await services.messaging.history(account_id, conversation_id, before_seq=None,
                                            limit=50, actor=SYSTEM)
    return [m.body for m in page.messages if m.direction == "inbound"]


async def patients_with_phone(services: Services, account_id: str, phone: str) -> int:
    async with services.db.read() as conn:
        return len((await conn.execute(select(patients.c.id).where(
            patients.c.account_id == account_id,
            patients.c.phone_index == services.patients.phone_index(account_id, phone))
        )).all())


# --- High: the number is not the admin's to set ----------------------------------------

async def test_admin_cannot_take_the_shared_number_or_any_number(
        node: Node, fake_twilio: FakeTwilio) -> None:
    """PUT with the shared number, or any other number, is 403 and changes nothing; the
    unchanged value (a form sending every field) is accepted. The reply the admin hoped
    to catch reaches the clinic that texted the patient."""
    phone = new_phone()
    victim = await make_clinic(node.services, phone=phone, patient_name="Maria Lopez")
    attacker = await make_clinic(node.services)
    await text_from_shared_number(node, victim, "Your results are in; call us.")

    async with node.login(attacker.admin_email) as client:
        client.headers["origin"] = ORIGIN
        for number in (TWILIO_FROM, "(415) 555-0199", new_phone(), "not a number"):
            response = await client.put(SETTINGS, json={"sms_number": number,
                                                         "clinic_name": "Changed"})
            assert response.status_code == 403, response.text
            error = response.json()["error"]
            assert error["code"] == "forbidden" and "set-sms-number" in error["message"]
        same = await client.put(SETTINGS, json={"sms_number": None,
                                                "secure_link_ttl_hours": 24})
        assert same.status_code == 200, same.text
    settings = await node.services.accounts.settings(attacker.account_id)
    assert settings.sms_number is None and settings.clinic_name != "Changed"
    assert settings.secure_link_ttl_hours == 24

    await inbound(node, to=TWILIO_FROM, from_=phone, body="Is it my biopsy? Maria")
    assert await thread_bodies(node.services, victim.conversation_id) == [
        "Is it my biopsy? Maria"]
    assert await patients_with_phone(node.services, attacker.account_id, phone) == 0


async def test_the_operator_cannot_assign_the_shared_number_either(
        node: Node) -> None:
    """The service behind ``set-sms-number`` refuses the shared number (in either
    spelling) and a number another account holds."""
    clinic, other = await make_clinic(node.services), await make_clinic(node.services)
    for number in (TWILIO_FROM, "(415) 555-0199", "+15005550006"):
        with pytest.raises(Exception, match="shared sending number"):
            await node.services.accounts.assign_sms_number(clinic.account_id, number)
    own = new_phone()
    assert await node.services.accounts.assign_sms_number(other.account_id, own) == own
    with pytest.raises(Exception, match="another account uses this number"):
        await node.services.accounts.assign_sms_number(clinic.account_id, own)
    assert (await node.services.accounts.settings(clinic.account_id)).sms_number is None


async def test_set_sms_number_command(tmp_path: Path, database_url: str, master_key: bytes,
                                      fake_twilio: FakeTwilio, services: Services) -> None:
    """``securechat set-sms-number`` assigns and clears; with SMS_PROVIDER=twilio only a
    number the Twilio account holds (IncomingPhoneNumbers); never the shared number."""
    tag = secrets.token_hex(4)
    name = f"Numbered Clinic {tag}"
    account_id, _ = await services.accounts.ensure_account(name)
    env = clean_env(database_url=database_url, sms_provider="twilio",
                    master_key=base64.b64encode(master_key).decode(),
                    twilio_account_sid=ACCOUNT_SID, twilio_auth_token="x" * 32,
                    twilio_from=TWILIO_FROM, twilio_api_base=fake_twilio.url)
    held, not_held = new_phone(), new_phone()
    fake_twilio.numbers.add(held)

    async def run(*args: str) -> tuple[int, str, str]:
        return await run_cli("set-sms-number", "--account", name, *args, cwd=tmp_path,
                             env=env)

    code, out, err = await run("--number", not_held)
    assert code == 2 and "does not hold this number" in err, (out, err)
    code, out, err = await run("--number", TWILIO_FROM)
    assert code == 2 and "shared sending number" in err, (out, err)
    assert (await services.accounts.settings(account_id)).sms_number is None

    code, out, err = await run("--number", held)
    assert code == 0, err
    assert held in out and account_id in out
    assert (await services.accounts.settings(account_id)).sms_number == held

    code, out, err = await run("--clear")
    assert code == 0, err
    assert (await services.accounts.settings(account_id)).sms_number is None
    code, _, err = await run_cli("set-sms-number", "--account", f"No Such {tag}",
                                 "--clear", cwd=tmp_path, env=env)
    assert code == 2 and "not_found" in err


# --- Medium: replies to the shared number ------------------------------------------------

async def test_reply_to_the_shared_number_reaches_the_clinic_that_texted_last(
        node: Node) -> None:
    """Two clinics texted the phone from the shared number: the reply lands in the
    thread of the one that texted it last, and follows when the other texts again. A
    clinic that has the phone as a patient but never texted it gets nothing."""
    phone = new_phone()
    first = await make_clinic(node.services, phone=phone)
    second = await make_clinic(node.services, phone=phone)
    silent = await make_clinic(node.services, phone=phone)
    await text_from_shared_number(node, first, "Flu shots this week.")
    await text_from_shared_number(node, second, "Your refill is ready.")

    async with staff_socket(node, second.staff_email, second.conversation_id) as ws:
        await inbound(node, to=TWILIO_FROM, from_=phone, body="Thanks, picking it up")
        await ws.wait_type("message", conversation_id=second.conversation_id)
    assert await thread_bodies(node.services, second.conversation_id) == [
        "Thanks, picking it up"]

    await text_from_shared_number(node, first, "Can you come Tuesday?")
    await inbound(node, to=TWILIO_FROM, from_=phone, body="Tuesday works")
    assert await thread_bodies(node.services, first.conversation_id) == ["Tuesday works"]
    assert await thread_bodies(node.services, second.conversation_id) == [
        "Thanks, picking it up"]
    assert await count_messages(node.services, silent.conversation_id) == 0


async def test_stop_to_the_shared_number_opts_out_everywhere_it_was_texted(
        node: Node) -> None:
    """STOP to the shared number opts the phone out in every clinic that texted it from
    there (live: each console gets a ``conversation`` frame), and in no other; START
    opts it back in the same way."""
    phone = new_phone()
    first = await make_clinic(node.services, phone=phone)
    second = await make_clinic(node.services, phone=phone)
    silent = await make_clinic(node.services, phone=phone)
    await text_from_shared_number(node, first, "Reminder: appointment Monday.")
    await text_from_shared_number(node, second, "Your lab order is ready.")

    async with staff_socket(node, first.staff_email) as ws:  # not the landing thread
        await inbound(node, to=TWILIO_FROM, from_=phone, body="STOP")
        frame = await ws.wait_for(lambda f: f["type"] == "conversation"
                                  and f["id"] == first.conversation_id
                                  and f["patient"]["opted_out"] is True)
    assert frame["patient"]["opted_out_at"]
    assert await opted_out(node.services, first.patient_id)
    assert await opted_out(node.services, second.patient_id)
    assert not await opted_out(node.services, silent.patient_id)
    assert await thread_bodies(node.services, second.conversation_id) == ["STOP"]
    assert await count_messages(node.services, silent.conversation_id) == 0

    await inbound(node, to=TWILIO_FROM, from_=phone, body="START")
    assert not await opted_out(node.services, first.patient_id)
    assert not await opted_out(node.services, second.patient_id)


async def test_reply_from_a_phone_nobody_texted_goes_nowhere(node: Node) -> None:
    """A reply to the shared number from a phone no clinic texted from it is answered
    (Twilio must not retry) and stored nowhere: no clinic gets an "Unknown sender"."""
    stranger = new_phone()
    clinic = await make_clinic(node.services)
    await inbound(node, to=TWILIO_FROM, from_=stranger, body="who is this?")
    assert await patients_with_phone(node.services, clinic.account_id, stranger) == 0
    async with node.services.db.read() as conn:
        for account_id in await account_store.account_ids(conn):
            index = node.services.patients.phone_index(account_id, stranger)
            assert (await conn.execute(select(patients.c.id).where(
                patients.c.phone_index == index))).first() is None


# --- Lower: MessageSid format, body length ----------------------------------------------

@pytest.mark.parametrize("sid", [
    "SM123",                                    # too short
    "SM" + "0" * 31 + "g",                      # not hex
    "SM" + "A" * 32,                            # Twilio's hex is lower case
    "XX" + "0" * 32,                            # not a message SID
    "SM" + "0" * 32 + "To+14155550100",         # a neighbour's value shifted in
    "SM" + "0" * 32 + "\n",
])
async def test_malformed_message_sid_is_refused(node: Node, sid: str) -> None:
    """A signed webhook whose MessageSid is not SM/MM + 32 hex digits is 422 and stores
    nothing (the sid is the de-duplication key)."""
    phone = new_phone()
    clinic = await make_clinic(node.services, phone=phone)
    number = new_phone()
    await node.services.accounts.assign_sms_number(clinic.account_id, number)
    params = inbound_params(to=number, from_=phone, body="hello", sid=sid)
    response = await post_signed(node, INBOUND_PATH, params)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request" and "MessageSid" in error["message"]
    assert await count_messages(node.services, clinic.conversation_id) == 0

    mms = "MM" + secrets.token_hex(16)
    await inbound(node, to=number, from_=phone, body="a picture", sid=mms)
    assert await count_messages(node.services, clinic.conversation_id) == 1


async def test_overlong_body_is_cut_and_marked(node: Node) -> None:
    """A body over 1,600 characters is stored cut to 1,600, with a mark saying so."""
    phone = new_phone()
    clinic = await make_clinic(node.services, phone=phone)
    number = new_phone()
    await node.services.accounts.assign_sms_number(clinic.account_id, number)
    await inbound(node, to=number, from_=phone, body="a" * 1599 + "bc" + "x" * 5000,
                  sid=message_sid())
    (body,) = await thread_bodies(node.services, clinic.conversation_id)
    assert body == "a" * 1599 + "b" + CUT_MARK and len(body) == MAX_BODY + len(CUT_MARK)
