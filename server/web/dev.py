"""``/dev/phone``: the simulator's phone page (demo only). It lists what each simulated
number received, with links clickable, and lets you answer as that patient; answers go
through the same inbound code path as Twilio's webhook."""

from __future__ import annotations

import html
import re
import secrets
from collections import defaultdict

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from server.errors import invalid

_URL = re.compile(r"https?://[^\s<>\"']+")
_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Simulated phones</title></head><body><main>
<h1>Simulated phones</h1><p>Every SMS the simulator sent, per number, newest first.
Answer as that patient with the form under each number.</p>{phones}</main></body></html>"""


def _linkify(text: str) -> str:
    """Escape everything; only http(s) URLs become links (text nodes otherwise)."""
    out, last = [], 0
    for match in _URL.finditer(text):
        out.append(html.escape(text[last:match.start()]))
        url = html.escape(match.group(0), quote=True)
        out.append(f'<a href="{url}" rel="noreferrer">{url}</a>')
        last = match.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


async def phone_page(request: Request) -> Response:
    inbox = await request.app.state.sms_provider.inbox()
    by_number: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for sms in inbox:
        by_number[(sms["to"], sms["from"])].append(sms)
    sections = []
    for (to, from_), messages in by_number.items():
        items = "".join(f"<li><time>{html.escape(str(m['at']))}</time> "
                        f"<p>{_linkify(m['body'])}</p></li>" for m in messages)
        sections.append(
            f"<section><h2>{html.escape(to)}</h2><ul>{items}</ul>"
            f'<form method="post" action="/dev/phone/reply">'
            f'<input type="hidden" name="from" value="{html.escape(to, quote=True)}">'
            f'<input type="hidden" name="to" value="{html.escape(from_, quote=True)}">'
            f'<label>Reply as {html.escape(to)} <input name="body" required maxlength="1600">'
            f"</label> <button>Send</button></form></section>")
    page = _PAGE.format(phones="".join(sections) or "<p>No SMS yet.</p>")
    return HTMLResponse(page)


async def phone_reply(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=10)
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    if not values.get("from") or not values.get("to") or not values.get("body"):
        raise invalid("from, to and body are required")
    await request.app.state.sms_inbound.receive(
        to=values["to"], from_=values["from"], body=values["body"][:1600],
        sid="SM" + secrets.token_hex(16))
    return RedirectResponse("/dev/phone", status_code=303)


routes = [
    Route("/dev/phone", phone_page, methods=["GET"]),
    Route("/dev/phone/reply", phone_reply, methods=["POST"]),
]
