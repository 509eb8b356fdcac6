"""Which conversations' patients have their secure page open, here and on other nodes.

``PresenceTable`` is pure (time is passed in): the hub feeds it socket arrivals and
departures, ``PresenceNews`` the other nodes' presence events, and both ask it what to
announce. A node announces its patients when they arrive and leave, and re-announces
them every ``PRESENCE_REFRESH`` seconds; an entry from another node lapses after ``ttl``
without news, so a node that died without saying goodbye does not leave its patients
"online" for ever.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

from server import events
from server.protocol import Presence, encode

if TYPE_CHECKING:
    from server.realtime.hub import Hub

PRESENCE_REFRESH = 20.0  # seconds between re-announcing this node's online patients
PRESENCE_TTL = 3 * PRESENCE_REFRESH  # a node silent this long is taken as gone


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


class PresenceNews:
    """Presence between nodes: this node's patients arriving and leaving, the questions
    of a node that just started following an account, and the others' news turned into
    ``presence`` frames for the staff sockets here.

    Args:
        publish: to this node and the others (this node's staff hear it too).
        send: to the others only, through the broker; never raises.
    """

    def __init__(self, hub: Hub, node_id: str, publish: Callable[[events.AnyEvent], None],
                 send: Callable[[events.AnyEvent], None]) -> None:
        self._hub = hub
        self._node_id = node_id
        self._publish = publish
        self._send = send

    def publish(self, account_id: str, conversation_id: str, online: bool) -> None:
        self._publish(events.PresenceEvent(self._node_id, account_id, conversation_id,
                                           online))

    def ask(self, account_id: str) -> None:
        """Which of the account's patients are online on the other nodes?"""
        self._tell_others(events.PresenceQuery(self._node_id, account_id))

    def answer(self, query: events.PresenceQuery) -> None:
        for conversation_id in self._hub.presence.local_in(query.account_id):
            self._tell_others(events.PresenceEvent(self._node_id, query.account_id,
                                                   conversation_id, True))

    def on_event(self, event: events.PresenceEvent) -> None:
        """This node's own news goes to its staff as it is; another node's only when it
        changes what staff should see."""
        if event.node == self._node_id or self._hub.presence.remote(
                event.node, event.account_id, event.conversation_id, event.online,
                time.monotonic()):
            self._announce(event.account_id, event.conversation_id,
                           self._hub.patient_online(event.conversation_id))

    def broker_back(self) -> None:
        """The broker came back: announce this node's patients again, and ask what the
        others announced meanwhile."""
        for account_id, conversation_id in self._hub.presence.local():
            self.publish(account_id, conversation_id, True)
        for account_id in self._hub.accounts():
            self.ask(account_id)

    def refresh(self) -> None:
        """Re-announce this node's patients to the others (local staff were told
        already), and tell local staff of the patients whose node went silent."""
        for account_id, conversation_id in self._hub.presence.local():
            self._tell_others(events.PresenceEvent(self._node_id, account_id,
                                                   conversation_id, True))
        for account_id, conversation_id in self._hub.presence.expire(time.monotonic()):
            self._announce(account_id, conversation_id, False)

    def _tell_others(self, event: events.PresenceEvent | events.PresenceQuery) -> None:
        """Publish to the other nodes only (this node's own state needs no news)."""
        self._send(event)

    def _announce(self, account_id: str, conversation_id: str, online: bool) -> None:
        self._hub.to_staff(account_id, encode(Presence(conversation_id=conversation_id,
                                                       patient_online=online)))
