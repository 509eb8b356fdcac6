"""Fuzz Twilio's webhooks (``/sms/twilio/inbound``, ``/sms/twilio/status``) on a
``securechat serve`` process with ``SMS_PROVIDER=twilio``: form fields signed with the
node's auth token (so the handler is reached: never a 403), and bodies with a missing,
wrong or stale signature (always a 403 that stores nothing). Never a 5xx; every refusal
in the documented error shape; the process lives and logs no error.
"""

from __future__ import annotations

import string
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import ORIGIN
from tests.realtime.cluster_nodes import free_port
from tests.security.fuzz_support import (
    ERROR_CODES,
    FUZZ,
    FuzzNode,
    Job,
    fuzz_node,
    run_fuzz,
)
from tests.security.fuzz_values import text
from tests.security.routes import every_route
from tests.sms.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    INBOUND_PATH,
    STATUS_PATH,
    TWILIO_FROM,
    inbound_params,
    message_sid,
    new_phone,
    signature,
)


@dataclass(frozen=True)
class Post:
    content: bytes
    signature: str | None
    signed: bool  # carries the right signature for exactly this content


@pytest.fixture(scope="module")
def node(postgresql_url: str, redis_url: str, master_key: bytes) -> Iterator[FuzzNode]:
    # Twilio's API is a closed port: the replies the inbound SMS cause (HELP, STOP)
    # fail to send and are retried later, as when Twilio is down; no request leaves.
    twilio = {"sms_provider": "twilio", "twilio_account_sid": ACCOUNT_SID,
              "twilio_auth_token": AUTH_TOKEN, "twilio_from": TWILIO_FROM,
              "twilio_api_base": f"http://127.0.0.1:{free_port()}"}
    with fuzz_node(postgresql_url, redis_url, master_key, "fuzz-webhooks",
                   **twilio) as running:
        yield running


@pytest.fixture(scope="module")
def sms_number(node: FuzzNode) -> str:
    """The clinic's SMS number: inbound SMS to it reach the clinic's threads."""
    number = new_phone()
    node.loop.run(node.services.accounts.assign_sms_number(node.clinic.account_id, number))
    return number


# --- what goes into a webhook ---------------------------------------------------------------

names = st.text(string.ascii_letters + string.digits, min_size=1, max_size=12)
sids = st.one_of(st.sampled_from([message_sid() for _ in range(3)]), text)
statuses = st.one_of(st.sampled_from(["queued", "sent", "delivered", "undelivered",
                                      "failed", "received", "read", "canceled"]), text)
keywords = st.sampled_from(["STOP", "start", " Help ", "UNSUBSCRIBE", "yes", "STOP ALL"])


def forms(node: FuzzNode, sms_number: str, path: str
          ) -> st.SearchStrategy[dict[str, str]]:
    """Twilio's own fields with plausible or hostile values, some dropped, some added."""
    numbers = st.one_of(st.sampled_from([sms_number, node.patient_phone, new_phone(),
                                         "+1", "abc"]), text)
    if path == INBOUND_PATH:
        base = inbound_params(to=sms_number, from_=node.patient_phone, body="Hi")
        fields = {"To": numbers, "From": numbers, "MessageSid": sids,
                  "Body": st.one_of(text, keywords, st.text(max_size=1600))}
    else:
        base = {"MessageSid": "", "MessageStatus": "sent", "AccountSid": ACCOUNT_SID}
        fields = {"MessageSid": sids, "MessageStatus": statuses,
                  "ErrorCode": st.one_of(st.sampled_from(["21610", "30003", ""]), text)}

    @st.composite
    def form(draw: st.DrawFn) -> dict[str, str]:
        params = dict(base)
        for name, values in fields.items():
            if draw(st.integers(0, 5)) == 0:
                params.pop(name, None)
            else:
                params[name] = draw(values)
        params.update(draw(st.dictionaries(names, text, max_size=3)))
        return params

    return form()


def posts(node: FuzzNode, sms_number: str, path: str) -> st.SearchStrategy[Post]:
    form = forms(node, sms_number, path)
    url = ORIGIN + path  # the node's PUBLIC_URL: what Twilio signs
    signed = form.map(lambda p: Post(urlencode(p).encode(), signature(path, p, url=url),
                                     True))

    @st.composite
    def unsigned(draw: st.DrawFn) -> Post:
        params = draw(form)
        how = draw(st.sampled_from(["none", "garbage", "other token", "other url",
                                    "other params", "raw body"]))
        content = urlencode(params).encode()
        sig = {
            "none": None,
            "garbage": draw(st.text(string.ascii_letters + string.digits + "+/=",
                                    max_size=40)),
            "other token": signature(path, params, token="0" * 32, url=url),
            "other url": signature(path, params, url="https://elsewhere.test" + path),
            "other params": signature(path, {**params, "Forged": "1"}, url=url),
            "raw body": signature(path, {"Forged": "1"}, url=url),
        }[how]
        if how == "raw body":
            content = draw(st.binary(min_size=1, max_size=64))
        return Post(content, sig, False)

    return st.one_of(signed, unsigned())


# --- the checks -------------------------------------------------------------------------------

def check(post: Post, response) -> None:
    assert response.status_code < 500, (response.status_code, response.text)
    if post.signed:
        assert response.status_code != 403, response.text
    else:
        assert response.status_code == 403, (response.status_code, response.text)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] in ERROR_CODES, error
        assert error["message"]


def job(node: FuzzNode, strategy: st.SearchStrategy[Post], path: str) -> Job:
    def run() -> int:
        count = 0
        with node.client() as client:
            @FUZZ
            @given(strategy)
            def fuzz(post: Post) -> None:
                nonlocal count
                count += 1
                headers = {"content-type": "application/x-www-form-urlencoded"}
                if post.signature is not None:
                    headers["x-twilio-signature"] = post.signature
                check(post, client.post(path, content=post.content, headers=headers))

            fuzz()
        return count

    return run


PATHS = [INBOUND_PATH, STATUS_PATH]


def test_every_webhook_is_fuzzed() -> None:
    """A new /sms/ route fails here until it is in PATHS (and so is fuzzed)."""
    assert {(m, p) for m, p in every_route() if p.startswith("/sms/")} == \
        {("POST", path) for path in PATHS}


@pytest.mark.parametrize("path", PATHS)
def test_fuzz_webhook(node: FuzzNode, sms_number: str, path: str,
                      request: pytest.FixtureRequest) -> None:
    """2,000 fuzzed posts, signed or not: never a 5xx; signed ones reach the handler,
    the others get 403; the node survives them."""
    run_fuzz(node, f"POST {path}", job(node, posts(node, sms_number, path), path), request)


def test_node_survived_the_fuzzing(node: FuzzNode) -> None:
    """The process lives, answers /healthz 200, and logged no error (over everything
    this test process fuzzed on it)."""
    node.assert_survived(0)
