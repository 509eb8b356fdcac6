"""Broker test helpers: a recording handler, and per backend a factory of started
brokers sharing one bus (memory: one ``MemoryBus``; redis: one Redis server)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections import defaultdict
from collections.abc import Callable

import pytest

from server.brokers.base import Broker, account_channel
from server.brokers.memory import MemoryBroker, MemoryBus
from server.brokers.redis import BACKOFF_CAP, RedisBroker

# Every byte value, a NUL, invalid UTF-8 and some length: nothing may re-encode it.
AWKWARD_BYTES = bytes(range(256)) + b"\x00\xff\xfe" + os.urandom(4096)
# Long enough for any wait on a healthy local bus; a miss fails the test, never hangs it.
WAIT = 10.0


def new_channel() -> str:
    return account_channel(str(uuid.uuid4()))


class Recorder:
    """A ``BrokerHandler`` that records what it is told and wakes whoever waits on it."""

    def __init__(self) -> None:
        self.received: dict[str, list[bytes]] = defaultdict(list)
        self.states: list[bool] = []
        self._changed = asyncio.Event()

    def on_publication(self, channel: str, payload: bytes) -> None:
        self.received[channel].append(payload)
        self._changed.set()

    def on_broker_state(self, up: bool) -> None:
        self.states.append(up)
        self._changed.set()

    async def wait_until(self, predicate: Callable[[], bool], what: str,
                         timeout: float = WAIT) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)

    async def wait_for(self, channel: str, count: int = 1, timeout: float = WAIT) -> None:
        await self.wait_until(lambda: len(self.received[channel]) >= count,
                              f"{count} publication(s) on {channel}", timeout)

    async def wait_for_state(self, up: bool, since: int, timeout: float = WAIT) -> None:
        """Wait until the handler has been told ``up`` after its first ``since`` states."""
        await self.wait_until(lambda: up in self.states[since:],
                              f"on_broker_state({up})", timeout)


class Node:
    def __init__(self, broker: Broker, handler: Recorder) -> None:
        self.broker = broker
        self.handler = handler


class Backend:
    """Makes started brokers that share one bus, and closes them at the end."""

    name: str
    # How long the bus may take to be reported back up after it is restored.
    recovery: float = WAIT

    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def make_broker(self) -> Broker:
        raise NotImplementedError

    async def node(self, broker: Broker | None = None) -> Node:
        """A started broker on the bus (``broker``, or a new one), once it is up."""
        node = Node(broker or self.make_broker(), Recorder())
        self.nodes.append(node)
        await node.broker.start(node.handler)
        await node.handler.wait_until(lambda: node.broker.up, f"{self.name} broker up")
        return node

    async def cut(self) -> None:
        raise NotImplementedError

    async def restore(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        for node in self.nodes:
            async with asyncio.timeout(WAIT):  # a close() that hangs fails the test
                await node.broker.close()


class MemoryBackend(Backend):
    name = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.bus = MemoryBus()

    def make_broker(self) -> Broker:
        return MemoryBroker(self.bus)

    async def cut(self) -> None:
        self.bus.set_down(True)

    async def restore(self) -> None:
        self.bus.set_down(False)


class RedisBackend(Backend):
    name = "redis"

    def __init__(self, url: str, server=None, **options: float) -> None:
        super().__init__()
        self.url = url
        self.server = server  # a PrivateRedis, when the test may stop it
        self.options = options
        socket_timeout = options.get("socket_timeout", 5.0)
        # Reconnect attempts are at most BACKOFF_CAP apart, and one may have just
        # started against the dead server and take up to the socket timeout.
        self.recovery = BACKOFF_CAP + 2 * socket_timeout + 3

    def make_broker(self) -> Broker:
        return RedisBroker(self.url, **self.options)

    async def cut(self) -> None:
        assert self.server is not None
        await asyncio.to_thread(self.server.kill)

    async def restore(self) -> None:
        assert self.server is not None
        await asyncio.to_thread(self.server.start)




class GatedProxy:
    """A TCP proxy in front of Redis that can hold back what its clients send (the
    replies and publications Redis sends them still flow). With the gate shut, a
    command a broker has written is provably not yet seen by Redis."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._hold_marker: bytes | None = None  # a write containing it waits for open()
        self._hold_from: int | None = None  # connections from this one wait for open()
        self._open = asyncio.Event()
        self._open.set()
        self.sent = bytearray()  # what clients wrote since the gate was last set
        self.accepted = 0  # connections so far
        self._changed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._streams: list[asyncio.StreamWriter] = []
        self._pumps: set[asyncio.Task] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    def shut(self) -> None:
        """Hold back everything clients write from now on."""
        self.hold_when(b"")

    def hold_when(self, marker: bytes) -> None:
        """Hold back, from now on, a client's write containing ``marker`` (and what that
        client writes after it)."""
        self._hold_marker = marker
        self._set_gate()

    def hold_connections_after(self, count: int) -> None:
        """Let the next ``count`` new connections through; hold back all that the ones
        after them write."""
        self._hold_from = self.accepted + count
        self._set_gate()

    def _set_gate(self) -> None:
        self._open.clear()
        self.sent.clear()

    def open(self) -> None:
        self._hold_marker = self._hold_from = None
        self._open.set()

    async def sever(self) -> None:
        """Cut every connection made so far, as a network failure would."""
        for task in tuple(self._pumps):
            task.cancel()
        await asyncio.gather(*self._pumps, return_exceptions=True)
        for writer in self._streams:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        self._streams.clear()

    async def wait_sent(self, marker: bytes, timeout: float = WAIT) -> None:
        """Wait until a client has written ``marker`` since the gate was last set (it may
        still be held back)."""
        await self._wait(lambda: marker in self.sent, f"a client to write {marker!r}",
                         timeout)

    async def wait_accepted(self, count: int, timeout: float = WAIT) -> None:
        await self._wait(lambda: self.accepted >= count, f"{count} connections", timeout)

    async def _wait(self, predicate: Callable[[], bool], what: str, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)

    async def _accept(self, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter) -> None:
        held = self._hold_from is not None and self.accepted >= self._hold_from
        self.accepted += 1
        self._changed.set()
        redis_r, redis_w = await asyncio.open_connection("127.0.0.1", self._target_port)
        self._streams += [client_w, redis_w]
        for pump in (self._pump(client_r, redis_w, gated=True, held=held),
                     self._pump(redis_r, client_w, gated=False, held=False)):
            task = asyncio.create_task(pump)
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter,
                    gated: bool, held: bool) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                if gated:
                    self.sent += data
                    self._changed.set()
                    marker = self._hold_marker
                    if held or (marker is not None and marker in data):
                        await self._open.wait()
                sink.write(data)
                await sink.drain()
        sink.close()

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        await self.sever()
        await self._server.wait_closed()


def resp(*words: str) -> bytes:
    """How redis-py writes a command (RESP2 array of bulk strings)."""
    return f"*{len(words)}\r\n".encode() + b"".join(
        f"${len(word)}\r\n{word}\r\n".encode() for word in words)
