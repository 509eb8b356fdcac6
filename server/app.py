"""Composition root: ``create_app(settings)`` builds the node; the lifespan owns what it
opens (STYLE rule 9). Nothing imports this module but the command line and tests.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from server.clock import Clock
from server.errors import AppError, ErrorCode
from server.metrics import Metrics
from server.services.container import build_services
from server.settings import Settings
from server.store.migrate import check_current
from server.web import api, health
from server.web.http import EdgeMiddleware, JSONResponse, error_body, error_response

log = logging.getLogger("securechat.app")


def create_app(settings: Settings, master_key: bytes, *, clock: Clock | None = None
               ) -> Starlette:
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = build_services(settings, master_key, clock, metrics)
        try:
            await check_current(services.db)
            app.state.services = services
            yield
        finally:
            await services.db.close()

    return Starlette(
        routes=[*health.routes, *api.routes],
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
