"""The broker interface, the handler it calls back, and the channel names.

A broker only moves opaque payloads (msgpack publications holding ciphertext, never
plain PHI) between nodes. It is a doorbell: the store holds the truth, so a lost
publication is repaired from the store (gap fill, position sync), never trusted blindly.
Calls flow broker → handler (the node) → hub, never backwards (STYLE rule 5).
"""

from __future__ import annotations

import re
import uuid
from abc import ABC, abstractmethod
from typing import Protocol

CHANNEL_PREFIX = "sc:a:"
# Cluster-wide commands (a session ended: close its sockets on every node).
CONTROL_CHANNEL = "sc:control"
_CHANNEL = re.compile(r"sc:a:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class BrokerUnavailable(Exception):
    """The broker cannot take a publication right now (it is down or reconnecting)."""


class BrokerHandler(Protocol):
    def on_publication(self, channel: str, payload: bytes) -> None:
        """One publication arrived. Must not block: queue work, do not await."""

    def on_broker_state(self, up: bool) -> None:
        """The broker lost (False) or regained (True) its link; on True the handler
        re-reads stream positions from the store, since publications may have been lost."""


def account_channel(account_id: str) -> str:
    """The channel of one account. Built only from server-side ids, never from a
    client's string, so no client can name a channel (checklist TEN-03)."""
    return CHANNEL_PREFIX + str(uuid.UUID(account_id))


def is_channel(name: str) -> bool:
    """Whether ``name`` is a name ``account_channel`` builds (the whole name, in its
    canonical lower-case form)."""
    return _CHANNEL.fullmatch(name) is not None


class Broker(ABC):
    """Moves payloads between the nodes that subscribe to a channel."""

    name: str

    @abstractmethod
    async def start(self, handler: BrokerHandler) -> None:
        """Connect (or start trying to) and deliver to ``handler`` from now on."""

    @abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Receive ``channel``'s publications; returns once the subscription is active
        (or, while the broker is down, once it is recorded for the reconnect)."""

    @abstractmethod
    async def unsubscribe(self, channel: str) -> None: ...

    @abstractmethod
    def publish(self, channel: str, payload: bytes) -> None:
        """Queue a publication without waiting (publishing never slows a send).

        Raises:
            BrokerUnavailable: the broker is down or its queue is full; the caller
                counts it and relies on the store-based repair.
        """

    @abstractmethod
    async def ping(self) -> None:
        """Raises when the broker does not answer (for ``/readyz``)."""

    @property
    @abstractmethod
    def up(self) -> bool: ...

    @abstractmethod
    async def close(self) -> None: ...


def broker_from_url(url: str | None) -> Broker:
    """Pick the backend by URL scheme; unset means in-process. Imports lazily, so a
    single-node install never loads redis."""
    if not url:
        from server.brokers.memory import MemoryBroker
        return MemoryBroker()
    from server.brokers.redis import RedisBroker
    return RedisBroker(url)
