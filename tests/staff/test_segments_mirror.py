"""The composer counts SMS segments in the browser (client_web/staff/segments.js, so no
round trip per key press); it must agree with the server's rules (server/sms/segments.py)
on every case of this table, run in real Chromium."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from server.sms import segments
from tests.patient.support import Node
from tests.staff.support import browser_page

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

CASES = [
    "",
    "Hello",
    "x" * 160,  # one full GSM-7 segment
    "x" * 161,  # split: 153 per part
    "x" * 306,
    "x" * 307,
    "€" * 80,  # extension characters take two septets: 160
    "€" * 81,
    "x" * 152 + "€",  # the escape pair may not straddle a segment
    "x" * 153 + "{}",
    "Line one\nline two\r\n",
    "Form\ffeed",
    "@£$¥èéùìòÇØøÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ!\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà",
    "Café closes at 5 ☕",  # é is GSM-7, ☕ is not: UCS-2
    "ç",  # lower-case c-cedilla is not in GSM-7 (only Ç is)
    "x" * 70 + "é",  # still GSM-7
    "Ω" * 70 + "ж",  # UCS-2, 71 units: split
    "ж" * 70,
    "ж" * 71,
    "😀" * 35,  # surrogate pairs: 70 units
    "😀" * 36,
    "x" * 66 + "😀" + "ж",  # the pair may not straddle a segment
    "Emoji 👍🏽 and 家族",
    "\u00a0non-breaking space",
    "x" * 1600,
    "😀ж" * 400,
]

COUNT_IN_PAGE = """async (cases) => {
  const { count } = await import("/static/staff/segments.js");
  return cases.map((body) => count(body));
}"""


async def test_browser_and_server_agree(node: Node, browser: Any) -> None:
    async with browser_page(browser) as page:
        await page.goto(f"{node.url}/")
        in_browser = await page.evaluate(COUNT_IN_PAGE, CASES)
    on_server = [msgspec.to_builtins(segments.count(body)) for body in CASES]
    for body, mine, theirs in zip(CASES, in_browser, on_server, strict=True):
        assert mine == theirs, (body[:40], mine, theirs)
    # The table covers both encodings and split messages.
    assert {c["encoding"] for c in on_server} == {"GSM-7", "UCS-2"}
    assert max(c["segments"] for c in on_server) > 10
