"""``/metrics`` is the operator's (issue 13): with ``METRICS_TOKEN`` set it needs
``Authorization: Bearer <token>``; without one, a node under ``serve`` refuses every
scrape and ``securechat demo`` answers loopback clients only.

Before the fix anyone who reached a node read its metrics (traffic, sign-in failures,
outbox depth: what an attacker times a campaign by).
"""

from __future__ import annotations

import pytest

from server.clock import FakeClock
from server.settings import SettingsError, from_env
from tests.patient.support import run_node
from tests.security.state import sqlite_only

TOKEN = "metrics-access-test-token-0123456789"


@sqlite_only
async def test_with_a_token_only_its_bearer_scrapes(database_url: str, master_key: bytes,
                                                    clock: FakeClock) -> None:
    async with run_node(database_url, master_key, clock, metrics_token=TOKEN) as node, \
            node.client() as client:
        for headers in ({}, {"authorization": "Bearer wrong-token-of-the-same-size!!!"},
                        {"authorization": TOKEN}, {"authorization": f"Basic {TOKEN}"},
                        {"authorization": f"Bearer {TOKEN}x"}):
            refused = await client.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "securechat_" not in refused.text
        scraped = await client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"})
        assert scraped.status_code == 200
        assert "securechat_http_requests_total" in scraped.text


@sqlite_only
async def test_without_a_token_serve_refuses_every_scrape(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    """Even from loopback: a proxy on the same host would make every client look local."""
    async with run_node(database_url, master_key, clock) as node, node.client() as client:
        refused = await client.get("/metrics")
        assert refused.status_code == 403
        assert "SECURECHAT_METRICS_TOKEN" in refused.json()["error"]["message"]


@sqlite_only
async def test_the_demo_without_a_token_answers_loopback(
        database_url: str, master_key: bytes, clock: FakeClock) -> None:
    async with run_node(database_url, master_key, clock, demo=True) as node, \
            node.client() as client:
        assert (await client.get("/metrics")).status_code == 200


def test_a_short_token_is_refused_at_start_up() -> None:
    with pytest.raises(SettingsError, match="METRICS_TOKEN"):
        from_env({"SECURECHAT_METRICS_TOKEN": "short"})
