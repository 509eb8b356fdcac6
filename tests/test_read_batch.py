"""Session lookups arriving together share one query (server/read_batch.py), and an
ended session is never answered from an earlier read."""

from __future__ import annotations

import asyncio

import pytest

from server.audit import SYSTEM
from server.errors import AppError
from server.read_batch import ReadBatcher
from server.runtime import Services
from server.store import sessions as session_store
from tests.conftest import make_clinic


async def test_lookups_arriving_together_share_one_query(services: Services) -> None:
    clinic = await make_clinic(services)
    opened = [await services.patient_sessions.open(
        clinic.account_id, clinic.patient_id, clinic.conversation_id, SYSTEM)
        for _ in range(5)]
    batcher = ReadBatcher(services.db, session_store.patient_sessions)
    rows = await asyncio.gather(*(batcher.get(p.session_id) for _, p in opened),
                                batcher.get("no-such-session"))
    assert batcher.queries == 1
    assert [row["id"] for row in rows[:5]] == [p.session_id for _, p in opened]
    assert rows[5] is None


async def test_an_ended_session_is_refused_at_once(services: Services) -> None:
    clinic = await make_clinic(services)
    token, principal = await services.patient_sessions.open(
        clinic.account_id, clinic.patient_id, clinic.conversation_id, SYSTEM)
    live = await asyncio.gather(*(services.patient_sessions.authenticate(token)
                                  for _ in range(3)))
    assert all(p == principal for p in live)
    await services.patient_sessions.end(principal)
    with pytest.raises(AppError):
        await services.patient_sessions.authenticate(token)


class _Broken:
    def read(self):
        raise OSError("the store is down")


async def test_a_failed_query_fails_each_lookup_of_it() -> None:
    batcher = ReadBatcher(_Broken(), session_store.patient_sessions)  # type: ignore[arg-type]
    results = await asyncio.gather(batcher.get("a"), batcher.get("b"),
                                   return_exceptions=True)
    assert all(isinstance(result, OSError) for result in results)
