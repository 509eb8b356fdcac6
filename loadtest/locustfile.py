"""Locust users for SecureChat: staff and patients chatting over the WebSocket.

    python -m loadtest.seed --out loadtest/run.json
    locust -f loadtest/locustfile.py --headless -u 200 -r 20 -t 60s \\
        --host http://127.0.0.1:8000

``StaffUser`` signs in over HTTP with the seeded password, opens ``/ws`` with the session
cookie and the allowed Origin, subscribes to its conversations, and sends with think
time, waiting for each ack. ``PatientUser`` opens ``/ws`` with a seeded patient session
(no secure link or date of birth needed), subscribes to its conversation, sends ``read``
for what it received and replies. Each side reports the delivery latency of the other's
messages as ``deliver staff->patient`` / ``deliver patient->staff``: the sender's
``time.time()`` travels in the message body, so for a distributed run the machines'
clocks must agree.

Users take seed entries in turn; set ``--worker-count`` to the number of workers in a
distributed run so each worker starts at a different entry (more users than entries
share sessions, like several tabs). With ``hosts`` in the seed file (``--hosts`` of the
seed command) users spread over the nodes, each staff user on the node after its
index's patient user, so messages cross nodes.
"""

from __future__ import annotations

import itertools
import json
import random
import time
import uuid
from pathlib import Path
from typing import Any

import gevent
from locust import between, events, task
from locust.clients import HttpSession
from locust.runners import WorkerRunner

from loadtest.ws_user import WebSocketUser

MARK = "lt"  # message bodies: "lt <send time> <text>"
_SEED: dict[str, Any] | None = None
_counters = {"staff": itertools.count(), "patient": itertools.count()}


@events.init_command_line_parser.add_listener
def _arguments(parser: Any) -> None:
    parser.add_argument("--seed-file", default="loadtest/run.json", env_var="LOADTEST_SEED",
                        help="the JSON file written by python -m loadtest.seed")
    parser.add_argument("--worker-count", type=int, default=1, env_var="LOADTEST_WORKERS",
                        help="workers in a distributed run (spreads seed entries)")


def seed_data(environment: Any) -> dict[str, Any]:
    global _SEED
    if _SEED is None:
        path = Path(getattr(environment.parsed_options, "seed_file", "loadtest/run.json"))
        _SEED = json.loads(path.read_text())
    return _SEED


def _pick(environment: Any, kind: str, entries: list[Any]) -> tuple[int, Any]:
    """The next seed entry for a user of this kind on this process."""
    runner = environment.runner
    worker = runner.worker_index if isinstance(runner, WorkerRunner) else 0
    workers = max(1, getattr(environment.parsed_options, "worker_count", 1) or 1)
    index = next(_counters[kind]) * workers + worker
    return index, entries[index % len(entries)]


def _body(text: str) -> str:
    return f"{MARK} {time.time():.6f} {text}"


def _sent_at(body: str) -> float | None:
    parts = body.split(" ", 2)
    if len(parts) >= 2 and parts[0] == MARK:
        try:
            return float(parts[1])
        except ValueError:
            return None
    return None


class _ChatUser(WebSocketUser):
    abstract = True
    wait_time = between(1, 3)

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.seed = seed_data(environment)
        self.base_url = ""
        self.cookie = ""
        self.positions: dict[str, int] = {}  # conversation id -> last seq received
        self.live: set[str] = set()  # conversations past their replay

    def _host(self, index: int) -> str:
        hosts = self.seed.get("hosts") or [self.host]
        return hosts[index % len(hosts)]

    def open(self) -> bool:
        """(Re)connect and (re)subscribe, resuming each conversation by seq."""
        self.live.clear()
        if self.ws_connect(self.base_url, self.cookie, self.seed["origin"]) is None:
            return False
        for conversation_id in list(self.positions):
            answer = self.ws.request({"type": "subscribe", "conversation_id": conversation_id,
                                      "after_seq": self.positions[conversation_id]},
                                     "subscribe")
            if answer is None:
                return False
            self.positions[conversation_id] = max(self.positions[conversation_id],
                                                  answer["last_seq"])
            self.live.add(conversation_id)
        return True

    def connected(self) -> bool:
        """True when the socket is up, reconnecting first if it dropped."""
        if self.ws is not None and self.ws.connected:
            return True
        return self.open()

    def send_message(self, conversation_id: str, text: str) -> None:
        self.ws.request({"type": "send", "conversation_id": conversation_id,
                         "client_msg_id": uuid.uuid4().hex, "body": _body(text),
                         "secure": True}, "send")

    def on_push(self, frame: dict[str, Any]) -> None:
        if frame.get("type") != "message":
            return
        conversation_id = frame["conversation_id"]
        if conversation_id in self.positions:
            self.positions[conversation_id] = max(self.positions[conversation_id],
                                                  frame["seq"])
        if conversation_id in self.live:  # a live message, not a replayed one
            self.received(frame)

    def received(self, frame: dict[str, Any]) -> None:
        """A live message of a followed conversation."""


class StaffUser(_ChatUser):
    """A nurse at the console: signs in, follows their conversations, writes."""

    def on_start(self) -> None:
        index, member = _pick(self.environment, "staff", self.seed["staff"])
        self.base_url = self._host(index + 1)
        http = HttpSession(self.base_url, self.environment.events.request, self)
        for _ in range(5):
            with http.post("/api/auth/login", name="POST /api/auth/login",
                           json={"email": member["email"], "password": self.seed["password"]},
                           headers={"Origin": self.seed["origin"]},
                           catch_response=True) as response:
                if response.status_code == 429:  # the argon2 queue is full: come back
                    response.failure("429: sign-ins queued beyond the server's bound")
                    wait_ms = (response.json().get("error") or {}).get("retry_after_ms")
                    gevent.sleep((wait_ms or 1000) / 1000)
                    continue
                if response.status_code != 200:
                    response.failure(f"HTTP {response.status_code}")
                    return
            break
        name = self.seed["cookies"]["staff"]
        token = http.cookies.get(name)
        if not token:
            return
        self.cookie = f"{name}={token}"
        self.positions = dict.fromkeys(member["conversations"], 0)
        self.open()

    @task
    def write(self) -> None:
        if not self.cookie or not self.positions or not self.connected():
            return
        conversation_id = random.choice(list(self.positions))  # noqa: S311
        self.send_message(conversation_id, "How are you feeling today?")

    def received(self, frame: dict[str, Any]) -> None:
        sent_at = _sent_at(frame.get("body", ""))
        if frame.get("direction") == "inbound" and sent_at is not None:
            self.report_delivery("deliver patient->staff", sent_at, len(frame["body"]))


class PatientUser(_ChatUser):
    """A patient on the secure page: reads what arrives, marks it read, replies."""

    def on_start(self) -> None:
        index, patient = _pick(self.environment, "patient", self.seed["patients"])
        self.base_url = self._host(index)
        self.cookie = f"{self.seed['cookies']['patient']}={patient['session']}"
        self.positions = {patient["conversation_id"]: 0}
        self.unread = False
        self.open()

    @task
    def reply(self) -> None:
        if not self.connected():
            return
        (conversation_id, seq), = self.positions.items()
        if self.unread and seq:
            self.unread = False
            self.ws.send({"type": "read", "conversation_id": conversation_id, "seq": seq})
        self.send_message(conversation_id, "Better, thank you.")

    def received(self, frame: dict[str, Any]) -> None:
        sent_at = _sent_at(frame.get("body", ""))
        if frame.get("direction") == "outbound":
            self.unread = True
            if sent_at is not None:
                self.report_delivery("deliver staff->patient", sent_at, len(frame["body"]))
