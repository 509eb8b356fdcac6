"""Which long passwords are still guessable (NIST SP 800-63B-4 §3.1.1.2: refuse
commonly used, expected or compromised values, repetitive or sequential characters and
context-specific words).

The length rule (15+) already rules out most of a breach list, so the check looks at a
password's *core*: NFKC, case-folded, with spaces and punctuation inside it and the
digits and symbols at its ends removed (``Password123456!`` → ``password``), and the
common substitutions undone (``p@ssw0rd`` → ``password``); the whole password, only
case-folded and without spaces and punctuation, is looked at too. A core is refused when it is
empty, made of three or fewer distinct characters, one short unit repeated, or at most
two pieces each of which is a common password (``common_passwords.txt``), a keyboard or
alphabet run (``qwertyuiopasdfgh``, ``123456789012345``) or a single repeated character.
A password containing the member's email, its local part, their name, or the account's
or clinic's name (4+ characters each) is refused too.

Pure: values in, a reason (or None) out; the caller turns it into ``invalid_request``.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache
from importlib.resources import files

# Keyboard rows and walks, the alphabet and the digits (each also read backwards, and
# cycled so that ``890123`` is a run): the "sequential" passwords.
_RUNS = ("qwertyuiop", "asdfghjkl", "zxcvbnm", "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
         "qazwsxedcrfvtgbyhnujmikolp", "!@#$%^&*()_+", "abcdefghijklmnopqrstuvwxyz",
         "1234567890")
_SEQUENCES = tuple(run * 3 for run in _RUNS) + tuple(run[::-1] * 3 for run in _RUNS)
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t",
                       "@": "a", "$": "s", "!": "i"})
_EDGES = re.compile(r"^[\W\d_]+|[\W\d_]+$")
_INSIDE = re.compile(r"[\s\W_]+")
# A core longer than this is not two dictionary words (the longest entry is 20).
MAX_PIECE = 24
MIN_CONTEXT = 4


@cache
def common_passwords() -> frozenset[str]:
    text = files("server").joinpath("common_passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines()
                     if line.strip() and not line.startswith("#"))


def refusal(password: str, context: tuple[str, ...] = ()) -> str | None:
    """Why ``password`` is too easy to guess, or None when it is not.

    Args:
        password: the new password (already within the length rules).
        context: the member's email and name and the account's names.
    """
    folded = unicodedata.normalize("NFKC", password).casefold()
    compact = _INSIDE.sub("", folded)
    for word in context:
        for variant in {word, word.split("@", 1)[0]}:  # an email and its local part
            term = _INSIDE.sub("", unicodedata.normalize("NFKC", variant).casefold())
            if len(term) >= MIN_CONTEXT and term in compact:
                return "password must not contain your email, your name or the clinic's name"
    edged = _EDGES.sub("", folded)
    for core in {compact, _INSIDE.sub("", edged), _INSIDE.sub("", edged.translate(_LEET))}:
        if _guessable(core):
            return ("password is too easy to guess (a common password, a repeated or "
                    "sequential pattern); use a few unrelated words")
    return None


def _guessable(core: str) -> bool:
    if len(set(core)) <= 3:
        return True
    if any(len(core) % size == 0 and core == core[:size] * (len(core) // size)
           for size in range(1, len(core) // 2 + 1)):
        return True
    return _pieces(core) <= 2


def _pieces(core: str) -> int:
    """The fewest predictable pieces ``core`` splits into (3 meaning "3 or more")."""
    if len(core) > 2 * MAX_PIECE:
        return 3
    best = [0] + [3] * len(core)
    for end in range(1, len(core) + 1):
        for start in range(max(0, end - MAX_PIECE), end):
            if best[start] < 2 and _predictable(core[start:end]):
                best[end] = min(best[end], best[start] + 1)
    return best[len(core)]


def _predictable(piece: str) -> bool:
    if piece in common_passwords() or len(set(piece)) == 1:
        return True
    return len(piece) >= 3 and any(piece in sequence for sequence in _SEQUENCES)
