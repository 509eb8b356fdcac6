"""Encryption at rest: PHI is never in the stored bytes, the API still shows it, and a
ciphertext that was moved or altered fails loudly instead of decrypting."""

from __future__ import annotations

import asyncio
import json
import random
import secrets
from pathlib import Path

import phonenumbers
import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url

from server import crypto
from server.audit import SYSTEM, Actor
from server.errors import AppError, ErrorCode
from server.protocol import CreatePatientRequest, Sender, SendRequest
from server.runtime import Services
from server.store import audit_log as audit_store
from server.store.tables import messages, patients
from tests.conftest import Clinic, RunningServer, make_clinic

PG_DUMP = "/usr/bin/pg_dump"


class Canary:
    """PHI values that are unique to one test, so finding them anywhere means a leak."""

    def __init__(self) -> None:
        rng = random.Random(secrets.randbits(64))
        self.token = f"CANARY{secrets.token_hex(6).upper()}"
        self.name = f"Quinn {self.token}"
        self.body = f"Lab result for {self.token}: potassium 5.9"
        self.phone = f"+1415555{rng.randrange(10_000):04d}"
        assert phonenumbers.is_valid_number(phonenumbers.parse(self.phone))
        self.dob = f"19{rng.randrange(10, 99)}-0{rng.randrange(1, 10)}-1{rng.randrange(10)}"

    def needles(self) -> dict[str, str]:
        return {"token": self.token, "name": self.name, "body": self.body,
                "phone": self.phone, "phone digits": self.phone[2:], "dob": self.dob}


def encodings(value: str) -> dict[str, bytes]:
    """Every form in which a stored string could show up in raw storage or a dump."""
    raw = value.encode()
    return {"utf-8": raw, "utf-16-le": value.encode("utf-16-le"),
            "utf-16-be": value.encode("utf-16-be"),
            "hex": raw.hex().encode(), "HEX": raw.hex().upper().encode()}


def is_sqlite(database_url: str) -> bool:
    return make_url(database_url).get_backend_name() == "sqlite"


async def raw_storage(services: Services, database_url: str) -> dict[str, bytes]:
    """SQLite: the database file and its WAL. PostgreSQL: a data dump and a text rendering
    of every row of every table."""
    if is_sqlite(database_url):
        path = Path(make_url(database_url).database)
        files = [path, path.with_name(path.name + "-wal")]
        return {f.name: f.read_bytes() for f in files if f.exists()}
    dump = await asyncio.create_subprocess_exec(
        PG_DUMP, "--data-only", f"--dbname={database_url}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        out, err = await dump.communicate()
    assert dump.returncode == 0, err.decode()
    sweep = []
    async with services.db.read() as conn:
        tables = (await conn.execute(text(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).scalars().all()
        assert {"patients", "messages", "audit_log"} <= set(tables)
        for table in tables:
            rows = await conn.execute(text(f'SELECT t::text FROM "{table}" t'))
            sweep.extend(row[0] for row in rows)
    return {"pg_dump": out, "table sweep": "\n".join(sweep).encode()}


async def body_envelope(services: Services, message_id: str) -> bytes:
    async with services.db.read() as conn:
        return (await conn.execute(select(messages.c.body_enc).where(
            messages.c.id == message_id))).scalar_one()


async def set_body_envelope(services: Services, message_id: str, envelope: bytes) -> None:
    async with services.db.write() as conn:
        await conn.execute(update(messages).where(messages.c.id == message_id)
                           .values(body_enc=envelope))


def flip_bit(envelope: bytes, offset: int) -> bytes:
    changed = bytearray(envelope)
    changed[offset] ^= 0x01
    return bytes(changed)


async def integrity_entries(services: Services, account_id: str) -> list:
    async with services.db.read() as conn:
        return await audit_store.search(conn, account_id, action="integrity.decrypt_failed")


async def test_phi_is_not_stored_in_plain_text(server: RunningServer,
                                               database_url: str) -> None:
    """A patient and messages holding a canary: the canary is nowhere in the stored bytes
    (SQLite file + WAL, or a PostgreSQL dump and table sweep), yet the API returns it."""
    services = server.services
    canary = Canary()
    clinic = await make_clinic(services, patient_name=canary.name, phone=canary.phone,
                               dob=canary.dob)
    async with server.login(clinic.staff_email) as client:
        for i, secure in enumerate((True, False)):
            sent = await client.post(f"/api/conversations/{clinic.conversation_id}/messages",
                                     json={"client_msg_id": f"canary-{i}",
                                           "body": canary.body, "secure": secure})
            assert sent.status_code == 201, sent.text
        message_id = sent.json()["ack"]["message_id"]

        page = await client.get(f"/api/conversations/{clinic.conversation_id}/messages")
        assert page.status_code == 200, page.text
        assert [m["body"] for m in page.json()["messages"]] == [canary.body] * 2
        assert {m["channel"] for m in page.json()["messages"]} == {"secure", "sms"}
        inbox = (await client.get("/api/conversations")).json()["conversations"]
        mine = next(c for c in inbox if c["id"] == clinic.conversation_id)
        assert mine["patient"]["display_name"] == canary.name
        assert mine["patient"]["masked_phone"].endswith(canary.phone[-4:])

    async with services.db.read() as conn:  # the date of birth has no API: open it here
        dob_enc = (await conn.execute(select(patients.c.dob_enc).where(
            patients.c.id == clinic.patient_id))).scalar_one()
        assert await services.keyring.open(
            conn, clinic.account_id, dob_enc,
            crypto.patient_field_context(clinic.account_id, clinic.patient_id, "dob"),
        ) == canary.dob

    storage = await raw_storage(services, database_url)
    everything = b"\n".join(storage.values())
    # Controls: the search sees this test's rows (a non-PHI column in plain text and the
    # body's ciphertext in the form the storage holds it).
    envelope = await body_envelope(services, message_id)
    assert clinic.staff_email.encode() in everything
    if is_sqlite(database_url):
        assert envelope in everything
    else:
        for where, blob in storage.items():
            assert clinic.staff_email.encode() in blob, where
            assert envelope.hex().encode() in blob, where
    leaks = [(what, form, where)
             for what, value in canary.needles().items()
             for form, needle in encodings(value).items()
             for where, blob in storage.items() if needle in blob]
    assert leaks == []


async def test_a_moved_or_flipped_body_fails_over_http(server: RunningServer) -> None:
    """A body ciphertext moved to another row, or with one bit flipped, makes history
    answer 500 data_integrity (no PHI in it) and records integrity.decrypt_failed; the
    untouched message still reads."""
    services = server.services
    canary = Canary()
    clinic = await make_clinic(services, patient_name=canary.name, phone=canary.phone,
                               dob=canary.dob)
    url = f"/api/conversations/{clinic.conversation_id}/messages"
    async with server.login(clinic.staff_email) as client:
        ids = []
        for i in range(3):
            sent = await client.post(url, json={"client_msg_id": f"t-{i}",
                                                "body": f"{canary.body} #{i}"})
            assert sent.status_code == 201, sent.text
            ids.append(sent.json()["ack"]["message_id"])
        first, second, third = ids
        await set_body_envelope(services, second, await body_envelope(services, first))
        envelope = await body_envelope(services, third)
        await set_body_envelope(services, third, flip_bit(envelope, len(envelope) // 2))

        for params in ({"before_seq": 3, "limit": 1}, {"limit": 1}, {}):
            broken = await client.get(url, params=params)
            assert broken.status_code == 500, broken.text
            assert broken.json()["error"]["code"] == "data_integrity"
            assert broken.json()["error"]["message"]
            assert canary.token not in broken.text
            assert "potassium" not in broken.text

        intact = await client.get(url, params={"before_seq": 2})
        assert intact.status_code == 200, intact.text
        assert [m["body"] for m in intact.json()["messages"]] == [f"{canary.body} #0"]

    entries = await integrity_entries(services, clinic.account_id)
    assert {e["object_id"] for e in entries} == {second, third}
    for entry in entries:
        assert (entry["object_type"], entry["outcome"], entry["actor_kind"]) == (
            "message", "error", "system")
        assert canary.token not in entry["details"]
        assert json.loads(entry["details"])["reason"]


async def tampered_history(services: Services, clinic: Clinic) -> AppError:
    with pytest.raises(AppError) as caught:
        await services.messaging.history(clinic.account_id, clinic.conversation_id,
                                         before_seq=None, limit=50,
                                         actor=Actor("staff", clinic.staff_id))
    return caught.value


async def send(services: Services, clinic: Clinic, client_msg_id: str, body: str) -> str:
    result = await services.messaging.send(
        clinic.account_id, Sender("staff", clinic.staff_id, "Nurse"), clinic.conversation_id,
        SendRequest(client_msg_id=client_msg_id, body=body), Actor("staff", clinic.staff_id))
    return result.message.id


# Envelope layout: version (1 byte) | key id (4) | nonce (12) | ciphertext | tag (16).
@pytest.mark.parametrize("offset", [0, 4, 5, 16, 17, 30, -1],
                         ids=["version", "key-id", "nonce-first", "nonce-last",
                              "ciphertext-first", "ciphertext-mid", "tag-last"])
async def test_one_flipped_bit_anywhere_fails(services: Services, clinic: Clinic,
                                              offset: int) -> None:
    """One bit flipped anywhere in a body envelope is a data_integrity error, audited."""
    message_id = await send(services, clinic, "f-1", "x" * 40)
    await set_body_envelope(services, message_id,
                            flip_bit(await body_envelope(services, message_id), offset))
    assert (await tampered_history(services, clinic)).code == ErrorCode.DATA_INTEGRITY
    assert [e["object_id"] for e in await integrity_entries(services, clinic.account_id)] \
        == [message_id]


async def test_a_body_moved_from_another_account_fails(services: Services,
                                                       clinic: Clinic) -> None:
    """A body envelope copied from another account's message does not open here."""
    other = await make_clinic(services, phone="+14155550107")
    foreign = await send(services, other, "o-1", "the other clinic's message")
    mine = await send(services, clinic, "m-1", "our message")
    await set_body_envelope(services, mine, await body_envelope(services, foreign))
    assert (await tampered_history(services, clinic)).code == ErrorCode.DATA_INTEGRITY
    assert [e["object_id"] for e in await integrity_entries(services, clinic.account_id)] \
        == [mine]


async def test_a_truncated_body_fails(services: Services, clinic: Clinic) -> None:
    """A body envelope cut short is a data_integrity error, not a crash."""
    message_id = await send(services, clinic, "c-1", "short lived")
    await set_body_envelope(services, message_id, (await body_envelope(services, message_id))[:20])
    assert (await tampered_history(services, clinic)).code == ErrorCode.DATA_INTEGRITY


async def test_a_patient_name_moved_to_another_patient_fails(server: RunningServer) -> None:
    """A patient's name envelope copied onto another patient makes the inbox and history
    answer 500 data_integrity (not a generic internal error) and is audited."""
    services = server.services
    canary = Canary()
    clinic = await make_clinic(services, patient_name=canary.name, phone=canary.phone,
                               dob=canary.dob)
    victim, victim_conversation = await services.patients.create(
        clinic.account_id, CreatePatientRequest("Robin Other", "+14155550188", "1970-02-03"),
        SYSTEM)
    async with services.db.write() as conn:
        name_enc = (await conn.execute(select(patients.c.name_enc).where(
            patients.c.id == clinic.patient_id))).scalar_one()
        await conn.execute(update(patients).where(patients.c.id == victim.id)
                           .values(name_enc=name_enc))
    async with server.login(clinic.staff_email) as client:
        for path in ("/api/conversations",
                     f"/api/conversations/{victim_conversation}/messages"):
            broken = await client.get(path)
            assert broken.status_code == 500, broken.text
            assert broken.json()["error"]["code"] == "data_integrity", broken.text
            assert canary.token not in broken.text
        intact = await client.get(f"/api/conversations/{clinic.conversation_id}/messages")
        assert intact.status_code == 200, intact.text
    entries = await integrity_entries(services, clinic.account_id)
    assert entries and {e["object_id"] for e in entries} == {victim.id}
    assert all(e["object_type"] == "patient" for e in entries)
