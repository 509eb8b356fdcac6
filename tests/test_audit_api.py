"""The admin audit API: ``GET /api/audit`` newest first with filters and paging, the CSV
export, no PHI in either, and reading the log being audited itself.
"""

from __future__ import annotations

import csv
import io

import httpx

from server.clock import FakeClock
from server.services.audit_records import AUDIT_COLUMNS
from tests.conftest import ORIGIN, Clinic, RunningServer, make_clinic

# PHI of a patient made through the API; none of it may reach the audit log.
CANARY_NAME = "Quillon Canarywick"
CANARY_PHONE = "(415) 555-0187"
CANARY_DOB = "1961-07-23"
CANARY_BODY = "canary-body Xylophonic results attached"
CANARY_FRAGMENTS = ("Quillon", "Canarywick", "555-0187", "5550187", "1961-07-23",
                    "Xylophonic", "canary-body")


async def entries(client: httpx.AsyncClient, **params: str) -> list[dict]:
    response = await client.get("/api/audit", params=params)
    assert response.status_code == 200, response.text
    return response.json()["entries"]


async def make_activity(client: httpx.AsyncClient, clock: FakeClock) -> tuple[str, str]:
    """Create the canary patient, message it and read the thread; (patient, conversation)."""
    clock.advance(seconds=1)
    created = await client.post("/api/patients", headers={"origin": ORIGIN}, json={
        "name": CANARY_NAME, "phone": CANARY_PHONE, "date_of_birth": CANARY_DOB})
    assert created.status_code == 201, created.text
    conversation_id = created.json()["conversation_id"]
    path = f"/api/conversations/{conversation_id}/messages"
    sent = await client.post(path, headers={"origin": ORIGIN}, json={
        "client_msg_id": "audit-1", "body": CANARY_BODY, "secure": True})
    assert sent.status_code == 201, sent.text
    assert (await client.get(path)).status_code == 200
    return created.json()["patient"]["id"], conversation_id


async def test_entries_are_newest_first(server: RunningServer, clinic: Clinic,
                                        clock: FakeClock) -> None:
    """Entries come newest first with consecutive seqs and the documented columns."""
    async with server.login(clinic.admin_email) as client:
        await make_activity(client, clock)
        listed = await entries(client)
    seqs = [e["seq"] for e in listed]
    assert seqs == list(range(seqs[0], seqs[0] - len(seqs), -1))
    assert len(seqs) >= 8
    assert [e["ts"] for e in listed] == sorted((e["ts"] for e in listed), reverse=True)
    assert all(tuple(e) == AUDIT_COLUMNS for e in listed)
    assert listed[0]["action"] == "audit.read"  # this very read, committed before the query
    actions = [e["action"] for e in listed]
    order = ["conversation.history_read", "message.sent", "patient.created", "auth.login"]
    positions = [actions.index(action) for action in order]
    assert positions == sorted(positions)


async def test_filters_and_paging(server: RunningServer, clinic: Clinic,
                                  clock: FakeClock) -> None:
    """``action``, ``actor_id``, ``limit`` and ``before_seq`` narrow the list."""
    async with server.login(clinic.admin_email) as client:
        patient_id, _ = await make_activity(client, clock)
        everything = await entries(client, limit="1000")

        created = await entries(client, action="patient.created")
        assert {e["action"] for e in created} == {"patient.created"}
        # the fixture's patient (by the system) and the canary (by the admin)
        assert {e["object_id"] for e in created} == {clinic.patient_id, patient_id}

        mine = await entries(client, actor_id=clinic.admin_id, limit="1000")
        assert mine and {e["actor_id"] for e in mine} == {clinic.admin_id}
        both = await entries(client, action="patient.created", actor_id=clinic.admin_id)
        assert [e["object_id"] for e in both] == [patient_id]

        first = await client.get("/api/audit", params={"limit": "3"})
        page = first.json()
        assert len(page["entries"]) == 3 and page["has_more"] is True
        oldest = page["entries"][-1]["seq"]
        second = (await client.get("/api/audit", params={
            "limit": "3", "before_seq": str(oldest)})).json()
        assert [e["seq"] for e in second["entries"]] == [oldest - 1, oldest - 2, oldest - 3]

        tail = (await client.get("/api/audit", params={"before_seq": "3"})).json()
        assert [e["seq"] for e in tail["entries"]] == [2, 1]
        assert tail["has_more"] is False

        assert (await entries(client, action="no.such.action")) == []
        assert len(everything) < 1000


async def test_patient_filter(server: RunningServer, clinic: Clinic, clock: FakeClock
                              ) -> None:
    """``patient_id`` keeps the entries about that patient (created, messaged, the thread
    read), none about another patient; another account's patient matches nothing here."""
    async with server.login(clinic.admin_email) as client:
        patient_id, conversation_id = await make_activity(client, clock)
        about = await entries(client, patient_id=patient_id, limit="1000")
        assert {e["action"] for e in about} == {"patient.created", "message.sent",
                                                "conversation.history_read"}
        assert all(e["object_id"] in (patient_id, conversation_id)
                   or conversation_id in e["details"] for e in about)
        fixture = await entries(client, patient_id=clinic.patient_id, limit="1000")
        assert [e["object_id"] for e in fixture] == [clinic.patient_id]  # created only
        both = await entries(client, patient_id=patient_id, action="message.sent")
        assert [e["action"] for e in both] == ["message.sent"]
    other = await make_clinic(server.services)
    async with server.login(other.admin_email) as client:
        assert await entries(client, patient_id=patient_id, limit="1000") == []


async def test_bad_query_parameters_are_422(server: RunningServer, clinic: Clinic) -> None:
    """A non-integer or out-of-range ``limit`` or ``before_seq`` is 422 naming it."""
    async with server.login(clinic.admin_email) as client:
        for params, name in (({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"),
                             ({"limit": "ten"}, "limit"), ({"before_seq": "x"}, "before_seq")):
            response = await client.get("/api/audit", params=params)
            assert response.status_code == 422, (params, response.text)
            assert response.json()["error"]["message"].startswith(name)



async def test_free_text_filters_are_refused_before_they_are_audited(
        server: RunningServer, clinic: Clinic) -> None:
    """A search is audited with its filters in an append-only table, so a filter that is not
    an action name or an id (a name typed in the wrong box) is 422 and never recorded."""
    async with server.login(clinic.admin_email) as client:
        for params, name in (({"action": "Pat Example"}, "action"),
                             ({"actor_id": "Pat Example"}, "actor_id"),
                             ({"patient_id": "Pat Example"}, "patient_id")):
            response = await client.get("/api/audit", params=params)
            assert response.status_code == 422, (params, response.text)
            assert response.json()["error"]["message"].startswith(name)
        reads = await entries(client, action="audit.read", limit="1000")
    assert all("Pat Example" not in (entry["details"] or "") for entry in reads)

async def test_csv_export(server: RunningServer, clinic: Clinic, clock: FakeClock) -> None:
    """``format=csv`` is text/csv with a header row and every matching entry."""
    async with server.login(clinic.admin_email) as client:
        await make_activity(client, clock)
        response = await client.get("/api/audit", params={"format": "csv"})
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/csv")
        assert "attachment" in response.headers["content-disposition"]
        rows = list(csv.reader(io.StringIO(response.text)))
        listed = await entries(client, limit="1000")
        filtered = await client.get("/api/audit", params={"format": "csv",
                                                          "action": "message.sent"})
    assert tuple(rows[0]) == AUDIT_COLUMNS
    seqs = [int(row[0]) for row in rows[1:]]
    # the JSON listing came after the export and adds its own audit.read entry on top
    assert seqs == [e["seq"] for e in listed][1:]
    assert rows[1][AUDIT_COLUMNS.index("action")] == "audit.exported"
    filtered_rows = list(csv.reader(io.StringIO(filtered.text)))
    assert tuple(filtered_rows[0]) == AUDIT_COLUMNS
    assert [r[AUDIT_COLUMNS.index("action")] for r in filtered_rows[1:]] == ["message.sent"]


async def test_audit_output_holds_no_phi(server: RunningServer, clinic: Clinic,
                                         clock: FakeClock) -> None:
    """The canary patient's name, phone, birth date and message never appear in the
    audit JSON or CSV, though the ids of what happened do."""
    async with server.login(clinic.admin_email) as client:
        patient_id, conversation_id = await make_activity(client, clock)
        as_json = (await client.get("/api/audit", params={"limit": "1000"})).text
        as_csv = (await client.get("/api/audit", params={"format": "csv"})).text
    for text in (as_json, as_csv):
        assert patient_id in text and conversation_id in text
        for fragment in CANARY_FRAGMENTS:
            assert fragment not in text


async def test_reading_the_log_is_audited(server: RunningServer, clinic: Clinic) -> None:
    """Each read and export of the log adds an entry by the admin, with its filters."""
    async with server.login(clinic.admin_email) as client:
        assert await entries(client, action="audit.exported") == []
        await client.get("/api/audit", params={"format": "csv", "action": "auth.login"})
        await entries(client, actor_id=clinic.staff_id)
        reads = await entries(client, action="audit.read", limit="1000")
        exports = await entries(client, action="audit.exported")
    assert len(exports) == 1
    assert exports[0]["actor_id"] == clinic.admin_id
    assert exports[0]["details"] == '{"action":"auth.login"}'
    # the filtered read above, the export check, and this read itself
    assert len(reads) == 3
    assert {e["actor_id"] for e in reads} == {clinic.admin_id}
    assert reads[1]["details"] == f'{{"actor_id":"{clinic.staff_id}"}}'
    assert all(e["request_id"] for e in reads)
