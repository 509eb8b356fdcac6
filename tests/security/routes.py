"""The assembled app's route table, read (never served) in every configuration that adds
routes, so each security test is generated from what the app really serves: a new route
without a case fails the test that enumerates it."""

from __future__ import annotations

import functools
from typing import Any

from starlette.routing import Mount, Route, WebSocketRoute

from server.app import create_app
from tests.conftest import ORIGIN, settings_for_tests

# Routes exist per configuration: the simulator's phone page only in demo mode, Twilio's
# webhooks only with SMS_PROVIDER=twilio.
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "demo": {"demo": True},
    "twilio": {"sms_provider": "twilio", "twilio_account_sid": "AC" + "0" * 32,
               "twilio_auth_token": "not-a-real-token", "twilio_from": "+14155550199"},
}
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def app_for(config: str) -> Any:
    settings = settings_for_tests(database_url="sqlite:///unused.db", allowed_origins=[ORIGIN],
                                  **CONFIGS[config])
    return create_app(settings, b"\0" * 32)  # not started: only its route table is read


@functools.cache
def routes(config: str = "default") -> frozenset[tuple[str, str]]:
    """Every (method, path) the app serves in ``config``: HTTP routes without the HEAD
    Starlette adds to GETs, ``("GET", "/static/{path}")`` for the static mount and
    ``("WS", path)`` for WebSocket routes.

    Raises:
        AssertionError: a route of a kind this table does not know (add it here).
    """
    found = set()
    for route in app_for(config).routes:
        if isinstance(route, Route):
            found |= {(method, route.path) for method in route.methods or ()
                      if method != "HEAD"}
        elif isinstance(route, WebSocketRoute):
            found.add(("WS", route.path))
        elif isinstance(route, Mount) and route.path == "/static":
            found.add(("GET", "/static/{path}"))
        else:
            raise AssertionError(f"unknown kind of route: {route!r}")
    return frozenset(found)


def every_route() -> frozenset[tuple[str, str]]:
    """The union over every configuration."""
    return frozenset().union(*(routes(config) for config in CONFIGS))


def config_of(method: str, path: str) -> str:
    """The first configuration that serves the route."""
    return next(c for c in CONFIGS if (method, path) in routes(c))
