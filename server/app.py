"""Composition root: ``create_app(settings)`` builds the node; the lifespan owns what it
opens (STYLE rule 9). Nothing imports this module but the command line and tests.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from server.brokers.base import Broker, broker_from_url
from server.clock import Clock
from server.errors import AppError, ErrorCode
from server.metrics import Metrics
from server.realtime.frames import FrameHandler
from server.realtime.hub import Hub
from server.services.container import build_services
from server.settings import Settings
from server.store.migrate import check_current
from server.web import api, health, ws
from server.web.http import EdgeMiddleware, JSONResponse, error_body, error_response

log = logging.getLogger("securechat.app")


def create_app(settings: Settings, master_key: bytes, *, clock: Clock | None = None,
               broker: Broker | None = None) -> Starlette:
    """Build a node. ``broker`` defaults to the one ``REDIS_URL`` names (in-process when
    unset); tests pass brokers sharing one in-memory bus to run several nodes."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = build_services(settings, master_key, clock, metrics)
        hub = None
        try:
            await check_current(services.db)
            hub = Hub(streams=services.streams,
                      broker=broker or broker_from_url(settings.redis_url),
                      settings=settings, clock=services.clock, metrics=metrics,
                      node_id=secrets.token_hex(4))
            await hub.start()
            app.state.services = services
            app.state.hub = hub
            app.state.frames = FrameHandler(hub, services.messaging, services.clock, metrics)
            yield
        finally:
            if hub is not None:
                await hub.stop()
            await services.db.close()

    return Starlette(
        routes=[*health.routes, *api.routes, *ws.routes],
        middleware=[Middleware(EdgeMiddleware, allowed_origins=settings.origins,
                               metrics=metrics)],
        exception_handlers={AppError: _app_error, Exception: _unexpected},
        lifespan=lifespan,
    )


async def _app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return error_response(exc)


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Type and place only: a driver's message can quote the row it choked on.
    log.error("unhandled error", exc_info=exc,
              extra={"request_id": request.scope.get("state", {}).get("request_id")})
    return JSONResponse(error_body(ErrorCode.INTERNAL, "internal error; it was logged"),
                        status_code=500)
