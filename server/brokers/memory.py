"""The in-process broker: one node, or several nodes in one process sharing a bus (tests).

First-class, not a stub: it runs the same conformance tests as the Redis broker.
Delivery is asynchronous (``call_soon``), like a network broker, so no caller ever
depends on a publication arriving inside its own call. What was already on its way when
a broker unsubscribes (or closes) is dropped, so nothing arrives after ``unsubscribe()``
returns. The control channel is followed from ``start()`` to ``close()``.
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

    def set_down(self, down: bool) -> None:
        """Tests: cut or restore the bus for every broker on it, telling each handler."""
        self.down = down
        for broker in set().union(*self.subscribers.values()):
            if broker._handler is not None:
                broker._handler.on_broker_state(not down)


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
        self._bus.subscribers[CONTROL_CHANNEL].add(self)

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        self._bus.subscribers[channel].add(self)

    async def unsubscribe(self, channel: str) -> None:
        if channel == CONTROL_CHANNEL:
            return  # followed for the broker's whole life, like on Redis
        self._channels.discard(channel)
        self._leave(channel)

    def _leave(self, channel: str) -> None:
        subscribers = self._bus.subscribers.get(channel)
        if subscribers is not None:
            subscribers.discard(self)
            if not subscribers:
                del self._bus.subscribers[channel]

    def publish(self, channel: str, payload: bytes) -> None:
        if self._bus.down:
            raise BrokerUnavailable("the in-memory bus is down")
        for broker in tuple(self._bus.subscribers.get(channel, ())):
            broker._deliver(channel, payload)

    def _deliver(self, channel: str, payload: bytes) -> None:
        if self._loop is not None:
            self._loop.call_soon(self._arrive, channel, payload)

    def _arrive(self, channel: str, payload: bytes) -> None:
        handler = self._handler
        if handler is not None and (channel == CONTROL_CHANNEL or channel in self._channels):
            handler.on_publication(channel, payload)

    async def ping(self) -> None:
        if self._bus.down:
            raise BrokerUnavailable("the in-memory bus is down")

    @property
    def up(self) -> bool:
        return not self._bus.down

    def set_down(self, down: bool) -> None:
        """Tests: cut or restore the bus for every broker on it, telling each handler."""
        self._bus.set_down(down)

    async def close(self) -> None:
        self._handler = None
        for channel in (*self._channels, CONTROL_CHANNEL):
            self._leave(channel)
        self._channels.clear()
