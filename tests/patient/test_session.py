"""The patient session over HTTP and WebSocket: its cookie, the headers of every patient
response, "End session", and what a patient can reach (issue 5, items 3 and 5)."""

from __future__ import annotations

import re

import httpx
import pytest

from server.audit import SYSTEM
from server.clock import FakeClock
from server.protocol import CreatePatientRequest
from server.runtime import Services
from tests.conftest import ORIGIN, Clinic, make_clinic
from tests.patient.support import DOB, WRONG_DOB, Node, new_link, run_node, verify
from tests.realtime.wsclient import connect
from tests.sms.support import count_messages

STATIC = ["/static/patient/main.js", "/static/patient/thread.js",
          "/static/patient/patient.css", "/static/shared/socket.js",
          "/static/shared/protocol.js"]


async def signed_in(node: Node, clinic: Clinic, client: httpx.AsyncClient) -> str:
    """Verifies on a fresh link; the patient cookie as a Cookie header."""
    response = await verify(client, await new_link(node, clinic), DOB)
    assert response.status_code == 204, response.text
    return f"sc_patient={response.cookies['sc_patient']}"


def cookie_attributes(set_cookie: str) -> tuple[str, set[str]]:
    name_value, *attributes = [part.strip() for part in set_cookie.split(";")]
    return name_value.split("=", 1)[0], {a.split("=", 1)[0].lower() + (
        "=" + a.split("=", 1)[1].lower() if "=" in a else "") for a in attributes}


def assert_patient_headers(response: httpx.Response, what: str) -> None:
    headers = response.headers
    assert headers.get("cache-control") == "no-store", what
    assert headers.get("referrer-policy") == "no-referrer", what
    assert headers.get("x-frame-options") == "DENY", what
    assert headers.get("x-content-type-options") == "nosniff", what
    csp = {d.split()[0]: d.split()[1:] for d in
           (part.strip() for part in headers["content-security-policy"].split(";")) if d}
    scripts = csp.get("script-src", csp.get("default-src"))
    assert scripts is not None and "'unsafe-inline'" not in scripts, what
    assert "'unsafe-eval'" not in scripts and "*" not in scripts, what
    assert csp.get("frame-ancestors") == ["'none'"], what
    if response.headers.get("content-type", "").startswith("text/html"):
        page = response.text
        assert not re.search(r"<script(?![^>]*\bsrc=)", page), what  # no inline script
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", page), what


async def test_every_patient_response_has_the_headers(node: Node, clinic: Clinic) -> None:
    token = await new_link(node, clinic)
    # Another patient's link: five wrong tries lock every link of a conversation.
    locked = await new_link(node, await make_clinic(node.services))
    responses: dict[str, httpx.Response] = {}
    async with node.client() as client:
        responses["link page"] = await client.get(f"/s/{token}")
        responses["link HEAD"] = await client.head(f"/s/{token}")
        responses["unknown link"] = await client.get("/s/" + "B" * 43)
        responses["wrong date"] = await verify(client, token, WRONG_DOB)
        responses["form, malformed"] = await client.post(f"/s/{token}/verify",
                                                         data={"date_of_birth": "x"})
        responses["form, wrong"] = await client.post(f"/s/{token}/verify",
                                                     data={"date_of_birth": WRONG_DOB})
        for _ in range(5):
            responses["locking"] = await verify(client, locked, WRONG_DOB)
        responses["locked page"] = await client.get(f"/s/{locked}")
        responses["chat, signed out"] = await client.get("/s/chat")
        responses["form, right"] = await client.post(f"/s/{token}/verify",
                                                     data={"date_of_birth": DOB})
        responses["verify"] = await verify(client, token, DOB)
        responses["chat"] = await client.get("/s/chat")
        for path in STATIC:
            responses[path] = await client.get(path)
        responses["ended"] = await client.get("/s/ended")
        responses["logout"] = await client.post("/s/logout")
    expected = {"link page": 200, "link HEAD": 200, "unknown link": 404, "wrong date": 401,
                "form, malformed": 400, "form, wrong": 401, "locking": 423,
                "locked page": 423, "chat, signed out": 401, "form, right": 303,
                "verify": 204, "chat": 200, "ended": 200, "logout": 303,
                **{path: 200 for path in STATIC}}
    assert {k: r.status_code for k, r in responses.items()} == expected
    for what, response in responses.items():
        assert_patient_headers(response, what)
    assert 'src="/static/patient/main.js"' in responses["chat"].text


async def test_session_cookie_over_http(node: Node, clinic: Clinic) -> None:
    async with node.client() as client:
        response = await verify(client, await new_link(node, clinic), DOB)
    name, attributes = cookie_attributes(response.headers["set-cookie"])
    assert name == "sc_patient"
    assert {"httponly", "samesite=strict", "path=/"} <= attributes
    assert "secure" not in attributes  # a browser drops Secure cookies over plain http
    assert not any(a.startswith(("domain", "max-age", "expires")) for a in attributes)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_session_cookie_with_an_https_public_url(
        database_url: str, master_key: bytes, clock: FakeClock, services: Services) -> None:
    """PUBLIC_URL https: ``__Host-`` prefix and Secure, Path=/, no Domain; the chat page
    answers to that cookie (and not to the plain name)."""
    clinic = await make_clinic(services)
    async with run_node(database_url, master_key, clock,
                        public_url="https://clinic.example") as node, \
            node.client() as client:
        response = await verify(client, await new_link(node, clinic), DOB)
        assert response.status_code == 204
        name, attributes = cookie_attributes(response.headers["set-cookie"])
        assert name == "__Host-sc_patient"
        assert {"httponly", "samesite=strict", "path=/", "secure"} <= attributes
        assert not any(a.startswith("domain") for a in attributes)
        value = response.headers["set-cookie"].split(";")[0].split("=", 1)[1]
        chat = await client.get("/s/chat", headers={"cookie": f"__Host-sc_patient={value}"})
        assert chat.status_code == 200
        plain = await client.get("/s/chat", headers={"cookie": f"sc_patient={value}"})
        assert plain.status_code == 401


async def test_end_session(node: Node, clinic: Clinic) -> None:
    """"End session" ends it on the server (cookie cleared, browser told to drop its
    cache and storage); the old cookie opens nothing, page or socket."""
    async with node.client() as client:
        cookie = await signed_in(node, clinic, client)
        async with connect(node.url, cookie) as ws:
            await ws.wait_type("ready")
            response = await client.post("/s/logout")
            assert (response.status_code, response.headers["location"]) == (303, "/s/ended")
            assert await ws.close_code() == (4401, "session ended")
        name, attributes = cookie_attributes(response.headers["set-cookie"])
        assert name == "sc_patient" and "max-age=0" in attributes
        assert response.headers["clear-site-data"] == '"cache", "storage"'
        page = await client.get("/s/chat", headers={"cookie": cookie})
        assert page.status_code == 401 and "session has ended" in page.text
    async with connect(node.url, cookie) as ws:
        assert (await ws.close_code())[0] == 4401


async def test_revoking_ends_live_sessions(node: Node, clinic: Clinic) -> None:
    """Staff revoke the links: the patient's live socket closes with 4401, its cookie
    opens nothing and its link shows the neutral page."""
    token = await new_link(node, clinic)
    async with node.client() as client:
        response = await verify(client, token, DOB)
        cookie = f"sc_patient={response.cookies['sc_patient']}"
        async with connect(node.url, cookie) as ws, node.login(clinic.staff_email) as staff:
            await ws.wait_type("ready")
            revoked = await staff.post(
                f"/api/conversations/{clinic.conversation_id}/links/revoke")
            assert revoked.status_code == 200, revoked.text
            assert revoked.json()["ended_sessions"] == 1
            assert (await ws.close_code())[0] == 4401
        assert (await client.get("/s/chat", headers={"cookie": cookie})).status_code == 401
        assert (await client.get(f"/s/{token}")).status_code == 404


async def test_a_patient_reaches_only_its_own_conversation(node: Node, clinic: Clinic,
                                                           services: Services) -> None:
    """Another patient's conversation (same clinic or another): every frame naming it is
    refused ``forbidden`` and the socket lives on; staff HTTP APIs answer 401."""
    _, neighbour = await services.patients.create(
        clinic.account_id, CreatePatientRequest("Neighbour", "+14155550111", "1970-01-01"),
        SYSTEM)
    elsewhere = (await make_clinic(services)).conversation_id
    async with node.client() as client:
        cookie = await signed_in(node, clinic, client)
        async with connect(node.url, cookie) as ws:
            ready = await ws.wait_type("ready")
            assert (ready["role"], ready["conversation_id"]) == ("patient",
                                                                 clinic.conversation_id)
            for n, other in enumerate((neighbour, elsewhere)):
                await ws.send(type="subscribe", ref=f"sub{n}", conversation_id=other,
                              after_seq=0)
                await ws.send(type="send", ref=f"send{n}", conversation_id=other,
                              client_msg_id=f"x{n}", body="hello?", secure=True)
                await ws.send(type="read", ref=f"read{n}", conversation_id=other, seq=1)
                await ws.send(type="typing", ref=f"typing{n}", conversation_id=other)
                for kind in ("sub", "send", "read", "typing"):
                    error = await ws.wait_type("error", ref=f"{kind}{n}")
                    assert error["code"] == "forbidden", error
                send_error = await ws.wait_type("error", ref=f"send{n}")
                assert send_error["client_msg_id"] == f"x{n}"
            await ws.send(type="ping", ref="alive")
            await ws.wait_type("pong", ref="alive")
            await ws.send(type="send", ref="own", conversation_id=clinic.conversation_id,
                          client_msg_id="own-1", body="my own thread", secure=True)
            assert (await ws.wait_type("ack", ref="own"))["seq"] == 1
            assert not [f for f in ws.frames if f["type"] == "message"
                        and f["conversation_id"] != clinic.conversation_id]

        client.cookies.clear()
        with_cookie = {"cookie": cookie, "origin": ORIGIN}
        conversation = f"/api/conversations/{clinic.conversation_id}"
        for method, path, body in (
                ("GET", "/api/me", None), ("GET", "/api/conversations", None),
                ("GET", f"{conversation}/messages", None),
                ("POST", f"{conversation}/messages",
                 {"client_msg_id": "p1", "body": "x", "secure": True}),
                ("POST", f"{conversation}/links/revoke", None),
                ("POST", "/api/patients", {"name": "X", "phone": "+14155550112",
                                           "date_of_birth": "1990-01-01"}),
                ("GET", "/api/account/settings", None), ("GET", "/api/audit", None)):
            response = await client.request(method, path, json=body, headers=with_cookie)
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"]["code"] == "unauthenticated"
    for other in (neighbour, elsewhere):
        assert await count_messages(services, other) == 0
