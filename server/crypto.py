"""Encryption at rest: envelopes, wrapped data keys and the blind index.

Pure apart from :func:`load_master_key`. The hierarchy:

* the **master key** (32 bytes, from ``MASTER_KEY``/``MASTER_KEY_FILE``) never touches
  the database; HKDF derives from it a key-encryption key (KEK), a blind-index key and
  the audit log's MAC key;
* each account has **data keys** (DEKs), stored only wrapped by the KEK; the newest one
  encrypts, every one still decrypts (``securechat rotate-key`` adds one);
* every PHI value is an **envelope** ``version | key_id | nonce | ciphertext+tag``
  (AES-256-GCM, fresh 96-bit random nonce). The associated data is the envelope header
  plus a *context* naming the row and column (for a message body, also its channel,
  direction and seq), so a ciphertext copied to another row, a row relabelled, or a
  ciphertext changed by one bit, fails to open.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import struct
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# 2: a message body's context also names its channel, direction and seq (issue 13).
# Version 1 envelopes (written before) still open, under the context they were sealed
# for; the version byte is in the associated data, so it cannot be changed to downgrade.
ENVELOPE_VERSION = 2
READABLE_VERSIONS = (1, 2)
_HEADER = struct.Struct(">BI")  # version (1 byte), data key id (uint32)
NONCE_BYTES = 12  # GCM's native 96-bit nonce (NIST SP 800-38D 8.2.2: random IVs)
KEY_BYTES = 32  # AES-256


class CryptoError(Exception):
    """Key material is missing or malformed."""


class DecryptError(Exception):
    """A ciphertext failed authentication: altered, truncated, or moved from another row.

    The message names the context (ids only, never PHI) so an operator can find the row.
    """


# --- master key -------------------------------------------------------------------------

def load_master_key(key_b64: str | None, key_file: str | None, *, create: bool) -> bytes:
    """Read the 32-byte master key from the environment value or the key file.

    Args:
        key_b64: ``SECURECHAT_MASTER_KEY``, base64 of 32 random bytes.
        key_file: ``SECURECHAT_MASTER_KEY_FILE``, a file holding the same base64 text.
        create: demo mode only: create ``key_file`` (mode 0600) when it does not exist.

    Raises:
        CryptoError: no key is configured, or it is not base64 of exactly 32 bytes.
    """
    source = "SECURECHAT_MASTER_KEY"
    text = key_b64
    if text is None and key_file:
        path = Path(key_file)
        source = f"SECURECHAT_MASTER_KEY_FILE ({path})"
        if not path.exists() and create:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(base64.b64encode(os.urandom(KEY_BYTES)).decode() + "\n")
        try:
            text = path.read_text()
        except OSError as exc:
            raise CryptoError(f"{source}: cannot read the master key: {exc.strerror}") from None
    if text is None:
        raise CryptoError(
            "no master key: set SECURECHAT_MASTER_KEY or SECURECHAT_MASTER_KEY_FILE "
            "(32 random bytes, base64; e.g. `head -c32 /dev/urandom | base64`)"
        )
    try:
        key = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError(f"{source}: the master key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise CryptoError(f"{source}: the master key must be 32 bytes, got {len(key)}")
    return key


class MasterKey:
    """Derives the KEK and the blind-index key; wraps and unwraps data keys."""

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise CryptoError("the master key must be 32 bytes")
        self._kek = AESGCM(_derive(key, b"securechat/kek/v1"))
        self._blind_key = _derive(key, b"securechat/blind-index/v1")
        # Keys the audit log's hash chain (server/audit.py): HMAC-SHA256 links.
        self.audit_key = _derive(key, b"securechat/audit-mac/v1")

    def wrap(self, data_key: bytes, account_id: str) -> bytes:
        """Encrypt a data key under the KEK, bound to its account."""
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._kek.encrypt(nonce, data_key, _dek_context(account_id))

    def unwrap(self, wrapped: bytes, account_id: str) -> bytes:
        if len(wrapped) < NONCE_BYTES + 16:
            raise DecryptError(f"data key of account {account_id} is truncated")
        try:
            return self._kek.decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _dek_context(account_id)
            )
        except InvalidTag:
            raise DecryptError(
                f"data key of account {account_id} does not open under this master key"
            ) from None

    def blind_index(self, purpose: str, account_id: str, value: str) -> str:
        """Keyed HMAC of a normalised value, to find rows by it without storing it."""
        message = f"{purpose}/v1|{account_id}|{value}".encode()
        return hmac.new(self._blind_key, message, hashlib.sha256).hexdigest()


def bearer_token() -> tuple[str, str]:
    """A 256-bit URL-safe token (a session cookie, a secure link) and the digest the
    store keeps instead of it, so a copy of the store opens nothing."""
    token = secrets.token_urlsafe(32)
    return token, token_digest(token)


def token_digest(token: str) -> str:
    """SHA-256 hex of a bearer token: unsalted on purpose, as the token itself holds
    256 random bits and the store must find its row by it."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_data_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def _derive(master: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(master)


def _dek_context(account_id: str) -> bytes:
    return f"dek/v1|{account_id}".encode()


# --- envelopes --------------------------------------------------------------------------

def seal(key: AESGCM, key_id: int, plaintext: bytes, context: str) -> bytes:
    """Encrypt ``plaintext`` into an envelope bound to ``context`` (the row it lives in)."""
    header = _HEADER.pack(ENVELOPE_VERSION, key_id)
    nonce = os.urandom(NONCE_BYTES)
    return header + nonce + key.encrypt(nonce, plaintext, header + context.encode())


def envelope_key_id(envelope: bytes) -> int:
    """The id of the data key that sealed ``envelope``.

    Raises:
        DecryptError: the envelope is too short or of an unknown version.
    """
    if len(envelope) < _HEADER.size + NONCE_BYTES + 16:
        raise DecryptError("envelope is truncated")
    version, key_id = _HEADER.unpack_from(envelope)
    if version not in READABLE_VERSIONS:
        raise DecryptError(f"envelope version {version} is not supported")
    return key_id


def envelope_version(envelope: bytes) -> int:
    """The format version ``envelope`` was sealed under (its first byte; checked when it
    is opened), which says which context a message body was bound to."""
    return envelope[0] if envelope else 0


def open_envelope(key: AESGCM, envelope: bytes, context: str) -> bytes:
    """Decrypt an envelope sealed by :func:`seal` for the same ``context``.

    Raises:
        DecryptError: the envelope was altered, truncated or belongs to another context.
    """
    envelope_key_id(envelope)
    header = envelope[: _HEADER.size]
    nonce = envelope[_HEADER.size : _HEADER.size + NONCE_BYTES]
    try:
        return key.decrypt(nonce, envelope[_HEADER.size + NONCE_BYTES :],
                           header + context.encode())
    except InvalidTag:
        raise DecryptError(
            f"ciphertext for {context.split('|', 1)[0]} failed authentication "
            f"({_ids(context)}): it was altered or moved from another row"
        ) from None


def _ids(context: str) -> str:
    """The ids in a context, for error messages (contexts never hold PHI)."""
    return ", ".join(context.split("|")[1:])


# --- contexts: which row and column a ciphertext belongs to -------------------------------

def message_body_context(account_id: str, conversation_id: str, message_id: str,
                         sender: str, channel: str, direction: str, seq: int, *,
                         version: int = ENVELOPE_VERSION) -> str:
    """A message body's place: its row, sender, channel, direction and seq, so a secure
    message relabelled as an SMS (or inbound, or moved in the thread) fails to open.

    ``version`` is the envelope's (:func:`envelope_version`): version 1 bodies were
    bound to their row and sender only, and are read with that context.
    """
    if version == 1:
        return f"msg/v1|{account_id}|{conversation_id}|{message_id}|{sender}"
    return (f"msg/v2|{account_id}|{conversation_id}|{message_id}|{sender}|{channel}|"
            f"{direction}|{seq}")


def patient_field_context(account_id: str, patient_id: str, field: str) -> str:
    return f"patient/v1|{account_id}|{patient_id}|{field}"
