"""uvicorn's own answers with the security headers.

uvicorn answers some requests before the app sees them: a request its HTTP parser
refuses (400 "Invalid HTTP request received."), and WebSocket upgrades the ``websockets``
library refuses (400 for a broken handshake, 414/431 for oversized lines, 403 when the
app closes before accepting). No ASGI middleware sees those; without the headers a
browser could, for one, sniff or frame them. These subclasses of uvicorn's protocols add
the same headers the edge middleware adds to every other response (server/web/http.py).

uvicorn's 500 for an app that returns without answering is never reached: the edge
middleware answers every unhandled error itself (with the headers).

Built for uvicorn 0.55 (``send_400_response`` of the httptools protocol; every refusal
of the websockets-sansio protocol made by ``ServerProtocol.reject``);
tests/security/test_uvicorn_headers.py fails if a newer uvicorn answers another way.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Response
from websockets.server import ServerProtocol

from server.web.http import security_headers


def protocol_classes(hsts: bool) -> tuple[type, type]:
    """The HTTP and WebSocket protocol classes for ``uvicorn.Config(http=..., ws=...)``,
    answering with the security headers (and HSTS when ``hsts``). HTTP is httptools',
    uvicorn's own choice when installed (``uvicorn[standard]`` installs it)."""
    headers = security_headers(hsts)
    text_headers = [(name.decode(), value.decode()) for name, value in headers]

    class HeaderedHttp(HttpToolsProtocol):
        def send_400_response(self, msg: str) -> None:
            """uvicorn's answer to a request its parser refused, headers added."""
            body = msg.encode("ascii")
            content = [STATUS_LINE[400]]
            for name, value in [*self.server_state.default_headers, *headers,
                                (b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]:
                content += [name, b": ", value, b"\r\n"]
            self.transport.write(b"".join([*content, b"\r\n", body]))
            self.transport.close()

    class HeaderedServerProtocol(ServerProtocol):
        def reject(self, status, text: str) -> Response:
            response = super().reject(status, text)
            for name, value in text_headers:
                response.headers[name] = value
            return response

    class HeaderedWebSockets(WebSocketsSansIOProtocol):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            # The same object under a class that only adds headers to refusals (no state
            # of its own), so it keeps whatever uvicorn built: extensions, limits, logger.
            self.conn.__class__ = HeaderedServerProtocol

    return HeaderedHttp, HeaderedWebSockets
