"""Encryption at rest: master key loading, wrapped data keys, envelopes, blind index."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from server.crypto import (
    ENVELOPE_VERSION,
    KEY_BYTES,
    NONCE_BYTES,
    CryptoError,
    DecryptError,
    MasterKey,
    envelope_key_id,
    load_master_key,
    message_body_context,
    new_data_key,
    open_envelope,
    patient_field_context,
    seal,
)

MASTER = bytes(range(32))
DATA_KEY = AESGCM(bytes(range(100, 132)))
CONTEXT = message_body_context("acct-1", "conv-7", "msg-42", "staff-3", "secure", "outbound", 5)
PLAINTEXT = b"Patient reports chest pain since Tuesday; DOB 1970-01-01."
ENVELOPE = seal(DATA_KEY, 7, PLAINTEXT, CONTEXT)
HEADER_BYTES = 5  # version byte + uint32 key id


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


# --- load_master_key ----------------------------------------------------------------------

def test_master_key_from_base64_text() -> None:
    """SECURECHAT_MASTER_KEY holds base64 of 32 bytes; surrounding whitespace is fine."""
    key = os.urandom(32)
    assert load_master_key(b64(key), None, create=False) == key
    assert load_master_key(f"  {b64(key)}\n", None, create=False) == key


def test_master_key_from_a_file(tmp_path: Path) -> None:
    """SECURECHAT_MASTER_KEY_FILE holds the same base64 text (with a trailing newline)."""
    key = os.urandom(32)
    path = tmp_path / "master.key"
    path.write_text(b64(key) + "\n")
    assert load_master_key(None, str(path), create=False) == key


def test_the_variable_wins_over_the_file(tmp_path: Path) -> None:
    """When both are set, SECURECHAT_MASTER_KEY is used and the file is not read."""
    key = os.urandom(32)
    missing = tmp_path / "does-not-exist.key"
    assert load_master_key(b64(key), str(missing), create=True) == key
    assert not missing.exists()


def test_demo_mode_creates_a_private_key_file(tmp_path: Path) -> None:
    """create=True writes 32 random bytes, base64, to a new file readable by the owner only."""
    path = tmp_path / "data" / "master.key"
    key = load_master_key(None, str(path), create=True)
    assert len(key) == KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert base64.b64decode(path.read_text().strip()) == key


def test_demo_mode_reuses_an_existing_key_file(tmp_path: Path) -> None:
    """A second start in demo mode must not replace the key (old data would be lost)."""
    path = tmp_path / "master.key"
    first = load_master_key(None, str(path), create=True)
    assert load_master_key(None, str(path), create=True) == first
    assert load_master_key(None, str(path), create=False) == first


def test_a_missing_file_is_not_created_outside_demo_mode(tmp_path: Path) -> None:
    """Without create=True a missing key file is an error naming the variable and path."""
    path = tmp_path / "master.key"
    with pytest.raises(CryptoError) as info:
        load_master_key(None, str(path), create=False)
    assert "SECURECHAT_MASTER_KEY_FILE" in str(info.value)
    assert str(path) in str(info.value)
    assert not path.exists()


@pytest.mark.parametrize("file_value", [None, ""])
def test_no_key_configured_is_refused(file_value: str | None) -> None:
    """No key at all: the message names both variables and how to make a key."""
    with pytest.raises(CryptoError) as info:
        load_master_key(None, file_value, create=True)
    message = str(info.value)
    assert "SECURECHAT_MASTER_KEY " in message
    assert "SECURECHAT_MASTER_KEY_FILE" in message
    assert "base64" in message


@pytest.mark.parametrize("text", ["not base64!!", "%%%%", "QUJD$"])
def test_invalid_base64_is_refused_without_echoing_it(text: str) -> None:
    """A malformed key is refused, and the message does not repeat the secret."""
    with pytest.raises(CryptoError) as info:
        load_master_key(text, None, create=False)
    message = str(info.value)
    assert message.startswith("SECURECHAT_MASTER_KEY:")
    assert "not valid base64" in message
    assert text not in message


@pytest.mark.parametrize("length", [0, 16, 31, 33, 64])
def test_wrong_length_key_is_refused(length: int) -> None:
    """Only exactly 32 bytes (AES-256) is accepted; the message gives the length found."""
    text = b64(b"k" * length)
    with pytest.raises(CryptoError) as info:
        load_master_key(text, None, create=False)
    message = str(info.value)
    assert f"must be 32 bytes, got {length}" in message
    assert not text or text not in message


def test_a_bad_key_file_is_reported_with_its_path(tmp_path: Path) -> None:
    """Errors about the file name the file, so the operator knows which one to fix."""
    path = tmp_path / "master.key"
    path.write_text(b64(b"short") + "\n")
    with pytest.raises(CryptoError) as info:
        load_master_key(None, str(path), create=False)
    assert f"SECURECHAT_MASTER_KEY_FILE ({path})" in str(info.value)
    assert "got 5" in str(info.value)


def test_master_key_object_refuses_a_wrong_length() -> None:
    """MasterKey itself also checks the length."""
    with pytest.raises(CryptoError):
        MasterKey(b"\x00" * 16)


# --- wrapped data keys ---------------------------------------------------------------------

def test_wrap_unwrap_round_trip() -> None:
    """A data key wrapped for an account unwraps to the same bytes, and is not stored plain."""
    master = MasterKey(MASTER)
    dek = new_data_key()
    wrapped = master.wrap(dek, "acct-1")
    assert dek not in wrapped
    assert master.unwrap(wrapped, "acct-1") == dek


def test_a_wrapped_key_is_bound_to_its_account() -> None:
    """A wrapped key copied to another account's row does not unwrap there."""
    master = MasterKey(MASTER)
    wrapped = master.wrap(new_data_key(), "acct-1")
    with pytest.raises(DecryptError, match="acct-2"):
        master.unwrap(wrapped, "acct-2")


def test_a_wrapped_key_needs_the_same_master_key() -> None:
    """Another master key cannot unwrap the data keys."""
    wrapped = MasterKey(MASTER).wrap(new_data_key(), "acct-1")
    with pytest.raises(DecryptError):
        MasterKey(os.urandom(32)).unwrap(wrapped, "acct-1")


def test_wrapping_twice_gives_different_bytes() -> None:
    """Each wrap uses a fresh nonce."""
    master = MasterKey(MASTER)
    dek = new_data_key()
    assert master.wrap(dek, "acct-1") != master.wrap(dek, "acct-1")


@hypothesis_settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_a_wrapped_key_with_any_bit_flipped_does_not_unwrap(data: st.DataObject) -> None:
    """The wrapped data key is authenticated: any single-bit change is detected."""
    master = MasterKey(MASTER)
    wrapped = bytearray(master.wrap(bytes(32), "acct-1"))
    bit = data.draw(st.integers(0, len(wrapped) * 8 - 1), label="bit")
    wrapped[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecryptError):
        master.unwrap(bytes(wrapped), "acct-1")


@pytest.mark.parametrize("length", [0, 7])
def test_a_truncated_wrapped_key_raises_decrypt_error(length: int) -> None:
    """A damaged wrapped-key row is reported as a DecryptError naming the account."""
    master = MasterKey(MASTER)
    wrapped = master.wrap(new_data_key(), "acct-1")
    with pytest.raises(DecryptError):
        master.unwrap(wrapped[:length], "acct-1")


# --- envelopes -------------------------------------------------------------------------------

def test_seal_open_round_trip() -> None:
    """An envelope opens to the plaintext under the same key and context."""
    assert open_envelope(DATA_KEY, ENVELOPE, CONTEXT) == PLAINTEXT
    assert open_envelope(DATA_KEY, seal(DATA_KEY, 1, b"", CONTEXT), CONTEXT) == b""


def test_envelope_layout_and_key_id() -> None:
    """version | key id | 96-bit nonce | ciphertext + 16-byte tag; the key id is readable."""
    assert ENVELOPE[0] == ENVELOPE_VERSION
    assert envelope_key_id(ENVELOPE) == 7
    assert len(ENVELOPE) == HEADER_BYTES + NONCE_BYTES + len(PLAINTEXT) + 16
    assert envelope_key_id(seal(DATA_KEY, 2**32 - 1, b"x", CONTEXT)) == 2**32 - 1


def test_envelope_key_id_refuses_short_or_unknown_envelopes() -> None:
    """Too short to hold a tag, or an unknown version: DecryptError, not a wrong key id."""
    with pytest.raises(DecryptError, match="truncated"):
        envelope_key_id(ENVELOPE[: HEADER_BYTES + NONCE_BYTES + 15])
    with pytest.raises(DecryptError, match="version 3"):
        envelope_key_id(bytes([3]) + ENVELOPE[1:])


def test_the_ciphertext_does_not_contain_the_plaintext() -> None:
    """No 8-byte run of the plaintext appears anywhere in the envelope."""
    for start in range(len(PLAINTEXT) - 8):
        assert PLAINTEXT[start : start + 8] not in ENVELOPE


@pytest.mark.parametrize("other", [
    message_body_context("acct-1", "conv-7", "msg-43", "staff-3", "secure", "outbound", 5),
    message_body_context("acct-1", "conv-7", "msg-42", "patient-9", "secure", "outbound", 5),
    message_body_context("acct-2", "conv-7", "msg-42", "staff-3", "secure", "outbound", 5),
    message_body_context("acct-1", "conv-7", "msg-42", "staff-3", "sms", "outbound", 5),
    message_body_context("acct-1", "conv-7", "msg-42", "staff-3", "secure", "inbound", 5),
    message_body_context("acct-1", "conv-7", "msg-42", "staff-3", "secure", "outbound", 6),
    message_body_context("acct-1", "conv-7", "msg-42", "staff-3", "secure", "outbound", 5,
                         version=1),  # the row's placement left out
    patient_field_context("acct-1", "conv-7", "msg-42"),  # another table
])
def test_an_envelope_moved_to_another_context_does_not_open(other: str) -> None:
    """A ciphertext copied to another row or column fails authentication."""
    with pytest.raises(DecryptError) as info:
        open_envelope(DATA_KEY, ENVELOPE, other)
    assert "failed authentication" in str(info.value)


def test_decrypt_error_names_ids_but_not_the_plaintext() -> None:
    """The error helps an operator find the row and holds no PHI."""
    with pytest.raises(DecryptError) as info:
        open_envelope(DATA_KEY, ENVELOPE, message_body_context("acct-1", "c", "m", "s",
                                                               "sms", "inbound", 1))
    message = str(info.value)
    assert "msg/v2" in message and "acct-1" in message
    assert "chest pain" not in message


def test_an_envelope_does_not_open_under_another_data_key() -> None:
    """Only the data key that sealed it opens it."""
    with pytest.raises(DecryptError):
        open_envelope(AESGCM(new_data_key()), ENVELOPE, CONTEXT)


@hypothesis_settings(max_examples=300, deadline=None)
@given(bit=st.integers(0, len(ENVELOPE) * 8 - 1))
def test_flipping_any_bit_of_an_envelope_is_detected(bit: int) -> None:
    """Header, nonce, ciphertext and tag are all authenticated."""
    damaged = bytearray(ENVELOPE)
    damaged[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(DecryptError):
        open_envelope(DATA_KEY, bytes(damaged), CONTEXT)


@hypothesis_settings(max_examples=200, deadline=None)
@given(length=st.integers(0, len(ENVELOPE) - 1))
def test_a_truncated_envelope_does_not_open(length: int) -> None:
    """Cutting any number of bytes off the end is detected."""
    with pytest.raises(DecryptError):
        open_envelope(DATA_KEY, ENVELOPE[:length], CONTEXT)


def test_appended_bytes_are_detected() -> None:
    """Extra bytes after the tag are not ignored."""
    with pytest.raises(DecryptError):
        open_envelope(DATA_KEY, ENVELOPE + b"\x00", CONTEXT)


def test_two_seals_of_the_same_plaintext_differ() -> None:
    """Each seal draws a fresh nonce, so equal plaintexts are not visible as equal."""
    first = seal(DATA_KEY, 7, PLAINTEXT, CONTEXT)
    second = seal(DATA_KEY, 7, PLAINTEXT, CONTEXT)
    nonce = slice(HEADER_BYTES, HEADER_BYTES + NONCE_BYTES)
    assert first[nonce] != second[nonce]
    assert first[HEADER_BYTES + NONCE_BYTES :] != second[HEADER_BYTES + NONCE_BYTES :]


def test_ten_thousand_seals_use_ten_thousand_nonces() -> None:
    """Sanity check of nonce freshness: no repeats over 10,000 seals under one key."""
    nonces = {seal(DATA_KEY, 7, b"x", CONTEXT)[HEADER_BYTES : HEADER_BYTES + NONCE_BYTES]
              for _ in range(10_000)}
    assert len(nonces) == 10_000


# --- blind index -----------------------------------------------------------------------------

def test_blind_index_is_deterministic() -> None:
    """The same value gives the same index, also from a second MasterKey on the same key."""
    first = MasterKey(MASTER).blind_index("phone", "acct-1", "+16502530000")
    assert MasterKey(MASTER).blind_index("phone", "acct-1", "+16502530000") == first
    assert len(first) == 64 and int(first, 16) >= 0


def test_blind_index_differs_per_account_value_purpose_and_key() -> None:
    """Indexes cannot be joined across accounts, values, purposes or deployments."""
    master = MasterKey(MASTER)
    base = master.blind_index("phone", "acct-1", "+16502530000")
    others = {
        master.blind_index("phone", "acct-2", "+16502530000"),
        master.blind_index("phone", "acct-1", "+16502530001"),
        master.blind_index("email", "acct-1", "+16502530000"),
        MasterKey(os.urandom(32)).blind_index("phone", "acct-1", "+16502530000"),
    }
    assert base not in others
    assert len(others) == 4


@pytest.mark.parametrize("value", ["alice@example.org", "+16502530000", "Jane Q. Patient"])
def test_blind_index_does_not_contain_the_value(value: str) -> None:
    """The index reveals nothing readable about the value it stands for."""
    index = MasterKey(MASTER).blind_index("lookup", "acct-1", value)
    assert value not in index
    assert value.lower() not in index
    assert value.encode().hex() not in index
