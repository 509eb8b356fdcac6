"""A chat participant for the cluster tests: one side of a conversation over a real
WebSocket that pipelines its sends, records every frame with cheap indexes (thousands of
frames per run), and, like a real client, resumes on a new socket from the last ``seq``
it saw when its socket is closed, resending what was not acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from tests.conftest import ORIGIN
from tests.realtime.wsclient import ws_url

Frame = dict[str, Any]


class Peer:
    """``url`` may be a list of nodes: a lost socket is replaced on the next one."""

    def __init__(self, name: str, url: str | list[str], cookie: str, conversation_id: str,
                 *, secure: bool = True, in_flight: int = 100) -> None:
        self.name = name
        self.urls = [url] if isinstance(url, str) else list(url)
        self.cookie = cookie
        self.conversation_id = conversation_id
        self.secure = secure
        self.messages: list[Frame] = []  # every message frame, in arrival order
        self.acks: dict[str, Frame] = {}  # client_msg_id -> its (last) ack
        self.errors: list[Frame] = []
        self.counts: Counter[str] = Counter()  # frames received per type
        self.by_ref: dict[str, Frame] = {}
        self.closes: list[tuple[int | None, str]] = []  # sockets closed under us
        self.sockets = 0  # sockets opened (1 + reconnects)
        self._unacked: dict[str, str] = {}  # client_msg_id -> body
        self._room = asyncio.Semaphore(in_flight)
        self._changed = asyncio.Condition()
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task | None = None
        self._supervisor: asyncio.Task | None = None
        self._lost = asyncio.Event()
        self._closing = False

    # --- state ----------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        return self.messages[-1]["seq"] if self.messages else 0

    def seqs(self) -> list[int]:
        return [frame["seq"] for frame in self.messages]

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self, timeout: float = 10.0) -> None:
        """Connect, then subscribe after the last seq seen (0 the first time)."""
        async with asyncio.timeout(timeout):
            await self._connect()
        self._supervisor = asyncio.create_task(self._supervise())

    async def _connect(self) -> None:
        url = self.urls[self.sockets % len(self.urls)]
        self.sockets += 1
        generation = self.sockets
        ws = await websockets.connect(ws_url(url), origin=ORIGIN,
                                      additional_headers={"cookie": self.cookie},
                                      max_queue=None)
        self._ws = ws
        self._lost.clear()
        ready = self.counts["ready"]
        self._reader = asyncio.create_task(self._read(ws))
        await self.wait_until(lambda: self.counts["ready"] > ready, 10)
        ref = f"sub-{generation}"
        await ws.send(json.dumps({"type": "subscribe", "ref": ref,
                                  "conversation_id": self.conversation_id,
                                  "after_seq": self.last_seq}))
        await self.wait_until(lambda: ref in self.by_ref, 10)
        # What was in flight on a lost socket: resend (same client_msg_id: no duplicate).
        for client_msg_id, body in list(self._unacked.items()):
            await self._send_frame(client_msg_id, body)

    async def _supervise(self) -> None:
        while True:
            await self._lost.wait()
            if self._closing:
                return
            await self._connect()

    async def close(self) -> None:
        self._closing = True
        self._lost.set()
        if self._supervisor is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame["type"]
                self.counts[kind] += 1
                if "ref" in frame:
                    self.by_ref[frame["ref"]] = frame
                if kind == "message":
                    self.messages.append(frame)
                elif kind == "ack":
                    self.acks[frame["client_msg_id"]] = frame
                    if self._unacked.pop(frame["client_msg_id"], None) is not None:
                        self._room.release()
                elif kind == "error":
                    self.errors.append(frame)
                async with self._changed:
                    self._changed.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            if not self._closing:
                self.closes.append((ws.close_code, ws.close_reason or ""))
            self._lost.set()
            async with self._changed:
                self._changed.notify_all()

    # --- sending --------------------------------------------------------------------------

    def client_msg_id(self, i: int) -> str:
        return f"{self.name}-{i}"

    async def send_many(self, indexes: range) -> None:
        """Send one message per index, keeping at most ``in_flight`` unacknowledged."""
        for i in indexes:
            await self._room.acquire()
            client_msg_id = self.client_msg_id(i)
            body = f"{self.name} says {i}"
            self._unacked[client_msg_id] = body
            await self._send_frame(client_msg_id, body)

    async def _send_frame(self, client_msg_id: str, body: str) -> None:
        assert self._ws is not None
        # A socket lost meanwhile is replaced by the supervisor, which resends.
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._ws.send(json.dumps({
                "type": "send", "conversation_id": self.conversation_id,
                "client_msg_id": client_msg_id, "body": body, "secure": self.secure}))

    async def frame(self, **frame: Any) -> None:
        """Send any other frame on the current socket."""
        assert self._ws is not None
        await self._ws.send(json.dumps(frame))

    # --- waiting --------------------------------------------------------------------------

    async def wait_until(self, condition: Callable[[], bool], timeout: float) -> None:
        """Wait until ``condition()`` holds (checked after every frame)."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                while not condition():
                    if self.errors:
                        raise AssertionError(f"{self.name} was refused: {self.errors[:3]}")
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: timed out after {timeout}s; {len(self.messages)} messages "
                f"(last seq {self.last_seq}), {len(self.acks)} acks, closes {self.closes}, "
                f"errors {self.errors[:3]}") from None

    async def wait_messages(self, count: int, timeout: float) -> None:
        await self.wait_until(lambda: len(self.messages) >= count, timeout)

    async def wait_acked(self, count: int, timeout: float) -> None:
        await self.wait_until(lambda: len(self.acks) >= count and not self._unacked, timeout)


def check_stream(peer: Peer, total: int) -> None:
    """Every message 1..total exactly once and in seq order, none other."""
    seqs = peer.seqs()
    duplicates = sorted(seq for seq, n in Counter(seqs).items() if n > 1)
    holes = sorted(set(range(1, total + 1)) - set(seqs))
    assert not duplicates, f"{peer.name} got duplicates: {duplicates[:20]}"
    assert not holes, f"{peer.name} missed: {holes[:20]}"
    assert seqs == list(range(1, total + 1)), f"{peer.name} got them out of order"


def check_consistent(peers: list[Peer], total: int) -> None:
    """The acks of all sides cover 1..total once, and every side's message with a given
    seq is the one that was acknowledged with it."""
    by_seq: dict[int, str] = {}
    for peer in peers:
        for client_msg_id, ack in peer.acks.items():
            assert ack["seq"] not in by_seq, f"seq {ack['seq']} acknowledged twice"
            by_seq[ack["seq"]] = client_msg_id
    assert sorted(by_seq) == list(range(1, total + 1))
    for peer in peers:
        for message in peer.messages:
            assert message["client_msg_id"] == by_seq[message["seq"]], message
            assert message["conversation_id"] == peer.conversation_id
