"""Test doubles and helpers for the SMS bridge: a fake Twilio Messages API on a real port,
a node of our own under real uvicorn (with its runtime at hand), signed webhooks, and
clinics with numbers of their own.

Every test's database is shared with the rest of the session, and a node's outbox worker
sends every due row it finds, whoever queued it; so tests pick SMS numbers and patient
phones of their own and look only at the requests that carry them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from server import events, phones
from server.app import create_app
from server.audit import SYSTEM
from server.clock import FakeClock
from server.protocol import CreatePatientRequest
from server.runtime import Services
from server.services.sms_worker import OutboxWorker
from server.settings import Settings
from server.sms.twilio import TwilioProvider
from server.store.tables import messages, patients, sms_outbox
from server.web.context import app_runtime
from tests.conftest import ORIGIN, Clinic, RunningServer, make_clinic, settings_for_tests
from tests.serving import serve_app

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "12345678901234567890123456789012"  # 32 hex-ish characters, as Twilio's are
TWILIO_FROM = "+14155550199"
PUBLIC_URL = "http://sms.clinic.test"  # what Twilio calls; not where the test reaches us
INBOUND_PATH = "/sms/twilio/inbound"
STATUS_PATH = "/sms/twilio/status"

OK = 201
HANG = "hang"  # never answer (until the fake stops): the client's timeout runs out
OPTED_OUT = (400, {"code": 21610, "message": "Attempt to send to unsubscribed recipient",
                   "more_info": "https://www.twilio.com/docs/errors/21610", "status": 400})
SERVER_ERROR = (500, {"code": 20500, "message": "Internal Server Error", "status": 500})
Answer = int | str | tuple[int, dict]


# --- uvicorn on a free port ---------------------------------------------------------------

@contextlib.asynccontextmanager
async def serve(app: Any, *, lifespan: str = "on") -> AsyncIterator[str]:
    """Run ``app`` under real uvicorn on a free port; yields its base URL once started."""
    async with serve_app(app, lifespan=lifespan) as served:
        yield served.url


class Node(RunningServer):
    """A running app whose runtime (worker, provider, inbound) tests may reach."""

    def __init__(self, url: str, app: Starlette) -> None:
        super().__init__(url, app_runtime(app).services)
        self.app = app


@contextlib.asynccontextmanager
async def run_node(settings: Settings, master_key: bytes, clock: FakeClock
                   ) -> AsyncIterator[Node]:
    app = create_app(settings, master_key, clock=clock)
    async with serve(app) as url:
        assert hasattr(app.state, "runtime"), "the app failed to start"
        yield Node(url, app)


# --- the fake Twilio ----------------------------------------------------------------------

@dataclass
class TwilioRequest:
    """One call to the Messages API, as the fake saw it and answered it."""

    number: int
    path: str
    authorization: str | None
    form: dict[str, str]
    status: int | None = None  # what the fake answered (None: it never did)
    sid: str | None = None

    @property
    def basic_auth(self) -> tuple[str, str] | None:
        if not self.authorization or not self.authorization.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(self.authorization[6:]).decode().partition(":")
        return user, password


@dataclass
class _Script:
    match: Callable[[TwilioRequest], bool]
    answers: deque[Answer] = field(default_factory=deque)


class FakeTwilio:
    """``POST /2010-04-01/Accounts/{sid}/Messages.json`` on a real port. Records every
    request and answers 201 with a fresh ``SM…`` sid, unless a script says otherwise.
    ``GET .../IncomingPhoneNumbers.json`` answers from ``numbers``."""

    def __init__(self) -> None:
        self.requests: list[TwilioRequest] = []
        self.url = ""
        self._changed = asyncio.Condition()
        self._scripts: list[_Script] = []
        self._release = asyncio.Event()
        # The numbers this Twilio account holds (IncomingPhoneNumbers).
        self.numbers: set[str] = {TWILIO_FROM}
        self.app = Starlette(routes=[
            Route("/2010-04-01/Accounts/{sid}/Messages.json", self._messages,
                  methods=["POST"]),
            Route("/2010-04-01/Accounts/{sid}/IncomingPhoneNumbers.json",
                  self._incoming_numbers, methods=["GET"])])

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls) -> AsyncIterator[FakeTwilio]:
        fake = cls()
        async with serve(fake.app, lifespan="off") as url:
            fake.url = url
            try:
                yield fake
            finally:
                fake._release.set()  # hung requests answer now, so uvicorn can stop

    def script(self, *answers: Answer, match: Callable[[TwilioRequest], bool] | None = None
               ) -> None:
        """The next requests that ``match`` get these answers, in order; then 201."""
        self._scripts.append(_Script(match or (lambda _: True), deque(answers)))

    def always(self, answer: Answer, match: Callable[[TwilioRequest], bool]) -> None:
        """Every request that ``match`` gets ``answer`` (a provider that stays down)."""
        self._scripts.append(_Script(match, _Forever(answer)))

    def clear_scripts(self) -> None:
        """Back to answering 201 to everything (the provider has recovered)."""
        self._scripts.clear()

    def sent(self, match: Callable[[TwilioRequest], bool] | None = None
             ) -> list[TwilioRequest]:
        """The requests answered 201 (the SMS Twilio took), in arrival order."""
        return [r for r in self.requests if r.status == OK and (match is None or match(r))]

    def seen(self, match: Callable[[TwilioRequest], bool] | None = None
             ) -> list[TwilioRequest]:
        return [r for r in self.requests if match is None or match(r)]

    async def wait_for(self, ready: Callable[[FakeTwilio], bool], timeout: float = 10.0
                       ) -> None:
        """Until ``ready(self)`` holds, re-checked on every request and every answer."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: ready(self))

    async def _note(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _answer_for(self, record: TwilioRequest) -> Answer:
        for script in self._scripts:
            if script.answers and script.match(record):
                return script.answers.popleft()
        return OK

    async def _messages(self, request: Request) -> Response:
        form = await request.form()
        record = TwilioRequest(
            number=len(self.requests) + 1, path=request.url.path,
            authorization=request.headers.get("authorization"),
            form={key: value for key, value in form.items() if isinstance(value, str)})
        self.requests.append(record)
        await self._note()
        answer = self._answer_for(record)
        if answer == HANG:
            await self._release.wait()
            return Response(status_code=503)  # nobody is listening by now
        if answer == OK:
            record.sid = "SM" + secrets.token_hex(16)
            status, body = 201, {"sid": record.sid, "status": "queued", "error_code": None,
                                 "to": record.form.get("To"), "from": record.form.get("From"),
                                 "body": record.form.get("Body")}
        else:
            assert isinstance(answer, tuple)
            status, body = answer
        record.status = status
        await self._note()
        return JSONResponse(body, status_code=status)


    async def _incoming_numbers(self, request: Request) -> Response:
        """Twilio's list of the account's numbers, filtered by ``PhoneNumber``."""
        number = request.query_params.get("PhoneNumber")
        held = [{"phone_number": number, "sid": "PN" + secrets.token_hex(16)}
                for number in [number] if number in self.numbers]
        return JSONResponse({"incoming_phone_numbers": held})


class _Forever(deque):
    """An answer queue that never runs out."""

    def __init__(self, answer: Answer) -> None:
        super().__init__([answer])

    def popleft(self) -> Answer:
        return self[0]


def twilio_settings(database_url: str, fake: FakeTwilio, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url, "allowed_origins": [ORIGIN],
        "password_hash_concurrency": 2, "public_url": PUBLIC_URL, "sms_provider": "twilio",
        "twilio_account_sid": ACCOUNT_SID, "twilio_auth_token": AUTH_TOKEN,
        "twilio_from": TWILIO_FROM, "twilio_api_base": fake.url}
    values.update(overrides)
    return settings_for_tests(**values)


def manual_worker(services: Services, settings: Settings, fake: FakeTwilio,
                  published: list[events.StatusEvent], timeout: float = 10.0
                  ) -> OutboxWorker:
    """A worker that runs only when the test calls ``run_once`` (no node, no loop)."""
    provider = TwilioProvider(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                              api_base=fake.url, status_callback=PUBLIC_URL + STATUS_PATH,
                              timeout=timeout)
    return OutboxWorker(db=services.db, keyring=services.keyring, clock=services.clock,
                        settings=settings, provider=provider, metrics=services.metrics,
                        publish=published.append, node_id="test")


async def drain(worker: OutboxWorker) -> None:
    """Run the worker until nothing is due (the shared database may hold other tests'
    rows, and one pass takes at most a batch)."""
    while await worker.run_once():
        pass


# --- webhooks -----------------------------------------------------------------------------

def signature(path: str, params: dict[str, str], *, token: str = AUTH_TOKEN,
              url: str | None = None) -> str:
    """What Twilio puts in ``X-Twilio-Signature`` for a POST of ``params`` to ``path``."""
    return RequestValidator(token).compute_signature(url or PUBLIC_URL + path, params)


def message_sid() -> str:
    return "SM" + secrets.token_hex(16)


def inbound_params(*, to: str, from_: str, body: str, sid: str | None = None
                   ) -> dict[str, str]:
    """An inbound SMS webhook's form, with the fields Twilio sends besides the ones we use
    (the signature covers them all)."""
    return {"ToCountry": "US", "ToState": "CA", "SmsMessageSid": sid or message_sid(),
            "NumMedia": "0", "ToCity": "SAN FRANCISCO", "FromZip": "94105",
            "SmsSid": sid or message_sid(), "FromState": "CA", "SmsStatus": "received",
            "FromCity": "SAN FRANCISCO", "Body": body, "FromCountry": "US", "To": to,
            "ToZip": "94105", "NumSegments": "1", "MessageSid": sid or message_sid(),
            "AccountSid": ACCOUNT_SID, "From": from_, "ApiVersion": "2010-04-01"}


async def post_signed(node: RunningServer, path: str, params: dict[str, str],
                      **sign: Any) -> httpx.Response:
    async with node.client() as client:
        return await client.post(path, data=params,
                                 headers={"X-Twilio-Signature": signature(path, params,
                                                                          **sign)})


async def inbound(node: RunningServer, *, to: str, from_: str, body: str,
                  sid: str | None = None) -> httpx.Response:
    sid = sid or message_sid()
    params = inbound_params(to=to, from_=from_, body=body, sid=sid)
    params["SmsMessageSid"] = params["SmsSid"] = sid
    response = await post_signed(node, INBOUND_PATH, params)
    assert response.status_code == 200, response.text
    return response


async def status_callback(node: RunningServer, sid: str, status: str,
                          error_code: str | None = None) -> httpx.Response:
    params = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status,
              "SmsStatus": status, "AccountSid": ACCOUNT_SID, "From": TWILIO_FROM,
              "ApiVersion": "2010-04-01"}
    if error_code is not None:
        params["ErrorCode"] = error_code
    response = await post_signed(node, STATUS_PATH, params)
    assert response.status_code == 204, response.text
    return response


# --- clinics with numbers of their own ----------------------------------------------------

def new_phone() -> str:
    """A valid US number no other test uses (San Francisco, random line)."""
    while True:
        raw = f"+1415{secrets.randbelow(800) + 200}{secrets.randbelow(10_000):04d}"
        with contextlib.suppress(Exception):
            return phones.to_e164(raw, "US")


@dataclass
class SmsClinic:
    clinic: Clinic
    number: str  # the account's own SMS number (inbound is routed by it; From of sends)
    phone: str  # the patient's E.164
    clinic_name: str

    def __getattr__(self, name: str) -> Any:
        return getattr(self.clinic, name)


async def sms_clinic(services: Services, *, with_number: bool = True,
                     patient_name: str = "Pat Example") -> SmsClinic:
    phone = new_phone()
    clinic = await make_clinic(services, phone=phone, patient_name=patient_name)
    number = new_phone() if with_number else ""
    if with_number:
        await services.accounts.assign_sms_number(clinic.account_id, number)
    name = (await services.accounts.settings(clinic.account_id)).clinic_name
    return SmsClinic(clinic, number, phone, name)


async def add_patient(services: Services, clinic: SmsClinic, name: str) -> tuple[str, str]:
    """Another patient in the clinic: (E.164 phone, conversation id)."""
    phone = new_phone()
    _, conversation_id = await services.patients.create(
        clinic.account_id, CreatePatientRequest(name, phone, "1975-03-02"), SYSTEM)
    return phone, conversation_id


# --- the store, read directly -------------------------------------------------------------

async def message_row(services: Services, message_id: str):
    async with services.db.read() as conn:
        return (await conn.execute(select(messages).where(messages.c.id == message_id))
                ).mappings().one()


async def count_messages(services: Services, conversation_id: str) -> int:
    async with services.db.read() as conn:
        return (await conn.execute(select(func.count()).select_from(messages).where(
            messages.c.conversation_id == conversation_id))).scalar_one()


async def opted_out(services: Services, patient_id: str) -> bool:
    async with services.db.read() as conn:
        return bool((await conn.execute(select(patients.c.opted_out)
                                        .where(patients.c.id == patient_id))).scalar_one())


async def outbox_of(services: Services, conversation_id: str):
    async with services.db.read() as conn:
        return list((await conn.execute(
            select(sms_outbox).where(sms_outbox.c.conversation_id == conversation_id)
            .order_by(sms_outbox.c.id))).mappings().all())


async def find_in_db(services: Services, *needles: str) -> list[str]:
    """``table.column`` of every stored value holding one of ``needles`` in plain text
    (text, bytes, JSON, anything): the whole database, every table the app defines."""
    from server.store.tables import metadata

    hits = []
    async with services.db.read() as conn:
        for table in metadata.sorted_tables:
            for row in (await conn.execute(select(table))).mappings():
                for column, value in row.items():
                    if value is None:
                        continue
                    if isinstance(value, bytes | bytearray | memoryview):
                        found = any(n.encode() in bytes(value) for n in needles)
                    else:
                        found = any(n in str(value) for n in needles)
                    if found:
                        hits.append(f"{table.name}.{column}")
    return hits


@contextlib.asynccontextmanager
async def staff_socket(node: RunningServer, email: str, *conversation_ids: str
                       ) -> AsyncIterator[Any]:
    """A staff WebSocket, ready and subscribed to ``conversation_ids``."""
    from tests.realtime.wsclient import connect, staff_cookie

    async with connect(node.url, await staff_cookie(node, email)) as ws:
        await ws.wait_type("ready")
        for n, conversation_id in enumerate(conversation_ids):
            await ws.send(type="subscribe", ref=f"sub{n}", conversation_id=conversation_id)
            await ws.wait_type("subscribed", ref=f"sub{n}")
        yield ws


async def send_message(client: httpx.AsyncClient, conversation_id: str, body: str,
                       client_msg_id: str, *, secure: bool = False) -> httpx.Response:
    return await client.post(f"/api/conversations/{conversation_id}/messages",
                             json={"client_msg_id": client_msg_id, "body": body,
                                   "secure": secure})


async def sent_ok(client: httpx.AsyncClient, conversation_id: str, body: str,
                  client_msg_id: str, *, secure: bool = False) -> dict:
    """Send as staff over REST; the stored message."""
    response = await send_message(client, conversation_id, body, client_msg_id,
                                  secure=secure)
    assert response.status_code == 201, response.text
    return response.json()["message"]
