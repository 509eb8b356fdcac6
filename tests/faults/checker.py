"""The one verdict every fault run ends with (its rules are docs/reliability.md's
"what nothing lost means"): the store, the senders' acks, every follower's timeline and
the fake Twilio's requests are compared; one summary line is printed; any loss,
duplicate, gap or SMS not sent exactly once fails the test."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field

from tests.faults.harness import FaultRun
from tests.sms.support import OK


@dataclass
class Verdict:
    fault: str
    conversations: int = 0
    messages: int = 0
    lost: int = 0  # started but never acked, or acked and not stored with that seq
    duplicated: int = 0  # a client_msg_id stored twice, a seq applied twice
    gaps: int = 0  # store seqs not 1..n, timelines that differ from the store
    raw_duplicate_frames: int = 0  # re-delivered frames the clients dropped by seq
    sms_expected: int = 0
    sms_sent_once: int = 0
    sms_repeated_after_crash: int = 0  # SMS sent twice because a node died (see check)
    notifications: int = 0
    resends: Counter = field(default_factory=Counter)  # why sends went out again
    closes: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"fault={self.fault} conversations={self.conversations} "
                f"messages={self.messages} lost={self.lost} duplicated={self.duplicated} "
                f"gaps={self.gaps} sms_sent_once={self.sms_sent_once}/{self.sms_expected} "
                f"sms_repeated_after_crash={self.sms_repeated_after_crash} "
                f"raw_duplicate_frames={self.raw_duplicate_frames} "
                f"resends={dict(sorted(self.resends.items()))} "
                f"notifications={self.notifications} "
                f"closes={dict(sorted((int(c or 0), n) for c, n in self.closes.items()))}")

    def problem(self, text: str) -> None:
        if len(self.problems) < 20:
            self.problems.append(text)


async def check(run: FaultRun, *, sms_repeat_window: range | None = None) -> Verdict:
    """Judge ``run`` after :meth:`FaultRun.settle`. ``sms_repeat_window`` holds the fake
    Twilio's request numbers around a node's SIGKILL: an SMS the provider took there may
    have been taken just before the node could record it, and is sent again when its
    lease runs out (at-least-once: Twilio has no idempotency key). Such repeats are
    counted apart; any other repeat fails."""
    verdict = Verdict(run.name)
    rows = await run.query("SELECT conversation_id, seq, client_msg_id, channel "
                           "FROM messages ORDER BY conversation_id, seq")
    store: dict[str, list[tuple[int, str]]] = defaultdict(list)
    sms: set[tuple[str, int]] = set()
    for row in rows:
        store[row["conversation_id"]].append((row["seq"], row["client_msg_id"]))
        if row["channel"] == "sms":
            sms.add((row["conversation_id"], row["seq"]))
    verdict.conversations = len(store)
    verdict.messages = len(rows)
    _check_store(verdict, store)
    stored_seq = {(conv, cmid): seq for conv, items in store.items() for seq, cmid in items}
    _check_sends(verdict, run, stored_seq)
    _check_timelines(verdict, run, store, sms)
    _check_sms(verdict, run, sms_repeat_window)
    for client in run.clients:
        verdict.closes.update(client.closes)
        verdict.resends.update(client.resent)
        for code, n in client.refusals.items():
            verdict.problem(f"{client.name} refused {n}x {code}")
    print(verdict.line())
    return verdict


def _check_store(verdict: Verdict, store: dict[str, list[tuple[int, str]]]) -> None:
    """Each conversation's seqs are exactly 1..n; each client_msg_id appears once."""
    for conv, items in store.items():
        seqs = [seq for seq, _ in items]
        if seqs != list(range(1, len(seqs) + 1)):
            verdict.gaps += 1
            verdict.problem(f"store seqs of {conv} are not 1..{len(seqs)}")
        repeated = [cmid for cmid, n in Counter(c for _, c in items).items() if n > 1]
        verdict.duplicated += len(repeated)
        if repeated:
            verdict.problem(f"{conv} stores {repeated[:3]} more than once")


def _check_sends(verdict: Verdict, run: FaultRun, stored_seq: dict[tuple[str, str], int]
                 ) -> None:
    """Every send started was acked, and is stored with the acked seq; nothing else is."""
    acks = {cmid: seq for client in run.clients for cmid, seq in client.acks.items()}
    planned = {(send.conversation_id, send.client_msg_id) for send in run.sends}
    for send in run.sends:
        key = (send.conversation_id, send.client_msg_id)
        seq = acks.get(send.client_msg_id)
        if seq is None or stored_seq.get(key) != seq:
            verdict.lost += 1
            verdict.problem(f"{send.client_msg_id}: acked {seq}, stored {stored_seq.get(key)}")
    for client in run.clients:
        for cmid, first, second in client.ack_conflicts:
            verdict.duplicated += 1
            verdict.problem(f"{cmid} acked as seq {first} and {second}")
    unknown = set(stored_seq) - planned
    verdict.duplicated += len(unknown)
    if unknown:
        verdict.problem(f"stored but never sent: {sorted(unknown)[:3]}")


def _check_timelines(verdict: Verdict, run: FaultRun,
                     store: dict[str, list[tuple[int, str]]], sms: set[tuple[str, int]]
                     ) -> None:
    """Every follower's timeline (applied by seq) equals the store's messages it may see
    (a patient: all but the SMS channel), bodies included. A missing message is a gap;
    anything else that differs is a duplicate or a wrong order."""
    bodies = {send.client_msg_id: send.body for send in run.sends}
    for client in run.clients:
        verdict.raw_duplicate_frames += client.raw_duplicates
        for conv, timeline in client.timelines.items():
            mine = [(a.seq, a.client_msg_id) for a in timeline]
            expected = [item for item in store.get(conv, [])
                        if client.sees_sms or (conv, item[0]) not in sms]
            if mine != expected:
                missing = len(set(expected) - set(mine))
                verdict.gaps += missing
                verdict.duplicated += len(mine) - len(set(mine))
                verdict.problem(f"{client.name}'s timeline of {conv} differs from the store: "
                                f"{len(mine)} vs {len(expected)}, {missing} missing")
            wrong = [a.seq for a in timeline if bodies.get(a.client_msg_id) != a.body]
            if wrong:
                verdict.gaps += 1
                verdict.problem(f"{client.name} got other bodies at seqs {wrong[:3]}")


def _check_sms(verdict: Verdict, run: FaultRun,
               repeat_window: range | None) -> None:
    """Every SMS send reached Twilio exactly once (answered 201); a secure body never
    reached it at all, in any request."""
    taken = Counter(r.form.get("Body") for r in run.twilio.requests if r.status == OK)
    first_taken: dict[str | None, int] = {}
    for r in run.twilio.requests:
        if r.status == OK:
            first_taken.setdefault(r.form.get("Body"), r.number)
    seen_bodies = [r.form.get("Body") or "" for r in run.twilio.requests]
    for send in run.sends:
        if send.secure:
            if any(send.body in body for body in seen_bodies):
                verdict.problem(f"secure body of {send.client_msg_id} reached Twilio")
                verdict.duplicated += 1
            continue
        verdict.sms_expected += 1
        count = taken[send.body]
        if count == 1:
            verdict.sms_sent_once += 1
        elif count > 1 and repeat_window is not None \
                and first_taken[send.body] in repeat_window:
            verdict.sms_repeated_after_crash += 1
        else:
            verdict.problem(f"SMS {send.client_msg_id} taken by Twilio {count} times")
    bodies = {send.body for send in run.sends}
    verdict.notifications = sum(n for body, n in taken.items() if body not in bodies)
