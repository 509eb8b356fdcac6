"""Send = store, then publish: the one path the WebSocket and the REST API share."""

from __future__ import annotations

from server import events
from server.audit import Actor
from server.metrics import Metrics
from server.notify import Notifier
from server.protocol import Sender, SendRequest
from server.services.messaging import Messaging, SendResult


def message_event(node: str, account_id: str, result: SendResult) -> events.MessageEvent:
    """The publication of a stored message: ciphertext and ids, and a staff sender's
    name (not PHI); a patient's name never travels."""
    message = result.message
    sender = message.sender
    return events.MessageEvent(
        node, account_id, message.conversation_id, message.id, message.seq,
        message.client_msg_id, message.direction, message.channel, sender.kind, sender.id,
        sender.name if sender.kind == "staff" else "", result.envelope, message.created_at,
        message.status, result.inbound_count)


class Sending:
    def __init__(self, notifier: Notifier, messaging: Messaging, metrics: Metrics) -> None:
        self._metrics = metrics
        self._notifier = notifier
        self._messaging = messaging

    async def send(self, account_id: str, sender: Sender, conversation_id: str,
                   request: SendRequest, actor: Actor) -> SendResult:
        """Store the message, then publish it: the publication happens right after its
        transaction commits, inside the node's writer, so a conversation's messages are
        published in seq order even when one batch holds several; the caller acks after
        this returns."""
        result = await self._messaging.send(
            account_id, sender, conversation_id, request, actor,
            patient_online=self._notifier.patient_online(conversation_id),
            on_stored=lambda stored: self._publish(account_id, stored))
        if not result.duplicate:
            self._metrics.messages_stored.labels(result.message.channel).inc()
            if result.sms_queued:
                self._notifier.wake_sms()  # an SMS or a notification is waiting
        return result

    def _publish(self, account_id: str, stored: SendResult) -> None:
        """The message; then, when its status has a reason (``not_notified``:
        ``opted_out``), a ``status`` frame carrying it, as the message frame has none."""
        self._notifier.publish(message_event(self._notifier.node_id, account_id, stored))
        if stored.status_error is not None:
            message = stored.message
            self._notifier.publish(events.StatusEvent(
                self._notifier.node_id, account_id, message.conversation_id, message.id,
                message.status, message.created_at, stored.status_error,
                channel=message.channel))
