"""The HTTP API end to end over a real socket: sign in, add a patient, send, read."""

from __future__ import annotations

from server.clock import FakeClock
from tests.conftest import ORIGIN, Clinic, RunningServer


async def test_staff_flow(server: RunningServer, clinic: Clinic, clock: FakeClock) -> None:
    async with server.login(clinic.staff_email) as client:
        me = (await client.get("/api/me")).json()
        assert me["staff"]["role"] == "staff"
        assert me["account"]["portal_active"] is True
        assert me["idle_timeout_seconds"] == server.services.settings.session_idle_seconds

        created = await client.post("/api/patients", headers={"origin": ORIGIN}, json={
            "name": "Jordan Lee", "phone": "(415) 555-0199", "date_of_birth": "1975-01-30"})
        assert created.status_code == 201, created.text
        conversation_id = created.json()["conversation_id"]
        assert created.json()["patient"]["masked_phone"].endswith("0199")

        clock.advance(seconds=5)  # the new thread's activity is now the newest
        sent = await client.post(f"/api/conversations/{conversation_id}/messages",
                                 json={"client_msg_id": "m-1", "body": "Your results are in",
                                       "secure": True})
        assert sent.status_code == 201, sent.text
        assert sent.json()["ack"]["seq"] == 1

        page = (await client.get(f"/api/conversations/{conversation_id}/messages")).json()
        assert [m["body"] for m in page["messages"]] == ["Your results are in"]
        assert page["messages"][0]["channel"] == "secure"
        assert page["has_more"] is False

        inbox = (await client.get("/api/conversations")).json()["conversations"]
        assert inbox[0]["id"] == conversation_id


async def test_unknown_routes_and_methods_answer_in_the_error_shape(
        server: RunningServer, clinic: Clinic) -> None:
    """The router's own refusals are JSON like every other error: 404 `not_found` for no
    such route, 405 with `Allow` for a wrong method."""
    async with server.login(clinic.admin_email) as client:
        missing = await client.get("/api/nope")
        wrong = await client.delete("/api/me")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "invalid_request"
    assert "GET" in wrong.headers["allow"]
