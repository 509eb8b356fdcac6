"""Broker test helpers: a recording handler, and per backend a factory of started
brokers sharing one bus (memory: one ``MemoryBus``; redis: one Redis server)."""

from __future__ import annotations

import asyncio
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

    async def node(self) -> Node:
        """A started broker on the bus, once it is up."""
        node = Node(self.make_broker(), Recorder())
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


