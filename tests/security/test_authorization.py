"""Who may call what, generated from the app's route table and the protocol's client frame
types: every route and frame by {no session, patient of another conversation, staff of
another account, ``staff`` role on admin routes, deactivated staff}. Each cell checks the
refusal (status and error code, or close code) and that nothing happened: the victim
account's rows are unchanged, none of its ids come back, no frame reaches its sockets.

A route or frame type without a case fails ``test_every_route_and_frame_has_a_case``.
The cells run in loops over one server per test (a server per cell would cost minutes);
each loop collects every failing cell before asserting, so one run names them all.
"""

from __future__ import annotations

import itertools
import secrets
import typing
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from server.audit import SYSTEM
from server.protocol import (
    AnyClientFrame,
    CreatePatientRequest,
    Ping,
    Read,
    Send,
    Subscribe,
    Typing,
    Unsubscribe,
)
from server.runtime import Services
from tests.conftest import ORIGIN, PASSWORD, Clinic, RunningServer, make_clinic
from tests.patient.support import new_link
from tests.realtime.wsclient import connect, staff_cookie
from tests.security.routes import every_route
from tests.security.state import snapshot, sqlite_only

_msg_ids = itertools.count(1)


@dataclass(frozen=True)
class Case:
    """A valid request for one /api (method, path) and what a permitted caller gets."""

    ok: int
    body: Callable[[Clinic], dict] | None = None
    params: dict[str, str] = field(default_factory=dict)
    admin_only: bool = False
    # The one route reachable without a session (it opens one): without credentials it
    # must answer 401 like every other route.
    public: bool = False


CASES: dict[tuple[str, str], Case] = {
    ("POST", "/api/auth/login"): Case(
        200, lambda c: {"email": c.admin_email, "password": PASSWORD}, public=True),
    ("POST", "/api/auth/logout"): Case(204),
    ("GET", "/api/me"): Case(200),
    ("GET", "/api/conversations"): Case(200, params={"limit": "10"}),
    ("POST", "/api/patients"): Case(201, lambda c: {
        "name": "Robin Authz", "phone": f"+1415555{101 + secrets.randbelow(99):04d}",
        "date_of_birth": "1970-02-03"}),
    ("GET", "/api/conversations/{conversation_id}/messages"): Case(
        200, params={"limit": "10"}),
    ("POST", "/api/conversations/{conversation_id}/messages"): Case(201, lambda c: {
        "client_msg_id": f"authz-{next(_msg_ids)}", "body": "Please call us back",
        "secure": False}),
    ("POST", "/api/sms/segments"): Case(200, lambda c: {"body": "See you at 3pm"}),
    ("POST", "/api/conversations/{conversation_id}/links/revoke"): Case(200),
    # A new link by SMS now (rate-limited per conversation: one call per test here).
    ("POST", "/api/conversations/{conversation_id}/links/resend"): Case(202),
    ("GET", "/api/account/settings"): Case(200, admin_only=True),
    ("PUT", "/api/account/settings"): Case(200, lambda c: {"clinic_name": "Renamed Clinic"},
                                           admin_only=True),
    ("GET", "/api/audit"): Case(200, params={"limit": "5"}, admin_only=True),
    ("GET", "/api/staff"): Case(200, admin_only=True),
    ("POST", "/api/staff"): Case(201, lambda c: {
        "name": "Sam Authz", "email": f"authz-{secrets.token_hex(4)}@clinic.test",
        "role": "staff", "password": PASSWORD}, admin_only=True),
    ("POST", "/api/staff/{staff_id}/deactivate"): Case(200, admin_only=True),
}

# Every route outside /api, and who may reach it. The checks below act on these kinds.
OTHER_ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/"): "public",  # the console's static shell: no data
    ("GET", "/healthz"): "public",
    ("GET", "/readyz"): "public",
    # The operator's bearer token (demo: loopback); test_metrics_access.py checks it.
    ("GET", "/metrics"): "operator",
    ("GET", "/static/{path}"): "public",
    ("GET", "/s/ended"): "public",
    ("GET", "/s/{token}"): "link",  # the link's token is the credential
    ("POST", "/s/{token}/verify"): "link",
    ("GET", "/s/chat"): "patient",
    ("POST", "/s/logout"): "patient",  # ends the caller's own session, if any
    ("WS", "/ws"): "socket",
    ("GET", "/dev/phone"): "demo",  # `securechat demo` only
    ("POST", "/dev/phone/reply"): "demo",
    ("POST", "/sms/twilio/inbound"): "twilio",  # signature-checked (test_csrf.py)
    ("POST", "/sms/twilio/status"): "twilio",
}


@dataclass(frozen=True)
class FrameCase:
    """A client frame naming ``conversation`` and the code each intruder gets: a patient
    of another conversation and staff of another account (None: no answer at all)."""

    build: Callable[[str], dict] | None  # None: the frame names no conversation
    patient: str | None = "forbidden"
    other_staff: str | None = "not_found"


FRAME_CASES: dict[type, FrameCase] = {
    Subscribe: FrameCase(lambda c: {"type": "subscribe", "conversation_id": c,
                                    "after_seq": 0}),
    # Unsubscribing only removes the caller's own subscription: nothing to refuse.
    Unsubscribe: FrameCase(lambda c: {"type": "unsubscribe", "conversation_id": c},
                           None, None),
    Send: FrameCase(lambda c: {"type": "send", "conversation_id": c, "secure": True,
                               "client_msg_id": f"intruder-{next(_msg_ids)}",
                               "body": "not your thread"}),
    Typing: FrameCase(lambda c: {"type": "typing", "conversation_id": c}),
    Read: FrameCase(lambda c: {"type": "read", "conversation_id": c, "seq": 1}),
    Ping: FrameCase(None, None, None),  # names no conversation
}


def api_routes() -> list[tuple[str, str]]:
    """The app's /api routes in calling order: deactivation, logout and login last, since
    they end the target's or the caller's session, or replace the caller's."""
    found = [r for r in every_route() if r[1].startswith("/api")]
    return sorted(found, key=lambda r: (r[1].endswith("/login"), r[1].endswith("/logout"),
                                        "deactivate" in r[1], r))


def url(path: str, clinic: Clinic) -> str:
    return path.format(conversation_id=clinic.conversation_id, staff_id=clinic.staff_id)


async def call(client: httpx.AsyncClient, method: str, path: str, clinic: Clinic,
               **headers: str) -> httpx.Response:
    case = CASES[(method, path)]
    return await client.request(method, url(path, clinic), params=case.params,
                                json=case.body(clinic) if case.body else None,
                                headers={"origin": ORIGIN, **headers})


def refused(response: httpx.Response, status: int, code: str) -> str | None:
    """None when ``response`` is that refusal, else what it was instead."""
    if response.status_code == status and response.headers.get("content-type", "") \
            .startswith("application/json") and response.json()["error"]["code"] == code:
        return None
    return f"{response.status_code} {response.text[:120]}"


def secrets_of(clinic: Clinic) -> list[str]:
    return [clinic.account_id, clinic.conversation_id, clinic.patient_id, clinic.staff_id,
            clinic.admin_id, clinic.staff_email, clinic.admin_email]


def test_every_route_and_frame_has_a_case() -> None:
    """Each served route has exactly one case here, and each client frame type one too."""
    served = every_route()
    cased = set(CASES) | set(OTHER_ROUTES)
    assert served - cased == set(), "routes without an authorization case"
    assert cased - served == set(), "cases for routes that no longer exist"
    assert set(typing.get_args(AnyClientFrame)) == set(FRAME_CASES), \
        "client frame types without an authorization case"
    assert all(c.build is None for t, c in FRAME_CASES.items() if t is Ping)
    assert FRAME_CASES[Unsubscribe].patient is None


@sqlite_only
async def test_no_session_is_refused_everywhere(server: RunningServer, services: Services,
                                                clinic: Clinic) -> None:
    """Without a session (or with a made-up one) every /api route is 401
    ``unauthenticated``, the chat page is 401, the socket closes 4401 before sending
    anything, and the account is unchanged."""
    before = await snapshot(services, clinic.account_id)
    wrong: list[str] = []
    async with server.client() as client:
        for method, path in api_routes():
            case = CASES[(method, path)]
            if case.public:  # the login itself: wrong credentials are 401 as well
                body = {**case.body(clinic), "password": "a wrong password for this login"}
                response = await client.request(method, path, json=body,
                                                headers={"origin": ORIGIN})
                if problem := refused(response, 401, "unauthenticated"):
                    wrong.append(f"{method} {path}: {problem}")
                continue
            for cookie in (None, "sc_staff=no-such-session"):
                extra = {"cookie": cookie} if cookie else {}
                response = await call(client, method, path, clinic, **extra)
                if problem := refused(response, 401, "unauthenticated"):
                    wrong.append(f"{method} {path} cookie={cookie}: {problem}")
        chat = await client.get("/s/chat")
        if chat.status_code != 401 or "has ended" not in chat.text:
            wrong.append(f"GET /s/chat: {chat.status_code}")
    wrong += await socket_not_signed_in(server.url, None)
    assert wrong == []
    assert await snapshot(services, clinic.account_id) == before


@sqlite_only
async def test_patient_session_is_not_a_staff_session(server: RunningServer,
                                                      services: Services,
                                                      clinic: Clinic) -> None:
    """A patient's session cookie, even sent under the staff cookie's name, opens no /api
    route (401) and changes nothing."""
    token, _ = await services.patient_sessions.open(
        clinic.account_id, clinic.patient_id, clinic.conversation_id, SYSTEM)
    before = await snapshot(services, clinic.account_id, only=("messages", "staff",
                                                               "patients", "secure_links"))
    wrong: list[str] = []
    async with server.client() as client:
        for method, path in api_routes():
            if CASES[(method, path)].public:
                continue
            for cookie in (f"sc_patient={token}", f"sc_staff={token}"):
                response = await call(client, method, path, clinic, cookie=cookie)
                if problem := refused(response, 401, "unauthenticated"):
                    wrong.append(f"{method} {path} {cookie.split('=')[0]}: {problem}")
    assert wrong == []
    assert await snapshot(services, clinic.account_id, only=(
        "messages", "staff", "patients", "secure_links")) == before


@sqlite_only
async def test_a_patients_session_opens_no_other_link(server: RunningServer,
                                                      services: Services,
                                                      clinic: Clinic) -> None:
    """Patient B, signed in, on patient A's link: B's session counts for nothing there
    (B's date of birth is 401 ``invalid_verification``), no session opens for A, and B's
    chat page and socket stay B's own (``ready`` names B's conversation)."""
    patient_b, conversation_b = await services.patients.create(
        clinic.account_id, CreatePatientRequest("Bo Other", "+14155550178", "1991-01-01"),
        SYSTEM)
    token_b, _ = await services.patient_sessions.open(
        clinic.account_id, patient_b.id, conversation_b, SYSTEM)
    link_a = await new_link(server, clinic)
    before = await snapshot(services, clinic.account_id, only=("sessions",))
    async with server.client() as client:
        client.cookies.set("sc_patient", token_b)
        response = await client.post(f"/s/{link_a}/verify", headers={"origin": ORIGIN},
                                     json={"date_of_birth": "1991-01-01"})
        assert refused(response, 401, "invalid_verification") is None, response.text
        assert "set-cookie" not in response.headers
    after = await snapshot(services, clinic.account_id, only=("sessions",))
    assert after == before
    async with connect(server.url, f"sc_patient={token_b}") as ws:
        ready = await ws.wait_type("ready")
        assert ready["conversation_id"] == conversation_b


@sqlite_only
async def test_staff_role_is_forbidden_on_admin_routes(
        server: RunningServer, services: Services, clinic: Clinic) -> None:
    """A ``staff`` member gets 403 ``forbidden`` on every admin route, which changes
    nothing, and succeeds on the others (so the requests themselves are valid)."""
    wrong: list[str] = []
    async with server.login(clinic.staff_email) as client:
        for method, path in api_routes():
            case = CASES[(method, path)]
            if case.public:
                continue
            before = await snapshot(services, clinic.account_id, only=("staff",))
            settings = await services.accounts.settings(clinic.account_id)
            response = await call(client, method, path, clinic)
            if not case.admin_only:
                if response.status_code != case.ok:
                    wrong.append(f"{method} {path}: {response.status_code} {response.text}")
                continue
            if problem := refused(response, 403, "forbidden"):
                wrong.append(f"{method} {path}: {problem}")
            if (await snapshot(services, clinic.account_id, only=("staff",)) != before
                    or await services.accounts.settings(clinic.account_id) != settings):
                wrong.append(f"{method} {path}: changed the account")
    assert wrong == []


@sqlite_only
async def test_admin_may_call_every_route(server: RunningServer, clinic: Clinic) -> None:
    """An ``admin`` succeeds on every route, admin-only or not; together the answers hold
    every one of the account's ids and emails (so the leak check below can see them)."""
    wrong: list[str] = []
    seen = ""
    async with server.login(clinic.admin_email) as client:
        for method, path in api_routes():
            response = await call(client, method, path, clinic)
            seen += response.text
            if response.status_code != CASES[(method, path)].ok:
                wrong.append(f"{method} {path}: {response.status_code} {response.text}")
    assert wrong == []
    assert [s for s in secrets_of(clinic) if s not in seen] == []


@sqlite_only
async def test_staff_of_another_account_reach_nothing(
        server: RunningServer, services: Services, clinic: Clinic) -> None:
    """An admin of account B, calling every /api route with account A's ids: routes that
    name an id answer 404 ``not_found`` exactly as for an id that does not exist; the
    others act on B only. No answer holds any of A's ids or emails; A is unchanged."""
    other = await make_clinic(services)
    missing = Clinic(other.account_id, other.admin_email, other.staff_email,
                     other.patient_id, "00000000-0000-4000-8000-000000000000",
                     other.admin_id, "00000000-0000-4000-8000-000000000001")
    before = await snapshot(services, clinic.account_id)
    wrong: list[str] = []
    async with server.login(other.admin_email) as client:
        for method, path in api_routes():
            case = CASES[(method, path)]
            if case.public:  # signing in needs A's password, not B's session
                continue
            response = await call(client, method, path, clinic)
            if "{" in path:
                if problem := refused(response, 404, "not_found"):
                    wrong.append(f"{method} {path}: {problem}")
                elif (await call(client, method, path, missing)).json() != response.json():
                    wrong.append(f"{method} {path}: differs from an unknown id's answer")
            elif response.status_code != case.ok:
                wrong.append(f"{method} {path}: {response.status_code} {response.text}")
            leaked = [s for s in secrets_of(clinic) if s in response.text]
            if leaked:
                wrong.append(f"{method} {path}: answered with account A's {leaked}")
    assert wrong == []
    assert await snapshot(services, clinic.account_id) == before


async def test_deactivated_staff_are_refused_everywhere(
        server: RunningServer, services: Services, clinic: Clinic) -> None:
    """Deactivated through the admin API, a staff member's open socket closes with 4401,
    their old session is 401 ``account_deactivated`` on every /api route (admin ones
    too: only that session's holder learns why), a new socket closes 4401 and the right
    password no longer signs in. Both databases: ending the sessions is the store's
    work."""
    cookie = await staff_cookie(server, clinic.staff_email)
    async with connect(server.url, cookie) as live:
        await live.wait_type("ready")
        async with server.login(clinic.admin_email) as admin:
            response = await admin.post(f"/api/staff/{clinic.staff_id}/deactivate",
                                        headers={"origin": ORIGIN})
            assert response.status_code == 200, response.text
            assert response.json()["staff"]["active"] is False
        assert (await live.close_code())[0] == 4401
    wrong: list[str] = []
    async with server.client() as client:
        for method, path in api_routes():
            response = await call(client, method, path, clinic, cookie=cookie)
            if CASES[(method, path)].public:  # sign in as this very member instead
                response = await client.post(path, headers={"origin": ORIGIN}, json={
                    "email": clinic.staff_email, "password": PASSWORD})
            if problem := refused(response, 401, "account_deactivated"):
                wrong.append(f"{method} {path}: {problem}")
    wrong += await socket_not_signed_in(server.url, cookie)
    assert wrong == []


# --- frames ----------------------------------------------------------------------------

@sqlite_only
async def test_frames_for_another_conversation_are_refused(
        server: RunningServer, services: Services, clinic: Clinic) -> None:
    """Each client frame type naming conversation A, sent by a patient of another
    conversation of the same account (``forbidden``) and by staff of another account
    (``not_found``), is refused with that code; A's messages, read pointers and
    conversation row are unchanged and A's own sockets (staff and patient) receive no
    frame caused by the intruders."""
    patient_b, conversation_b = await services.patients.create(
        clinic.account_id, CreatePatientRequest("Bo Intruder", "+14155550177", "1991-01-01"),
        SYSTEM)
    patient_b_token, _ = await services.patient_sessions.open(
        clinic.account_id, patient_b.id, conversation_b, SYSTEM)
    patient_a_token, _ = await services.patient_sessions.open(
        clinic.account_id, clinic.patient_id, clinic.conversation_id, SYSTEM)
    other = await make_clinic(services)
    victim_conv = clinic.conversation_id
    intruders = {"patient": f"sc_patient={patient_b_token}",
                 "other_staff": await staff_cookie(server, other.staff_email)}

    async with (connect(server.url, await staff_cookie(server, clinic.staff_email)) as staff,
                connect(server.url, f"sc_patient={patient_a_token}") as patient):
        for watcher in (staff, patient):
            await watcher.send(type="subscribe", conversation_id=victim_conv, ref="sub")
            await watcher.wait_type("subscribed", ref="sub")
        await staff.send(type="send", conversation_id=victim_conv, client_msg_id="first",
                         body="Your results are in", secure=True)
        for watcher in (staff, patient):
            await watcher.wait_type("message", client_msg_id="first")
        await staff.wait_type("status", status="delivered")  # its last change of state
        for watcher in (staff, patient):  # every frame of the setup has arrived
            await watcher.send(type="ping", ref="mark")
            await watcher.wait_type("pong", ref="mark")
        marks = {id(w): len(w.frames) for w in (staff, patient)}
        before = await snapshot(services, clinic.account_id,
                                only=("messages", "read_pointers", "conversations"))

        wrong: list[str] = []
        for who, cookie in intruders.items():
            async with connect(server.url, cookie) as intruder:
                await intruder.wait_type("ready")
                for kind, case in FRAME_CASES.items():
                    if case.build is None:
                        continue
                    ref = f"{who}-{kind.__name__}"
                    await intruder.send(**case.build(victim_conv), ref=ref)
                    expected = getattr(case, who)
                    await intruder.send(type="ping", ref=f"after-{ref}")
                    await intruder.wait_type("pong", ref=f"after-{ref}")
                    answers = [f for f in intruder.frames if f.get("ref") == ref]
                    codes = [f.get("code") for f in answers]
                    if codes != ([expected] if expected else []):
                        wrong.append(f"{who} {kind.__name__}: {answers}")
                leaked = [f for f in intruder.frames if f.get("conversation_id") == victim_conv
                          and f["type"] != "error"]
                if leaked:
                    wrong.append(f"{who}: got A's frames {leaked}")
        assert wrong == []
        assert await snapshot(services, clinic.account_id, only=(
            "messages", "read_pointers", "conversations")) == before

        # A barrier through the same fan-out path: whatever the intruders had caused
        # would have reached A's sockets before this message does.
        await staff.send(type="send", conversation_id=victim_conv, client_msg_id="barrier",
                         body="See you Tuesday", secure=True)
        for watcher in (staff, patient):
            await watcher.wait_type("message", client_msg_id="barrier")
            since = watcher.frames[marks[id(watcher)]:]
            stray = [f for f in since if f["type"] in ("typing", "read", "error")
                     or (f["type"] == "message" and f["client_msg_id"] != "barrier")]
            assert stray == [], stray


async def socket_not_signed_in(url: str, cookie: str | None) -> list[str]:
    """What is wrong with /ws for ``cookie``: it must close with 4401 and send nothing."""
    async with connect(url, cookie) as ws:
        code, _ = await ws.close_code()
    return [] if code == 4401 and not ws.frames else [f"WS /ws: close {code}, frames {ws.frames}"]
