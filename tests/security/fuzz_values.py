"""Hypothesis strategies the fuzzers share: hostile JSON values and text, ids, and
``shaped``, which builds a body or frame from its fields and then breaks it (a field of
the wrong type, a missing one, an unknown one, null).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

# Integers at and just past the edges that matter: 32- and 64-bit, and JSON's doubles.
EDGE_INTS = [0, -1, 1, 2**31 - 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1,
             10**30]
# Characters that break naive handling: NUL, controls, bidi overrides, a BOM, combining
# marks, astral emoji, line separators, and what HTML, SQL and CSV give meaning to.
NASTY = ["\x00", "\x1b[31m", "\u202e", "\ufeff", "e\u0301", "\U0001f600", "\u2028", "<",
         "'", '"', "\\", "%s", "${x}", "=1+1", "../", "%00", "\r\n"]

# Text that can travel as UTF-8 (a WebSocket text frame cannot hold a lone surrogate).
text = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
    st.sampled_from(NASTY),
    st.lists(st.sampled_from(NASTY), min_size=1, max_size=6).map("".join),
)
# Text as JSON can spell it: lone surrogates included (as \ud800 escapes).
json_text = st.one_of(text, st.text(max_size=20))
ints = st.one_of(st.integers(), st.sampled_from(EDGE_INTS))
scalars = st.one_of(st.none(), st.booleans(), ints,
                    st.floats(allow_nan=False, allow_infinity=False), json_text)
# A field's wrong value: any scalar or a small container. (Full nesting is for whole
# bodies and frames: drawn for every field it would cost more than the request.)
wrong_values = st.one_of(scalars, st.lists(scalars, max_size=2),
                         st.dictionaries(json_text, scalars, max_size=2))
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(json_text, inner, max_size=4)),
    max_leaves=12)
# Around the 10,000-character body limit (hypothesis draws no text that long itself).
long_text = st.builds(lambda chunk, n: (chunk * n)[:n],
                      st.text(st.characters(exclude_categories=["Cs"]), min_size=1,
                              max_size=3),
                      st.integers(9_990, 10_010))
random_ids = st.one_of(st.uuids().map(str), st.just(""), text,
                       st.text(min_size=65, max_size=80))


def ids(*known: str) -> st.SearchStrategy[str]:
    """Ids the node knows (ours, another account's) half the time, else anything."""
    return st.one_of(st.sampled_from(known), random_ids) if known else random_ids


@st.composite
def shaped(draw: st.DrawFn, fields: Mapping[str, st.SearchStrategy[Any]],
           fixed: Mapping[str, Any] | None = None,
           wrong: st.SearchStrategy[Any] = wrong_values) -> dict[str, Any]:
    """``fixed`` plus each of ``fields``: a plausible value, a ``wrong`` one, null, or
    left out; sometimes an unknown field besides."""
    body = dict(fixed or {})
    for name, good in fields.items():
        how = draw(st.sampled_from(("good", "good", "good", "wrong", "null", "missing")))
        if how == "good":
            body[name] = draw(good)
        elif how == "wrong":
            body[name] = draw(wrong)
        elif how == "null":
            body[name] = None
    if draw(st.integers(0, 9)) == 0:
        body[draw(json_text)] = draw(wrong)
    return body
