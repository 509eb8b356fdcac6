"""The benchmark's bookkeeping of sockets and messages: who follows what, every send
until its ack and its delivery to the other side, and each socket's stream positions
(so a lost, doubled or reordered message is counted, not guessed).

Times are ``time.perf_counter()`` of this one process: sender and receiver are both
here, so send-to-receive latency needs no clock agreement.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

from loadtest.bench_client import ServerFrame, Socket, connect

# Refusals the protocol says to resend with the same client_msg_id.
RESEND = frozenset({"unavailable", "rate_limited"})
# A message body of 100 characters: a short clinical chat line.
BODY = ("Load test message: please confirm the appointment time and bring your "
        "medication list.").ljust(100, ".")


class Refused(Exception):
    """The server answered a frame with an ``error`` frame."""

    def __init__(self, code: str) -> None:
        super().__init__(f"refused: {code}")
        self.code = code


@dataclass(slots=True, eq=False)
class Follower:
    """One socket's part: its role, its conversation and its position in it."""

    role: str  # staff | patient
    conversation_id: str
    cookie: str
    url: str
    last_seq: int = 0
    gaps: int = 0  # messages skipped (a seq jumped)
    dups: int = 0  # messages received again or out of order
    received: int = 0  # message frames
    connects: int = 0
    sock: Socket | None = None
    peer: Follower | None = None  # the other side of the conversation (throughput)


@dataclass(slots=True)
class StepStats:
    """One rate step of the throughput scenario."""

    rate: int
    seconds: float
    sent: int = 0
    acked: int = 0
    delivered: int = 0
    started: float = 0.0
    last_delivery: float = 0.0
    deliver_ms: list[float] = field(default_factory=list)
    ack_ms: list[float] = field(default_factory=list)


class Pending:
    __slots__ = ("acked", "delivered", "receiver", "sender", "stats", "t0")

    def __init__(self, t0: float, stats: StepStats, sender: Follower,
                 receiver: Follower) -> None:
        self.t0 = t0
        self.stats = stats
        self.sender = sender
        self.receiver = receiver
        self.acked = False
        self.delivered = False


def percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Traffic:
    """Frame handler for every socket of a scenario, and the sends it tracks."""

    def __init__(self, origin: str) -> None:
        self.origin = origin
        self.pending: dict[str, Pending] = {}
        self._untracked: dict[str, Follower] = {}  # untimed sends not acked yet
        self.errors: Counter[str] = Counter()
        self.frames: Counter[str] = Counter()
        self.closes: Counter[str] = Counter()
        self.skipped = 0  # sends not made: the socket had been closed
        self.resent = 0  # sends refused as unavailable/rate_limited and sent again
        self._waiters: dict[str, asyncio.Future[ServerFrame]] = {}
        self._ids = itertools.count(1)
        self._run = f"{time.time_ns() % 10**9:09d}"

    # --- frames -----------------------------------------------------------------------------

    def on_frame(self, sock: Socket, frame: ServerFrame) -> None:
        kind = frame.type
        self.frames[kind] += 1
        if kind == "message":
            follower: Follower = sock.tag
            follower.received += 1
            seq = frame.seq or 0
            if seq == follower.last_seq + 1:
                follower.last_seq = seq
            elif seq <= follower.last_seq:
                follower.dups += 1
            else:
                follower.gaps += seq - follower.last_seq - 1
                follower.last_seq = seq
            pending = self.pending.get(frame.client_msg_id or "")
            if pending is not None and pending.receiver is follower and not pending.delivered:
                now = time.perf_counter()
                pending.delivered = True
                stats = pending.stats
                stats.delivered += 1
                stats.last_delivery = now
                stats.deliver_ms.append((now - pending.t0) * 1000)
                if pending.acked:
                    del self.pending[frame.client_msg_id or ""]
        elif kind == "ack":
            self._untracked.pop(frame.client_msg_id or "", None)
            pending = self.pending.get(frame.client_msg_id or "")
            if pending is not None and not pending.acked:
                pending.acked = True
                pending.stats.acked += 1
                pending.stats.ack_ms.append((time.perf_counter() - pending.t0) * 1000)
                if pending.delivered:
                    del self.pending[frame.client_msg_id or ""]
        elif kind in ("subscribed", "error"):
            if kind == "error":
                self.errors[frame.code or "?"] += 1
                cmid = frame.client_msg_id or ""
                pending = self.pending.get(cmid)
                sender = pending.sender if pending is not None else self._untracked.get(cmid)
                if sender is not None and frame.code in RESEND:
                    # As the protocol asks: resend with the same client_msg_id (the
                    # latency keeps counting from the first send).
                    self.resent += 1
                    delay = (frame.retry_after_ms or 100) / 1000
                    asyncio.get_running_loop().call_later(delay, self._send_frame, sender,
                                                          cmid)
            waiter = self._waiters.pop(frame.ref or "", None)
            if waiter is not None and not waiter.done():
                waiter.set_result(frame)

    # --- sockets ----------------------------------------------------------------------------

    async def open(self, follower: Follower, local_ip: str | None = None,
                   timeout: float = 30.0) -> Socket:
        sock = await connect(follower.url, follower.cookie, self.origin, self.on_frame,
                             local_ip=local_ip, tag=follower, timeout=timeout)
        follower.sock = sock
        follower.connects += 1
        sock.closed.add_done_callback(
            lambda fut: self.closes.update([f"{follower.role} {fut.result()}"])
            if follower.sock is sock else None)
        return sock

    async def subscribe(self, follower: Follower, after_seq: int,
                        timeout: float = 60.0) -> ServerFrame:
        """Subscribe from ``after_seq`` and wait for ``subscribed`` (the replay is done)."""
        assert follower.sock is not None
        ref = f"s{next(self._ids)}"
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[ref] = waiter
        follower.last_seq = after_seq
        follower.sock.send({"type": "subscribe", "conversation_id": follower.conversation_id,
                            "after_seq": after_seq, "ref": ref})
        try:
            frame = await asyncio.wait_for(waiter, timeout)
        finally:
            self._waiters.pop(ref, None)
        if frame.type != "subscribed":
            raise Refused(frame.code or "?")
        return frame

    async def subscribe_retrying(self, follower: Follower, after_seq: int,
                                 timeout: float = 300.0) -> ServerFrame:
        """:meth:`subscribe`, resending it (as a client must) while the server answers
        ``unavailable`` or ``rate_limited``."""
        deadline = time.perf_counter() + timeout
        for attempt in itertools.count():
            try:
                return await self.subscribe(follower, after_seq,
                                            max(1.0, deadline - time.perf_counter()))
            except Refused as exc:
                if exc.code not in RESEND or time.perf_counter() > deadline:
                    raise
                await asyncio.sleep(min(2.0, 0.05 * 2 ** attempt))
        raise AssertionError("unreachable")

    def send(self, follower: Follower, stats: StepStats | None = None) -> str:
        """Send one secure message from ``follower`` to its conversation; tracked until
        its ack and its arrival at ``follower.peer`` when ``stats`` is given."""
        cmid = f"b{self._run}-{next(self._ids)}"
        if not self._send_frame(follower, cmid):
            return cmid
        if stats is not None and follower.peer is not None:
            self.pending[cmid] = Pending(time.perf_counter(), stats, follower, follower.peer)
            stats.sent += 1
        else:  # not timed, but still resent when refused, until acked
            self._untracked[cmid] = follower
        return cmid

    def _send_frame(self, follower: Follower, cmid: str) -> bool:
        sock = follower.sock
        if sock is None or not sock.open:
            self.skipped += 1  # its socket was closed by the server (counted in closes)
            return False
        sock.send_raw(
            (f'{{"type":"send","conversation_id":"{follower.conversation_id}",'
             f'"client_msg_id":"{cmid}","body":"{BODY}","secure":true}}').encode())
        return True

    def step_pending(self, stats: StepStats) -> int:
        return sum(1 for p in self.pending.values() if p.stats is stats)

    def forget(self, stats: StepStats) -> None:
        for cmid in [c for c, p in self.pending.items() if p.stats is stats]:
            del self.pending[cmid]
