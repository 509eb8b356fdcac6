"""What each client frame does: decode, limit, authorise, act, answer.

Every refusal is an ``error`` frame with a code from the protocol's table, echoing the
frame's ``ref`` and ``client_msg_id``; the connection lives on. Only ``send``,
``subscribe``, ``typing`` and ``read`` count as user activity, and from a patient only
``send`` and ``typing`` (pings do not: HIPAA automatic logoff counts what a person does,
not what a browser does by itself; the patient page sends ``read`` by itself whenever
a message arrives, and ``subscribe`` whenever it reconnects, so an untouched page would
otherwise never idle out while staff keep writing).
"""

from __future__ import annotations

import logging
import time

import msgspec
from sqlalchemy.exc import DBAPIError

from server import events
from server.audit import Actor
from server.clock import Clock
from server.errors import AppError, ErrorCode
from server.metrics import Metrics
from server.protocol import (
    Ack,
    AnyClientFrame,
    ErrorFrame,
    MessageStatus,
    Ping,
    Pong,
    Presence,
    Read,
    Send,
    Sender,
    SendRequest,
    Subscribe,
    Subscribed,
    Typing,
    Unsubscribe,
    client_frame_decoder,
    encode,
)
from server.realtime.connection import Connection
from server.realtime.node import Node
from server.services.sending import Sending
from server.services.streams import Streams

log = logging.getLogger("securechat.frames")

# Longest ``ref`` / ``client_msg_id`` echoed from a refused frame (their protocol limit).
MAX_ECHO = 64


class FrameHandler:
    def __init__(self, node: Node, streams: Streams, sending: Sending, clock: Clock,
                 metrics: Metrics) -> None:
        self._node = node
        self._streams = streams
        self._sending = sending
        self._clock = clock
        self._metrics = metrics

    async def opened(self, conn: Connection) -> None:
        """An authenticated socket joins this node's hub (a failed attach is undone)."""
        await self._node.hub.attach(conn)

    async def closed(self, conn: Connection) -> None:
        await self._node.hub.detach(conn)

    def written(self, delivered_ids: list[str]) -> None:
        """Secure messages now on the patient's socket: marked ``delivered``."""
        self._node.delivered(delivered_ids)

    async def handle(self, conn: Connection, text: str, ip: str | None) -> None:
        frame, problem = _decode(text)
        # Every frame spends a token, a refused one too: a flood of garbage is limited
        # like a flood of pings.
        wait_ms = conn.bucket.take(time.monotonic())
        if frame is None:
            ref, client_msg_id = _echo(text)
            if wait_ms:
                conn.push(encode(ErrorFrame(code=ErrorCode.RATE_LIMITED, message="slow down",
                                            retry_after_ms=wait_ms,
                                            client_msg_id=client_msg_id, ref=ref)))
                self._hub_metrics("invalid", "rate_limited")
            else:
                conn.push(encode(ErrorFrame(code=ErrorCode.INVALID_FRAME, message=problem,
                                            client_msg_id=client_msg_id, ref=ref)))
                self._hub_metrics("invalid", "invalid")
            return
        kind = type(frame).__name__.lower()
        client_msg_id = getattr(frame, "client_msg_id", None)
        if wait_ms:
            conn.push(encode(ErrorFrame(code=ErrorCode.RATE_LIMITED, message="slow down",
                                        retry_after_ms=wait_ms, client_msg_id=client_msg_id,
                                        ref=frame.ref)))
            self._hub_metrics(kind, "rate_limited")
            return
        try:
            await self._dispatch(conn, frame, Actor(conn.role, conn.user_id, ip))
            self._hub_metrics(kind, "ok")
        except AppError as exc:
            # A service's ``invalid_request`` (a blank body) is, on a socket, a bad frame.
            code = ErrorCode.INVALID_FRAME if exc.code is ErrorCode.INVALID_REQUEST \
                else exc.code
            self._refuse(conn, frame, code, exc.message, exc.retry_after_ms)
            self._hub_metrics(kind, str(code))
        except (DBAPIError, OSError, TimeoutError) as exc:
            log.warning("store unavailable for a frame", extra={"reason": type(exc).__name__})
            self._refuse(conn, frame, ErrorCode.UNAVAILABLE,
                         "could not store it now; resend with the same client_msg_id")
            self._hub_metrics(kind, "unavailable")
        except Exception:
            # A bug must not take the socket (or the node) down with it.
            log.exception("frame failed", extra={"frame": kind})
            self._refuse(conn, frame, ErrorCode.INTERNAL, "internal error; it was logged")
            self._hub_metrics(kind, "internal")

    async def _dispatch(self, conn: Connection, frame, actor: Actor) -> None:
        match frame:
            case Ping():
                conn.push(encode(Pong(ref=frame.ref)))
            case Subscribe():
                await self._subscribe(conn, frame, actor)
            case Unsubscribe():
                self._node.hub.unsubscribe(conn, frame.conversation_id)
            case Send():
                await self._send(conn, frame, actor)
            case Typing():
                await self._authorise(conn, frame.conversation_id)
                conn.last_activity = self._clock.now()
                if conn.typing.allow(frame.conversation_id, time.monotonic()):
                    self._node.publish(events.TypingEvent(
                        self._node.node_id, conn.account_id, frame.conversation_id,
                        conn.role, conn.user_id, "" if conn.is_patient else conn.user_name))
            case Read():
                await self._read(conn, frame)

    async def _subscribe(self, conn: Connection, frame: Subscribe, actor: Actor) -> None:
        await self._authorise(conn, frame.conversation_id)
        if not conn.is_patient:
            conn.last_activity = self._clock.now()
        await self._streams.audit_subscribe(conn.account_id, frame.conversation_id,
                                            frame.after_seq, actor)
        last_seq = await self._node.hub.subscribe(conn, frame.conversation_id, frame.after_seq)
        conn.push(encode(Subscribed(conversation_id=frame.conversation_id, last_seq=last_seq,
                                    ref=frame.ref)))
        if not conn.is_patient:
            conn.push(encode(Presence(
                conversation_id=frame.conversation_id,
                patient_online=self._node.hub.patient_online(frame.conversation_id))))

    async def _send(self, conn: Connection, frame: Send, actor: Actor) -> None:
        if conn.is_patient:
            await self._authorise(conn, frame.conversation_id)
        conn.last_activity = self._clock.now()
        sender = Sender(conn.role, conn.user_id, conn.user_name)
        result = await self._sending.send(
            conn.account_id, sender, frame.conversation_id,
            SendRequest(frame.client_msg_id, frame.body, frame.secure), actor)
        message = result.message
        conn.push(encode(Ack(client_msg_id=message.client_msg_id, message_id=message.id,
                             seq=message.seq, ref=frame.ref)))

    async def _read(self, conn: Connection, frame: Read) -> None:
        await self._authorise(conn, frame.conversation_id)
        if not conn.is_patient:  # a patient's read receipts are automatic (see above)
            conn.last_activity = self._clock.now()
        reader = Sender(conn.role, conn.user_id, conn.user_name)
        result = await self._streams.mark_read(frame.conversation_id, reader, frame.seq)
        if result.seq == 0:
            return  # nothing to read yet
        node = self._node.node_id
        self._node.publish(events.ReadEvent(
            node, conn.account_id, frame.conversation_id, result.seq, conn.role, conn.user_id,
            "" if conn.is_patient else conn.user_name, result.inbound_seen, result.last_seq,
            result.inbound_count, result.last_activity_at))
        for message_id in result.changed:
            self._node.publish(events.StatusEvent(node, conn.account_id, frame.conversation_id,
                                                 message_id, MessageStatus.READ, result.at,
                                                 channel="secure"))

    async def _authorise(self, conn: Connection, conversation_id: str) -> None:
        """A patient follows only its own conversation; staff only their account's.
        Checked on every frame that names a conversation (cached after the first)."""
        if conn.is_patient:
            if conversation_id != conn.conversation_id:
                raise AppError(ErrorCode.FORBIDDEN, "not your conversation")
            return
        if await self._streams.summary(conn.account_id, conversation_id) is None:
            raise AppError(ErrorCode.NOT_FOUND, "no such conversation")

    def _refuse(self, conn: Connection, frame, code: ErrorCode, message: str,
                retry_after_ms: int | None = None) -> None:
        conn.push(encode(ErrorFrame(code=code, message=message, retry_after_ms=retry_after_ms,
                                    client_msg_id=getattr(frame, "client_msg_id", None),
                                    ref=frame.ref)))

    def _hub_metrics(self, kind: str, outcome: str) -> None:
        self._metrics.ws_frames_in.labels(kind, outcome).inc()


# The store keeps positions as signed 64-bit integers; JSON (and msgspec) allow larger.
MAX_SEQ = 2**63 - 1


def _decode(text: str) -> tuple[AnyClientFrame | None, str]:
    """The frame, or None and what is wrong with it."""
    try:
        frame = client_frame_decoder.decode(text)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return None, str(exc)
    except RecursionError:  # nesting deeper than the decoder follows
        return None, "JSON is nested too deeply"
    for name in ("after_seq", "seq"):
        if getattr(frame, name, 0) > MAX_SEQ:
            return None, f"Expected `int` <= {MAX_SEQ} - at `$.{name}`"
    return frame, ""


def _echo(text: str) -> tuple[str | None, str | None]:
    """The ``ref`` and ``client_msg_id`` of a refused frame, when it has usable ones, so
    the client can tell which of its frames the error answers."""
    try:
        value = msgspec.json.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None, None
    if not isinstance(value, dict):
        return None, None
    return _short_str(value.get("ref")), _short_str(value.get("client_msg_id"))


def _short_str(value: object) -> str | None:
    return value if isinstance(value, str) and len(value) <= MAX_ECHO else None
