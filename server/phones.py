"""Phone numbers: E.164 normalisation and masking (pure)."""

from __future__ import annotations

import phonenumbers

from server.errors import invalid


def to_e164(raw: str, default_region: str) -> str:
    """Normalise a phone number typed by a person to E.164.

    Raises:
        AppError(invalid_request): not a possible, valid number. The message never
            repeats the number (it is PHI).
    """
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        raise invalid("phone: not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise invalid("phone: not a valid phone number for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask(e164: str) -> str:
    """Country code and last four digits only, e.g. ``+1 ••• •••• 0123``."""
    number = phonenumbers.parse(e164)
    return f"+{number.country_code} ••• •••• {e164[-4:]}"


def readable(e164: str) -> str:
    """The whole number as people write it, e.g. ``+1 415-555-0123`` (demo pages only:
    everywhere else a phone is shown masked)."""
    return phonenumbers.format_number(phonenumbers.parse(e164),
                                      phonenumbers.PhoneNumberFormat.INTERNATIONAL)
