"""Client frames (issue 3, acceptance 4): malformed input is refused frame by frame on a
live socket, the wire limits close with the documented codes, and `ref`, `client_msg_id`
resends, the rate limit and the channel rules behave as docs/protocol.md says."""

from __future__ import annotations

import asyncio
import contextlib
import json
import string
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st

from server.clock import FakeClock
from server.settings import Settings
from tests.conftest import ORIGIN, Clinic, RunningServer, make_clinic, settings_for_tests
from tests.realtime.wsclient import WSClient, connect, patient_cookie, serve, staff_cookie

MAX_FRAME = 64 * 1024
T = TypeVar("T")


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Settings for this module's tests; the rate limit is high unless a test says."""
    return {"ws_rate_per_second": 100_000, "ws_rate_burst": 100_000}


@pytest.fixture
def settings(database_url: str, overrides: dict[str, Any]) -> Settings:
    return settings_for_tests(database_url=database_url, allowed_origins=[ORIGIN],
                              password_hash_concurrency=2, **overrides)


# --- strategies: frames that are wrong by construction -----------------------------------

UTF8 = st.characters(codec="utf-8")
KNOWN = ("subscribe", "unsubscribe", "send", "typing", "read", "ping")
CONVERSATION = "<the socket's own conversation>"
# Every valid frame's fields: name -> (required, a valid value). The conversation is the
# socket's own, so a frame let through by mistake would act (and be noticed).
FIELDS: dict[str, dict[str, tuple[bool, Any]]] = {
    "subscribe": {"conversation_id": (True, CONVERSATION), "after_seq": (False, 0)},
    "unsubscribe": {"conversation_id": (True, CONVERSATION)},
    "send": {"conversation_id": (True, CONVERSATION), "client_msg_id": (True, "m-1"),
             "body": (True, "hello"), "secure": (False, True)},
    "typing": {"conversation_id": (True, CONVERSATION)},
    "read": {"conversation_id": (True, CONVERSATION), "seq": (True, 1)},
    "ping": {},
}
huge_ints = st.one_of(st.integers(min_value=2**63, max_value=2**64 + 5),
                      st.integers(min_value=2**64, max_value=10**40),
                      st.sampled_from([10**400, -(10**400)]))
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), huge_ints,
                         st.floats(allow_nan=False, allow_infinity=False),
                         st.text(UTF8, max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(UTF8, max_size=8), inner, max_size=4)),
    max_leaves=12)
not_str = json_values.filter(lambda v: not isinstance(v, str))
not_int = json_values.filter(lambda v: type(v) is not int)
not_bool = json_values.filter(lambda v: not isinstance(v, bool))
long_text = st.integers(65, 300).map(lambda n: "a" * n)
# Wrong values for each field (a value of the wrong type, or out of its bounds).
WRONG: dict[str, st.SearchStrategy[Any]] = {
    "conversation_id": st.one_of(not_str, st.just(""), long_text),
    "client_msg_id": st.one_of(
        not_str, st.just(""), long_text,
        st.text(UTF8, min_size=1, max_size=10).filter(
            lambda s: any(c not in string.ascii_letters + string.digits + "_.:-" for c in s))),
    "body": st.one_of(not_str, st.just(""), st.integers(10_001, 12_000).map(lambda n: "b" * n),
                      st.text(" \t\n", min_size=1, max_size=5)),  # blank
    "secure": not_bool,
    "after_seq": st.one_of(not_int, st.integers(max_value=-1), huge_ints.filter(lambda n: n > 0)),
    "seq": st.one_of(not_int, st.integers(max_value=0), huge_ints.filter(lambda n: n > 0)),
    "ref": st.one_of(not_str.filter(lambda v: v is not None), long_text),
    "type": st.one_of(not_str, st.text(UTF8, max_size=12).filter(lambda t: t not in KNOWN)),
}


@st.composite
def broken_known_frame(draw: st.DrawFn, conversation_id: str) -> str:
    """A frame of a known type with exactly one thing wrong: a required field missing,
    an unknown field added, or one field holding a wrong value."""
    kind = draw(st.sampled_from(KNOWN))
    fields = FIELDS[kind]
    frame: dict[str, Any] = {"type": kind}
    for name, (required, value) in fields.items():
        if required or draw(st.booleans()):
            frame[name] = conversation_id if value == CONVERSATION else value
    if draw(st.booleans()):
        frame["ref"] = draw(st.text(UTF8, max_size=64))
    required = [name for name, (req, _) in fields.items() if req]
    fault = draw(st.sampled_from(["extra", "wrong"] + (["missing"] if required else [])))
    if fault == "missing":
        del frame[draw(st.sampled_from(required))]
    elif fault == "extra":
        name = draw(st.text(UTF8, max_size=12).filter(
            lambda n: n not in fields and n not in ("type", "ref")))
        frame[name] = draw(json_values)
    else:
        name = draw(st.sampled_from([*fields, "ref", "type"]))
        frame[name] = draw(WRONG[name])
    items = list(frame.items())
    if draw(st.booleans()):  # the tag need not come first
        items.reverse()
    return json.dumps(dict(items))


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


@st.composite
def deep_nesting(draw: st.DrawFn) -> str:
    """Arrays or objects nested thousands deep, within the 64 KiB frame limit."""
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
    depth = draw(st.integers(100, (MAX_FRAME - 64) // (len(opener) + len(closer))))
    nest = opener * depth + "1" + closer * depth
    where = draw(st.sampled_from(["top", "ref", "unknown_first", "conversation_id"]))
    if where == "top":
        return nest
    if where == "ref":
        return '{"type":"ping","ref":' + nest + "}"
    if where == "unknown_first":
        return '{"x":' + nest + ',"type":"ping"}'
    return '{"type":"typing","conversation_id":' + nest + "}"


def malformed_frames(conversation_id: str) -> st.SearchStrategy[str]:
    broken = broken_known_frame(conversation_id)
    return st.one_of(
        st.text(UTF8, max_size=200).filter(lambda t: not _is_json(t)),  # not JSON
        st.sampled_from(['{"type":"ping"', '{"type":"ping"}}', '{"type":"ping"} x',
                         "{'type':1}", '{"type":"ping","ref":"a\\ud800"}', "NaN",
                         '{"type":"ping",}', ""]),
        json_values.filter(lambda v: not isinstance(v, dict)).map(json.dumps),  # not an object
        st.dictionaries(st.text(UTF8, max_size=8).filter(lambda k: k != "type"), json_values,
                        max_size=4).map(json.dumps),  # no type
        broken, broken, broken,  # weighted: the subtle cases are here
        deep_nesting(),
    )


# --- the fuzz test -----------------------------------------------------------------------

def test_malformed_frames_refused_socket_survives(settings: Settings, master_key: bytes,
                                                  clock: FakeClock) -> None:
    """Every malformed frame gets one `invalid_frame`; the socket and node live on."""
    # The node and the client run on an event loop of their own in a second thread;
    # Hypothesis drives them from this one, as it expects.
    with BackgroundLoop() as background:
        call = background.call
        server, clinic, ws = call(_fuzz_setup(background.stack, settings, master_key, clock))

        async def check(text: str) -> None:
            before = len(ws.of_type("error"))
            await ws.ws.send(text)
            await ws.wait_for(lambda _: len(ws.of_type("error")) > before, timeout=5)
            error = ws.of_type("error")[before]
            assert error["code"] == "invalid_frame", (text[:200], error)
            assert error["message"]
            assert error.get("ref") == _ref_of(text), (text[:200], error)
            assert len(ws.frames) == 1 + len(ws.of_type("error")), ws.frames[-3:]
            assert not ws.closed.done()

        @hyp_settings(max_examples=200, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow,
                                             HealthCheck.filter_too_much])
        @given(malformed_frames(clinic.conversation_id))
        def run(text: str) -> None:
            assert len(text.encode()) <= MAX_FRAME
            call(check(text), timeout=10)

        run()
        call(_fuzz_after(server, clinic, ws))


class BackgroundLoop:
    """An event loop in a daemon thread; ``call(coro)`` runs a coroutine there and waits.
    On exit, everything entered through ``self.stack`` is closed on that loop."""

    def __enter__(self) -> BackgroundLoop:
        self.loop = asyncio.new_event_loop()
        self.stack = contextlib.AsyncExitStack()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __exit__(self, *exc_info) -> None:
        try:
            self.call(self.stack.aclose())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


async def _fuzz_setup(stack: contextlib.AsyncExitStack, settings: Settings,
                      master_key: bytes, clock: FakeClock
                      ) -> tuple[RunningServer, Clinic, WSClient]:
    server, _ = await stack.enter_async_context(serve(settings, master_key, clock))
    clinic = await make_clinic(server.services)
    ws = await stack.enter_async_context(
        connect(server.url, await staff_cookie(server, clinic.staff_email)))
    await ws.wait_type("ready")
    return server, clinic, ws


async def _fuzz_after(server: RunningServer, clinic: Clinic, ws: WSClient) -> None:
    await ws.send(type="ping", ref="still-there")
    assert (await ws.wait_type("pong", ref="still-there"))["ref"] == "still-there"
    assert not ws.closed.done()
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/healthz")).status_code == 200
    async with connect(server.url, await patient_cookie(server.services, clinic)) as fresh:
        await fresh.wait_type("ready")
    assert await server.services.streams.positions([clinic.conversation_id]) == {
        clinic.conversation_id: 0}


def _ref_of(text: str) -> str | None:
    """The `ref` a refused frame should echo: a string of at most 64 characters in a JSON
    object (read by the standard library, independently of the server)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    ref = value.get("ref") if isinstance(value, dict) else None
    if isinstance(ref, str) and len(ref) <= 64 and not any(
            "\ud800" <= c <= "\udfff" for c in ref):  # a lone surrogate is not UTF-8
        return ref
    return None


@pytest.mark.parametrize("number", [2**63, 2**64, 10**30, -1])
async def test_out_of_range_positions_are_invalid_frames(server: RunningServer,
                                                         clinic: Clinic,
                                                         number: int) -> None:
    """after_seq/seq beyond int64 or negative are `invalid_frame`."""
    conversation = clinic.conversation_id
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as ws:
        await ws.send(type="subscribe", conversation_id=conversation, after_seq=number,
                      ref="sub")
        await ws.send(type="read", conversation_id=conversation, seq=number, ref="read")
        for ref in ("sub", "read"):
            assert (await ws.wait_type("error", ref=ref))["code"] == "invalid_frame"
        await ws.send(type="subscribe", conversation_id=conversation,
                      after_seq=2**63 - 1, ref="max")  # the largest is fine
        assert (await ws.wait_type("subscribed", ref="max"))["last_seq"] == 0


# --- wire limits -------------------------------------------------------------------------

async def test_binary_frame_closes_1003(server: RunningServer, clinic: Clinic) -> None:
    """A binary frame closes the socket with 1003."""
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as ws:
        await ws.wait_type("ready")
        await ws.ws.send(b'{"type":"ping"}')
        assert (await ws.close_code(timeout=5))[0] == 1003


async def test_frame_over_64_kib_closes_1009(server: RunningServer, clinic: Clinic) -> None:
    """64 KiB is answered; 65 KiB + 1 closes with 1009."""
    async with connect(server.url, await staff_cookie(server, clinic.staff_email),
                       max_size=None) as ws:
        await ws.wait_type("ready")
        at_limit = '{"type":"ping","x":"' + "a" * (MAX_FRAME - 22) + '"}'
        assert len(at_limit.encode()) == MAX_FRAME
        await ws.ws.send(at_limit)
        assert (await ws.wait_type("error"))["code"] == "invalid_frame"
        await ws.ws.send("a" * (65 * 1024 + 1))
        assert (await ws.close_code(timeout=5))[0] == 1009


@pytest.mark.parametrize("overrides", [{"ws_rate_per_second": 5, "ws_rate_burst": 5}])
async def test_rate_limit_refuses_but_keeps_the_socket(server: RunningServer,
                                                       clinic: Clinic) -> None:
    """Over the bucket: `rate_limited` with retry_after_ms and ref; socket stays."""
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as ws:
        await ws.wait_type("ready")
        await asyncio.gather(*(ws.send(type="ping", ref=f"p{i}") for i in range(20)))
        await ws.wait_for(lambda _: len(ws.of_type("pong")) + len(ws.of_type("error")) == 20)
        limited = ws.of_type("error")
        assert 5 <= len(ws.of_type("pong")) < 20
        assert limited and all(e["code"] == "rate_limited" for e in limited)
        assert all(e["retry_after_ms"] > 0 for e in limited)
        answered = sorted(f["ref"] for f in ws.of_type("pong") + limited)
        assert answered == sorted(f"p{i}" for i in range(20))
        # Still open: the next frame gets an answer (pong or rate_limited) with its ref.
        await ws.send(type="ping", ref="after")
        await ws.wait_for(lambda f: f.get("ref") == "after")
        assert not ws.closed.done()


# --- answers -----------------------------------------------------------------------------

async def test_ref_echoed_on_every_direct_answer(server: RunningServer,
                                                 clinic: Clinic) -> None:
    """ack, subscribed, pong and error echo `ref`; pushes carry none."""
    conversation = clinic.conversation_id
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as ws:
        await ws.send(type="ping", ref="r-ping")
        await ws.send(type="subscribe", conversation_id=conversation, ref="r-sub")
        await ws.send(type="send", conversation_id=conversation, client_msg_id="c1",
                      body="hi", secure=True, ref="r-send")
        await ws.send(type="subscribe", conversation_id="nope", ref="r-err")
        await ws.send(type="read", conversation_id=conversation, ref="r-bad")  # no seq
        assert (await ws.wait_type("pong"))["ref"] == "r-ping"
        assert (await ws.wait_type("subscribed"))["ref"] == "r-sub"
        assert (await ws.wait_type("ack"))["ref"] == "r-send"
        assert (await ws.wait_type("error", code="not_found"))["ref"] == "r-err"
        assert (await ws.wait_type("error", code="invalid_frame"))["ref"] == "r-bad"
        pushed = await ws.wait_type("message", seq=1)
        await ws.wait_type("conversation")
        assert "ref" not in pushed
        assert all("ref" not in f for f in ws.frames
                   if f["type"] in ("message", "conversation", "presence", "ready"))


async def test_resent_client_msg_id_acks_again_and_fans_out_nothing(
        server: RunningServer, clinic: Clinic) -> None:
    """A resent client_msg_id gets the same ack and fans out nothing."""
    conversation = clinic.conversation_id
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as staff, \
            connect(server.url, await patient_cookie(server.services, clinic)) as patient:
        await patient.send(type="subscribe", conversation_id=conversation, ref="s")
        await patient.wait_type("subscribed", ref="s")
        for ref in ("first", "again", "third"):
            await staff.send(type="send", conversation_id=conversation, client_msg_id="dup-1",
                             body="take your medicine", secure=True, ref=ref)
        acks = [await staff.wait_type("ack", ref=ref) for ref in ("first", "again", "third")]
        assert len({(a["message_id"], a["seq"], a["client_msg_id"]) for a in acks}) == 1
        assert acks[0]["seq"] == 1
        await staff.send(type="send", conversation_id=conversation, client_msg_id="next",
                         body="and water", secure=True, ref="next")
        assert (await staff.wait_type("ack", ref="next"))["seq"] == 2
        await patient.wait_type("message", seq=2)
        assert [f["seq"] for f in patient.of_type("message")] == [1, 2]
    assert await server.services.streams.positions([conversation]) == {conversation: 2}


async def test_secure_send_with_portal_off_is_refused(server: RunningServer) -> None:
    """Secure send with the portal off is `portal_inactive`, nothing stored."""
    clinic = await make_clinic(server.services, portal_active=False)
    conversation = clinic.conversation_id
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as ws:
        await ws.send(type="send", conversation_id=conversation, client_msg_id="sec",
                      body="secure hello", secure=True, ref="s")
        error = await ws.wait_type("error", ref="s")
        assert error["code"] == "portal_inactive" and error["client_msg_id"] == "sec"
        assert await server.services.streams.positions([conversation]) == {conversation: 0}
        await ws.send(type="send", conversation_id=conversation, client_msg_id="sms",
                      body="sms hello", secure=False, ref="t")
        assert (await ws.wait_type("ack", ref="t"))["seq"] == 1


async def test_staff_sms_never_reaches_the_secure_page(server: RunningServer,
                                                       clinic: Clinic) -> None:
    """Staff SMS is stored `sms`/`queued` and never reaches the patient socket."""
    conversation = clinic.conversation_id
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as staff, \
            connect(server.url, await patient_cookie(server.services, clinic)) as patient:
        for ws in (staff, patient):
            await ws.send(type="subscribe", conversation_id=conversation, ref="s")
            await ws.wait_type("subscribed", ref="s")
        await staff.send(type="send", conversation_id=conversation, client_msg_id="sms-1",
                         body="by text", secure=False)
        sms = await staff.wait_type("message", seq=1)
        assert (sms["channel"], sms["status"], sms["direction"]) == ("sms", "queued",
                                                                      "outbound")
        await staff.send(type="send", conversation_id=conversation, client_msg_id="sec-1",
                         body="by portal", secure=True)
        secure = await patient.wait_type("message", seq=2)
        assert secure["channel"] == "secure"
        assert [f["seq"] for f in patient.of_type("message")] == [2]
        assert all(f.get("message_id") != sms["id"] for f in patient.frames)
    async with connect(server.url, await patient_cookie(server.services, clinic)) as again:
        await again.send(type="subscribe", conversation_id=conversation, after_seq=0, ref="r")
        assert (await again.wait_type("subscribed", ref="r"))["last_seq"] == 2
        assert [f["seq"] for f in again.of_type("message")] == [2]


async def test_blank_or_oversized_body_is_invalid_frame(server: RunningServer,
                                                        clinic: Clinic) -> None:
    """A blank or over-long body is `invalid_frame`; nothing stored."""
    conversation = clinic.conversation_id
    async with connect(server.url, await staff_cookie(server, clinic.staff_email)) as ws:
        for ref, body in (("blank", " \n\t "), ("long", "x" * 10_001)):
            await ws.send(type="send", conversation_id=conversation, client_msg_id=ref,
                          body=body, secure=True, ref=ref)
            error = await ws.wait_type("error", ref=ref)
            assert error["code"] == "invalid_frame" and error["client_msg_id"] == ref
    assert await server.services.streams.positions([conversation]) == {conversation: 0}

