"""The patient's server-rendered pages: small, escaped, no inline script or style.

They hold no PHI: the verification form asks, it never shows; the chat page is a shell
that the ES modules fill over the WebSocket (so Back after "End session" shows nothing).
"""

from __future__ import annotations

import html

_SHELL = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<link rel="stylesheet" href="/static/patient/patient.css">
</head><body><main id="main">{body}</main>{scripts}</body></html>"""


def page(title: str, body: str, scripts: str = "") -> str:
    return _SHELL.format(title=html.escape(title), body=body, scripts=scripts)


def verify_page(token: str, clinic: str, *, code_required: bool = False,
                error: str | None = None, date_of_birth: str = "") -> str:
    """The check form. With ``code_required`` it also asks for the texted code (the date
    stays filled in) and offers to text a new one. An error is announced (``role=alert``)
    and tied to the fields it is about; the first field to fill has the focus."""
    action = f"/s/{html.escape(token, quote=True)}/verify"
    invalid = ' aria-invalid="true" aria-describedby="error"' if error else ""
    alert = (f'<p id="error" class="error" role="alert">{html.escape(error)}</p>'
             if error else "")
    code = ""
    if code_required:
        described = "code-hint error" if error else "code-hint"
        code = f"""<label for="code">Code from the text message</label>
<p id="code-hint" class="hint">We texted you a 6-digit code. It expires in 10 minutes.</p>
<input id="code" name="code" inputmode="numeric" autocomplete="one-time-code"
 pattern="[0-9]{{6}}" maxlength="6" required autofocus
 aria-describedby="{described}"{' aria-invalid="true"' if error else ""}>"""
    dob_value = html.escape(date_of_birth, quote=True)
    buttons = '<button type="submit">Continue</button>'
    if code_required:
        buttons += ('<button type="submit" name="resend" value="1" formnovalidate'
                    ' class="link">Text me a new code</button>')
    body = f"""<p class="eyebrow">Secure message</p>
<h1>{html.escape(clinic)}</h1>
<p>You have a secure message. To read it, confirm your date of birth.</p>
{alert}
<form method="post" action="{action}" class="card">
<label for="date_of_birth">Date of birth</label>
<input id="date_of_birth" name="date_of_birth" type="date" required
 autocomplete="bday" value="{dob_value}"{"" if code_required else " autofocus"}{invalid}>
{code}
<div class="actions">{buttons}</div>
</form>
<p class="small">Nothing is stored on this phone after you end the session.</p>"""
    return page(f"{clinic}: secure message", body)


def gone_page() -> str:
    """One neutral page for unknown, expired and revoked links (it does not say which)."""
    return page("Link not valid", """<div class="notice">
<h1>This link is not valid</h1>
<p>Please ask your clinic to send you a new link.</p></div>""")


def locked_page() -> str:
    return page("Link locked", """<div class="notice warning">
<h1>This link is locked</h1>
<p>It was locked after too many attempts, to protect your information.</p>
<p>Please ask your clinic to send you a new link.</p></div>""")


def portal_off_page(clinic: str) -> str:
    """The clinic has turned secure messaging off: one neutral page for its links and
    for a patient whose page was open (it says nothing about the link or the patient)."""
    return page("Secure messaging not available", f"""<div class="notice" id="portal-off">
<h1>Secure messaging is not available</h1>
<p>Please call {html.escape(clinic)}.</p></div>""")


def ended_page() -> str:
    return page("Session ended", """<div class="notice">
<h1>Your secure session has ended</h1>
<p>To read your messages again, open the link from your text message.</p></div>""")


def chat_page() -> str:
    body = """<header class="bar">
<div class="heading"><h1 id="title">Secure messages</h1>
<p id="connection" class="connection" role="status">Connecting…</p></div>
<form method="post" action="/s/logout">
<button type="submit" class="secondary">End session</button></form>
</header>
<noscript><p class="error">This page needs JavaScript to show your messages.</p></noscript>
<section class="log" role="log" aria-label="Messages">
<ol id="thread" class="thread"></ol>
</section>
<p id="typing" class="typing" aria-live="polite"></p>
<form id="composer" class="composer">
<label for="body" class="visually-hidden">Your reply</label>
<textarea id="body" name="body" rows="2" maxlength="10000" placeholder="Write a reply"
 required></textarea>
<button type="submit">Send</button>
</form>"""
    return page("Secure messages", body,
                '<script type="module" src="/static/patient/main.js"></script>')
