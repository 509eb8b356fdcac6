"""Segment counts against the GSM-7 / UCS-2 rules (``shared/spec/sms.md``), on the pure
function and on ``POST /api/sms/segments``."""

from __future__ import annotations

import pytest

from server.sms import segments
from tests.conftest import Clinic
from tests.sms.support import Node

J, E = "ж", "😀"  # Cyrillic (UCS-2, one unit); an emoji outside the BMP (two units)
# The GSM 03.38 basic table's letters-and-symbols beyond ASCII: one septet each.
BASIC_SYMBOLS = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ!\"#¤%&'()*+,-./:;<=>?¡ÄÖÑÜ§¿äöñüà"

# (id, body, encoding, segments, units)
CASES = [
    ("empty", "", "GSM-7", 0, 0),
    ("gsm-1", "a", "GSM-7", 1, 1),
    ("gsm-160", "a" * 160, "GSM-7", 1, 160),
    ("gsm-161", "a" * 161, "GSM-7", 2, 161),
    ("gsm-306", "a" * 306, "GSM-7", 2, 306),
    ("gsm-307", "a" * 307, "GSM-7", 3, 307),
    ("gsm-basic-symbols", BASIC_SYMBOLS, "GSM-7", 1, len(BASIC_SYMBOLS)),
    ("ext-brace", "{", "GSM-7", 1, 2),
    ("ext-euro", "€", "GSM-7", 1, 2),
    ("ext-all", "^{}\\[~]|€\f", "GSM-7", 1, 20),
    ("ext-80-euros-fill-160", "€" * 80, "GSM-7", 1, 160),
    ("ext-159-plus-escape", "a" * 159 + "{", "GSM-7", 2, 161),
    # 152 septets, then an escape pair that would straddle 153: it opens segment 2, so
    # 152 | 2 + 151 | 1 is three segments where ceil(306 / 153) would say two.
    ("ext-pair-not-split", "a" * 152 + "{" + "a" * 152, "GSM-7", 3, 306),
    ("ext-pair-fits-exactly", "a" * 151 + "{" + "a" * 153, "GSM-7", 2, 306),
    ("ucs2-emoji", E, "UCS-2", 1, 2),
    ("ucs2-curly-quote", "It\u2019s fine", "UCS-2", 1, 9),
    ("ucs2-one-emoji-switches-all", "a" * 100 + E, "UCS-2", 2, 102),
    ("ucs2-70", J * 70, "UCS-2", 1, 70),
    ("ucs2-71", J * 71, "UCS-2", 2, 71),
    ("ucs2-134", J * 134, "UCS-2", 2, 134),
    ("ucs2-135", J * 135, "UCS-2", 3, 135),
    ("ucs2-35-emoji-fill-70", E * 35, "UCS-2", 1, 70),
    # 66 units, then a surrogate pair that would straddle 67: 66 | 2 + 65 | 1.
    ("surrogate-pair-not-split", J * 66 + E + J * 66, "UCS-2", 3, 134),
    ("surrogate-pair-fits-exactly", J * 65 + E + J * 67, "UCS-2", 2, 134),
    ("ucs2-36-emoji", E * 36, "UCS-2", 2, 72),  # 33 pairs (66 units) per segment
]


@pytest.mark.parametrize(("body", "encoding", "count", "units"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_segment_count(body: str, encoding: str, count: int, units: int) -> None:
    """Encoding, segments and units follow the GSM-7 / UCS-2 rules."""
    info = segments.count(body)
    assert (info.encoding, info.segments, info.units) == (encoding, count, units)
    single = {"GSM-7": 160, "UCS-2": 70}[encoding]
    split = {"GSM-7": 153, "UCS-2": 67}[encoding]
    assert info.per_segment == (single if units <= single else split)


async def test_segments_endpoint_matches_table(node: Node, clinic: Clinic) -> None:
    """POST /api/sms/segments answers the same as the table for every case."""
    async with node.login(clinic.staff_email) as client:
        for name, body, encoding, count, units in CASES:
            response = await client.post("/api/sms/segments", json={"body": body})
            assert response.status_code == 200, (name, response.text)
            got = response.json()
            assert (got["encoding"], got["segments"], got["units"]) == \
                (encoding, count, units), name


async def test_segments_endpoint_needs_staff(node: Node) -> None:
    """Without a staff session the segments endpoint answers 401."""
    async with node.client() as client:
        response = await client.post("/api/sms/segments", json={"body": "hi"})
    assert response.status_code == 401
