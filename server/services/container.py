"""Everything a node builds once at start-up, handed to the routes (composition result)."""

from __future__ import annotations

from dataclasses import dataclass

from server.auth import StaffAuth
from server.clock import Clock
from server.keys import KeyRing
from server.metrics import Metrics
from server.passwords import PasswordHashing
from server.patient_auth import PatientSessions
from server.services.accounts import Accounts
from server.services.messaging import Messaging
from server.services.patients import Patients
from server.services.sms_outbox import SmsOutbox
from server.services.streams import Streams
from server.settings import Settings
from server.sms.numbers import reserved_numbers
from server.store.db import Database


@dataclass(frozen=True, slots=True)
class Services:
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
    streams: Streams


def build_services(settings: Settings, master_key: bytes, clock: Clock | None = None,
                   metrics: Metrics | None = None) -> Services:
    """Wire the node's parts; the caller owns closing ``services.db``."""
    from server.clock import SystemClock
    from server.crypto import MasterKey

    clock = clock or SystemClock()
    master = MasterKey(master_key)
    db = Database(settings.database_url, audit_key=master.audit_key)
    keyring = KeyRing(master, clock, settings.key_refresh_seconds)
    hashing = PasswordHashing.from_settings(settings)
    patients = Patients(db, keyring, clock, settings.default_region)
    sms_outbox = SmsOutbox(keyring, clock, settings.public_url, settings.notify_window_seconds)
    return Services(
        settings=settings, clock=clock, db=db, metrics=metrics or Metrics(), keyring=keyring,
        hashing=hashing, auth=StaffAuth(db, clock, settings, hashing, master),
        accounts=Accounts(db, keyring, clock, hashing, settings.default_region,
                          reserved_numbers(settings)),
        patients=patients,
        messaging=Messaging(db, keyring, clock, sms_outbox),
        sms_outbox=sms_outbox,
        patient_sessions=PatientSessions(db, clock, settings),
        streams=Streams(db, keyring, clock, patients),
    )
