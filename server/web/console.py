"""``GET /``: the staff console's shell. The ES modules in ``client_web/staff/`` fill it
after sign-in, over ``/api`` and the WebSocket.

The shell is static: no PHI, no names, nothing of the account (a cached or shared copy
tells nobody anything). No inline script or style, so the strict CSP holds; the edge
middleware adds the security headers (no-store, nosniff, DENY, no-referrer, CSP).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

SHELL = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>SecureChat</title>
<link rel="stylesheet" href="/static/staff/staff.css">
<link rel="stylesheet" href="/static/staff/admin.css">
<script type="module" src="/static/staff/main.js"></script>
</head><body>
<header id="topbar" class="topbar" hidden></header>
<main id="main" class="main"><p class="loading">Loading…</p></main>
<noscript><p class="error">The SecureChat console needs JavaScript.</p></noscript>
</body></html>"""


async def console(request: Request) -> Response:
    return HTMLResponse(SHELL)


routes = [Route("/", console, methods=["GET"])]
