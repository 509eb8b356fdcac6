"""Carrier keywords: a whole message, case- and surrounding-space-insensitive (pure)."""

from __future__ import annotations

import pytest

from server.sms.keywords import Keyword, keyword

CASES = [
    *[(word, Keyword.OPT_OUT) for word in (
        "STOP", "stop", "Stop", "  STOP  ", "\tstop\n", "STOPALL", "stopall", "UNSUBSCRIBE",
        "Unsubscribe", "CANCEL", "cancel", "END", "end", "QUIT", "Quit", "REVOKE", "revoke",
        "OPTOUT", "OptOut")],
    *[(word, Keyword.OPT_IN) for word in ("START", "start", " Start ", "UNSTOP", "unstop",
                                          "YES", "yes")],
    *[(word, Keyword.HELP) for word in ("HELP", "help", " Help\n", "INFO", "info")],
    *[(text, None) for text in (
        "STOP PLEASE", "stop please", "please stop", "STOP ALL", "OPT OUT", "STOPP", "ST OP",
        "START NOW", "yes please", "help me", "HELPME", "", "   ", "Is it ok to stop the pills?",
        "information")],
]


@pytest.mark.parametrize(("body", "expected"), CASES, ids=[repr(c[0]) for c in CASES])
def test_keyword(body: str, expected: Keyword | None) -> None:
    """Only a single keyword, in any case with spaces around, is a keyword."""
    assert keyword(body) is expected
