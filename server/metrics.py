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

        self.ws_connections = Gauge(
            "securechat_ws_connections", "Open WebSocket connections on this node",
            registry=self.registry)
        self.ws_frames_in = Counter(
            "securechat_ws_frames_in", "Client frames by type and outcome",
            ["type", "outcome"], registry=self.registry)
        # Counted per batch the socket writers take from their outboxes (no label: the
        # frames are encoded strings by then, and decoding one to learn its type would
        # cost more than writing it).
        self.ws_frames_out = Counter(
            "securechat_ws_frames_out", "Frames handed to the sockets' writers",
            registry=self.registry)
        # Set to a callback by the hub: summed over the sockets at scrape time only.
        self.ws_outbox_frames = Gauge(
            "securechat_ws_outbox_frames", "Frames queued in this node's socket outboxes",
            registry=self.registry)
        self.ws_closes = Counter(
            "securechat_ws_closes", "Sockets closed by the server, by close code", ["code"],
            registry=self.registry)
        self.fanout_latency = Histogram(
            "securechat_fanout_seconds", "From a message's commit time to its fan-out here",
            buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.gap_fills = Counter(
            "securechat_gap_fill_messages", "Messages read from the store to fill a gap",
            registry=self.registry)
        self.broker_up = Gauge(
            "securechat_broker_up", "1 while the broker link is up", registry=self.registry)
        self.broker_reconnects = Counter(
            "securechat_broker_reconnects", "Times the broker link came back after a loss",
            registry=self.registry)
        self.broker_publish_failures = Counter(
            "securechat_broker_publish_failures",
            "Publications the broker could not take (repaired from the store)",
            registry=self.registry)
        self.events_shed = Counter(
            "securechat_events_shed", "Events dropped because the dispatcher queue was full",
            registry=self.registry)

        self.sms_results = Counter(
            "securechat_sms_results", "Outbox send attempts by result (sent, retry, failed)",
            ["result"], registry=self.registry)
        # Read from the store when /metrics is scraped; the same number on every node.
        self.sms_outbox_pending = Gauge(
            "securechat_sms_outbox_pending", "SMS outbox rows not yet sent or failed",
            registry=self.registry)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.http_requests.labels(route, method, f"{status // 100}xx").inc()
        self.http_latency.labels(route).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
