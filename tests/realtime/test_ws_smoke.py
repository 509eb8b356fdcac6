"""A staff socket and a patient socket on one node exchange messages live."""

from __future__ import annotations

from tests.conftest import Clinic, RunningServer
from tests.realtime.wsclient import connect, patient_cookie, staff_cookie


async def test_staff_and_patient_exchange(server: RunningServer, clinic: Clinic) -> None:
    """send → ack → message on both sides, and delivered once the patient got it."""
    conversation = clinic.conversation_id
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as staff, \
            connect(server.url, await patient_cookie(server.services, clinic)) as patient:
        assert (await staff.wait_type("ready"))["role"] == "staff"
        assert (await patient.wait_type("ready"))["conversation_id"] == conversation
        for ws in (staff, patient):
            await ws.send(type="subscribe", ref="s", conversation_id=conversation)
            assert (await ws.wait_type("subscribed", ref="s"))["last_seq"] == 0

        await staff.send(type="send", conversation_id=conversation, client_msg_id="c1",
                         body="hello", secure=True, ref="a")
        ack = await staff.wait_type("ack", ref="a")
        assert ack["seq"] == 1
        got = await patient.wait_type("message", seq=1)
        assert got["body"] == "hello" and got["channel"] == "secure"
        delivered = await staff.wait_type("status", status="delivered")
        assert delivered["message_id"] == ack["message_id"]

        await patient.send(type="send", conversation_id=conversation, client_msg_id="p1",
                           body="thanks")
        got = await staff.wait_type("message", seq=2)
        assert got["body"] == "thanks" and got["direction"] == "inbound"
        assert [f["seq"] for f in staff.of_type("message")] == [1, 2]
