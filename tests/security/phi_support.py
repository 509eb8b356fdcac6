"""Canaries and the places they must not reach, for the PHI leak check (issue 8).

A canary is a unique string put in one PHI field; :class:`Canaries` knows every form in
which each may show up (a phone in E.164, national and digits-only form, a date in ISO, US
and digits-only form). The capture helpers record what left the nodes: every command a
private Redis saw (``MONITOR``), its keys at the end, and every cell of every table of the
database. :func:`leaks` names each canary found in a captured text.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import date

import phonenumbers
import redis.asyncio as aioredis
from sqlalchemy import MetaData, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from tests.sms.support import new_phone

# Random parts are drawn from uppercase letters that are not hex digits, so no id, hash or
# ciphertext spelled in hex can match, and six of them in a row are found even when a log
# kept only the end of a value (websockets' frame log keeps a frame's last 23 characters).
ALPHABET = "GHJKMNPQRSTVWXYZ"
RANDOM_CHARS = 20
FRAGMENT = 6


def token(label: str) -> str:
    """A string no run has seen before, naming the field it was put in."""
    return f"CANARY{label.upper()}" + "".join(secrets.choice(ALPHABET)
                                              for _ in range(RANDOM_CHARS))


def _digits(text: str) -> re.Pattern[bytes]:
    """Digits standing alone: not inside a longer number, nor the fraction of one (the
    microseconds of a timestamp, a metric's float)."""
    return re.compile(rb"(?<![\d.])" + re.escape(text.encode()) + rb"(?!\d)")


def _text(text: str) -> re.Pattern[bytes]:
    return re.compile(re.escape(text.encode()), re.IGNORECASE)


def _token(canary: str) -> list[re.Pattern[bytes]]:
    """The whole token, or any six consecutive characters of its random part."""
    tail = canary[-RANDOM_CHARS:]
    return [_text(canary)] + [_text(tail[i:i + FRAGMENT])
                              for i in range(RANDOM_CHARS - FRAGMENT + 1)]


def _unique_date(avoid: Iterable[date] = ()) -> date:
    """A date of birth no other test uses (the day above 12, so it reads one way only)."""
    while True:
        day = date(1900 + secrets.randbelow(100), 1 + secrets.randbelow(12),
                   13 + secrets.randbelow(16))
        if day not in avoid:
            return day


def phone_forms(e164: str) -> list[re.Pattern[bytes]]:
    """A phone number as it could be written anywhere: E.164, international, national,
    RFC 3966, with dots, and its digits with and without the country code."""
    number = phonenumbers.parse(e164)
    national = str(number.national_number)
    formats = [phonenumbers.format_number(number, kind) for kind in (
        phonenumbers.PhoneNumberFormat.E164, phonenumbers.PhoneNumberFormat.INTERNATIONAL,
        phonenumbers.PhoneNumberFormat.NATIONAL, phonenumbers.PhoneNumberFormat.RFC3966)]
    area, exchange, line = national[:3], national[3:6], national[6:]
    formats += [f"{area}.{exchange}.{line}", f"{area}-{exchange}-{line}"]
    return [_text(text) for text in formats] + [_digits(national),
                                                _digits(e164.lstrip("+"))]


def date_forms(day: date) -> list[re.Pattern[bytes]]:
    """ISO, US (padded or not) and digits-only (year first and US order)."""
    iso, us = day.isoformat(), day.strftime("%m/%d/%Y")
    short_us = f"{day.month}/{day.day}/{day.year}"
    return [_text(iso), _text(us), _text(short_us), _digits(day.strftime("%Y%m%d")),
            _digits(day.strftime("%m%d%Y"))]


@dataclass
class Canaries:
    """One canary per PHI field of the flow, unique per run."""

    name: str = field(default_factory=lambda: token("name"))
    phone: str = field(default_factory=new_phone)
    dob: date = field(default_factory=_unique_date)
    wrong_dob: date = field(init=False)
    staff_secure: str = field(default_factory=lambda: token("staffsecure"))
    patient_secure: str = field(default_factory=lambda: token("patientsecure"))
    inbound_sms: str = field(default_factory=lambda: token("inboundsms"))
    plain_sms: str = field(default_factory=lambda: token("plainsms"))
    draft: str = field(default_factory=lambda: token("draft"))
    audit_filter: str = field(default_factory=lambda: token("auditaction"))
    audit_actor: str = field(default_factory=lambda: token("auditactor"))
    code: str | None = None  # the one-time code, once the server has texted it

    def __post_init__(self) -> None:
        self.wrong_dob = _unique_date(avoid=[self.dob])

    def forms(self) -> dict[str, list[re.Pattern[bytes]]]:
        """Each canary's label and the patterns that find it in any form."""
        found = {
            "patient name": _token(self.name),
            "patient phone": phone_forms(self.phone),
            "date of birth": date_forms(self.dob),
            "wrong date of birth typed": date_forms(self.wrong_dob),
            "secure body staff->patient": _token(self.staff_secure),
            "secure body patient->staff": _token(self.patient_secure),
            "inbound SMS body": _token(self.inbound_sms),
            "non-secure SMS body": _token(self.plain_sms),
            "composer draft (segment count)": _token(self.draft),
            "audit search filter (action)": _token(self.audit_filter),
            "audit search filter (staff member)": _token(self.audit_actor),
        }
        if self.code is not None:
            found["one-time code"] = [_digits(self.code)]
        return found


def leaks(place: str, data: str | bytes, forms: dict[str, list[re.Pattern[bytes]]],
          allowed: Iterable[str] = ()) -> list[str]:
    """``"<place>: <canary> (<excerpt>)"`` for each canary (other than ``allowed``) in
    ``data``."""
    raw = data.encode() if isinstance(data, str) else bytes(data)
    found = []
    for label, patterns in forms.items():
        if label in allowed:
            continue
        for pattern in patterns:
            match = pattern.search(raw)
            if match:
                excerpt = raw[max(0, match.start() - 80):match.end() + 80]
                found.append(f"{place}: {label} ({excerpt!r})")
                break
    return found


# --- Redis ---------------------------------------------------------------------------------

class RedisMonitor:
    """Every command the Redis server executes, from ``MONITOR``, as raw bytes."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.data = bytearray()
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, port: int) -> AsyncIterator[RedisMonitor]:
        monitor = cls(port)
        reader, monitor._writer = await asyncio.open_connection("127.0.0.1", port)
        monitor._writer.write(b"MONITOR\r\n")
        await monitor._writer.drain()
        assert await reader.readline() == b"+OK\r\n"
        monitor._pump = asyncio.create_task(monitor._read(reader))
        try:
            yield monitor
        finally:
            monitor._writer.close()
            with contextlib.suppress(ConnectionError):
                await monitor._writer.wait_closed()
            await monitor._pump

    async def _read(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                self.data.extend(chunk)

    def commands(self) -> bytes:
        """The commands without MONITOR's leading timestamps (their microseconds are
        six digits, like a one-time code)."""
        return re.sub(rb"(?m)^\+\d+\.\d+ ", b"+", bytes(self.data))


async def redis_contents(url: str) -> bytes:
    """Every key of the database and its value, whatever its type."""
    client = aioredis.Redis.from_url(url)
    out = bytearray()
    try:
        async for key in client.scan_iter():
            kind = (await client.type(key)).decode()
            reads = {"string": client.get, "hash": client.hgetall, "list":
                     lambda k: client.lrange(k, 0, -1), "set": client.smembers,
                     "zset": lambda k: client.zrange(k, 0, -1),
                     "stream": lambda k: client.xrange(k)}
            value = await reads[kind](key) if kind in reads else kind
            out.extend(key + b" " + repr(value).encode() + b"\n")
    finally:
        await client.aclose()
    return bytes(out)


# --- the database --------------------------------------------------------------------------

async def database_cells(url: str) -> list[tuple[str, object]]:
    """``("table.column", value)`` for every non-null cell of every table in the database
    (reflected, so tables the app's metadata does not know are searched too)."""
    engine = create_async_engine(make_url(url).set(drivername="postgresql+asyncpg"))
    metadata = MetaData()
    cells = []
    try:
        async with engine.connect() as conn:
            await conn.run_sync(metadata.reflect)
            for table in metadata.sorted_tables:
                for row in (await conn.execute(select(table))).mappings():
                    cells.extend((f"{table.name}.{column}", value)
                                 for column, value in row.items() if value is not None)
    finally:
        await engine.dispose()
    return cells


def cell_bytes(value: object) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode()

