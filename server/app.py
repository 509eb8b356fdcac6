"""Composition root: ``create_app(settings)`` builds the app; its lifespan starts the
node's :class:`~server.runtime.Runtime` and stops it (STYLE rule 9). Nothing imports this
module but the command line and tests.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from server.brokers.base import Broker
from server.clock import Clock
from server.errors import AppError, ErrorCode
from server.metrics import Metrics
from server.runtime import Runtime
from server.settings import Settings
from server.web import api, console, dev, health, link_routes, patient, webhooks, ws
from server.web.http import EdgeMiddleware, JSONResponse, error_body, error_response

log = logging.getLogger("securechat.app")


def create_app(settings: Settings, master_key: bytes, *, clock: Clock | None = None,
               broker: Broker | None = None) -> ws.Direct:
    """Build a node. ``broker`` defaults to the one ``REDIS_URL`` names (in-process when
    unset); tests pass brokers sharing one in-memory bus to run several nodes."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        runtime = await Runtime.start(settings, master_key, metrics, clock=clock,
                                      broker=broker)
        app.state.runtime = runtime  # read through server/web/context.py only
        try:
            yield
        finally:
            await runtime.stop()

    routes = [*health.routes, *api.routes, *link_routes.routes, *ws.routes, *patient.routes,
              *console.routes, Mount("/static", StaticFiles(directory=client_dir()), name="static")]
    if settings.sms_provider == "twilio":
        routes += webhooks.routes
    elif settings.demo:
        routes += dev.routes
    # /ws sockets go straight to their endpoint (ws.Direct): the middleware stack does
    # nothing for them and would cost ~3.5 KiB per socket for its life.
    return ws.Direct(Starlette(
        routes=routes,
        middleware=[Middleware(EdgeMiddleware, allowed_origins=settings.origins,
                               allowed_hosts=settings.hosts, metrics=metrics,
                               hsts=settings.secure_cookies)],
        exception_handlers={AppError: _app_error, HTTPException: _http_error,
                            Exception: _unexpected},
        lifespan=lifespan,
    ))


def client_dir() -> Path:
    """The browser clients (plain ES modules, no build step): beside the package in a
    checkout, or ``./client_web`` where the image puts them."""
    beside = Path(__file__).resolve().parent.parent / "client_web"
    return beside if beside.is_dir() else Path.cwd() / "client_web"


async def _app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, wrong method) in the API's error shape."""
    assert isinstance(exc, HTTPException)
    code = ErrorCode.NOT_FOUND if exc.status_code == 404 else ErrorCode.INVALID_REQUEST
    message = "no such route" if exc.status_code == 404 else "method not allowed"
    return JSONResponse(error_body(code, message), status_code=exc.status_code,
                        headers=exc.headers)  # keeps Allow on 405


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Type and place only: a driver's message can quote the row it choked on.
    log.error("unhandled error", exc_info=exc,
              extra={"request_id": request.scope.get("state", {}).get("request_id")})
    return JSONResponse(error_body(ErrorCode.INTERNAL, "internal error; it was logged"),
                        status_code=500)
