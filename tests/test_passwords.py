"""Passwords: NIST 800-63B policy, argon2id hashing, NFKC, and bounded hashing capacity."""

from __future__ import annotations

import asyncio
import threading
import unicodedata

import pytest
from argon2 import PasswordHasher
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from server.errors import AppError, ErrorCode
from server.password_blocklist import refusal
from server.passwords import (
    MAX_PASSWORD_BYTES,
    MIN_PASSWORD_CHARS,
    PasswordHashing,
    check_policy,
    normalise,
)
from server.settings import from_env
from tests.conftest import settings_for_tests

PASSPHRASE = "velvet tundra pilots ninety lanterns"
FIFTEEN = "velvet tundra p"  # exactly MIN_PASSWORD_CHARS, and not guessable
# 64 characters of mixed scripts, accents and an emoji.
UNICODE_PASSPHRASE = "Grüße aus Zürich — 東京の夜 🌙 παράθυρο открытое окно ñandú ¡olé olé!"
GATED = "the password whose hashing waits for the test"


def fast_hasher() -> PasswordHasher:
    """argon2id with small parameters, so tests stay quick."""
    return PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)


class RecordingHasher(PasswordHasher):
    """Counts verify calls, to prove when hashing work happens and when it does not."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8192, parallelism=1)
        self.verify_calls = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verify_calls += 1
        return super().verify(hash, password)


class GatedHasher(PasswordHasher):
    """Hashing GATED blocks until the test releases it; records peak concurrency."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8192, parallelism=1)
        self.entered = threading.Event()
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.active = 0
        self.peak = 0

    def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
        with self._lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
        try:
            if password == GATED:
                self.entered.set()
                if not self.release.wait(timeout=30):
                    raise TimeoutError("the test never released the hasher")
            return super().hash(password, salt=salt)
        finally:
            with self._lock:
                self.active -= 1


def policy_error(password: str) -> AppError:
    with pytest.raises(AppError) as info:
        check_policy(password)
    return info.value


# --- policy ---------------------------------------------------------------------------------

def test_passwords_shorter_than_15_characters_are_refused() -> None:
    """NIST SP 800-63B-4: single-factor passwords need at least 15 characters."""
    error = policy_error(FIFTEEN[:-1])
    assert error.code == ErrorCode.INVALID_REQUEST
    assert "15" in error.message
    check_policy(FIFTEEN)


def test_passwords_over_1024_bytes_are_refused() -> None:
    """The limit is in bytes: 1,024 ASCII characters pass, one more does not."""
    longest = (PASSPHRASE * 40)[:MAX_PASSWORD_BYTES - 3] + " up"
    check_policy(longest)
    assert policy_error(longest + "!").code == ErrorCode.INVALID_REQUEST


def test_the_length_cap_counts_bytes_not_characters() -> None:
    """513 two-byte characters are 1,026 bytes: refused although only 513 characters."""
    password = "é" * 513
    assert len(password) < MAX_PASSWORD_BYTES < len(password.encode())
    assert "1024 bytes" in policy_error(password).message


def test_a_64_character_unicode_passphrase_is_accepted() -> None:
    """No composition rules: any long passphrase in any script is fine."""
    assert len(UNICODE_PASSPHRASE) == 64
    check_policy(UNICODE_PASSPHRASE)


@hypothesis_settings(max_examples=200, deadline=None)
@given(password=st.text(max_size=40) | st.text(alphabet="aé東🌙", min_size=250, max_size=600))
def test_policy_is_the_two_length_rules_then_the_blocklist(password: str) -> None:
    """Refused when under 15 characters (after NFKC) or over 1,024 bytes; within them,
    refused only by the blocklist, and then with its reason."""
    within = (len(unicodedata.normalize("NFKC", password)) >= MIN_PASSWORD_CHARS
              and len(password.encode()) <= MAX_PASSWORD_BYTES)
    try:
        check_policy(password)
    except AppError as error:
        assert error.code == ErrorCode.INVALID_REQUEST
        assert not within or error.message == refusal(password)
    else:
        assert within and refusal(password) is None


# --- hashing and verifying ---------------------------------------------------------------------

async def test_hash_is_argon2id_and_salted() -> None:
    """Hashes use argon2id with the library defaults, and a fresh salt each time."""
    hashing = PasswordHashing(concurrency=2, queue=2)
    first = await hashing.hash(PASSPHRASE)
    assert first.startswith("$argon2id$")
    assert "m=65536,t=3,p=4" in first
    assert PASSPHRASE not in first
    assert await hashing.hash(PASSPHRASE) != first


async def test_verify_accepts_the_right_password_and_refuses_a_wrong_one() -> None:
    """The stored hash opens with its password only."""
    hashing = PasswordHashing(concurrency=2, queue=2, hasher=fast_hasher())
    stored = await hashing.hash(PASSPHRASE)
    assert await hashing.verify(stored, PASSPHRASE) is True
    assert await hashing.verify(stored, PASSPHRASE + "!") is False
    assert await hashing.verify(stored, PASSPHRASE.upper()) is False


async def test_verify_refuses_a_malformed_stored_hash() -> None:
    """A corrupt hash column is a failed login, not a crash."""
    hashing = PasswordHashing(concurrency=2, queue=2, hasher=fast_hasher())
    assert await hashing.verify("not-an-argon2-hash", PASSPHRASE) is False


async def test_unknown_user_is_refused_after_the_same_work() -> None:
    """verify(None, ...) is False but still runs one argon2 verify (no timing oracle)."""
    hasher = RecordingHasher()
    hashing = PasswordHashing(concurrency=2, queue=2, hasher=hasher)
    assert await hashing.verify(None, PASSPHRASE) is False
    assert hasher.verify_calls == 1


async def test_unknown_user_is_refused_even_with_the_dummy_password() -> None:
    """The text used for the timing dummy is public: it must not log anyone in."""
    hashing = PasswordHashing(concurrency=2, queue=2, hasher=fast_hasher())
    assert await hashing.verify(None, "not a password: used to even out timing") is False


async def test_an_empty_stored_hash_never_matches() -> None:
    """A blank password_hash column must not accept the (public) dummy password."""
    hashing = PasswordHashing(concurrency=2, queue=2, hasher=fast_hasher())
    assert await hashing.verify("", "not a password: used to even out timing") is False


@pytest.mark.parametrize(("typed_at_signup", "typed_at_login"), [
    ("ﬁrst light over the ﬁeld", "first light over the field"),  # U+FB01 ligature
    ("Ｃａｆé at midnight again", "Café at midnight again"),  # fullwidth letters
    ("Cafe\u0301 at midnight again", "Caf\u00e9 at midnight again"),  # decomposed accent
    ("room ① of the long hallway", "room 1 of the long hallway"),  # circled digit
])
async def test_nfkc_equivalent_passwords_verify(typed_at_signup: str,
                                                typed_at_login: str) -> None:
    """The same password typed on two keyboards matches (NFKC, as 800-63B asks)."""
    assert typed_at_signup != typed_at_login
    assert normalise(typed_at_signup) == normalise(typed_at_login)
    hasher = fast_hasher()
    hashing = PasswordHashing(concurrency=2, queue=2, hasher=hasher)
    stored = await hashing.hash(typed_at_signup)
    assert await hashing.verify(stored, typed_at_login) is True
    assert hasher.verify(stored, normalise(typed_at_signup))  # what is stored is the NFKC form


def test_the_ligature_case_really_needs_compatibility_normalisation() -> None:
    """NFC alone would not make "ﬁ" equal "fi": the test above exercises NFKC itself."""
    assert unicodedata.normalize("NFC", "ﬁ") != "fi"
    assert normalise("ﬁ") == "fi"


async def test_an_over_long_password_is_refused_without_hashing() -> None:
    """More than 1,024 bytes: False at once, no argon2 work (a cheap DoS is not possible)."""
    hasher = RecordingHasher()
    hashing = PasswordHashing(concurrency=2, queue=2, hasher=hasher)
    stored = await hashing.hash(PASSPHRASE)
    assert await hashing.verify(stored, "a" * (MAX_PASSWORD_BYTES + 1)) is False
    assert await hashing.verify(None, "é" * 600) is False
    assert hasher.verify_calls == 0
    assert await hashing.verify(stored, "a" * MAX_PASSWORD_BYTES) is False  # at the cap: hashed
    assert hasher.verify_calls == 1


async def test_default_settings_hash_at_the_production_cost() -> None:
    """The settings' defaults are the production cost (argon2id, 64 MiB, t=3, p=4), and
    verifying reads the cost from the hash: one made at the tests' cheap cost still opens
    under the production settings (and is due for an upgrade)."""
    production = PasswordHashing.from_settings(from_env({}))
    stored = await production.hash(PASSPHRASE)
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert await production.verify(stored, PASSPHRASE) is True
    assert await production.verify(stored, "not the passphrase, but long enough") is False
    cheap = await PasswordHashing.from_settings(settings_for_tests()).hash(PASSPHRASE)
    assert cheap.startswith("$argon2id$v=19$m=8,t=1,p=1$")
    assert await production.verify(cheap, PASSPHRASE) is True
    assert await production.verify(cheap, "not the passphrase, but long enough") is False
    assert production.needs_rehash(cheap) is True


def test_needs_rehash_for_weaker_parameters() -> None:
    """Hashes made with older, weaker parameters are flagged for upgrade at next login."""
    hashing = PasswordHashing(concurrency=1, queue=0)
    weak = PasswordHasher(time_cost=1, memory_cost=8192).hash(PASSPHRASE)
    assert hashing.needs_rehash(weak) is True
    assert hashing.needs_rehash(PasswordHasher().hash(PASSPHRASE)) is False


# --- capacity -----------------------------------------------------------------------------------

async def test_a_hash_beyond_capacity_is_rate_limited() -> None:
    """concurrency=1, queue=0: while one hash runs, the next caller gets rate_limited (429)."""
    hasher = GatedHasher()
    hashing = PasswordHashing(concurrency=1, queue=0, hasher=hasher)
    first = asyncio.create_task(hashing.hash(GATED))
    try:
        assert await asyncio.to_thread(hasher.entered.wait, 30)
        # A broken limit would queue this call behind the gate: the timeout fails the test.
        async with asyncio.timeout(10):
            with pytest.raises(AppError) as info:
                await hashing.hash(PASSPHRASE)
        assert info.value.code == ErrorCode.RATE_LIMITED
        assert info.value.http_status == 429
        assert info.value.retry_after_ms is not None and info.value.retry_after_ms > 0
        async with asyncio.timeout(10):
            with pytest.raises(AppError) as info:
                await hashing.verify(None, PASSPHRASE)
        assert info.value.code == ErrorCode.RATE_LIMITED
    finally:
        hasher.release.set()
    assert (await first).startswith("$argon2id$")
    assert (await hashing.hash(PASSPHRASE)).startswith("$argon2id$")  # capacity came back


async def test_the_queue_admits_waiters_up_to_its_length() -> None:
    """concurrency=1, queue=1: one runs, one waits (not in parallel), a third is refused."""
    hasher = GatedHasher()
    hashing = PasswordHashing(concurrency=1, queue=1, hasher=hasher)
    running = asyncio.create_task(hashing.hash(GATED))
    waiting = asyncio.create_task(hashing.hash(PASSPHRASE))
    try:
        # While this waits, both tasks take their first step: one hashes, one queues.
        assert await asyncio.to_thread(hasher.entered.wait, 30)
        async with asyncio.timeout(10):
            with pytest.raises(AppError) as info:
                await hashing.hash(PASSPHRASE)
        assert info.value.code == ErrorCode.RATE_LIMITED
        assert not waiting.done()
    finally:
        hasher.release.set()
    results = await asyncio.gather(running, waiting)
    assert all(result.startswith("$argon2id$") for result in results)
    assert hasher.peak == 1
