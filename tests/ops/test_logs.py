"""The log of a real ``securechat serve`` process (issue 8): every line is one JSON
object, every request line carries a request id, an incoming ``X-Request-Id`` is kept
only when it is a short safe token (else replaced, and the response says which), and
nothing a person typed about a patient reaches the log."""

from __future__ import annotations

import json
import re

import httpx

from tests.conftest import ORIGIN, PASSWORD
from tests.ops.support import seeded_node

# What staff type about a new patient, and a message body: none may reach the log.
NAME, PHONE, BORN = "Zebediah Quillfeather", "+1 (415) 555-0187", "1977-07-14"
BODY = "lab results for Zebediah are ready"
GENERATED = re.compile(r"^[0-9a-f]{16}$")


async def test_log_lines_are_json_with_request_ids_and_no_phi(
        postgresql_url: str, redis_url: str, master_key: bytes) -> None:
    async with seeded_node(postgresql_url, redis_url, master_key) as (node, seeded):
        async with httpx.AsyncClient(base_url=node.url, timeout=10,
                                     headers={"origin": ORIGIN}) as client:
            kept = await client.get("/healthz", headers={"x-request-id": "lb-7f3a.9_Z"})
            unsafe = await client.get("/healthz", headers={"x-request-id": "a b;<x>"})
            too_long = await client.get("/healthz", headers={"x-request-id": "k" * 65})
            none = await client.get("/healthz")
            login = await client.post("/api/auth/login", json={
                "email": seeded.clinic.staff_email, "password": PASSWORD})
            created = await client.post("/api/patients", json={
                "name": NAME, "phone": PHONE, "date_of_birth": BORN})
            refused = await client.post("/api/patients", json={
                "name": NAME, "phone": PHONE, "date_of_birth": "14/07/1977"})
            conversation = created.json()["conversation_id"]
            sent = await client.post(f"/api/conversations/{conversation}/messages",
                                     json={"client_msg_id": "ops-log-1", "body": BODY,
                                           "secure": True})
        assert (login.status_code, created.status_code, refused.status_code,
                sent.status_code) == (200, 201, 422, 201), sent.text
        assert await node.stop() == 0  # SIGTERM: the shutdown lines are logged too

    entries = [json.loads(line) for line in node.lines if line.strip()]
    assert all(isinstance(e, dict) and {"ts", "level", "logger", "msg"} <= e.keys()
               for e in entries)
    requests = [e for e in entries if e["msg"] == "request"]
    assert len(requests) >= 8
    assert all({"request_id", "route", "method", "status", "ms"} <= e.keys()
               for e in requests)

    assert kept.headers["x-request-id"] == "lb-7f3a.9_Z"
    for response in (unsafe, too_long, none):
        assert GENERATED.match(response.headers["x-request-id"])
    ids = [r.headers["x-request-id"] for r in (kept, unsafe, too_long, none, sent)]
    assert len(set(ids)) == len(ids)
    logged = {e["request_id"]: e for e in requests}
    for request_id in ids:
        assert request_id in logged
    assert logged[ids[0]]["route"] == "healthz"
    assert logged[ids[-1]]["route"] == "conversation_messages"

    text = "\n".join(node.lines)
    for phi in (NAME, "Zebediah", PHONE, "555-0187", "4155550187", BORN, "14/07/1977",
                BODY, "a b;<x>"):
        assert phi not in text, phi
