"""The password blocklist (server/password_blocklist.py), table-driven: what a guesser
tries first is refused, real passphrases in any script are not, and it stays cheap for
the longest allowed password."""

from __future__ import annotations

import time

import pytest

from server.password_blocklist import common_passwords, refusal

REFUSED = [
    "aaaaaaaaaaaaaaa",              # one character repeated
    "abababababababab",             # three or fewer distinct characters
    "123456789012345",              # digits only (nothing left once the ends go)
    "zyxwvutsrqponmlk",             # the alphabet backwards
    "qwertyuiopasdfgh",             # two keyboard rows
    "1qaz2wsx3edc4rfv",             # a keyboard walk
    "passwordpassword",             # a common password repeated
    "Password123456!",              # a common password with digits and a symbol
    "p@ssw0rd1234567",              # ... with the usual substitutions
    "Summer2024Summer2024",         # a short unit repeated
    "sunshine butterfly",           # two common words
    "iloveyouforever!!",            # a common phrase
    "nurse clinic 2024!!",          # clinic words
    "correct horse battery staple",  # the famous example, on every breach list
]
ACCEPTED = [
    "velvet tundra pilots ninety lanterns",
    "my cat eats purple socks",
    "tr0ub4dor&3 horse 1",
    "東京の夜空に輝く星を見上げて歩いた道のり",
    "Grüße aus der Pflegestation 7b",
]


@pytest.mark.parametrize("password", REFUSED)
def test_guessable_passwords_are_refused(password: str) -> None:
    assert refusal(password) is not None


@pytest.mark.parametrize("password", ACCEPTED)
def test_real_passphrases_are_accepted(password: str) -> None:
    assert refusal(password) is None


@pytest.mark.parametrize(("password", "context"), [
    ("maria lopez rules the day", ("maria.lopez@clinic.org",)),   # the email's local part
    ("call maria.lopez@clinic.org now", ("maria.lopez@clinic.org",)),
    ("grand st clinic forever", ("Grand St Clinic",)),            # the clinic, spaced
    ("MARIALOPEZ and more words", ("Maria Lopez",)),              # the name, any case
])
def test_context_words_are_refused(password: str, context: tuple[str, ...]) -> None:
    assert "clinic's name" in (refusal(password, context) or "")


def test_short_context_words_do_not_refuse_everything() -> None:
    """A name under 4 characters ("Ann") is not looked for: too many passphrases hold it."""
    assert refusal("planning a fine annual trip", ("Ann", "ann@x.org")) is None


def test_the_list_ships_with_the_package_and_is_small() -> None:
    words = common_passwords()
    assert {"password", "qwerty", "iloveyou", "letmein"} <= words
    assert 300 < len(words) < 5000
    assert all(word == word.lower().strip() for word in words)


def test_the_longest_password_is_checked_quickly() -> None:
    start = time.perf_counter()
    for password in ("ab" * 512, "x" * 1021 + "abc", "velvet " * 146):
        refusal(password)
    assert time.perf_counter() - start < 0.5
