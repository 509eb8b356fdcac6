"""Fuzz every client WebSocket frame type, and arbitrary JSON, text and binary frames, on
a staff and on a patient socket of a ``securechat serve`` process.

After each fuzzed frame the fuzzer sends a ``ping`` with a fresh ``ref``: frames are
handled in order, so everything the node answers to the fuzzed frame arrives before that
``pong``, and a node that went silent fails the example (the read times out) instead of
passing it. Every answer must be documented: an ``error`` with a code from the table
(never ``internal`` or ``unavailable``), or a close with 1003 (binary) or 1009 (too
large), after which a new socket is opened. A frame the contract says is refused (not a
JSON object, unknown ``type``, unknown or missing field) must get ``invalid_frame``.
At the end the same socket (or its replacement) still stores a real message (``ack``).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import websocket
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import ORIGIN
from tests.security.fuzz_support import (
    ERROR_CODES,
    FUZZ,
    FuzzNode,
    Job,
    fuzz_node,
    run_fuzz,
)
from tests.security.fuzz_values import ids, ints, json_values, long_text, shaped, text

# The documented fields of each client frame (docs/protocol.md), required ones first.
FIELDS = {
    "subscribe": (("conversation_id",), ("after_seq",)),
    "unsubscribe": (("conversation_id",), ()),
    "send": (("conversation_id", "client_msg_id", "body"), ("secure",)),
    "typing": (("conversation_id",), ()),
    "read": (("conversation_id", "seq"), ()),
    "ping": ((), ()),
}
# Closes the protocol documents for a frame the node will not read.
CLOSE_CODES = {1003, 1009}
MAX_FRAME = 64 * 1024
ANSWERS = ("ack", "subscribed", "pong", "error")


@dataclass
class Exchange:
    """What the node did with one fuzzed frame: its direct answers, or how it closed."""

    answers: list[dict[str, Any]] = field(default_factory=list)
    close_code: int | None = None
    closed: bool = False


class Probe:
    """One socket of one session, reopened when the node closes it with a documented
    code; each frame is followed by a ``ping`` whose ``pong`` ends the exchange."""

    def __init__(self, node: FuzzNode, cookie: str, role: str) -> None:
        self._url = node.ws_url
        self._cookie = cookie
        self.role = role
        self._pings = 0
        self.ws = self._open()

    def _open(self) -> websocket.WebSocket:
        ws = websocket.create_connection(self._url, timeout=30, origin=ORIGIN,
                                         cookie=self._cookie, enable_multithread=False)
        ready = json.loads(ws.recv())
        assert ready["type"] == "ready" and ready["role"] == self.role, ready
        return ws

    def exchange(self, payload: str | bytes) -> Exchange:
        self._pings += 1
        ref = f"probe-{self._pings}"
        result = Exchange()
        try:
            if isinstance(payload, bytes):
                self.ws.send_binary(payload)
            else:
                self.ws.send(payload)
            self.ws.send(json.dumps({"type": "ping", "ref": ref}))
        except (websocket.WebSocketConnectionClosedException, OSError):
            pass  # the node closed first: its close frame is still there to read
        while True:
            # Frame by frame: websocket-client's recv() answers a close itself and then
            # fails on the closed socket, losing the code.
            frame = self.ws.recv_frame()
            if frame.opcode == websocket.ABNF.OPCODE_CLOSE:
                result.closed = True
                if len(frame.data) >= 2:
                    result.close_code = struct.unpack("!H", frame.data[:2])[0]
                self.reconnect()
                return result
            if frame.opcode == websocket.ABNF.OPCODE_PING:
                self.ws.pong(frame.data)
                continue
            assert frame.opcode == websocket.ABNF.OPCODE_TEXT and frame.fin, frame
            answer = json.loads(frame.data)
            if answer["type"] == "pong" and answer.get("ref") == ref:
                return result
            if answer["type"] in ANSWERS:
                result.answers.append(answer)

    def reconnect(self) -> None:
        self.close()
        self.ws = self._open()

    def close(self) -> None:
        try:
            self.ws.close(timeout=5)
        except (websocket.WebSocketException, OSError):
            self.ws.shutdown()


@pytest.fixture(scope="module")
def node(postgresql_url: str, redis_url: str, master_key: bytes) -> Iterator[FuzzNode]:
    with fuzz_node(postgresql_url, redis_url, master_key, "fuzz-frames") as running:
        yield running


# --- what goes into a frame -----------------------------------------------------------------

def frames(kind: str, node: FuzzNode) -> st.SearchStrategy[str]:
    """Frames of ``kind``: each documented field plausible, wrong, null or missing; an
    unknown field now and then; ids of our conversation, another account's, or none."""
    conversations = ids(node.clinic.conversation_id, node.other.conversation_id)
    good = {
        "conversation_id": conversations,
        "after_seq": st.one_of(st.integers(0, 50), ints),
        "client_msg_id": st.one_of(st.from_regex(r"\A[A-Za-z0-9_.:-]{1,64}\Z"), text),
        "body": st.one_of(text, long_text),
        "secure": st.booleans(),
        "seq": st.one_of(st.integers(0, 50), ints),
        "ref": st.one_of(text, st.text(min_size=60, max_size=70)),
    }
    required, optional = FIELDS[kind]
    fields = {name: good[name] for name in (*required, *optional, "ref")}
    return shaped(fields, fixed={"type": kind}).map(json.dumps)


raw_frames = st.one_of(
    json_values.map(json.dumps),
    text,
    shaped({"type": st.one_of(st.sampled_from([*FIELDS, "message", "ack", "Ping"]), text),
            "ref": text, "conversation_id": text}).map(json.dumps),
    st.integers(1, 3000).map(lambda depth: "[" * depth + "]" * depth),
    st.sampled_from(["", "null", "{}", '{"type":"ping",}', '{"type":"ping"', "NaN",
                     '{"type":"ping","ref":"a","ref":"b"}', "\ufeff{}"]),
    st.binary(max_size=64),
    st.integers(MAX_FRAME - 16, MAX_FRAME + 64).map(
        lambda n: json.dumps({"type": "ping", "ref": "x" * n})),
)


def refused_by_contract(payload: str | bytes) -> bool:
    """True when the contract says the node must answer ``invalid_frame``: not a JSON
    object, an unknown ``type``, an unknown or missing field. (Wrong types and bad
    values are left to the answer check: the contract allows several answers there.)"""
    if isinstance(payload, bytes) or len(payload.encode()) > MAX_FRAME:
        return False
    try:
        frame = json.loads(payload)
    except (ValueError, RecursionError):  # not JSON, or nested past any decoder's depth
        return True
    if not isinstance(frame, dict) or not isinstance(frame.get("type"), str) \
            or frame["type"] not in FIELDS:
        return True
    required, optional = FIELDS[frame["type"]]
    known = {"type", "ref", *required, *optional}
    return bool(frame.keys() - known) or any(name not in frame for name in required)


# --- the checks -------------------------------------------------------------------------------

def check(payload: str | bytes, result: Exchange) -> None:
    if result.closed:
        too_large = not isinstance(payload, bytes) and len(payload.encode()) > MAX_FRAME
        expected = 1003 if isinstance(payload, bytes) else 1009 if too_large else None
        assert result.close_code == expected, (result.close_code, payload[:200])
        return
    assert not isinstance(payload, bytes), "a binary frame was not refused"
    for answer in result.answers:
        if answer["type"] == "error":
            assert answer["code"] in ERROR_CODES, (answer, payload[:300])
            assert isinstance(answer["message"], str) and answer["message"]
    if refused_by_contract(payload):
        codes = [a.get("code") for a in result.answers if a["type"] == "error"]
        assert codes == ["invalid_frame"], (codes, payload[:300])


def still_works(node: FuzzNode, probe: Probe, n: int) -> None:
    """A real ``send`` on the socket the fuzzing ended with is stored and acked."""
    frame = {"type": "send", "conversation_id": node.clinic.conversation_id,
             "client_msg_id": f"after-fuzz-{probe.role}-{n}", "body": "Still there?",
             "secure": True, "ref": "after-fuzz"}
    result = probe.exchange(json.dumps(frame))
    assert not result.closed
    acks = [a for a in result.answers if a["type"] == "ack"]
    assert len(acks) == 1 and acks[0]["ref"] == "after-fuzz", result.answers


def job(node: FuzzNode, strategy: st.SearchStrategy[str | bytes], n: int) -> Job:
    """Each example goes to the staff or the patient socket (drawn): one handler, two
    roles, 2,000 frames between them; then both sockets still store a message."""
    def run() -> int:
        count = 0
        probes = {"staff": Probe(node, node.admin_cookie, "staff"),
                  "patient": Probe(node, node.patient_cookie, "patient")}
        try:
            @FUZZ
            @given(st.sampled_from(sorted(probes)), strategy)
            def fuzz(role: str, payload: str | bytes) -> None:
                nonlocal count
                count += 1
                check(payload, probes[role].exchange(payload))

            fuzz()
            for probe in probes.values():
                still_works(node, probe, n)
        finally:
            for probe in probes.values():
                probe.close()
        return count

    return run


# In this order (a test process runs its share in collection order): subscribing replays
# the thread, which the ``send`` fuzzing grows, so subscribe comes before send.
KINDS = ["ping", "subscribe", "unsubscribe", "typing", "send", "read", "raw"]


@pytest.mark.parametrize("kind", KINDS)
def test_fuzz_frame_type(node: FuzzNode, kind: str, request: pytest.FixtureRequest) -> None:
    """2,000 fuzzed frames: documented answers only, ``invalid_frame`` where the
    contract says so, and the sockets still work; the node survives them."""
    strategy = raw_frames if kind == "raw" else frames(kind, node)
    run_fuzz(node, f"ws {kind}", job(node, strategy, KINDS.index(kind)), request)


def test_node_survived_the_fuzzing(node: FuzzNode) -> None:
    """The process lives, answers /healthz 200, and logged no error (over everything
    this test process fuzzed on it)."""
    node.assert_survived(0)


def test_every_client_frame_type_is_fuzzed() -> None:
    """A new client frame type fails here until it gets fields above (and is fuzzed)."""
    from server.protocol import AnyClientFrame

    tags = {member.__struct_config__.tag for member in AnyClientFrame.__args__}
    assert tags == FIELDS.keys() == set(KINDS) - {"raw"}
