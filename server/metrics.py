"""Prometheus metrics, in a registry of the app's own (one per app, so tests and several
apps in one process do not collide). Labels are route names and outcomes: never ids,
phones or anything a person typed.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Buckets in seconds: a request that touches the store takes 1-20 ms here; argon2 ~60 ms.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.http_requests = Counter(
            "securechat_http_requests", "HTTP requests by route and status class",
            ["route", "method", "status"], registry=self.registry)
        self.http_latency = Histogram(
            "securechat_http_request_seconds", "HTTP request latency by route",
            ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.logins = Counter(
            "securechat_logins", "Staff sign-in attempts by outcome", ["outcome"],
            registry=self.registry)
        self.messages_stored = Counter(
            "securechat_messages_stored", "Messages durably stored, by channel",
            ["channel"], registry=self.registry)
        self.store_up = Gauge(
            "securechat_store_up", "1 when the last readiness check reached the store",
            registry=self.registry)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http_requests.labels(route, method, f"{status // 100}xx").inc()
        self.http_latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
