"""Phone numbers: E.164 normalisation, PHI-free errors, and masking."""

from __future__ import annotations

import re

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from server.errors import AppError, ErrorCode
from server.phones import mask, to_e164

E164 = re.compile(r"\+[1-9]\d{1,14}")


def rejection(raw: str, region: str = "US") -> AppError:
    with pytest.raises(AppError) as info:
        to_e164(raw, region)
    return info.value


@pytest.mark.parametrize("raw", [
    "(650) 253-0000", "650-253-0000", "650.253.0000", "650 253 0000", "6502530000",
    "1 (650) 253-0000", "1-650-253-0000", "+1 650 253 0000", "+16502530000",
    " (650)253-0000 ", "tel:+1-650-253-0000",
])
def test_us_numbers_written_several_ways_normalise_to_one(raw: str) -> None:
    """With default region US, every usual way of writing a US number gives one E.164."""
    assert to_e164(raw, "US") == "+16502530000"


@pytest.mark.parametrize("raw", ["+44 20 7031 3000", "+442070313000", "+44 (0)20 7031 3000",
                                 "011 44 20 7031 3000"])  # 011: US exit code
def test_international_numbers_keep_their_country(raw: str) -> None:
    """A +44 number stays British even though the default region is US."""
    assert to_e164(raw, "US") == "+442070313000"


def test_the_default_region_reads_national_numbers() -> None:
    """A number without a country code is read in the configured region."""
    assert to_e164("020 7031 3000", "GB") == "+442070313000"


@pytest.mark.parametrize("raw", ["", "hello", "call me", "+", "☎"])
def test_garbage_is_an_invalid_request(raw: str) -> None:
    """Text that is not a phone number is refused as invalid_request (HTTP 422)."""
    error = rejection(raw)
    assert error.code == ErrorCode.INVALID_REQUEST
    assert error.http_status == 422


@pytest.mark.parametrize("raw", [
    "+1 123 456 7890",  # no US area code starts with 1
    "12345",  # too short for the US
    "020 7031 3000",  # a British national number read as American
    "+44 20 7031 300",  # one digit short
    "+999 1234 5678",  # no such country code
])
def test_invalid_numbers_are_refused_without_repeating_them(raw: str) -> None:
    """Numbers that cannot exist are refused; the message holds none of the digits (PHI)."""
    error = rejection(raw)
    assert error.code == ErrorCode.INVALID_REQUEST
    digits = re.sub(r"\D", "", raw)
    assert digits not in str(error)
    assert not re.search(r"\d", error.message)


@hypothesis_settings(max_examples=200, deadline=None)
@given(raw=st.text(alphabet="0123456789 +-()./#xabcEXT", max_size=40) | st.text(max_size=40))
def test_any_input_gives_e164_or_a_phi_free_invalid_request(raw: str) -> None:
    """Whatever is typed: an E.164 string, or invalid_request with no digits in the message."""
    try:
        result = to_e164(raw, "US")
    except AppError as error:
        assert error.code == ErrorCode.INVALID_REQUEST
        assert not re.search(r"\d", error.message)
    else:
        assert E164.fullmatch(result)
        assert to_e164(result, "US") == result  # normalising twice changes nothing


@pytest.mark.parametrize(("e164", "expected"), [
    ("+16502531234", "+1 ••• •••• 1234"),
    ("+442070319876", "+44 ••• •••• 9876"),
])
def test_mask_shows_country_code_and_last_four(e164: str, expected: str) -> None:
    """A masked number shows only where it is from and its last four digits."""
    assert mask(e164) == expected


@pytest.mark.parametrize("region", ["US", "GB", "DE", "FR", "JP", "AU", "BR", "IN", "MX"])
def test_mask_hides_every_other_digit(region: str) -> None:
    """The only digits in a masked number are the country code and the last four."""
    number = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    masked = mask(e164)
    assert re.sub(r"\D", "", masked) == f"{number.country_code}{e164[-4:]}"
    assert str(number.national_number) not in masked
