"""What the fuzzers found, pinned one input each (in-process, on SQLite and PostgreSQL):
NUL in a stored or looked-up string (PostgreSQL text cannot hold it: the driver failed,
a 500), integers past 64 bits, and a time bound before year 1 once in UTC. Each is now a
4xx in the documented shape.
"""

from __future__ import annotations

import msgspec
import pytest

from server.protocol import (
    CreateStaffRequest,
    LoginRequest,
    SettingsUpdate,
    client_frame_decoder,
)
from tests.conftest import ORIGIN, Clinic, RunningServer
from tests.sms.support import INBOUND_PATH, STATUS_PATH, inbound_params, post_signed


def error_code(response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text
    return response.json()["error"]["code"]


@pytest.mark.parametrize(("struct", "body"), [
    (SettingsUpdate, {"clinic_name": "Clinic\x00"}),
    (LoginRequest, {"email": "a\x00@b.test", "password": "x"}),
    (CreateStaffRequest, {"name": "Sam\x00", "email": "sam@clinic.test", "role": "staff",
                          "password": "p" * 20}),
    (CreateStaffRequest, {"name": "Sam", "email": "sam\x00@clinic.test", "role": "staff",
                          "password": "p" * 20}),
])
def test_nul_in_a_stored_string_is_a_bad_field(struct, body) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(msgspec.json.encode(body), type=struct)


@pytest.mark.parametrize("kind", ["subscribe", "unsubscribe", "typing"])
def test_nul_in_a_frame_id_is_an_invalid_frame(kind: str) -> None:
    frame = {"type": kind, "conversation_id": "c\x00"}
    with pytest.raises(msgspec.ValidationError):
        client_frame_decoder.decode(msgspec.json.encode(frame))


API_CASES = [
    ("PUT", "/api/account/settings", {}, {"clinic_name": "\x00"}, 422, "invalid_request"),
    ("POST", "/api/auth/login", {}, {"email": "\x00@x", "password": "x"}, 422,
     "invalid_request"),
    ("GET", "/api/audit", {"action": "\x00"}, None, 422, "invalid_request"),
    ("GET", "/api/audit", {"since": "0001-01-01T00:00:00+01:00"}, None, 422,
     "invalid_request"),
    ("GET", "/api/audit", {"before_seq": str(2**63)}, None, 422, "invalid_request"),
    ("GET", "/api/conversations", {"before": "0001-01-01T00:00:00+01:00"}, None, 422,
     "invalid_request"),
    ("GET", "/api/conversations/{conversation_id}/messages", {"before_seq": str(2**63)},
     None, 422, "invalid_request"),
    ("GET", "/api/conversations/%00/messages", {}, None, 404, "not_found"),
    ("POST", "/api/conversations/%00/messages", {},
     {"client_msg_id": "nul-1", "body": "Hello", "secure": False}, 404, "not_found"),
    ("POST", "/api/conversations/%00/links/revoke", {}, None, 404, "not_found"),
    ("POST", "/api/staff/%00/deactivate", {}, None, 404, "not_found"),
]


async def test_api_refuses_what_the_store_cannot_take(server: RunningServer,
                                                      clinic: Clinic) -> None:
    """Each input once, in one session (a login per case would cost an argon2 hash);
    every mismatch is collected before asserting."""
    wrong = []
    async with server.login(clinic.admin_email) as client:
        for method, path, params, body, status, code in API_CASES:
            response = await client.request(
                method, path.format(conversation_id=clinic.conversation_id),
                params=params, json=body, headers={"origin": ORIGIN})
            if response.status_code != status or error_code(response) != code:
                wrong.append((method, path, params, response.status_code, response.text))
    assert wrong == []


async def test_webhooks_refuse_nul_in_a_field(twilio_node: RunningServer) -> None:
    """Signed (so the handler is reached), with NUL in the sid it would look up."""
    params = inbound_params(to="+14155550100", from_="+14155550101", body="hi",
                            sid="SM\x00")
    inbound = await post_signed(twilio_node, INBOUND_PATH, params)
    status = await post_signed(twilio_node, STATUS_PATH,
                               {"MessageSid": "SM\x00", "MessageStatus": "delivered"})
    for response in (inbound, status):
        assert response.status_code == 422, response.text
        assert error_code(response) == "invalid_request"


@pytest.fixture
async def twilio_node(database_url: str, master_key: bytes, clock):
    from tests.sms.support import FakeTwilio, run_node, twilio_settings

    async with FakeTwilio.running() as fake, \
            run_node(twilio_settings(database_url, fake), master_key, clock) as node:
        yield node
