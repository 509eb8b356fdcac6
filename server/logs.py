"""JSON logs, one object per line, safe to ship anywhere: no PHI ever reaches them.

Callers log ids, counts and outcomes through ``extra``; the formatter keeps only the
fields in :data:`ALLOWED_EXTRA`, so a careless ``extra={"body": ...}`` is dropped
instead of leaked. Exceptions are logged by type and location, not by message (a
driver's message can quote a row).
"""

from __future__ import annotations

import logging
import sys
import traceback
from datetime import UTC, datetime

import msgspec

ALLOWED_EXTRA = frozenset({
    "request_id", "route", "method", "status", "ms", "account_id", "staff_id",
    "conversation_id", "message_id", "seq", "count", "event", "node", "reason", "url",
})
_encoder = msgspec.json.Encoder()


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in ALLOWED_EXTRA:
            if key in record.__dict__:
                entry[key] = record.__dict__[key]
        if record.exc_info and record.exc_info[0] is not None:
            frame = traceback.extract_tb(record.exc_info[2])[-1:] if record.exc_info[2] else []
            entry["exc_type"] = record.exc_info[0].__name__
            if frame:
                entry["exc_at"] = f"{frame[0].filename}:{frame[0].lineno}"
        return _encoder.encode(entry).decode()


def configure(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # uvicorn's access log prints raw paths (a secure link's token is in its path).
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # At DEBUG the WebSocket protocol (websockets, logging as "uvicorn.error") writes every
    # handshake header, session cookies included, and the ends of every frame (message
    # bodies, patient names): that logger never goes below INFO.
    logging.getLogger("uvicorn.error").setLevel(max(logging.INFO, root.level))
    # aiosqlite logs every call it runs at DEBUG, statement parameters included (password
    # hashes, typed sign-in text): never below INFO either. SQLAlchemy's statement log
    # stays at its own WARNING; raised, it would show no parameters (server/store/db.py).
    logging.getLogger("aiosqlite").setLevel(max(logging.INFO, root.level))
