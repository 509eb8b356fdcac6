"""Which conversations' patients have their secure page open, here and on other nodes.

Pure (time is passed in): the hub feeds it socket arrivals and departures and the other
nodes' presence events, and asks it what to announce. A node announces its patients when
they arrive and leave, and re-announces them every ``PRESENCE_REFRESH`` seconds; an entry
from another node lapses after ``ttl`` without news, so a node that died without saying
goodbye does not leave its patients "online" for ever.
"""

from __future__ import annotations

from collections import Counter, defaultdict


class PresenceTable:
    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._local: Counter[str] = Counter()  # conversation -> patient sockets here
        self._remote: dict[str, dict[str, float]] = defaultdict(dict)  # conv -> node -> until
        self._account: dict[str, str] = {}  # conversation -> account

    def joined(self, account_id: str, conversation_id: str) -> bool:
        """A patient socket arrived here; True when it is the conversation's first."""
        self._account[conversation_id] = account_id
        self._local[conversation_id] += 1
        return self._local[conversation_id] == 1

    def left(self, conversation_id: str) -> bool:
        """A patient socket left; True when it was the conversation's last one here."""
        self._local[conversation_id] -= 1
        if self._local[conversation_id] > 0:
            return False
        del self._local[conversation_id]
        return True

    def online(self, conversation_id: str, now: float) -> bool:
        if self._local.get(conversation_id):
            return True
        return any(until > now for until in self._remote.get(conversation_id, {}).values())

    def local(self) -> list[tuple[str, str]]:
        """(account, conversation) of every patient online on this node."""
        return [(self._account[c], c) for c in self._local]

    def local_in(self, account_id: str) -> list[str]:
        return [c for c in self._local if self._account.get(c) == account_id]

    def remote(self, node: str, account_id: str, conversation_id: str, online: bool,
               now: float) -> bool:
        """Another node's news; True when the conversation's online state changed."""
        was = self.online(conversation_id, now)
        self._account[conversation_id] = account_id
        nodes = self._remote[conversation_id]
        if online:
            nodes[node] = now + self._ttl
        else:
            nodes.pop(node, None)
        if not nodes:
            del self._remote[conversation_id]
        return self.online(conversation_id, now) != was

    def expire(self, now: float) -> list[tuple[str, str]]:
        """Forget nodes that went silent; (account, conversation) now offline because of it."""
        gone = []
        for conversation_id, nodes in list(self._remote.items()):
            was = bool(nodes) or bool(self._local.get(conversation_id))
            for node, until in list(nodes.items()):
                if until <= now:
                    del nodes[node]
            if not nodes:
                del self._remote[conversation_id]
            if was and not self.online(conversation_id, now):
                gone.append((self._account[conversation_id], conversation_id))
        return gone
