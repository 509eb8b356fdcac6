"""The audit hash chain: any edit, deletion, insertion, reordering or truncation is found.

Rows are plain dicts with the columns of the ``audit_log`` table; no database is used.
Row ids deliberately differ from seq numbers so a test can tell which one a break names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from server.audit import AuditEntry, ChainBreak, ChainVerifier, entry_hash

GENESIS = "0" * 64
KEY = bytes(range(32))  # the audit MAC key (derived from the master key in a node)
STREAM = "acct-1"
ENTRY_FIELDS = AuditEntry.__struct_fields__
Row = dict[str, Any]


def make_entry(stream: str, seq: int) -> AuditEntry:
    return AuditEntry(
        stream=stream, seq=seq, ts=f"2026-01-01T09:00:{seq % 60:02d}.000000Z",
        actor_kind="staff", actor_id=f"staff-{seq % 3}", action="message.send",
        object_type="conversation", object_id=f"conv-{seq % 5}", outcome="ok",
        ip="203.0.113.7", request_id=f"req-{seq}", details='{"count":1}',
    )


def row_for(entry: AuditEntry, prev_hash: str, row_id: int) -> Row:
    """The row ``audit.append`` would insert for ``entry`` after ``prev_hash``."""
    return {"id": row_id, **msgspec.structs.asdict(entry), "prev_hash": prev_hash,
            "entry_hash": entry_hash(prev_hash, entry, KEY)}


def make_chain(length: int, stream: str = STREAM) -> list[Row]:
    rows: list[Row] = []
    prev = GENESIS
    for seq in range(1, length + 1):
        rows.append(row_for(make_entry(stream, seq), prev, row_id=1000 + 10 * seq))
        prev = rows[-1]["entry_hash"]
    return rows


def head_of(rows: Sequence[Row]) -> tuple[int, str]:
    """What ``audit_heads`` records for these rows."""
    return (rows[-1]["seq"], rows[-1]["entry_hash"]) if rows else (0, GENESIS)


def first_break(rows: Sequence[Row], head: tuple[int, str] | None,
                stream: str = STREAM) -> ChainBreak | None:
    """Feed rows in order as ``audit.verify`` does, then check the head."""
    verifier = ChainVerifier(stream, KEY)
    for row in rows:
        if (broken := verifier.feed(row)) is not None:
            return broken
    return verifier.finish(head)


def forged_row(rows: Sequence[Row], position: int, *, good_hash: bool) -> Row:
    """A row an attacker slips in at ``position``, chained on the row before it."""
    prev = rows[position - 1]["entry_hash"] if position else GENESIS
    entry = msgspec.structs.replace(make_entry(STREAM, position + 1), action="record.export")
    row = row_for(entry, prev, row_id=999_999)
    if not good_hash:
        row["entry_hash"] = hashlib.sha256(b"made up").hexdigest()
    return row


def different(value: object) -> object:
    """A value of the same column type that differs from ``value``."""
    if isinstance(value, int):
        return value + 1
    if value is None:
        return "x"
    return value + "x"


# --- entry_hash ---------------------------------------------------------------------------------

def test_entry_hash_is_hmac_sha256_hex_and_deterministic() -> None:
    """The link is a 64-hex HMAC-SHA256 that depends only on its inputs and the key."""
    entry = make_entry(STREAM, 1)
    digest = entry_hash(GENESIS, entry, KEY)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert entry_hash(GENESIS, make_entry(STREAM, 1), KEY) == digest
    assert entry_hash(GENESIS, entry, bytes(32)) != digest


def test_entry_hash_covers_the_previous_hash_and_every_field() -> None:
    """Changing prev_hash or any entry field changes the link."""
    entry = make_entry(STREAM, 1)
    digest = entry_hash(GENESIS, entry, KEY)
    assert entry_hash("1" * 64, entry, KEY) != digest
    for name in ENTRY_FIELDS:
        changed = msgspec.structs.replace(entry, **{name: different(getattr(entry, name))})
        assert entry_hash(GENESIS, changed, KEY) != digest, name


def test_entry_hash_tells_null_from_the_text_null() -> None:
    """A missing actor and an actor called "null" are different entries."""
    entry = make_entry(STREAM, 1)
    assert entry_hash(GENESIS, msgspec.structs.replace(entry, actor_id=None), KEY) != \
        entry_hash(GENESIS, msgspec.structs.replace(entry, actor_id="null"), KEY)


# --- intact chains ------------------------------------------------------------------------------

@hypothesis_settings(max_examples=50, deadline=None)
@given(length=st.integers(0, 30))
def test_an_intact_chain_verifies(length: int) -> None:
    """A chain built with entry_hash, checked against its head, has no break."""
    rows = make_chain(length)
    assert first_break(rows, head_of(rows)) is None


def test_an_empty_stream_with_a_genesis_head_verifies() -> None:
    """A stream whose head was created but never appended to is fine."""
    assert first_break([], (0, GENESIS)) is None


def test_extra_columns_are_ignored() -> None:
    """Rows from the database may carry more keys than the hashed ones."""
    rows = [{**row, "created_by_driver": True} for row in make_chain(3)]
    assert first_break(rows, head_of(rows)) is None


# --- each kind of tampering -----------------------------------------------------------------------

def test_an_edited_field_is_found_at_its_row() -> None:
    """Changing the action of entry 3 breaks the chain at seq 3, naming its row id."""
    rows = make_chain(5)
    rows[2]["action"] = "login.ok"
    broken = first_break(rows, head_of(make_chain(5)))
    assert broken is not None and (broken.seq, broken.entry_id) == (3, 1030)
    assert broken.reason.startswith("the entry was altered")


def test_an_edited_prev_hash_is_found_at_its_row() -> None:
    """Re-pointing an entry at another predecessor is found."""
    rows = make_chain(5)
    rows[3]["prev_hash"] = rows[1]["entry_hash"]
    broken = first_break(rows, head_of(rows))
    assert broken is not None
    assert (broken.seq, broken.entry_id) == (4, 1040)
    assert "prev_hash" in broken.reason


def test_rehashing_an_edited_row_still_breaks_the_next_link() -> None:
    """An attacker who recomputes the edited row's hash is caught by the next row."""
    rows = make_chain(5)
    edited = msgspec.structs.replace(make_entry(STREAM, 2), outcome="denied")
    rows[1] = row_for(edited, rows[0]["entry_hash"], row_id=rows[1]["id"])
    broken = first_break(rows, head_of(rows))
    assert broken is not None
    assert (broken.seq, broken.entry_id) == (3, 1030)


def test_a_deleted_row_is_found_at_the_gap() -> None:
    """Deleting entry 2 of 4: the break is at seq 2, naming the row that follows the gap."""
    rows = make_chain(4)
    del rows[1]
    broken = first_break(rows, head_of(make_chain(4)))
    assert broken is not None
    assert (broken.seq, broken.entry_id) == (2, 1030)
    assert "expected seq 2, found 3" in broken.reason


def test_an_inserted_row_is_found() -> None:
    """A well-forged row inserted before entry 3 pushes entry 3 out of sequence."""
    rows = make_chain(4)
    rows.insert(2, forged_row(rows, 2, good_hash=True))
    broken = first_break(rows, head_of(make_chain(4)))
    assert broken is not None
    assert (broken.seq, broken.entry_id) == (4, 1030)


def test_swapped_rows_are_found() -> None:
    """Reordering entries 2 and 4 breaks at seq 2, naming the row found there."""
    rows = make_chain(5)
    rows[1], rows[3] = rows[3], rows[1]
    broken = first_break(rows, head_of(make_chain(5)))
    assert broken is not None
    assert (broken.seq, broken.entry_id) == (2, 1040)


def test_a_truncated_tail_is_found_by_the_head() -> None:
    """Dropping the last entries leaves a valid chain; only the head shows they existed."""
    rows = make_chain(6)
    head = head_of(rows)
    truncated = rows[:4]
    verifier = ChainVerifier(STREAM, KEY)
    assert all(verifier.feed(row) is None for row in truncated)
    broken = verifier.finish(head)
    assert broken == ChainBreak(STREAM, 5, None,
                                "the head records seq 6 but the log ends at seq 4")


def test_a_truncated_tail_goes_unseen_without_a_head() -> None:
    """finish(None) (a stream with no head row) has nothing to compare against."""
    assert first_break(make_chain(6)[:4], None) is None


def test_a_chain_from_another_genesis_is_refused() -> None:
    """The first entry must chain on the all-zero genesis hash."""
    rows = make_chain(2)
    rows[0]["prev_hash"] = "f" * 64
    broken = first_break(rows, head_of(rows))
    assert broken is not None
    assert (broken.seq, broken.entry_id) == (1, 1010)


# --- property: any single mutation of any chain is found at the right place --------------------

MUTATIONS = ["edit", "delete", "insert_forged", "insert_naive", "swap", "truncate"]


@st.composite
def tampered_chains(draw: st.DrawFn) -> tuple[list[Row], tuple[int, str], int, int | None]:
    """A chain, its true head, one mutation, and the (seq, entry id) the break must name.

    ``entry_id`` None means the break is only visible at the end, against the head.
    Insertion after the last row is checked separately (its seq is "past the end").
    """
    kind = draw(st.sampled_from(MUTATIONS), label="kind")
    length = draw(st.integers(2 if kind == "swap" else 1, 12), label="length")
    rows = make_chain(length)
    head = head_of(rows)
    if kind == "edit":
        k = draw(st.integers(0, length - 1), label="row")
        name = draw(st.sampled_from([*ENTRY_FIELDS, "prev_hash", "entry_hash"]), label="field")
        old = rows[k][name]
        values = st.integers(-(2**63), 2**63 - 1) if name == "seq" else st.none() | st.text()
        rows[k][name] = draw(values.filter(lambda v: v != old), label="new value")
        return rows, head, k + 1, rows[k]["id"]
    if kind == "delete":
        k = draw(st.integers(0, length - 1), label="row")
        del rows[k]
        if k == length - 1:
            return rows, head, length, None  # the new tail: only the head knows
        return rows, head, k + 1, rows[k]["id"]
    if kind in ("insert_forged", "insert_naive"):
        k = draw(st.integers(0, length - 1), label="position")
        forged = forged_row(rows, k, good_hash=kind == "insert_forged")
        rows.insert(k, forged)
        if kind == "insert_naive":
            return rows, head, k + 1, forged["id"]
        return rows, head, k + 2, rows[k + 1]["id"]  # the genuine row it displaced
    if kind == "swap":
        i, j = sorted(draw(st.lists(st.integers(0, length - 1), min_size=2, max_size=2,
                                    unique=True), label="rows"))
        rows[i], rows[j] = rows[j], rows[i]
        return rows, head, i + 1, rows[i]["id"]
    keep = draw(st.integers(0, length - 1), label="keep")
    return rows[:keep], head, keep + 1, None


@hypothesis_settings(max_examples=300, deadline=None)
@given(case=tampered_chains())
def test_any_single_mutation_is_found_at_the_right_entry(
        case: tuple[list[Row], tuple[int, str], int, int | None]) -> None:
    """Edit / delete / insert / swap / truncate: the first break names the right seq and id."""
    rows, head, seq, entry_id = case
    broken = first_break(rows, head)
    assert broken is not None
    assert broken.stream == STREAM
    assert (broken.seq, broken.entry_id) == (seq, entry_id)


@hypothesis_settings(max_examples=50, deadline=None)
@given(length=st.integers(0, 12), good_hash=st.booleans())
def test_a_row_appended_behind_the_heads_back_is_found(length: int, good_hash: bool) -> None:
    """An extra entry after the last real one is found: by its hash, or against the head."""
    rows = make_chain(length)
    head = head_of(rows)
    forged = forged_row(rows, length, good_hash=good_hash)
    broken = first_break([*rows, forged], head)
    assert broken is not None
    if good_hash:
        assert broken.entry_id is None
        assert broken.seq > length
        assert f"head records seq {length}" in broken.reason
    else:
        assert (broken.seq, broken.entry_id) == (length + 1, forged["id"])


# --- the message ------------------------------------------------------------------------------

def test_str_of_a_break_names_stream_seq_and_entry_id() -> None:
    """The operator-facing text says where to look."""
    rows = make_chain(3)
    rows[1]["outcome"] = "denied"
    text = str(first_break(rows, head_of(rows)))
    assert "stream acct-1" in text
    assert "seq 2" in text
    assert "entry id 1020" in text
    assert "altered" in text


def test_str_of_a_tail_break_says_end_of_stream() -> None:
    """A break found against the head has no row, and says so."""
    rows = make_chain(3)
    text = str(first_break(rows[:1], head_of(rows)))
    assert "seq 2" in text
    assert "end of stream" in text
    assert "entry id" not in text
