"""Health, readiness and metrics for the operator."""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from server.web.http import JSONResponse

log = logging.getLogger("securechat.health")
# A readiness probe must answer quickly even when the store hangs.
CHECK_TIMEOUT_SECONDS = 2.0


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """200 when every dependency answers, else 503 naming the ones that did not."""
    services = request.app.state.services
    checks = {"store": services.db.ping, "broker": request.app.state.hub.broker.ping}
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


async def metrics(request: Request) -> Response:
    """The node's metrics; the SMS outbox depth is read from the store now (one indexed
    count per scrape, rather than one per worker pass every second)."""
    registry = request.app.state.services.metrics
    try:
        registry.sms_outbox_pending.set(await asyncio.wait_for(
            request.app.state.sms_worker.pending(), CHECK_TIMEOUT_SECONDS))
    except Exception as exc:  # the scrape still answers; the gauge keeps its last value
        log.warning("outbox depth not read", extra={"reason": type(exc).__name__})
    return Response(registry.render(), media_type="text/plain; version=0.0.4")


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
