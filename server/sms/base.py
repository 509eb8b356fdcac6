"""The SMS provider interface: one call to send, and what its answers mean.

A provider raises :class:`PermanentFailure` when sending again cannot help (a 4xx:
bad number, opted out...) and :class:`TransientFailure` when it may (5xx, 429,
timeouts); the outbox worker retries only the latter.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import msgspec

# Twilio error 21610: "Attempt to send to unsubscribed recipient" (the number replied
# STOP to this sender): permanent, and the patient is marked opted out.
OPTED_OUT_ERROR = "21610"


class Sent(msgspec.Struct, frozen=True):
    sid: str  # the provider's message id (Twilio: SM…), used by status callbacks
    status: str  # the provider's first status (queued, accepted, sent)


class SendFailure(Exception):
    def __init__(self, error_code: str, message: str) -> None:
        super().__init__(message)
        self.error_code = error_code


class PermanentFailure(SendFailure):
    """Sending this SMS again cannot succeed."""


class TransientFailure(SendFailure):
    """The provider could not take it now; retry later."""


class SmsProvider(ABC):
    name: str

    @abstractmethod
    async def send(self, *, account_id: str, to: str, from_: str, body: str) -> Sent:
        """Hand one SMS to the provider.

        Raises:
            PermanentFailure: do not retry (``error_code`` says why).
            TransientFailure: retry with backoff.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
