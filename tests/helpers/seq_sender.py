"""A separate OS process that sends messages into one conversation (for
tests/test_seq_concurrency.py).

    python tests/helpers/seq_sender.py ACCOUNT_ID CONVERSATION_ID STAFF_ID PREFIX COUNT IN_FLIGHT

Configured by SECURECHAT_DATABASE_URL and SECURECHAT_MASTER_KEY. Connects, prints READY,
waits for a line GO on stdin, sends COUNT messages with client_msg_ids PREFIX-0 ...
keeping IN_FLIGHT sends running at once, then prints DONE <stored> <duplicates>.
"""

from __future__ import annotations

import asyncio
import sys

from server.audit import Actor
from server.crypto import load_master_key
from server.notify import Offline
from server.protocol import Sender, SendRequest
from server.runtime import build_services
from server.settings import from_env


async def main(account_id: str, conversation_id: str, staff_id: str, prefix: str,
               count: int, in_flight: int) -> None:
    settings = from_env()
    master = load_master_key(settings.master_key, settings.master_key_file, create=False)
    services = build_services(settings, master, notifier=Offline())
    sender, actor = Sender("staff", staff_id, "Sender"), Actor("staff", staff_id)
    todo = iter(range(count))
    stored = duplicates = 0

    async def worker() -> None:
        nonlocal stored, duplicates
        for i in todo:
            result = await services.messaging.send(
                account_id, sender, conversation_id,
                SendRequest(client_msg_id=f"{prefix}-{i}", body=f"{prefix} says {i}"),
                actor)
            duplicates += result.duplicate
            stored += not result.duplicate

    try:
        # Open the pool's connections before reporting ready, so both processes start
        # sending at the same moment rather than one while the other still connects.
        await asyncio.gather(*(services.db.ping() for _ in range(in_flight)))
        print("READY", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        if line.strip() != "GO":
            raise SystemExit(f"expected GO, got {line!r}")
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        print(f"DONE {stored} {duplicates}", flush=True)
    finally:
        await services.db.close()


if __name__ == "__main__":
    account, conversation, staff, prefix, count, in_flight = sys.argv[1:]
    asyncio.run(main(account, conversation, staff, prefix, int(count), int(in_flight)))
