"""The one way web code reaches the node's runtime, which the lifespan (server/app.py)
puts on the app at start-up."""

from __future__ import annotations

from typing import Any

from starlette.requests import HTTPConnection

from server.runtime import Runtime


def runtime(connection: HTTPConnection) -> Runtime:
    """The runtime of the node serving this request or socket."""
    return app_runtime(connection.app)


def app_runtime(app: Any) -> Runtime:
    """The runtime of a started app (the command line's and tests' way in); ``app`` may be
    the :class:`server.web.ws.Direct` wrapper, which reads ``state`` through."""
    return app.state.runtime
