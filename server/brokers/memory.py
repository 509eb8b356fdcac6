"""The in-process broker: one node, or several hubs in one process sharing a bus (tests).

First-class, not a stub: it runs the same conformance tests as the Redis broker.
Delivery is asynchronous (``call_soon``), like a network broker, so no caller ever
depends on a publication arriving inside its own call.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

from server.brokers.base import CONTROL_CHANNEL, Broker, BrokerHandler, BrokerUnavailable


class MemoryBus:
    """What several in-process brokers share, standing in for a Redis server."""

    def __init__(self) -> None:
        self.subscribers: dict[str, set[MemoryBroker]] = defaultdict(set)
        self.down = False


class MemoryBroker(Broker):
    name = "memory"

    def __init__(self, bus: MemoryBus | None = None) -> None:
        self._bus = bus or MemoryBus()
        self._handler: BrokerHandler | None = None
        self._channels: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler
        self._loop = asyncio.get_running_loop()
        await self.subscribe(CONTROL_CHANNEL)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        self._bus.subscribers[channel].add(self)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        self._bus.subscribers[channel].discard(self)

    def publish(self, channel: str, payload: bytes) -> None:
        if self._bus.down:
            raise BrokerUnavailable("the in-memory bus is down")
        for broker in tuple(self._bus.subscribers.get(channel, ())):
            broker._deliver(channel, payload)

    def _deliver(self, channel: str, payload: bytes) -> None:
        if self._handler is not None and self._loop is not None:
            self._loop.call_soon(self._handler.on_publication, channel, payload)

    async def ping(self) -> None:
        if self._bus.down:
            raise BrokerUnavailable("the in-memory bus is down")

    @property
    def up(self) -> bool:
        return not self._bus.down

    def set_down(self, down: bool) -> None:
        """Tests: cut or restore the bus for every broker on it, telling each handler."""
        self._bus.down = down
        for broker in set().union(*self._bus.subscribers.values()):
            if broker._handler is not None:
                broker._handler.on_broker_state(not down)

    async def close(self) -> None:
        for channel in tuple(self._channels):
            await self.unsubscribe(channel)
        self._handler = None
