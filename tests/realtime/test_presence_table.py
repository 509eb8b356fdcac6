"""The presence table, without an event loop (server/realtime/presence.py)."""

from __future__ import annotations

from server.realtime.presence import PresenceTable

TTL = 60.0


def test_local_sockets_count_per_conversation() -> None:
    """Online from the first socket to the last; only those two moments are news."""
    table = PresenceTable(TTL)
    assert table.joined("a", "c") is True
    assert table.joined("a", "c") is False
    assert table.online("c", 0) and table.local() == [("a", "c")]
    assert table.left("c") is False
    assert table.left("c") is True
    assert not table.online("c", 0) and table.local() == []


def test_remote_news_changes_state_once() -> None:
    """Another node's online/offline is news only when it changes what staff see."""
    table = PresenceTable(TTL)
    assert table.remote("n2", "a", "c", True, now=0) is True
    assert table.remote("n2", "a", "c", True, now=1) is False  # a refresh
    assert table.remote("n3", "a", "c", True, now=2) is False  # another node, still online
    assert table.remote("n2", "a", "c", False, now=3) is False  # n3 still has it
    assert table.remote("n3", "a", "c", False, now=4) is True
    assert not table.online("c", 4)


def test_a_silent_node_expires_and_is_announced_once() -> None:
    """A node that died without saying goodbye: its patient goes offline after the TTL."""
    table = PresenceTable(TTL)
    table.remote("n2", "a", "c", True, now=0)
    assert table.expire(now=TTL - 1) == []
    assert table.online("c", TTL - 1)
    assert table.expire(now=TTL + 1) == [("a", "c")]
    assert not table.online("c", TTL + 1)
    assert table.expire(now=TTL + 2) == []


def test_local_patient_survives_remote_expiry() -> None:
    """Expiry of another node's entry does not hide a patient online here."""
    table = PresenceTable(TTL)
    table.joined("a", "c")
    table.remote("n2", "a", "c", True, now=0)
    assert table.expire(now=TTL + 1) == []
    assert table.online("c", TTL + 1)
    assert table.local_in("a") == ["c"] and table.local_in("b") == []
