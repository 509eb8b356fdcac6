"""How many SMS segments a body takes, and in which encoding (pure).

Rules (3GPP TS 23.038 / 23.040, as carriers apply them; ``docs/protocol.md``):

* GSM-7 when every character is in the GSM 03.38 basic set or its extension table; an
  extension character (``^ { } \\ [ ~ ] | €`` and form feed) takes two septets (escape +
  char). One segment holds 160 septets; a split message 153 per segment (the rest is the
  concatenation header), and an escape pair is never split across segments.
* Otherwise UCS-2: 70 UTF-16 code units in one segment, 67 per segment when split; a
  character outside the Basic Multilingual Plane takes two units (a surrogate pair),
  never split across segments.
"""

from __future__ import annotations

from typing import Literal

import msgspec

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

SINGLE = {"GSM-7": 160, "UCS-2": 70}
PER_PART = {"GSM-7": 153, "UCS-2": 67}


class SegmentInfo(msgspec.Struct, frozen=True):
    encoding: Literal["GSM-7", "UCS-2"]
    segments: int
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    per_segment: int  # capacity of each segment at this length


def count(body: str) -> SegmentInfo:
    """Segments and encoding of ``body`` (0 segments for an empty body)."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in body):
        encoding: Literal["GSM-7", "UCS-2"] = "GSM-7"
        costs = [2 if ch in GSM7_EXTENSION else 1 for ch in body]
    else:
        encoding = "UCS-2"
        costs = [2 if ord(ch) > 0xFFFF else 1 for ch in body]
    units = sum(costs)
    if units <= SINGLE[encoding]:
        return SegmentInfo(encoding, 1 if units else 0, units, SINGLE[encoding])
    capacity, segments, used = PER_PART[encoding], 1, 0
    for cost in costs:  # an escape pair or surrogate pair never straddles two segments
        if used + cost > capacity:
            segments, used = segments + 1, 0
        used += cost
    return SegmentInfo(encoding, segments, units, capacity)
