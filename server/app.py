"""Composition root: ``create_app(settings)`` builds the node; the lifespan owns what it
opens (STYLE rule 9). Nothing imports this module but the command line and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from server.address_limits import AddressLimit
from server.audit_upgrade import anchor_legacy
from server.brokers.base import Broker, broker_from_url
from server.clock import Clock
from server.crypto import MasterKey
from server.errors import AppError, ErrorCode
from server.metrics import Metrics
from server.realtime.node import Node
from server.services.container import build_services
from server.services.inbound_sms import InboundSms
from server.services.links import SecureLinks
from server.services.sending import Sending
from server.services.sms_worker import OutboxWorker
from server.settings import Settings
from server.sms.base import SmsProvider
from server.sms.numbers import shared_number
from server.sms.simulator import SimulatorProvider
from server.sms.twilio import SignatureChecker, TwilioProvider
from server.store.group_commit import GroupCommit
from server.store.migrate import check_current
from server.web import api, console, dev, health, link_routes, patient, webhooks, ws
from server.web.frames import FrameHandler
from server.web.http import EdgeMiddleware, JSONResponse, error_body, error_response

log = logging.getLogger("securechat.app")
# How long shutdown waits for the group-commit writer: a batch is a few milliseconds, a
# write that waits on a locked store gives up after the store's own timeout.
WRITER_FLUSH_SECONDS = 5.0


def create_app(settings: Settings, master_key: bytes, *, clock: Clock | None = None,
               broker: Broker | None = None) -> ws.Direct:
    """Build a node. ``broker`` defaults to the one ``REDIS_URL`` names (in-process when
    unset); tests pass brokers sharing one in-memory bus to run several nodes."""
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        services = build_services(settings, master_key, clock, metrics)
        node = worker = None
        try:
            await check_current(services.db)
            # Once per store: anchors the audit entries of builds before the audit key.
            await anchor_legacy(services.db, services.clock, MasterKey(master_key).audit_key)
            node = Node(streams=services.streams,
                        broker=broker or broker_from_url(settings.redis_url),
                        settings=settings, clock=services.clock, metrics=metrics,
                        node_id=secrets.token_hex(4))
            await node.start()
            provider = _sms_provider(settings, services)
            worker = OutboxWorker(db=services.db, keyring=services.keyring,
                                  clock=services.clock, settings=settings, provider=provider,
                                  metrics=metrics, publish=node.publish, node_id=node.node_id)
            worker.start()
            app.state.services = services
            app.state.node = node
            app.state.sms_provider = provider
            app.state.sms_worker = worker
            app.state.sms_inbound = InboundSms(
                db=services.db, clock=services.clock, messaging=services.messaging,
                patients=services.patients, default_region=settings.default_region,
                publish=node.publish, node_id=node.node_id, wake_sms=worker.wake,
                shared_number=shared_number(settings))
            if settings.sms_provider == "twilio":
                assert settings.twilio_auth_token is not None
                app.state.twilio_signatures = SignatureChecker(settings.twilio_auth_token)
            app.state.links = SecureLinks(
                db=services.db, keyring=services.keyring, clock=services.clock,
                sms=services.sms_outbox, sessions=services.patient_sessions,
                wake_sms=worker.wake,
                on_locked=lambda account_id, conversation_id: node.notice(
                    account_id, conversation_id, "link_locked"))
            app.state.sending = Sending(node, services.messaging, worker, metrics)
            app.state.frames = FrameHandler(node, services.streams, app.state.sending,
                                            services.clock, metrics)
            app.state.ws_addresses = AddressLimit(settings.ws_max_per_address)
            yield
        finally:
            # Sockets are closed by now (cli.DrainingServer, then uvicorn's shutdown):
            # what the group-commit writer still holds is committed before the store
            # closes, so a send either was stored or was never acknowledged.
            await _writer_idle(services.messaging.writer, WRITER_FLUSH_SECONDS)
            if worker is not None:
                await worker.stop()
            if node is not None:
                await node.stop()
            await services.db.close()

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


async def _writer_idle(writer: GroupCommit, timeout: float) -> None:
    """Wait for the group-commit writer's batches in progress (it answers its own
    failures); past ``timeout`` the store closes under it and the batch fails whole."""
    try:
        await asyncio.wait_for(writer.idle(), timeout)
    except TimeoutError:
        log.warning("group-commit writer still busy at shutdown", extra={"event": "stop"})


def _sms_provider(settings: Settings, services) -> SmsProvider:
    if settings.sms_provider == "twilio":
        assert settings.twilio_account_sid and settings.twilio_auth_token
        return TwilioProvider(account_sid=settings.twilio_account_sid,
                              auth_token=settings.twilio_auth_token,
                              api_base=settings.twilio_api_base,
                              status_callback=settings.public_url.rstrip("/")
                              + "/sms/twilio/status")
    return SimulatorProvider(services.db, services.keyring, services.clock)


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
