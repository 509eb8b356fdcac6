"""Redis pub/sub: the broker for several nodes. The only module that imports redis.

* **Publishing** never waits: ``publish`` only appends to a bounded queue (full: it
  raises ``BrokerUnavailable`` and the store repairs), and one writer task sends what
  has queued up as pipelines of up to ``PIPELINE_BATCH`` PUBLISHes. The writer is the
  only regular user of the client's pool, so every pipeline (and the idle ping) reuses
  one connection whatever the load: redis-py's asyncio pool raises
  ``MaxConnectionsError`` instead of waiting once 100 commands are in flight, so a
  connection per publication would fail under a burst. ``ping()`` (for ``/readyz``)
  borrows a third connection only if it comes while a pipeline is in flight.
* **Subscribing** uses a second, dedicated connection (RESP2 is pinned, whatever
  redis-py's default: a subscribed RESP2 connection runs nothing else, so the reader
  owns it). ``subscribe`` returns once Redis has confirmed *that* SUBSCRIBE (Redis
  answers each one, in order, so each call waits for its own answer), so a node that
  then reads a stream position from the store cannot miss a publication made between
  the two; if no answer comes within ``SUBSCRIBE_CONFIRM_SECONDS`` it returns anyway
  and the position sync covers the gap. Called while the link is down (or still being
  set up), it only records the channel and returns. ``unsubscribe`` drops the channel
  at once: publications already on their way for it are discarded, not delivered.
* **(Re)connecting**: the control channel and every recorded channel are subscribed,
  and the broker reports up (``up``, ``on_broker_state(True)``) only once Redis has
  confirmed them all; a channel recorded while that happens is subscribed too.
* **Failure**: on any error both connections are dropped, the queue is emptied, the
  handler is told (``on_broker_state(False)``), and the broker reconnects with capped
  exponential backoff and full jitter, then reports up as above, and the handler
  repairs from the store what was lost. A server that stops answering with its socket
  open is noticed by the writer's ping after ``idle_ping_seconds`` without traffic,
  within ``socket_timeout``. redis-py's own retries are switched off so no outage goes
  unnoticed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Iterator

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

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
# Defaults of the constructor's arguments: a server that stops answering is noticed
# within IDLE_PING_SECONDS + SOCKET_TIMEOUT.
SOCKET_TIMEOUT = 5.0
IDLE_PING_SECONDS = 5.0


def backoff_bounds() -> Iterator[float]:
    """The upper bounds of successive reconnect delays (each delay is drawn uniformly
    below its bound): BACKOFF_START, doubling, then BACKOFF_CAP for ever."""
    bound = BACKOFF_START
    while True:
        yield bound
        bound = min(bound * 2, BACKOFF_CAP)


class RedisBroker(Broker):
    name = "redis"

    def __init__(self, url: str, *, idle_ping_seconds: float = IDLE_PING_SECONDS,
                 socket_timeout: float = SOCKET_TIMEOUT) -> None:
        self._url = url
        self._idle_ping_seconds = idle_ping_seconds
        self._socket_timeout = socket_timeout
        self._handler: BrokerHandler | None = None
        self._channels: set[str] = set()
        # Per channel, one future per SUBSCRIBE sent on the current link and not yet
        # confirmed, oldest first (True: confirmed; False: the link was lost first).
        self._pending: dict[str, deque[asyncio.Future[bool]]] = {}
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(PUBLISH_QUEUE)
        self._client: Redis | None = None
        self._pubsub: PubSub | None = None
        self._unclosed: list[PubSub | Redis] = []
        self._linked = False  # the reader runs: subscribe() may talk to Redis itself
        self._up = False
        self._task: asyncio.Task | None = None
        self.dropped = 0  # publications shed while down or overloaded (for metrics)

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self, handler: BrokerHandler) -> None:
        if self._task is not None:
            raise RuntimeError("the broker is already started")
        self._handler = handler
        self._task = asyncio.create_task(self._run(), name="redis-broker")

    async def close(self) -> None:
        """Stop reconnecting and drop the connections; the handler hears nothing more."""
        self._handler = None
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # close() itself was cancelled, not just the task
        await self._disconnect()

    @property
    def up(self) -> bool:
        return self._up

    async def ping(self) -> None:
        client = self._client
        if not self._up or client is None:
            raise BrokerUnavailable("redis is not connected")
        try:
            async with asyncio.timeout(self._socket_timeout):
                await client.ping()
        except (RedisError, OSError) as exc:  # OSError covers TimeoutError
            raise BrokerUnavailable(f"redis did not answer ({type(exc).__name__})") from exc

    # --- channels ------------------------------------------------------------------------

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        pubsub = self._pubsub
        if not self._linked or pubsub is None:
            return  # recorded: the (re)connect subscribes it before reporting up
        confirmed = self._expect(channel)
        try:
            await pubsub.subscribe(channel)
        except (RedisError, OSError):
            return  # the link is failing; the reconnect subscribes it
        try:
            async with asyncio.timeout(SUBSCRIBE_CONFIRM_SECONDS):
                await confirmed
        except TimeoutError:
            log.warning("redis did not confirm a subscription in time")

    async def unsubscribe(self, channel: str) -> None:
        if channel == CONTROL_CHANNEL:
            return  # followed for the broker's whole life
        self._channels.discard(channel)  # the reader drops its publications from now on
        pubsub = self._pubsub
        if self._linked and pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.unsubscribe(channel)

    def publish(self, channel: str, payload: bytes) -> None:
        if not self._up:
            self.dropped += 1
            raise BrokerUnavailable("redis is not connected")
        try:
            self._queue.put_nowait((channel, payload))
        except asyncio.QueueFull:
            self.dropped += 1
            raise BrokerUnavailable("redis publish queue is full") from None

    def _expect(self, channel: str) -> asyncio.Future[bool]:
        """A future resolved by the confirmation of a SUBSCRIBE about to be sent."""
        future = asyncio.get_running_loop().create_future()
        self._pending.setdefault(channel, deque()).append(future)
        return future

    def _confirm(self, channel: str) -> None:
        waiting = self._pending.get(channel)
        if not waiting:
            return
        future = waiting.popleft()
        if not waiting:
            del self._pending[channel]
        if not future.done():  # its subscribe() may have given up waiting
            future.set_result(True)

    def _abandon_pending(self) -> None:
        for waiting in self._pending.values():
            for future in waiting:
                if not future.done():
                    future.set_result(False)
        self._pending.clear()

    # --- the connection loop -------------------------------------------------------------

    async def _run(self) -> None:
        bounds = backoff_bounds()
        while True:
            try:
                await self._link()
            except (RedisError, OSError) as exc:  # OSError covers TimeoutError
                log.warning("redis link lost", extra={"reason": type(exc).__name__})
            except Exception:
                log.exception("redis link failed")
            if self._up:  # it was up: a fresh outage starts from the shortest delay
                bounds = backoff_bounds()
            await self._disconnect()
            await asyncio.sleep(random.uniform(0, next(bounds)))  # noqa: S311 - jitter

    async def _link(self) -> None:
        """Connect, subscribe, report up, and serve until the link fails (it raises)."""
        self._client = client = Redis.from_url(
            self._url, protocol=2, socket_timeout=self._socket_timeout,
            socket_connect_timeout=self._socket_timeout, retry=Retry(NoBackoff(), 0))
        await client.ping()
        self._pubsub = pubsub = client.pubsub()
        # The control channel is always subscribed: it opens the subscriber connection,
        # gives the reader a subscription to wait on, and carries cluster-wide commands.
        confirmations = [self._expect(CONTROL_CHANNEL)]
        await pubsub.subscribe(CONTROL_CHANNEL)
        tasks = [asyncio.create_task(self._read(pubsub), name="redis-broker-reader")]
        try:
            # No await between these two steps: a channel recorded before them is in
            # this snapshot, and a subscribe() after them sends its own SUBSCRIBE.
            self._linked = True
            channels = sorted(self._channels)
            if channels:
                confirmations += [self._expect(channel) for channel in channels]
                await pubsub.subscribe(*channels)
            async with asyncio.timeout(self._socket_timeout):
                confirmed = await asyncio.gather(*confirmations)
            if not all(confirmed):
                if tasks[0].done():
                    tasks[0].result()  # raises why the reader stopped
                raise RedisConnectionError("subscriptions were not confirmed")
            tasks.append(asyncio.create_task(self._write(client), name="redis-broker-writer"))
            self._up = True
            log.info("redis link up", extra={"count": len(self._channels)})
            self._tell(True)
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # raises the error that ended it
            raise RedisConnectionError("the redis link ended")  # both tasks loop for ever
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _read(self, pubsub: PubSub) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                kind = message["type"]
                if kind == "message":
                    channel = message["channel"].decode()
                    if channel == CONTROL_CHANNEL or channel in self._channels:
                        self._deliver(channel, message["data"])
                elif kind == "subscribe":
                    self._confirm(message["channel"].decode())
        finally:
            self._linked = False  # subscribe() records from now on
            self._abandon_pending()  # wake subscribe() calls now, not at a timeout

    async def _write(self, client: Redis) -> None:
        queue = self._queue
        while True:
            try:
                async with asyncio.timeout(self._idle_ping_seconds):
                    first = await queue.get()
            except TimeoutError:
                # Nothing to publish: ping, so a paused or half-dead Redis is noticed
                # within idle_ping_seconds + socket_timeout even when the node is idle.
                await client.ping()
                continue
            batch = [first]
            while len(batch) < PIPELINE_BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            pipe = client.pipeline(transaction=False)
            for channel, payload in batch:
                pipe.publish(channel, payload)
            await pipe.execute()

    async def _disconnect(self) -> None:
        was_up = self._up
        self._up = self._linked = False
        self._abandon_pending()
        while not self._queue.empty():  # those will be repaired from the store
            self._queue.get_nowait()
            self.dropped += 1
        self._unclosed += [c for c in (self._pubsub, self._client) if c is not None]
        self._pubsub = self._client = None
        if was_up:
            log.warning("redis link down")
            self._tell(False)
        # Each is forgotten only once closed, so a close() that cancels this half-way
        # still closes the rest when it calls again.
        while self._unclosed:
            with contextlib.suppress(RedisError, OSError, RuntimeError):
                await self._unclosed[0].aclose()
            self._unclosed.pop(0)

    # --- the handler ---------------------------------------------------------------------

    def _deliver(self, channel: str, payload: bytes) -> None:
        handler = self._handler
        if handler is None:
            return
        try:
            handler.on_publication(channel, payload)
        except Exception:  # a handler bug must not take the link down
            log.exception("broker handler failed on a publication")

    def _tell(self, up: bool) -> None:
        handler = self._handler
        if handler is None:
            return
        try:
            handler.on_broker_state(up)
        except Exception:
            log.exception("broker handler failed on a state change")
