"""Which numbers SMS leave from, and which no clinic may hold as its own.

A clinic either has a number of its own (assigned by the operator, see
``securechat set-sms-number``) or texts from the shared sending number: ``TWILIO_FROM``,
or the simulator's number when that is unset. Replies to a clinic's own number belong to
that clinic; replies to the shared number belong to whichever clinic texted that phone
from it (``server/services/inbound_sms.py``). So the shared number must never become one clinic's
own: that clinic would receive every other clinic's replies.
"""

from __future__ import annotations

from server import phones
from server.errors import AppError
from server.settings import Settings

# Where an SMS comes from when the account has no number of its own and TWILIO_FROM is
# unset (simulator). Twilio's magic "valid From" test number, so no one can own it.
SIMULATOR_FROM = "+15005550006"


def shared_number(settings: Settings) -> str:
    """The E.164 number clinics without their own number send from."""
    return _e164(settings.twilio_from, settings.default_region) or SIMULATOR_FROM


def reserved_numbers(settings: Settings) -> frozenset[str]:
    """Numbers no account may hold as its own: the shared number in every mode (so a
    switch between simulator and Twilio cannot turn one into a clinic's number)."""
    return frozenset({shared_number(settings), SIMULATOR_FROM})


def _e164(number: str | None, region: str) -> str | None:
    if not number:
        return None
    try:
        return phones.to_e164(number, region)
    except AppError:  # an unreadable TWILIO_FROM is Twilio's to refuse; keep it as given
        return number
