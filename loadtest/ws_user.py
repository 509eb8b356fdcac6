"""An abstract locust user that owns a SecureChat WebSocket client (locust's
``examples/grpc/grpc_user.py`` pattern).

The client is ``websocket-client`` (synchronous, plain sockets), which locust's gevent
monkey-patching turns cooperative: the user's tasks send from the user's greenlet while
one reader greenlet per connection receives. Every round trip is reported through
``environment.events.request.fire`` with request type ``WS``:

* ``connect``: TCP + upgrade + authentication, until the server's ``ready`` frame;
* a frame with a direct answer (``subscribe`` → ``subscribed``, ``send`` → ``ack``,
  ``ping`` → ``pong``), matched by the ``ref`` the client chose, under the name the
  caller gives; an ``error`` answer or no answer in time is a failure;
* a connection that closes while the user still wants it is a failure named
  ``connection`` (the exception names the close code);
* subclasses report end-to-end delivery latency with :meth:`report_delivery`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Callable
from typing import Any

import gevent
import websocket
from gevent.event import AsyncResult
from locust import User

REQUEST_TYPE = "WS"
ANSWER_TIMEOUT = 30.0  # seconds a frame may wait for its answer before it is a failure


class WSAnswerError(Exception):
    """The server answered a frame with an ``error`` frame."""


class WSClosed(Exception):
    """The connection closed while the user still wanted it."""


class WSClient:
    """One WebSocket connection of one user."""

    def __init__(self, environment: Any, url: str, cookie: str, origin: str,
                 on_push: Callable[[dict[str, Any]], None]) -> None:
        self._events = environment.events
        self.url = url
        self.cookie = cookie
        self.origin = origin
        self.on_push = on_push
        self.ready: dict[str, Any] | None = None
        self._ws: websocket.WebSocket | None = None
        self._reader: gevent.Greenlet | None = None
        self._waiting: dict[str, AsyncResult] = {}
        self._refs = itertools.count(1)
        self._closing = False

    @property
    def connected(self) -> bool:
        return self._ws is not None and self._ws.connected and not self._closing

    def fire(self, name: str, started: float, length: int = 0,
             exception: Exception | None = None) -> None:
        self._events.request.fire(
            request_type=REQUEST_TYPE, name=name,
            response_time=(time.perf_counter() - started) * 1000, response_length=length,
            exception=exception, context={})

    def connect(self, timeout: float = ANSWER_TIMEOUT) -> dict[str, Any] | None:
        """Open the socket and wait for ``ready``; reported as ``connect``. Returns the
        ``ready`` frame, or None (the failure was reported)."""
        started = time.perf_counter()
        self._closing = False
        try:
            ws = websocket.create_connection(
                self.url, header=[f"Cookie: {self.cookie}"], origin=self.origin,
                timeout=timeout, enable_multithread=True)
            raw = ws.recv()
            frame = json.loads(raw)
            if frame.get("type") != "ready":
                ws.close()
                raise WSClosed(f"expected ready, got {frame.get('type')!r}")
        except Exception as exc:  # refused, 403, 4401, timeout: all are failures
            self.fire("connect", started, exception=exc)
            return None
        ws.settimeout(None)  # the reader waits as long as the connection lives
        self._ws = ws
        self.ready = frame
        self.fire("connect", started, len(raw))
        self._reader = gevent.spawn(self._read_loop, ws)
        return frame

    def request(self, frame: dict[str, Any], name: str,
                timeout: float = ANSWER_TIMEOUT) -> dict[str, Any] | None:
        """Send a frame that has a direct answer and wait for it; reported as ``name``.
        Returns the answer, or None (the failure was reported)."""
        started = time.perf_counter()
        if not self.connected:
            self.fire(name, started, exception=WSClosed("not connected"))
            return None
        ref = f"r{next(self._refs)}"
        answer = AsyncResult()
        self._waiting[ref] = answer
        try:
            self._ws.send(json.dumps({**frame, "ref": ref}))  # type: ignore[union-attr]
            reply = answer.get(timeout=timeout)
        except gevent.Timeout:
            self.fire(name, started, exception=TimeoutError(f"no answer in {timeout:g} s"))
            return None
        except Exception as exc:
            self.fire(name, started, exception=exc)
            return None
        finally:
            self._waiting.pop(ref, None)
        if reply.get("type") == "error":
            self.fire(name, started, exception=WSAnswerError(reply.get("code")))
            return None
        self.fire(name, started, len(json.dumps(reply)))
        return reply

    def send(self, frame: dict[str, Any]) -> bool:
        """Send a frame that has no direct answer (``read``, ``typing``)."""
        if not self.connected:
            return False
        try:
            self._ws.send(json.dumps(frame))  # type: ignore[union-attr]
        except Exception as exc:
            self.fire("connection", time.perf_counter(), exception=exc)
            return False
        return True

    def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            with contextlib.suppress(Exception):  # closing a broken socket may fail
                self._ws.close()
        for waiter in self._waiting.values():
            waiter.set_exception(WSClosed("closed by the user"))

    def _read_loop(self, ws: websocket.WebSocket) -> None:
        try:
            while True:
                raw = ws.recv()
                if not raw:
                    break
                frame = json.loads(raw)
                waiter = self._waiting.get(frame.get("ref") or "")
                if waiter is not None:
                    waiter.set(frame)
                else:
                    self.on_push(frame)
        except Exception as exc:
            closed: Exception = exc
        else:
            closed = WSClosed(f"closed by the server (code {ws.status})")
        if not self._closing:
            self._closing = True
            self.fire("connection", time.perf_counter(), exception=closed)
            for waiter in self._waiting.values():
                waiter.set_exception(WSClosed("connection lost"))


class WebSocketUser(User):
    """Abstract: a locust user holding one :class:`WSClient` in ``self.ws``."""

    abstract = True

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.ws: WSClient | None = None

    def ws_connect(self, base_url: str, cookie: str, origin: str) -> dict[str, Any] | None:
        url = base_url.replace("http", "ws", 1).rstrip("/") + "/ws"
        self.ws = WSClient(self.environment, url, cookie, origin, self.on_push)
        return self.ws.connect()

    def on_push(self, frame: dict[str, Any]) -> None:
        """A frame the server pushed (not an answer): override."""

    def report_delivery(self, name: str, sent_at: float, length: int = 0) -> None:
        """End-to-end latency of a message: ``sent_at`` is the sender's ``time.time()``
        (carried in the message), so across machines the clocks must agree."""
        self.environment.events.request.fire(
            request_type=REQUEST_TYPE, name=name,
            response_time=max(0.0, (time.time() - sent_at) * 1000), response_length=length,
            exception=None, context={})

    def on_stop(self) -> None:
        if self.ws is not None:
            self.ws.close()
