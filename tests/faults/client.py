"""A chat client for the fault runs that behaves as the protocol tells a real one to:
it reconnects (to the next node when one is gone), resubscribes with ``after_seq`` = the
last ``seq`` it applied, applies messages by ``seq`` (dropping ``seq <= last``), and
resends every unacknowledged send with the same ``client_msg_id`` after reconnecting, on
``unavailable``/``rate_limited``, and when no ack came in time. It records what the
checker needs: its timelines, acks, raw duplicate frames, close codes. (A jump in seq is
not judged here: a patient is never sent SMS-channel messages, so its seqs jump by
design; the checker compares whole timelines with the store instead.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from tests.realtime.wsclient import ws_url

# A send with no ack after this long is resent on the same socket (the protocol's
# contract for a lost frame). 20 s: on this shared 2-core machine acks took over 10 s
# in the backlog after a fault, and 10 s doubled the load with needless resends
# (4,500 in one run); the faults that really lose a frame also close the socket, which
# resends at once on reconnect.
ACK_TIMEOUT_SECONDS = 20.0
# Between two connection attempts while no node answers (a real client backs off too).
RECONNECT_PAUSE_SECONDS = 0.2
HANDSHAKE_TIMEOUT_SECONDS = 15.0
RESENT_CODES = frozenset({"unavailable", "rate_limited"})


@dataclass(frozen=True, slots=True)
class Send:
    client_msg_id: str
    conversation_id: str
    body: str
    secure: bool

    def frame(self) -> str:
        return json.dumps({"type": "send", "conversation_id": self.conversation_id,
                           "client_msg_id": self.client_msg_id, "body": self.body,
                           "secure": self.secure})


@dataclass(frozen=True, slots=True)
class Applied:
    seq: int
    client_msg_id: str
    body: str


class FaultClient:
    """One socket (replaced when lost) following ``conversations``; ``urls`` are the
    nodes, tried from ``first`` on."""

    def __init__(self, name: str, cookie: str, origin: str, conversations: list[str],
                 urls: list[str], first: int, changed: asyncio.Condition, *,
                 sees_sms: bool) -> None:
        self.name = name
        self.sees_sms = sees_sms  # staff see the SMS channel; patients get those by text
        self.cookie = cookie
        self.origin = origin
        self.urls = urls
        self.timelines: dict[str, list[Applied]] = {c: [] for c in conversations}
        self.acks: dict[str, int] = {}  # client_msg_id -> acked seq
        self.ack_conflicts: list[tuple[str, int, int]] = []  # same id acked with two seqs
        self.pending: dict[str, Send] = {}  # started, not yet acked
        self.raw_duplicates = 0  # message frames with seq <= the last applied (dropped)
        self.refusals: Counter[str] = Counter()  # error codes other than the resent ones
        self.resent: Counter[str] = Counter()  # why a send went out again
        self.closes: list[int | None] = []
        self.sockets = 0
        self._changed = changed
        self._next = first
        self._ws: ClientConnection | None = None
        self._sent_at: dict[str, float] = {}
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._watchdog: asyncio.Task | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"client-{self.name}")
        self._watchdog = asyncio.create_task(self._resend_late(), name=f"late-{self.name}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 5)
        for task in (self._task, self._watchdog):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    @property
    def live(self) -> bool:
        return self._ws is not None

    @property
    def url(self) -> str:
        """The node this client uses (or will try next)."""
        return self.urls[self._next % len(self.urls)]

    def last_seq(self, conversation_id: str) -> int:
        timeline = self.timelines[conversation_id]
        return timeline[-1].seq if timeline else 0

    def drop(self) -> bool:
        """Lose the socket abruptly: no close frame, the TCP connection just ends."""
        if self._ws is None or self._ws.transport is None:
            return False
        self._ws.transport.abort()
        return True

    async def _run(self) -> None:
        while not self._stopping.is_set():
            url = self.urls[self._next % len(self.urls)]
            try:
                async with asyncio.timeout(HANDSHAKE_TIMEOUT_SECONDS):
                    ws = await websockets.connect(ws_url(url), origin=self.origin,
                                                  additional_headers={"cookie": self.cookie},
                                                  max_queue=None, open_timeout=None)
            except (OSError, TimeoutError, websockets.InvalidHandshake,
                    websockets.ConnectionClosed):
                self._next += 1  # that node is gone: the next one
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), RECONNECT_PAUSE_SECONDS)
                continue
            self.sockets += 1
            try:
                await self._session(ws)
            finally:
                self._ws = None
                if not self._stopping.is_set():
                    self.closes.append(ws.close_code)
                    if ws.close_code == 1012:
                        self._next += 1  # restarting: reconnect elsewhere
            await self._notify()

    async def _session(self, ws: ClientConnection) -> None:
        """Read the socket until it ends: ``ready`` → subscribe everything after the last
        seq applied → once all are ``subscribed``, resend what is unacknowledged."""
        waiting: set[str] = set()
        try:
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame["type"]
                if kind == "message":
                    self._apply(frame)
                elif kind == "ack":
                    self._acked(frame)
                elif kind == "error":
                    self._refused(frame)
                elif kind == "ready":
                    waiting = {f"s{self.sockets}-{i}" for i in range(len(self.timelines))}
                    for i, conversation_id in enumerate(self.timelines):
                        await ws.send(json.dumps({
                            "type": "subscribe", "ref": f"s{self.sockets}-{i}",
                            "conversation_id": conversation_id,
                            "after_seq": self.last_seq(conversation_id)}))
                elif kind == "subscribed" and frame.get("ref") in waiting:
                    waiting.discard(frame["ref"])
                    if not waiting:
                        self._ws = ws
                        for send in list(self.pending.values()):
                            if send.client_msg_id in self.pending:
                                self.resent["reconnect"] += 1
                                await self._transmit(send)
                await self._notify()
        except websockets.ConnectionClosed:
            pass

    # --- frames in ------------------------------------------------------------------------

    def _apply(self, frame: dict[str, Any]) -> None:
        timeline = self.timelines.get(frame["conversation_id"])
        if timeline is None:
            return
        last = timeline[-1].seq if timeline else 0
        seq = frame["seq"]
        if seq <= last:
            self.raw_duplicates += 1
            return
        timeline.append(Applied(seq, frame["client_msg_id"], frame["body"]))

    def _acked(self, frame: dict[str, Any]) -> None:
        client_msg_id, seq = frame["client_msg_id"], frame["seq"]
        before = self.acks.get(client_msg_id)
        if before is not None and before != seq:
            self.ack_conflicts.append((client_msg_id, before, seq))
        self.acks[client_msg_id] = seq
        self.pending.pop(client_msg_id, None)
        self._sent_at.pop(client_msg_id, None)

    def _refused(self, frame: dict[str, Any]) -> None:
        code = frame.get("code", "")
        send = self.pending.get(frame.get("client_msg_id") or "")
        if code in RESENT_CODES and send is not None:
            delay = (frame.get("retry_after_ms") or 200) / 1000
            self.resent[code] += 1
            asyncio.get_running_loop().call_later(
                delay, lambda: asyncio.ensure_future(self._transmit(send)))
        else:
            self.refusals[code] += 1

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # --- sends ----------------------------------------------------------------------------

    async def submit(self, send: Send) -> None:
        """Start a send: it stays pending (and is resent) until acknowledged."""
        self.pending[send.client_msg_id] = send
        await self._transmit(send)

    async def _transmit(self, send: Send) -> None:
        ws = self._ws
        if ws is None or send.client_msg_id not in self.pending:
            return  # sent after the next subscribe, or acked meanwhile
        self._sent_at[send.client_msg_id] = time.monotonic()
        with contextlib.suppress(websockets.ConnectionClosed):
            await ws.send(send.frame())

    async def _resend_late(self) -> None:
        """The ack timer: what waited too long on a live socket goes out again."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 1.0)
            now = time.monotonic()
            for client_msg_id, at in list(self._sent_at.items()):
                send = self.pending.get(client_msg_id)
                if send is not None and now - at > ACK_TIMEOUT_SECONDS:
                    self.resent["no_ack"] += 1
                    await self._transmit(send)
