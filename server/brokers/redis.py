"""Redis pub/sub: the broker for several nodes. The only module that imports redis.

* **Publishing** goes through one connection: ``publish`` only appends to a bounded
  queue, and one task sends what has queued up as a single pipeline. That keeps the
  number of connections at two per node whatever the load (redis-py's asyncio pool
  raises ``MaxConnectionsError`` instead of waiting once 100 commands are in flight),
  and batches thousands of PUBLISHes per round trip under load.
* **Subscribing** uses a second, dedicated connection (a subscribed RESP2 connection
  cannot run other commands). ``subscribe`` returns once Redis has confirmed it, so a
  node that then reads a stream position from the store cannot miss a publication made
  between the two.
* **Failure**: on any error both connections are dropped, the handler is told
  (``on_broker_state(False)``), and the broker reconnects with capped exponential
  backoff and full jitter, resubscribes every channel, and tells the handler
  (``on_broker_state(True)``), which then repairs from the store what was lost.
  redis-py's own silent retries are switched off so no outage goes unnoticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from server.brokers.base import CONTROL_CHANNEL, Broker, BrokerHandler, BrokerUnavailable

log = logging.getLogger("securechat.broker.redis")

# Publications waiting for the pipeline. At 10k messages/s this is ~1 s of traffic;
# beyond it a node is not keeping up with Redis and publications are shed (the store
# repairs them) rather than growing memory without bound.
PUBLISH_QUEUE = 10_000
# Commands per pipeline round trip: large enough to amortise the round trip, small
# enough that one batch is a few hundred KB at most.
PIPELINE_BATCH = 500
# Reconnect backoff: 0.1 s doubling to 5 s, with full jitter (AWS architecture blog).
BACKOFF_START, BACKOFF_CAP = 0.1, 5.0
# How long subscribe() waits for Redis to confirm before relying on the position sync.
SUBSCRIBE_CONFIRM_SECONDS = 2.0
SOCKET_TIMEOUT = 5.0
IDLE_PING_SECONDS = 5.0


class RedisBroker(Broker):
    name = "redis"

    def __init__(self, url: str) -> None:
        self._url = url
        self._handler: BrokerHandler | None = None
        self._channels: set[str] = set()
        self._confirmed: dict[str, asyncio.Event] = {}
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(PUBLISH_QUEUE)
        self._client: Redis | None = None
        self._pubsub: PubSub | None = None
        self._up = False
        self._ready = asyncio.Event()  # set while connected
        self._tasks: list[asyncio.Task] = []
        self._closing = False
        self.dropped = 0  # publications shed while down or overloaded (for metrics)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, handler: BrokerHandler) -> None:
        self._handler = handler
        self._tasks = [asyncio.create_task(self._run(), name="redis-broker")]

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._disconnect()

    @property
    def up(self) -> bool:
        return self._up

    async def ping(self) -> None:
        if not self._up or self._client is None:
            raise BrokerUnavailable("redis is not connected")
        await asyncio.wait_for(self._client.ping(), SOCKET_TIMEOUT)

    # --- channels ------------------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        if channel in self._channels:
            return
        self._channels.add(channel)
        confirmed = self._confirmed.setdefault(channel, asyncio.Event())
        if self._up and self._pubsub is not None:
            try:
                await self._pubsub.subscribe(channel)
            except (RedisError, OSError):
                return  # the reader notices the broken link and resubscribes
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(confirmed.wait(), SUBSCRIBE_CONFIRM_SECONDS)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        self._confirmed.pop(channel, None)
        if self._up and self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(channel)

    def publish(self, channel: str, payload: bytes) -> None:
        if not self._up:
            self.dropped += 1
            raise BrokerUnavailable("redis is not connected")
        try:
            self._queue.put_nowait((channel, payload))
        except asyncio.QueueFull:
            self.dropped += 1
            raise BrokerUnavailable("redis publish queue is full") from None

    # --- the connection loop -------------------------------------------------------------

    async def _run(self) -> None:
        delay = BACKOFF_START
        while not self._closing:
            try:
                await self._connect()
                delay = BACKOFF_START
                await self._serve()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("redis link lost", extra={"reason": type(exc).__name__})
            await self._disconnect()
            if self._closing:
                return
            await asyncio.sleep(random.uniform(0, delay))  # noqa: S311 - jitter, not crypto
            delay = min(delay * 2, BACKOFF_CAP)

    async def _connect(self) -> None:
        no_retry = Retry(NoBackoff(), 0)
        self._client = Redis.from_url(
            self._url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT,
            retry=no_retry, single_connection_client=True)
        await self._client.ping()
        self._pubsub = self._client.pubsub()
        # The pubsub connection is its own; the subscribe below opens it.
        for channel in self._confirmed.values():
            channel.clear()
        # The control channel is always subscribed, so the reader always has a
        # subscription to wait on, and cluster-wide commands reach every node.
        await self._pubsub.subscribe(CONTROL_CHANNEL, *self._channels)
        self._up = True
        self._ready.set()
        log.info("redis link up", extra={"count": len(self._channels)})
        if self._handler is not None:
            self._handler.on_broker_state(True)

    async def _serve(self) -> None:
        """Run the reader and the publisher until either fails."""
        reader = asyncio.create_task(self._read())
        writer = asyncio.create_task(self._write())
        try:
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            for task in (reader, writer):
                task.cancel()
            for task in (reader, writer):
                with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                    await task

    async def _read(self) -> None:
        assert self._pubsub is not None
        while True:
            message = await self._pubsub.get_message(timeout=None)
            if message is None:
                continue
            kind = message["type"]
            channel = message["channel"].decode() if message["channel"] else ""
            if kind == "message" and self._handler is not None:
                # Control and account channels both go to the handler, which tells
                # them apart by name.
                self._handler.on_publication(channel, message["data"])
            elif kind == "subscribe" and channel in self._confirmed:
                self._confirmed[channel].set()

    async def _write(self) -> None:
        assert self._client is not None
        while True:
            try:
                first = await asyncio.wait_for(self._queue.get(), IDLE_PING_SECONDS)
            except TimeoutError:
                # Nothing to publish: ping, so a paused or half-dead Redis is noticed
                # within IDLE_PING_SECONDS + SOCKET_TIMEOUT even when the node is idle.
                await self._client.ping()
                continue
            batch = [first]
            while len(batch) < PIPELINE_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            pipe = self._client.pipeline(transaction=False)
            for channel, payload in batch:
                pipe.publish(channel, payload)
            await pipe.execute()

    async def _disconnect(self) -> None:
        was_up = self._up
        self._up = False
        self._ready.clear()
        while not self._queue.empty():  # those will be repaired from the store
            self._queue.get_nowait()
            self.dropped += 1
        for closer in (self._pubsub, self._client):
            if closer is not None:
                with contextlib.suppress(RedisError, OSError, RuntimeError):
                    await closer.aclose()
        self._pubsub = self._client = None
        if was_up and self._handler is not None:
            self._handler.on_broker_state(False)
