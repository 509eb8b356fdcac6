"""One ``securechat serve`` process on a database of its own and the shared Redis, with a
clinic seeded through the services, for the operations tests (metrics, logs, drain)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from prometheus_client.parser import text_string_to_metric_families

from loadtest.nodes import private_postgres
from tests.realtime.cluster_nodes import ServeProcess, node_env
from tests.realtime.test_multinode import RAISED_LIMITS, Seeded, seed

# The operator's scrape token for the nodes these tests start (SECURECHAT_METRICS_TOKEN).
METRICS_TOKEN = "ops-test-metrics-token-0123456789"


@contextlib.asynccontextmanager
async def seeded_node(postgresql_url: str, redis_url: str, master_key: bytes,
                      **settings: str) -> AsyncIterator[tuple[ServeProcess, Seeded]]:
    """A node process (rate limits raised: the tests send quickly) and its clinic, on a
    scratch database made on ``postgresql_url``'s server: the node's counters and log then
    hold this test's traffic only (on the shared one its outbox worker would also send
    SMS an earlier test left queued). The node is stopped with SIGTERM at the end if the
    test has not stopped it."""
    async with private_postgres(postgresql_url, prefix="securechat_ops") as database_url:
        seeded = await seed(database_url, master_key)
        node = ServeProcess("ops", node_env(database_url=database_url, redis_url=redis_url,
                                            master_key=master_key,
                                            **{**RAISED_LIMITS,
                                               "metrics_token": METRICS_TOKEN, **settings}))
        try:
            await node.start()
            yield node, seeded
        finally:
            await node.stop()


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str) -> tuple[set[str], Samples]:
    """``GET /metrics``: the metric family names and every sample by (name, labels)."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.get("/metrics",
                                    headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.text
    names: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        names.add(family.name)
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return names, samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(value for (sample, have), value in samples.items()
               if sample == name and set(labels.items()) <= set(have))
