"""Health, readiness and metrics for the operator."""

from __future__ import annotations

import asyncio
import hmac
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.errors import ErrorCode
from server.web.context import runtime
from server.web.http import JSONResponse, error_body

log = logging.getLogger("securechat.health")
# A readiness probe must answer quickly even when the store hangs.
CHECK_TIMEOUT_SECONDS = 2.0
LOOPBACK_ADDRESSES = frozenset({"127.0.0.1", "::1"})


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 when every dependency answers, else 503 naming the ones that did not."""
    node = runtime(request)
    services = node.services
    checks = {"store": services.db.ping, "broker": node.broker.ping}
    results = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
            results[name] = "ok"
        except Exception as exc:
            log.warning("readiness check failed", extra={"event": name,
                                                         "reason": type(exc).__name__})
            results[name] = "unavailable"
    services.metrics.store_up.set(1 if results["store"] == "ok" else 0)
    ready = all(value == "ok" for value in results.values())
    return JSONResponse({"status": "ok" if ready else "unavailable", "checks": results},
                        status_code=200 if ready else 503)


def metrics_refusal(request: Request) -> Response | None:
    """Who may scrape: with ``METRICS_TOKEN`` set, a request carrying it as a bearer
    token (compared in constant time); without it, only a loopback client of
    ``securechat demo`` (the operator's own machine), and nobody under ``serve``, where a
    proxy on the same host would make every client look local. None when allowed."""
    settings = runtime(request).services.settings
    if settings.metrics_token is not None:
        given = request.headers.get("authorization", "")
        expected = f"Bearer {settings.metrics_token}"
        if hmac.compare_digest(given.encode("latin-1"), expected.encode()):
            return None
        return JSONResponse(error_body(ErrorCode.UNAUTHENTICATED,
                                       "metrics need the metrics bearer token"),
                            status_code=401, headers={"www-authenticate": "Bearer"})
    host = request.client.host if request.client else ""
    if settings.demo and host in LOOPBACK_ADDRESSES:
        return None
    return JSONResponse(error_body(ErrorCode.FORBIDDEN,
                                   "metrics are off: set SECURECHAT_METRICS_TOKEN"),
                        status_code=403)


async def metrics(request: Request) -> Response:
    """The node's metrics; the SMS outbox depth is read from the store now (one indexed
    count per scrape, rather than one per worker pass every second)."""
    refused = metrics_refusal(request)
    if refused is not None:
        return refused
    node = runtime(request)
    registry = node.services.metrics
    try:
        registry.sms_outbox_pending.set(await asyncio.wait_for(
            node.sms_worker.pending(), CHECK_TIMEOUT_SECONDS))
    except Exception as exc:  # the scrape still answers; the gauge keeps its last value
        log.warning("outbox depth not read", extra={"reason": type(exc).__name__})
    return Response(registry.render(), media_type="text/plain; version=0.0.4")


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
