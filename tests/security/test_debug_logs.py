"""At ``LOG_LEVEL=DEBUG`` no statement parameter reaches the logs (issue 13): aiosqlite's
per-call log (each call printed with its SQL and parameters) stays off, and SQLAlchemy's
engines hide parameters should its statement log be turned on.

Before the fix a DEBUG node on SQLite logged what sign-in typed (the email), every
password hash it stored or compared, and every ciphertext and blind index.
"""

from __future__ import annotations

import logging

import pytest

from server import logs
from server.audit import Actor
from server.errors import AppError
from server.runtime import Services
from tests.conftest import make_clinic

TYPED = "typed-at-sign-in-7741@canary.test"


@pytest.fixture
def debug_logging(capsys: pytest.CaptureFixture):
    """``logs.configure("DEBUG")`` as a node does it (its handler writes to the
    captured stderr), undone afterwards."""
    root = logging.getLogger()
    watched = ("uvicorn", "uvicorn.error", "uvicorn.access", "aiosqlite")
    saved = (root.handlers[:], root.level,
             {name: (logging.getLogger(name).level, logging.getLogger(name).disabled,
                     logging.getLogger(name).handlers[:], logging.getLogger(name).propagate)
              for name in watched})
    logs.configure("DEBUG")
    yield
    root.handlers[:], level, loggers = saved[0], saved[1], saved[2]
    root.setLevel(level)
    for name, (was, disabled, handlers, propagate) in loggers.items():
        logger = logging.getLogger(name)
        logger.setLevel(was)
        logger.disabled, logger.handlers[:], logger.propagate = disabled, handlers, propagate


async def test_debug_logs_hold_no_statement_parameters(
        capsys: pytest.CaptureFixture, debug_logging, services: Services) -> None:
    clinic = await make_clinic(services)
    with pytest.raises(AppError):
        await services.auth.login(TYPED, "a wrong password typed here", Actor("anonymous"))
    async with services.db.read() as conn:
        hashes = [row[0] for row in await conn.exec_driver_sql(
            "SELECT password_hash FROM staff WHERE account_id = "
            + ("$1" if services.db.is_postgres else "?"), (clinic.account_id,))]
    written = capsys.readouterr().err
    assert '"level":"debug"' in written  # DEBUG is on: the check can see what leaks
    for secret in (TYPED, clinic.staff_email, clinic.account_id, *hashes):
        assert secret not in written, secret
