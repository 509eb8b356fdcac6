"""The node's runtime: everything a serving node builds once, in one typed object.

The lifespan (``server/app.py``) starts it with :meth:`Runtime.start` and stops it;
routes reach it through ``server/web/context.py``; the command line drains it on
SIGTERM. One-off commands, seeding and tests build only the :class:`Services` (no hub,
no SMS worker) with an offline notifier (``server/notify.py``).

Services never import the hub: they tell the node what they changed through the
:class:`NodeNotifier` built here, the one place that calls the hub on their behalf.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass

from server.address_limits import AddressLimit
from server.audit_upgrade import anchor_legacy
from server.auth import StaffAuth
from server.brokers.base import Broker, broker_from_url
from server.clock import Clock, SystemClock
from server.crypto import MasterKey
from server.events import AnyEvent
from server.frames import FrameHandler
from server.keys import KeyRing
from server.metrics import Metrics
from server.notify import Notifier
from server.passwords import PasswordHashing
from server.patient_auth import PatientSessions
from server.realtime.node import Node
from server.services.accounts import Accounts
from server.services.audit_records import AuditRecords
from server.services.inbound_sms import InboundSms
from server.services.links import LinkMint, SecureLinks
from server.services.messaging import Messaging
from server.services.patients import Patients
from server.services.sending import Sending
from server.services.sms_outbox import SmsOutbox
from server.services.sms_worker import OutboxWorker
from server.services.streams import Streams
from server.settings import Settings
from server.sms.base import SmsProvider
from server.sms.numbers import reserved_numbers, shared_number
from server.sms.simulator import SimulatorProvider
from server.sms.twilio import SignatureChecker, TwilioProvider
from server.store.db import Database
from server.store.group_commit import GroupCommit
from server.store.migrate import check_current

log = logging.getLogger("securechat.app")
# How long shutdown waits for the group-commit writer: a batch is a few milliseconds, a
# write that waits on a locked store gives up after the store's own timeout.
WRITER_FLUSH_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Services:
    """The use cases and what they share; nothing here runs a task of its own."""

    settings: Settings
    clock: Clock
    db: Database
    metrics: Metrics
    keyring: KeyRing
    hashing: PasswordHashing
    auth: StaffAuth
    accounts: Accounts
    patients: Patients
    messaging: Messaging
    patient_sessions: PatientSessions
    sms_outbox: SmsOutbox
    link_mint: LinkMint
    streams: Streams
    audit_records: AuditRecords


def build_services(settings: Settings, master_key: bytes, clock: Clock | None = None,
                   metrics: Metrics | None = None, *, notifier: Notifier) -> Services:
    """Wire the services; the caller owns closing ``services.db``."""
    clock = clock or SystemClock()
    master = MasterKey(master_key)
    db = Database(settings.database_url, audit_key=master.audit_key)
    keyring = KeyRing(master, clock, settings.key_refresh_seconds)
    hashing = PasswordHashing.from_settings(settings)
    patients = Patients(db, keyring, clock, settings.default_region, notifier)
    sms_outbox = SmsOutbox(keyring, clock, settings.notify_window_seconds)
    link_mint = LinkMint(settings.public_url)
    return Services(
        settings=settings, clock=clock, db=db, metrics=metrics or Metrics(), keyring=keyring,
        hashing=hashing, auth=StaffAuth(db, clock, settings, hashing, master, notifier),
        accounts=Accounts(db, keyring, clock, hashing, notifier, settings.default_region,
                          reserved_numbers(settings)),
        patients=patients,
        messaging=Messaging(db, keyring, clock, sms_outbox, link_mint),
        link_mint=link_mint,
        sms_outbox=sms_outbox,
        patient_sessions=PatientSessions(db, clock, settings, notifier),
        streams=Streams(db, keyring, clock, patients),
        audit_records=AuditRecords(db, clock),
    )


class NodeNotifier:
    """The notifier of a serving node: events go through its real-time node (to its own
    sockets and, by the broker, to every other node's), SMS wake-ups to its outbox worker.

    The services get it before the node and the worker exist (the node reads the store
    through those services' streams); :meth:`Runtime.start` binds them before the node
    takes its first request.
    """

    _node: Node
    _worker: OutboxWorker

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def bind(self, node: Node, worker: OutboxWorker) -> None:
        self._node = node
        self._worker = worker

    def publish(self, event: AnyEvent) -> None:
        self._node.publish(event)

    def session_ended(self, session_id: str) -> None:
        self._node.end_session(session_id)

    def account_changed(self, account_id: str, portal_active: bool,
                        clinic_name: str) -> None:
        self._node.account_changed(account_id, portal_active, clinic_name)

    def notice(self, account_id: str, conversation_id: str, notice: str) -> None:
        self._node.notice(account_id, conversation_id, notice)

    def wake_sms(self) -> None:
        self._worker.wake()

    def patient_online(self, conversation_id: str) -> bool:
        return self._node.hub.patient_online(conversation_id)


@dataclass(frozen=True, slots=True)
class Runtime:
    services: Services
    notifier: NodeNotifier
    broker: Broker
    node: Node  # the real-time node: publish API, broker handler, its hub of sockets
    sms_provider: SmsProvider
    sms_worker: OutboxWorker
    sending: Sending
    sms_inbound: InboundSms
    links: SecureLinks
    frames: FrameHandler
    ws_addresses: AddressLimit  # open sockets per client address on this node
    twilio_signatures: SignatureChecker | None  # with ``SMS_PROVIDER=twilio`` only

    @classmethod
    async def start(cls, settings: Settings, master_key: bytes, metrics: Metrics, *,
                    clock: Clock | None = None, broker: Broker | None = None) -> Runtime:
        """Check the schema, start the real-time node and the SMS worker, wire the rest. On a
        failure what was opened is closed again before the error propagates."""
        notifier = NodeNotifier(node_id=secrets.token_hex(4))
        services = build_services(settings, master_key, clock, metrics, notifier=notifier)
        node = worker = None
        try:
            await check_current(services.db)
            # Once per store: anchors the audit entries of builds before the audit key.
            await anchor_legacy(services.db, services.clock, MasterKey(master_key).audit_key)
            broker = broker or broker_from_url(settings.redis_url)
            node = Node(streams=services.streams, broker=broker, settings=settings,
                        clock=services.clock, metrics=metrics, node_id=notifier.node_id)
            await node.start()
            provider = _sms_provider(settings, services)
            worker = OutboxWorker(db=services.db, keyring=services.keyring,
                                  clock=services.clock, settings=settings, provider=provider,
                                  metrics=metrics, publish=notifier.publish,
                                  node_id=notifier.node_id)
            notifier.bind(node, worker)
            worker.start()
        except BaseException:
            await _close(services, node, worker)
            raise
        sending = Sending(notifier, services.messaging, metrics)
        return cls(
            services=services, notifier=notifier, broker=broker, node=node,
            sms_provider=provider, sms_worker=worker, sending=sending,
            sms_inbound=InboundSms(
                db=services.db, clock=services.clock, messaging=services.messaging,
                patients=services.patients, default_region=settings.default_region,
                notifier=notifier, shared_number=shared_number(settings)),
            links=SecureLinks(db=services.db, keyring=services.keyring, clock=services.clock,
                              sms=services.sms_outbox, mint=services.link_mint,
                              sessions=services.patient_sessions,
                              notifier=notifier),
            frames=FrameHandler(node, services.streams, sending, services.clock, metrics),
            ws_addresses=AddressLimit(settings.ws_max_per_address),
            twilio_signatures=_twilio_signatures(settings),
        )

    async def drain(self, timeout: float) -> None:
        """Close every socket with 1012 and wait up to ``timeout`` seconds for them."""
        await self.node.drain(timeout)

    async def stop(self) -> None:
        """Sockets are closed by now (the command line's drain, then uvicorn's
        shutdown): what the group-commit writer still holds is committed before the
        store closes, so a send either was stored or was never acknowledged."""
        await _close(self.services, self.node, self.sms_worker)


async def _close(services: Services, node: Node | None, worker: OutboxWorker | None
                 ) -> None:
    await _writer_idle(services.messaging.writer, WRITER_FLUSH_SECONDS)
    if worker is not None:
        await worker.stop()
    if node is not None:
        await node.stop()
    await services.db.close()


async def _writer_idle(writer: GroupCommit, timeout: float) -> None:
    """Wait for the group-commit writer's batches in progress (it answers its own
    failures); past ``timeout`` the store closes under it and the batch fails whole."""
    try:
        await asyncio.wait_for(writer.idle(), timeout)
    except TimeoutError:
        log.warning("group-commit writer still busy at shutdown", extra={"event": "stop"})


def _sms_provider(settings: Settings, services: Services) -> SmsProvider:
    if settings.sms_provider == "twilio":
        assert settings.twilio_account_sid and settings.twilio_auth_token
        return TwilioProvider(account_sid=settings.twilio_account_sid,
                              auth_token=settings.twilio_auth_token,
                              api_base=settings.twilio_api_base,
                              status_callback=settings.public_url.rstrip("/")
                              + "/sms/twilio/status")
    return SimulatorProvider(services.db, services.keyring, services.clock)


def _twilio_signatures(settings: Settings) -> SignatureChecker | None:
    if settings.sms_provider != "twilio":
        return None
    assert settings.twilio_auth_token is not None
    return SignatureChecker(settings.twilio_auth_token)
