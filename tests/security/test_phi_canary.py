"""No PHI outside ciphertext (issue 8, acceptance 3): the whole flow, run once across two
``securechat serve`` processes with a unique canary in every PHI field, then a search of
every place data goes — both nodes' logs (one at DEBUG), their ``/metrics``, every command
a private Redis executed (``MONITOR``) and its keys, every request the fake Twilio got,
every cell of every table, and every answer to a caller without a session.

The only canaries allowed out are the ones SMS carry by design, each only in its own
Twilio request: the phone as ``To``, a non-secure body and the one-time code as ``Body``.
Positive controls (the canaries reach staff and patient where they are entitled to them,
and the ciphertext columns hold rows) keep the search from passing vacuously.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
import pytest

from loadtest.nodes import private_postgres
from server.notify import Offline
from server.runtime import build_services
from tests.conftest import ORIGIN, PASSWORD, PG_ADMIN_URL, PrivateRedis, settings_for_tests
from tests.ops.support import METRICS_TOKEN
from tests.realtime.cluster_nodes import ServeProcess, login_cookie, node_env, serve_processes
from tests.realtime.wsclient import WSClient, connect
from tests.security.phi_support import (
    FRAGMENT,
    Canaries,
    RedisMonitor,
    cell_bytes,
    database_cells,
    leaks,
    redis_contents,
)
from tests.sms.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    INBOUND_PATH,
    TWILIO_FROM,
    FakeTwilio,
    TwilioRequest,
    inbound_params,
    new_phone,
    signature,
)

LINK = re.compile(re.escape(ORIGIN) + r"/s/([A-Za-z0-9_-]+)")
CODE = re.compile(r"code is (\d{6})")
WAIT = 20.0  # generous: two nodes, PostgreSQL and Redis share two cores with other runs
# Ciphertext columns of the flow: each must hold rows, or the search proves nothing.
ENCRYPTED = ("patients.name_enc", "patients.phone_enc", "patients.dob_enc",
             "messages.body_enc", "sms_outbox.body_enc")


@dataclass
class Run:
    """What the flow produced: where things went and what the entitled parties saw."""

    canaries: Canaries
    nodes: list[ServeProcess] = field(default_factory=list)
    metrics: dict[str, str] = field(default_factory=dict)
    anonymous: list[tuple[str, httpx.Response]] = field(default_factory=list)
    staff_views: list[str] = field(default_factory=list)  # API answers and frames to staff
    staff_frames: list[dict] = field(default_factory=list)
    patient_frames: list[dict] = field(default_factory=list)
    # Bearer secrets of the run (session cookies, the link's token): never logged or
    # stored as they are either.
    credentials: dict[str, str] = field(default_factory=dict)


@pytest.fixture
async def fake_twilio() -> AsyncIterator[FakeTwilio]:
    async with FakeTwilio.running() as fake:
        yield fake


async def seed(database_url: str, master_key: bytes) -> tuple[str, str, str]:
    """An account with the portal on and its own SMS number (the operator assigns it),
    an admin and a staff member (no patient: staff create it over the API). Returns
    (admin email, staff email, the clinic's number)."""
    clinic_number = new_phone()
    services = build_services(settings_for_tests(database_url=database_url,
                                                 allowed_origins=[ORIGIN]), master_key,
                              notifier=Offline())
    try:
        account_id, _ = await services.accounts.ensure_account(
            "Canary Clinic", portal_active=True, sms_number=clinic_number)
        for role in ("admin", "staff"):
            await services.accounts.create_staff(
                account_id, email=f"{role}@canary.test", name=f"Canary {role}", role=role,
                password=PASSWORD)
    finally:
        await services.db.close()
    return "admin@canary.test", "staff@canary.test", clinic_number


def client(url: str, cookie: str | None = None) -> httpx.AsyncClient:
    headers = {"origin": ORIGIN} | ({"cookie": cookie} if cookie else {})
    return httpx.AsyncClient(base_url=url, timeout=WAIT, headers=headers)


def sent_to(fake: FakeTwilio, phone: str, pattern: re.Pattern[str]) -> list[TwilioRequest]:
    return [r for r in fake.sent() if r.form.get("To") == phone
            and pattern.search(r.form.get("Body", ""))]


async def wait_sent(fake: FakeTwilio, phone: str, pattern: re.Pattern[str]) -> re.Match:
    await fake.wait_for(lambda f: bool(sent_to(f, phone, pattern)), WAIT)
    match = pattern.search(sent_to(fake, phone, pattern)[0].form["Body"])
    assert match is not None
    return match


async def browser_send(ws: WSClient, **frame: object) -> None:
    """A frame as the browser writes it (compact JSON, the keys in its order): what a
    frame log would show of it depends on its exact bytes."""
    await ws.ws.send(json.dumps(frame, separators=(",", ":")))


async def subscribed(ws: WSClient, conversation_id: str) -> None:
    await ws.wait_type("ready", WAIT)
    await browser_send(ws, type="subscribe", ref="sub", conversation_id=conversation_id,
                       after_seq=0)
    await ws.wait_type("subscribed", WAIT, ref="sub")


async def message_with(ws: WSClient, text: str) -> dict:
    return await ws.wait_for(lambda f: f["type"] == "message" and text in f["body"], WAIT)


async def verify_patient(run: Run, node: ServeProcess, fake: FakeTwilio) -> str:
    """The secure message's notification carries the link; the patient opens it, types a
    wrong date (in the form), then the right one, then the texted code. Returns the
    patient's session cookie."""
    c = run.canaries
    token = (await wait_sent(fake, c.phone, LINK)).group(1)
    run.credentials["secure link token"] = token
    async with client(node.url) as patient:
        run.anonymous.append(("link page", await patient.get(f"/s/{token}")))
        wrong = await patient.post(f"/s/{token}/verify",
                                   data={"date_of_birth": c.wrong_dob.isoformat()})
        assert wrong.status_code == 401, wrong.text
        run.anonymous.append(("wrong date (form)", wrong))
        response = await patient.post(f"/s/{token}/verify",
                                      json={"date_of_birth": c.dob.isoformat()})
        assert response.status_code == 202, response.text
        run.anonymous.append(("right date, code asked", response))
        c.code = (await wait_sent(fake, c.phone, CODE)).group(1)
        response = await patient.post(f"/s/{token}/verify", json={
            "date_of_birth": c.dob.isoformat(), "code": c.code})
        assert response.status_code == 204, response.text
        cookie = "; ".join(f"{k}={v}" for k, v in patient.cookies.items())
    run.credentials["patient session cookie"] = cookie.partition("=")[2]
    return cookie


async def flow(run: Run, node1: ServeProcess, node2: ServeProcess, fake: FakeTwilio,
               admin: str, staff: str, clinic_number: str) -> None:
    """The whole product flow with a canary in every PHI field: staff on node 1, the
    patient (SMS webhook, link page, verification, secure chat) on node 2."""
    c = run.canaries
    admin_cookie = await login_cookie(node1.url, admin)
    run.credentials["admin session cookie"] = admin_cookie.partition("=")[2]
    async with client(node1.url, admin_cookie) as api:
        response = await api.put("/api/account/settings", json={
            "require_code": True})
        assert response.status_code == 200, response.text
        # Staff-entered text that could be PHI: an audit search typed by an admin (free
        # text boxes). Refusing it is fine; storing or logging it is not.
        for name, value in (("action", c.audit_filter), ("actor_id", c.audit_actor)):
            response = await api.get("/api/audit", params={name: value})
            assert response.status_code == 200 or \
                response.json()["error"]["code"] == "invalid_request", response.text

    staff_cookie = await login_cookie(node1.url, staff)
    run.credentials["staff session cookie"] = staff_cookie.partition("=")[2]
    async with client(node1.url, staff_cookie) as api, \
            connect(node1.url, staff_cookie) as staff_ws:
        national = f"({c.phone[2:5]}) {c.phone[5:8]}-{c.phone[8:]}"
        response = await api.post("/api/patients", json={
            "name": c.name, "phone": national, "date_of_birth": c.dob.isoformat()})
        assert response.status_code == 201, response.text
        run.staff_views.append(response.text)
        conversation_id = response.json()["conversation_id"]
        await subscribed(staff_ws, conversation_id)

        response = await api.post("/api/sms/segments", json={"body": c.draft})
        assert response.status_code == 200, response.text
        response = await api.post(f"/api/conversations/{conversation_id}/messages", json={
            "client_msg_id": "plain-1", "body": f"Reminder {c.plain_sms}", "secure": False})
        assert response.status_code == 201, response.text
        await browser_send(staff_ws, type="send", ref="s1", conversation_id=conversation_id,
                           client_msg_id="secure-1", body=f"Results {c.staff_secure}",
                           secure=True)
        await staff_ws.wait_type("ack", WAIT, ref="s1")

        # The patient texts the clinic (webhook on node 2; staff on node 1 sees it).
        params = inbound_params(to=clinic_number, from_=c.phone, body=f"Hi {c.inbound_sms}")
        async with client(node2.url) as twilio:
            response = await twilio.post(INBOUND_PATH, data=params, headers={
                "X-Twilio-Signature": signature(INBOUND_PATH, params,
                                                url=ORIGIN + INBOUND_PATH)})
        assert response.status_code == 200, response.text
        await message_with(staff_ws, c.inbound_sms)

        patient_cookie = await verify_patient(run, node2, fake)
        async with connect(node2.url, patient_cookie) as patient_ws:
            await subscribed(patient_ws, conversation_id)
            await message_with(patient_ws, c.staff_secure)  # replayed from the store
            await browser_send(patient_ws, type="typing", conversation_id=conversation_id)
            typing = await staff_ws.wait_type("typing", WAIT)
            assert typing["sender"]["name"] == c.name  # resolved from the store on node 1
            await browser_send(patient_ws, type="send", ref="p1",
                               conversation_id=conversation_id, client_msg_id="patient-1",
                               body=f"Thanks {c.patient_secure}", secure=True)
            seen = await message_with(staff_ws, c.patient_secure)
            assert seen["sender"]["name"] == c.name
            await browser_send(staff_ws, type="typing", conversation_id=conversation_id)
            await patient_ws.wait_type("typing", WAIT)
            await browser_send(staff_ws, type="send", ref="s2",
                               conversation_id=conversation_id, client_msg_id="secure-2",
                               body=f"Live {c.staff_secure}", secure=True)
            await message_with(patient_ws, f"Live {c.staff_secure}")
            await browser_send(patient_ws, type="read", conversation_id=conversation_id,
                               seq=seen["seq"])
            await staff_ws.wait_type("read", WAIT)
            run.patient_frames = list(patient_ws.frames)

        for path in (f"/api/conversations/{conversation_id}/messages", "/api/conversations"):
            response = await api.get(path)
            assert response.status_code == 200, response.text
            run.staff_views.append(response.text)
        run.staff_frames = list(staff_ws.frames)
        response = await api.post(f"/api/conversations/{conversation_id}/links/revoke")
        assert response.status_code == 200 and response.json()["revoked_links"] == 1, \
            response.text
    async with client(node2.url) as anyone:
        token = run.credentials["secure link token"]
        run.anonymous.append(("revoked link page", await anyone.get(f"/s/{token}")))
    # Every SMS of the flow went out before the nodes stop: the plain one, the link, the code.
    await fake.wait_for(lambda f: any(c.plain_sms in r.form.get("Body", "")
                                      for r in f.sent()), WAIT)


async def anonymous_answers(run: Run, node: ServeProcess) -> None:
    """What a caller without a session gets, and the operator's metrics."""
    async with client(node.url) as anyone:
        for path in ("/healthz", "/readyz", "/s/chat", "/s/ended", "/s/not-a-token",
                     "/api/conversations", "/api/me", "/no/such/page", "/ws"):
            run.anonymous.append((f"{node.name} GET {path}", await anyone.get(path)))
        run.anonymous.append((f"{node.name} unsigned webhook", await anyone.post(
            INBOUND_PATH, data={"Body": "x"})))
        scrape = await anyone.get("/metrics", headers={
            "authorization": f"Bearer {METRICS_TOKEN}"})
        assert scrape.status_code == 200, scrape.text
        run.metrics[node.name] = scrape.text


def twilio_leaks(fake: FakeTwilio, canaries: Canaries) -> list[str]:
    """The phone only as ``To`` of sends to it; a non-secure body only in its own send;
    the code only in its own; nothing else in any request."""
    forms = canaries.forms()
    found = []
    plain = [r for r in fake.requests if canaries.plain_sms in r.form.get("Body", "")]
    assert len(plain) == 1 and plain[0].form["To"] == canaries.phone, plain
    coded = [r for r in fake.requests if CODE.search(r.form.get("Body", ""))]
    assert len(coded) == 1 and coded[0].form["To"] == canaries.phone, coded
    for request in fake.requests:
        for key, value in [("path", request.path), ("auth", request.authorization or ""),
                           *request.form.items()]:
            allowed = set()
            if key == "To" and value == canaries.phone:
                allowed.add("patient phone")
            if key == "Body" and request is plain[0]:
                allowed.add("non-secure SMS body")
            if key == "Body" and request is coded[0]:
                allowed.add("one-time code")
            found += leaks(f"twilio request #{request.number} {key}", value, forms, allowed)
    return found


@pytest.mark.slow
async def test_no_canary_leaves_ciphertext(private_redis: PrivateRedis, fake_twilio: FakeTwilio,
                                          master_key: bytes) -> None:
    """Every PHI canary of a full two-node run stays out of logs, metrics, Redis, Twilio
    (beyond each SMS's own fields), the database's plain columns and anonymous answers."""
    run = Run(Canaries())
    twilio = {"sms_provider": "twilio", "twilio_account_sid": ACCOUNT_SID,
              "twilio_auth_token": AUTH_TOKEN, "twilio_from": TWILIO_FROM,
              "twilio_api_base": fake_twilio.url}
    async with private_postgres(PG_ADMIN_URL) as database_url, \
            RedisMonitor.running(private_redis.port) as monitor:
        admin, staff, clinic_number = await seed(database_url, master_key)
        common = {"database_url": database_url, "redis_url": private_redis.url,
                  "master_key": master_key, "metrics_token": METRICS_TOKEN}
        async with serve_processes(
                ("node1", node_env(**common, **twilio, log_level="DEBUG")),
                ("node2", node_env(**common, **twilio))) as nodes:
            run.nodes = nodes
            await flow(run, *nodes, fake_twilio, admin, staff, clinic_number)
            for node in nodes:
                await anonymous_answers(run, node)
        redis_keys = await redis_contents(private_redis.url)
        cells = await database_cells(database_url)

    c = run.canaries
    forms = c.forms()
    # Positive controls: the flow really carried every canary to whom may see it.
    staff_seen = "\n".join(run.staff_views) + repr(run.staff_frames)
    for text in (c.name, c.staff_secure, c.patient_secure, c.inbound_sms, c.plain_sms):
        assert text in staff_seen, text
    assert c.staff_secure in repr(run.patient_frames)
    assert c.plain_sms not in repr(run.patient_frames)  # SMS stay off the secure page
    # ... and every source was captured.
    for node in run.nodes:
        assert len(node.lines) > 5, node.name
    assert any('"level":"debug"' in line for line in run.nodes[0].lines)
    assert re.search(rb'"publish"', bytes(monitor.data), re.IGNORECASE)
    assert len(fake_twilio.sent()) >= 3
    stored = {place for place, value in cells if cell_bytes(value)}
    assert set(ENCRYPTED) <= stored, set(ENCRYPTED) - stored
    assert all("# TYPE" in run.metrics[node.name] for node in run.nodes)

    found = []
    for what, response in run.anonymous:  # PHI only: the link's holder may see its token
        found += leaks(f"anonymous {what} ({response.status_code})",
                       repr(response.headers.raw).encode() + response.content, forms)
    assert len(run.credentials) == 4 and all(run.credentials.values())
    forms |= {label: [re.compile(re.escape(value.encode()))]
              for label, value in run.credentials.items()}
    for node in run.nodes:
        found += leaks(f"{node.name} log", "\n".join(node.lines), forms)
        found += leaks(f"{node.name} /metrics", run.metrics[node.name], forms)
    found += leaks("redis MONITOR", monitor.commands(), forms)
    found += leaks("redis keys", redis_keys, forms)
    for place, value in cells:
        found += leaks(f"database {place}", cell_bytes(value), forms)
    found += twilio_leaks(fake_twilio, c)
    assert not found, "PHI outside ciphertext:\n" + "\n".join(found)


def test_the_search_finds_every_spelling_of_a_canary() -> None:
    """Each canary is found however it is written (or cut short, as a frame log does),
    and digits are not found inside longer numbers or the microseconds of a time."""
    canaries = Canaries(code="012345")
    forms = canaries.forms()
    area, exchange, line = canaries.phone[2:5], canaries.phone[5:8], canaries.phone[8:]
    dob = canaries.dob
    spellings = {
        "patient phone": [canaries.phone, f"({area}) {exchange}-{line}",
                          f"{area}-{exchange}-{line}", f"{area}.{exchange}.{line}",
                          f"tel:+1-{area}-{exchange}-{line}", f"+1 {area}-{exchange}-{line}",
                          f"to=%2B1{area}{exchange}{line}", f"1{area}{exchange}{line}",
                          f"{area}{exchange}{line}"],
        "date of birth": [dob.isoformat(), dob.strftime("%m/%d/%Y"),
                          f"{dob.month}/{dob.day}/{dob.year}", dob.strftime("%Y%m%d"),
                          dob.strftime("%m%d%Y")],
        "patient name": [canaries.name.lower(), f"...{canaries.name[-FRAGMENT:]}\"}}'"],
        "secure body patient->staff": [f"...{canaries.patient_secure[-7:]}\",\"secure\""],
        "one-time code": [f"your code is {canaries.code}. It expires"],
    }
    for label, texts in spellings.items():
        for text in texts:
            found = leaks("log", f"before {text} after", forms)
            assert any(f": {label} (" in hit for hit in found), (label, text)
    near_misses = (f"n=9{canaries.code}7 at 12:00:00.{canaries.code}Z "
                   f"id 9{canaries.dob.strftime('%Y%m%d')}1 "
                   + " ".join(str(uuid.uuid4()) for _ in range(200))
                   + " ".join(hashlib.sha256(os.urandom(8)).hexdigest() for _ in range(200)))
    assert leaks("log", near_misses, forms) == []
