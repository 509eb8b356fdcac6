"""Helpers for the patient's secure page: a node of our own whose public URL and allowed
origin are its real address (so a browser on it passes the Origin checks), restartable on
the same port; secure links made the way the SMS bridge makes them; the code SMS read
back from the outbox; the simulator's notification with its link."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
from sqlalchemy import func, select, update
from starlette.applications import Starlette

from server.app import create_app
from server.clock import FakeClock
from server.services.sms_outbox import outbox_context
from server.settings import Settings
from server.store import sms as sms_store
from server.store.tables import accounts, secure_links, sessions, sms_outbox
from server.web.context import app_runtime
from tests.conftest import ORIGIN, Clinic, RunningServer, settings_for_tests
from tests.serving import listening_socket, serve_app

DOB = "1980-05-17"  # make_clinic's default date of birth
WRONG_DOB = "1980-05-18"
PHONE_VIEWPORT = {"width": 390, "height": 844}
# The hub re-checks live sockets' sessions this often (the default is 15 s).
SESSION_CHECK_SECONDS = 0.2
TOKEN = r"[A-Za-z0-9_-]{43}"


class Node(RunningServer):
    """A running app with its runtime (links, real-time node, SMS provider) at hand."""

    def __init__(self, url: str, app: Starlette, port: int) -> None:
        super().__init__(url, app_runtime(app).services)
        self.app = app
        self.port = port

    @property
    def links(self) -> Any:
        return app_runtime(self.app).links

    @property
    def realtime(self) -> Any:
        return app_runtime(self.app).node


def node_settings(database_url: str, port: int, **overrides: Any) -> Settings:
    origin = f"http://127.0.0.1:{port}"
    values: dict[str, Any] = {
        "database_url": database_url, "public_url": origin,
        "allowed_origins": [origin, ORIGIN], "password_hash_concurrency": 2,
        "ws_session_check_seconds": SESSION_CHECK_SECONDS}
    values.update(overrides)
    return settings_for_tests(**values)


@contextlib.asynccontextmanager
async def run_node(database_url: str, master_key: bytes, clock: FakeClock, *,
                   port: int = 0, **overrides: Any) -> AsyncIterator[Node]:
    """The real app under real uvicorn, as conftest's ``server``, on ``port`` (0: a free
    one; a restarted node takes the same one), configured with its own address as
    PUBLIC_URL and allowed origin."""
    sock = listening_socket(port)
    port = sock.getsockname()[1]
    app = create_app(node_settings(database_url, port, **overrides), master_key,
                     clock=clock)
    try:
        async with serve_app(app, sock=sock):
            yield Node(f"http://127.0.0.1:{port}", app, port)
    finally:
        sock.close()


# --- links and codes ----------------------------------------------------------------------

async def new_link(node: Node, clinic: Clinic, ttl_hours: int = 72) -> str:
    """A fresh link for the clinic's conversation, minted as the notification SMS mints
    it (only its hash is stored); returns the token."""
    services = node.services
    url, row = services.link_mint.mint(clinic.account_id, clinic.conversation_id, ttl_hours,
                                       services.clock.now())
    async with services.db.write() as conn:
        await sms_store.insert_link(conn, **row)
    return url.rsplit("/s/", 1)[1]


async def link_row(node: Node, token: str):
    from server.services.links import token_hash

    async with node.services.db.read() as conn:
        return (await conn.execute(select(secure_links).where(
            secure_links.c.token_hash == token_hash(token)))).mappings().one()


async def patient_sessions(node: Node, clinic: Clinic) -> int:
    async with node.services.db.read() as conn:
        return (await conn.execute(select(func.count()).select_from(sessions).where(
            sessions.c.kind == "patient",
            sessions.c.conversation_id == clinic.conversation_id))).scalar_one()


async def require_code(node: Node, clinic: Clinic) -> None:
    async with node.services.db.write() as conn:
        await conn.execute(update(accounts).where(accounts.c.id == clinic.account_id)
                           .values(require_code=True))


async def codes_sent(node: Node, clinic: Clinic) -> list[str]:
    """The one-time codes queued for the clinic's patient, oldest first (decrypted
    from the SMS outbox, where the verification put them)."""
    services = node.services
    found = []
    async with services.db.read() as conn:
        rows = (await conn.execute(select(sms_outbox).where(
            sms_outbox.c.conversation_id == clinic.conversation_id,
            sms_outbox.c.kind == "code").order_by(sms_outbox.c.id))).mappings().all()
        for row in rows:
            body = await services.keyring.open(conn, clinic.account_id, row["body_enc"],
                                               outbox_context(clinic.account_id, row["ref"]))
            match = re.search(r"your verification code is (\d{6})\.", body)
            assert match is not None, body
            found.append(match.group(1))
    return found


async def verify(client: httpx.AsyncClient, token: str, date_of_birth: str,
                 code: str | None = None) -> httpx.Response:
    body = {"date_of_birth": date_of_birth}
    if code is not None:
        body["code"] = code
    return await client.post(f"/s/{token}/verify", json=body)


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


async def notification_link(node: Node, clinic: Clinic) -> tuple[str, str]:
    """The newest "you have a secure message" SMS the simulator holds for the clinic:
    (its body, the link's token)."""
    inbox = await app_runtime(node.app).sms_provider.inbox()
    mine = [sms for sms in inbox if sms["account_id"] == clinic.account_id]
    assert mine, "no SMS reached the simulator"
    body = mine[0]["body"]
    match = re.search(rf"View it at {re.escape(node.url)}/s/({TOKEN})$", body)
    assert match is not None, body
    return body, match.group(1)
