"""``/dev/phone``: the simulated phones (demo only). Each phone number the simulator
texted is drawn as a phone's messages app: one thread per number that texted it, what
it received on the left, the patient's own replies on the right, and a box to answer as
that patient; answers go through the same inbound code path as Twilio's webhook.

The page is rendered here, every value escaped (only http(s) URLs become links); its
style and its one script (local, readable times) are static files, so the strict CSP
holds. Times are rendered in UTC and relabelled in the browser's time zone, "Today"
meaning the server's today (``data-now``, the node's clock)."""

from __future__ import annotations

import html
import re
import secrets
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from server.clock import rfc3339
from server.errors import invalid
from server.phones import readable
from server.services import handsets
from server.services.handsets import Handset, Thread
from server.web.context import runtime

_URL = re.compile(r"https?://[^\s<>\"']+")
# A time is shown above a bubble when this long has passed since the one before (and
# above the first): a phone's messages app groups a burst under one time the same way.
STAMP_GAP = timedelta(minutes=15)
_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Simulated phones</title>
<link rel="stylesheet" href="/static/dev/phone.css">
<script type="module" src="/static/dev/phone.js"></script></head>
<body><header class="page-head"><h1>Simulated phones</h1>
<p>Demo only: the texts the SMS simulator delivered to each patient's phone, and the
patient's replies. Answer as that patient in the box under a thread.
<a href="/dev/phone">Refresh</a></p></header>
<main class="phones" data-now="{now}">{phones}</main></body></html>"""


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


def _anchor(number: str) -> str:
    """The id of a phone's section: its digits (a safe fragment for the redirect)."""
    return "phone-" + re.sub(r"\D", "", number)


def _time(moment: datetime) -> str:
    """A <time> in UTC; phone.js relabels it in the reader's zone ("Today 1:05 PM")."""
    utc = moment.astimezone(UTC)
    label = f"{utc:%b} {utc.day}, {utc.year}, {utc.hour % 12 or 12}:{utc:%M %p} UTC"
    return f'<time datetime="{rfc3339(moment)}">{label}</time>'


def _thread(handset: Handset, thread: Thread) -> str:
    me, other = readable(handset.number), readable(thread.other)
    items, previous = [], None
    for bubble in thread.bubbles:
        if previous is None or bubble.at - previous >= STAMP_GAP:
            items.append(f'<li class="stamp">{_time(bubble.at)}</li>')
        previous = bubble.at
        who = ("out", "Sent") if bubble.sent else ("in", "Received")
        items.append(f'<li class="{who[0]}"><span class="sr">{who[1]}, </span>'
                     f"<p>{_linkify(bubble.body)}</p></li>")
    field = f"reply-{_anchor(handset.number)}-{re.sub(r'[^0-9]', '', thread.other)}"
    return (
        f'<div class="thread"><h3 class="contact"><span class="avatar" aria-hidden="true">'
        f'</span>{html.escape(other)}</h3><ol class="bubbles">{"".join(items)}</ol>'
        f'<form class="compose" method="post" action="/dev/phone/reply">'
        f'<input type="hidden" name="from" value="{html.escape(handset.number, quote=True)}">'
        f'<input type="hidden" name="to" value="{html.escape(thread.other, quote=True)}">'
        f'<label class="sr" for="{field}">Reply as {html.escape(me)} to '
        f"{html.escape(other)}</label>"
        f'<input id="{field}" name="body" required maxlength="1600" autocomplete="off" '
        f'placeholder="Text message">'
        f'<button type="submit">Send</button></form></div>')


def _handset(handset: Handset) -> str:
    anchor = _anchor(handset.number)
    threads = "".join(_thread(handset, thread) for thread in handset.threads)
    return (f'<section class="phone" id="{anchor}" aria-labelledby="{anchor}-name">'
            f'<h2 class="phone-head" id="{anchor}-name"><span>Phone</span> '
            f"{html.escape(readable(handset.number))}</h2>{threads}</section>")


async def phone_page(request: Request) -> Response:
    node = runtime(request)
    phones = await handsets.read(node.sms_provider, node.services.messaging,
                                 node.services.patients)
    body = "".join(_handset(phone) for phone in phones) or (
        '<p class="empty">No texts yet. Send an SMS or a Secure Chat message from the '
        "console, then refresh.</p>")
    now = rfc3339(node.services.clock.now())
    return HTMLResponse(_PAGE.format(now=now, phones=body))


async def phone_reply(request: Request) -> Response:
    form = await request.form(max_files=0, max_fields=10)
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    if not values.get("from") or not values.get("to") or not values.get("body"):
        raise invalid("from, to and body are required")
    await runtime(request).sms_inbound.receive(
        to=values["to"], from_=values["from"], body=values["body"][:1600],
        sid="SM" + secrets.token_hex(16))
    return RedirectResponse(f"/dev/phone#{_anchor(values['from'])}", status_code=303)


routes = [
    Route("/dev/phone", phone_page, methods=["GET"]),
    Route("/dev/phone/reply", phone_reply, methods=["POST"]),
]
