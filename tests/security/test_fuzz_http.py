"""Fuzz every JSON endpoint under /api (taken from the app's route table) and the patient
POST routes, over a real socket against a ``securechat serve`` process, as a signed-in
admin with a CSRF-valid Origin so that every handler is reached.

Each input must get an answer under 500; a refusal under /api (and a JSON verification's)
must have the documented shape ``{"error": {"code", "message"}}`` with a code from the
table; afterwards the process lives, answers /healthz, and logged no error.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.security.fuzz_support import (
    ERROR_CODES,
    FUZZ,
    FuzzNode,
    Job,
    fuzz_node,
    run_fuzz,
)
from tests.security.fuzz_values import (
    EDGE_INTS,
    ids,
    json_values,
    long_text,
    random_ids,
    shaped,
    text,
)
from tests.security.routes import every_route
from tests.sms.support import new_phone


@dataclass(frozen=True)
class Call:
    """One request: path (ids filled in), query, body bytes, and a cookie that replaces
    the admin's (None: keep it)."""

    path: str
    params: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    content_type: str = "application/json"
    cookie: str | None = None


@pytest.fixture(scope="module")
def node(postgresql_url: str, redis_url: str, master_key: bytes) -> Iterator[FuzzNode]:
    with fuzz_node(postgresql_url, redis_url, master_key, "fuzz-http") as running:
        yield running


# --- what goes into a request ---------------------------------------------------------------

def _path_safe(value: str) -> bool:
    """Ids that still reach the route under test once put in its path (a ``/`` or a dot
    segment takes the request to another route, which is the router's business)."""
    return value not in ("", ".", "..") and "/" not in value


def _path(template: str, **known: tuple[str, ...]) -> st.SearchStrategy[str]:
    names = {name: ids(*values).filter(_path_safe).map(lambda v: quote(v, safe=""))
             for name, values in known.items()}
    return st.fixed_dictionaries(names).map(lambda filled: template.format(**filled))


def _bodies(fields: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[bytes]:
    """A body: mostly the struct's shape, broken; else any JSON, text, or bytes."""
    shape = shaped(fields).map(_encode)
    return st.one_of(shape, shape, json_values.map(_encode), text.map(str.encode),
                     st.binary(max_size=64))


def _encode(value: Any) -> bytes:
    return json.dumps(value).encode()


@st.composite
def _query(draw: st.DrawFn, known: dict[str, st.SearchStrategy[str]]) -> dict[str, str]:
    params = {name: draw(st.one_of(good, text)) for name, good in known.items()
              if draw(st.booleans())}
    if draw(st.integers(0, 4)) == 0:
        params[draw(text)] = draw(text)
    return params


def _call(path: st.SearchStrategy[str], *, body: st.SearchStrategy[bytes] | None = None,
          query: dict[str, st.SearchStrategy[str]] | None = None,
          cookie: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Call]:
    # A body nobody reads is fuzzed all the same: a handler must not trip over it.
    return st.builds(Call, path=path, params=_query(query or {}),
                     content=body if body is not None else st.none() | st.binary(max_size=32),
                     cookie=cookie if cookie is not None else st.none())


int_text = st.one_of(st.integers(-5, 300).map(str), st.sampled_from(EDGE_INTS).map(str),
                     st.sampled_from(["", " 7", "1_0", "0x10", "1e3", "٣", "9" * 5000]))
times = st.one_of(st.datetimes().map(lambda d: d.isoformat()),
                  st.datetimes().map(lambda d: d.isoformat() + "Z"),
                  st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                                   "2026-11-27T09:00:00.000000Z", "2026-02-30T00:00:00Z"]))
dates = st.one_of(st.dates().map(lambda d: d.isoformat()),
                  st.from_regex(r"\A\d{4}-\d{2}-\d{2}\Z"))
# sms_number: only the current value (none) is accepted, any other is 403 (the operator
# assigns it); a valid number of this run only, should that ever regress to storing it.
_mine = new_phone()
phones = st.one_of(st.sampled_from([_mine, f"({_mine[2:5]}) {_mine[5:8]}-{_mine[8:]}",
                                    "+442071838750", "+1", "911", "+999999999999999"]),
                   st.from_regex(r"\A\+?[0-9 ()-]{3,20}\Z"))
msg_ids = st.one_of(st.from_regex(r"\A[A-Za-z0-9_.:-]{1,64}\Z"),
                    st.sampled_from(["fuzz-1", "fuzz-2"]), text)
# A CSV export reads the account's whole audit log, which every request here grows:
# one audit read in ~80 exports.
formats = st.integers(0, 19).map(lambda n: "csv" if n == 0 else "json")
bodies_text = st.one_of(text, long_text)
# Few distinct emails: after five failures each is locked, so login examples cost one
# lookup instead of an argon2 hash (60 ms) each.
login_emails = st.sampled_from(["nobody@clinic.test", "x@y", "ADMIN@clinic.test"])
staff_cookies = st.one_of(st.just(""), random_ids.map(lambda t: f"sc_staff={quote(t)}"),
                          text.map(lambda t: quote(t, safe="=; ")))


def strategies(node: FuzzNode) -> dict[tuple[str, str], st.SearchStrategy[Call]]:
    """One strategy for each (path, method) under /api, and the patient POST routes."""
    c, o = node.clinic, node.other
    conversations = {"conversation_id": (c.conversation_id, o.conversation_id)}
    messages = _path("/api/conversations/{conversation_id}/messages", **conversations)
    return {
        ("/api/auth/login", "POST"): _call(st.just("/api/auth/login"), body=_bodies({
            "email": login_emails, "password": st.one_of(text, st.text(max_size=1100))})),
        # Logging out the fuzzer's own session would end the run: fuzzed cookies instead.
        ("/api/auth/logout", "POST"): _call(st.just("/api/auth/logout"),
                                            cookie=staff_cookies),
        ("/api/me", "GET"): _call(st.just("/api/me"), query={}),
        ("/api/conversations", "GET"): _call(st.just("/api/conversations"),
                                             query={"limit": int_text, "before": times}),
        ("/api/patients", "POST"): _call(st.just("/api/patients"), body=_bodies({
            "name": text, "phone": phones, "date_of_birth": dates})),
        ("/api/conversations/{conversation_id}/messages", "GET"): _call(
            messages, query={"before_seq": int_text, "limit": int_text}),
        ("/api/conversations/{conversation_id}/messages", "POST"): _call(
            messages, body=_bodies({"client_msg_id": msg_ids, "body": bodies_text,
                                    "secure": st.booleans()})),
        ("/api/sms/segments", "POST"): _call(st.just("/api/sms/segments"),
                                             body=_bodies({"body": bodies_text})),
        ("/api/conversations/{conversation_id}/links/revoke", "POST"): _call(
            _path("/api/conversations/{conversation_id}/links/revoke", **conversations)),
        ("/api/conversations/{conversation_id}/links/resend", "POST"): _call(
            _path("/api/conversations/{conversation_id}/links/resend", **conversations)),
        ("/api/account/settings", "GET"): _call(st.just("/api/account/settings")),
        ("/api/account/settings", "PUT"): _call(st.just("/api/account/settings"),
                                                body=_bodies({
            "portal_active": st.booleans(), "clinic_name": text, "sms_number": phones,
            "secure_link_ttl_hours": st.one_of(st.integers(-2, 800),
                                               st.sampled_from(EDGE_INTS)),
            "require_code": st.booleans()})),
        ("/api/staff", "GET"): _call(st.just("/api/staff")),
        ("/api/staff", "POST"): _call(st.just("/api/staff"), body=_bodies({
            "name": text, "email": st.one_of(st.emails(), text),
            "role": st.sampled_from(["admin", "staff", "owner"]),
            "password": st.one_of(text, st.text(min_size=15, max_size=40))})),
        ("/api/staff/{staff_id}/deactivate", "POST"): _call(_path(
            "/api/staff/{staff_id}/deactivate",
            staff_id=(c.staff_id, c.admin_id, o.staff_id))),
        ("/api/audit", "GET"): _call(st.just("/api/audit"), query={
            "action": st.sampled_from(["audit.read", "auth.login", "message.sent"]),
            "actor_id": st.sampled_from([c.admin_id, c.staff_id]), "since": times,
            "until": times, "before_seq": int_text, "limit": int_text,
            "format": formats}),
    }


def patient_strategies(node: FuzzNode) -> dict[str, st.SearchStrategy[Call]]:
    verify = _path("/s/{token}/verify", token=(node.link_token,))
    answer = {"date_of_birth": dates, "code": st.from_regex(r"\A\d{6}\Z")}
    return {
        "POST /s/{token}/verify (json)": _call(verify, body=_bodies(answer)),
        "POST /s/{token}/verify (form)": st.builds(
            Call, path=verify, content=_forms(answer),
            content_type=st.just("application/x-www-form-urlencoded")),
        # A real patient session would end: fuzzed cookies and bodies instead.
        "POST /s/logout": _call(st.just("/s/logout"), cookie=staff_cookies.map(
            lambda c: c.replace("sc_staff", "sc_patient"))),
    }


def _forms(fields: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[bytes]:
    pairs = st.lists(st.tuples(st.sampled_from([*fields, "resend"]) | text,
                               st.one_of(*fields.values(), text)), max_size=5)
    return st.one_of(pairs.map(lambda p: urlencode(p).encode()), st.binary(max_size=64))


# --- the checks -------------------------------------------------------------------------------

def send(client, method: str, call: Call):
    headers = {"content-type": call.content_type}
    if call.cookie is not None:
        headers["cookie"] = call.cookie
    return client.request(method, call.path, params=call.params, content=call.content,
                          headers=headers)


def check_api_answer(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/json"), response.text
        error = response.json()["error"]
        assert error["code"] in ERROR_CODES, error
        assert isinstance(error["message"], str) and error["message"], error


def job(node: FuzzNode, method: str, strategy: st.SearchStrategy[Call],
        check: Callable[[Any], None]) -> Job:
    def run() -> int:
        count = 0
        with node.client(node.admin_cookie) as client:
            @FUZZ
            @given(strategy)
            def fuzz(call: Call) -> None:
                nonlocal count
                count += 1
                check(send(client, method, call))

            fuzz()
        return count

    return run


def check_verify_form(response) -> None:
    """A form post gets a page (the form again, the code step, locked, gone) or the
    redirect to the chat: never a 5xx."""
    assert response.status_code in (200, 303, 400, 401, 404, 409, 423, 429), \
        (response.status_code, response.text[:200])
    if response.status_code != 303:
        assert response.headers["content-type"].startswith("text/html")


def check_logout(response) -> None:
    assert response.status_code == 303, (response.status_code, response.text[:200])
    assert response.headers["location"] == "/s/ended"


ROUTES = {(path, method) for method, path in every_route() if path.startswith("/api")}
API = sorted(f"{method} {path}" for path, method in ROUTES)
PATIENT = {"POST /s/{token}/verify (json)": check_api_answer,
           "POST /s/{token}/verify (form)": check_verify_form,
           "POST /s/logout": check_logout}


@pytest.fixture(scope="module")
def jobs(node: FuzzNode) -> dict[str, Job]:
    """Every entry point's fuzzing, by name."""
    jobs = {f"{method} {path}": job(node, method, strategy, check_api_answer)
            for (path, method), strategy in strategies(node).items()}
    for name, strategy in patient_strategies(node).items():
        jobs[name] = job(node, "POST", strategy, PATIENT[name])
    return jobs


def test_every_entry_point_has_a_fuzz_strategy(node: FuzzNode) -> None:
    """A new /api route or patient POST route fails here until it gets a strategy (and
    so is fuzzed)."""
    assert strategies(node).keys() == ROUTES
    patient_posts = {f"POST {path}" for method, path in every_route()
                     if path.startswith("/s/") and method == "POST"}
    assert patient_posts == {name.split(" (")[0] for name in PATIENT}


@pytest.mark.parametrize("name", [*API, *PATIENT])
def test_fuzz_entry_point(node: FuzzNode, jobs: dict[str, Job], name: str,
                          request: pytest.FixtureRequest) -> None:
    """2,000 fuzzed requests: never a 5xx, refusals in the documented shape; the node
    survives them."""
    run_fuzz(node, name, jobs[name], request)


def test_node_survived_the_fuzzing(node: FuzzNode) -> None:
    """The process lives, answers /healthz 200, and logged no error (over everything
    this test process fuzzed on it)."""
    node.assert_survived(0)
