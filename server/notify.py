"""How a service tells the node what it changed, without importing the node.

Services finish their use case (store, commit) and then call a :class:`Notifier`: the
serving node's implementation (``server/runtime.py``) hands the news to its hub, which
reaches this node's sockets and, through the broker, every other node's; a process that
serves no sockets uses :class:`Offline`. Every call comes after the change committed, so
a socket that is told never sees state older than what it was told.
"""

from __future__ import annotations

from typing import Protocol

from server import events


class Notifier(Protocol):
    node_id: str  # the ``node`` of the events this process publishes

    def publish(self, event: events.AnyEvent) -> None:
        """Fan an event out to every node (this one included)."""

    def session_ended(self, session_id: str) -> None:
        """The session is over: its sockets close (4401) on every node."""

    def account_changed(self, account_id: str, portal_active: bool,
                        clinic_name: str) -> None:
        """The account's settings changed: every console follows, and with the portal off
        every patient socket closes."""

    def notice(self, account_id: str, conversation_id: str, notice: str) -> None:
        """A one-line notice to every console of the account (``link_locked``,
        ``link_resent``)."""

    def wake_sms(self) -> None:
        """An SMS is waiting in the outbox: send it now rather than at the next poll."""

    def patient_online(self, conversation_id: str) -> bool:
        """Whether the conversation's patient has a socket open on any node."""
        ...


class Offline:
    """The notifier of a process that serves no sockets (the command line, seeding): no
    socket of its own to tell and no SMS worker to wake. Sessions it ends still close on
    the serving nodes, at their next session check (``Hub.check_sessions``); an SMS it
    queues goes at a worker's next poll."""

    node_id = "offline"

    def publish(self, event: events.AnyEvent) -> None:
        pass

    def session_ended(self, session_id: str) -> None:
        pass

    def account_changed(self, account_id: str, portal_active: bool,
                        clinic_name: str) -> None:
        pass

    def notice(self, account_id: str, conversation_id: str, notice: str) -> None:
        pass

    def wake_sms(self) -> None:
        pass

    def patient_online(self, conversation_id: str) -> bool:
        return False
