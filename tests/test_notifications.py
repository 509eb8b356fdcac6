"""Services finish their use case by telling the node (server/notify.py): the sessions
they ended, the account they changed, the notices consoles show. Checked with a
recording notifier, on the real store; a refused change tells nobody."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from server.audit import Actor
from server.clock import FakeClock
from server.errors import AppError, ErrorCode
from server.events import AnyEvent
from server.protocol import SettingsUpdate
from server.runtime import Services, build_services
from server.services.links import SecureLinks
from server.settings import Settings
from tests.conftest import PASSWORD, Clinic, make_clinic


class RecordingNotifier:
    """Every call, in order, as (method, arguments)."""

    node_id = "test-node"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def publish(self, event: AnyEvent) -> None:
        self.calls.append(("publish", event))

    def session_ended(self, session_id: str) -> None:
        self.calls.append(("session_ended", session_id))

    def account_changed(self, account_id: str, portal_active: bool,
                        clinic_name: str) -> None:
        self.calls.append(("account_changed", account_id, portal_active, clinic_name))

    def notice(self, account_id: str, conversation_id: str, notice: str) -> None:
        self.calls.append(("notice", account_id, conversation_id, notice))

    def wake_sms(self) -> None:
        self.calls.append(("wake_sms",))

    def patient_online(self, conversation_id: str) -> bool:
        return False


@pytest.fixture
def told() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
async def told_services(settings: Settings, master_key: bytes, clock: FakeClock,
                        told: RecordingNotifier) -> AsyncIterator[Services]:
    built = build_services(settings, master_key, clock, notifier=told)
    yield built
    await built.db.close()


@pytest.fixture
async def quiet_clinic(told_services: Services, told: RecordingNotifier) -> Clinic:
    """A clinic made before the test starts listening."""
    clinic = await make_clinic(told_services)
    told.calls.clear()
    return clinic


def links(services: Services, told: RecordingNotifier) -> SecureLinks:
    return SecureLinks(db=services.db, keyring=services.keyring, clock=services.clock,
                       sms=services.sms_outbox, mint=services.link_mint,
                       sessions=services.patient_sessions,
                       notifier=told)


async def test_logout_ends_the_session_everywhere(
        told_services: Services, quiet_clinic: Clinic, told: RecordingNotifier) -> None:
    token, principal = await told_services.auth.login(quiet_clinic.staff_email, PASSWORD,
                                                      Actor("anonymous"))
    await told_services.auth.logout(principal, principal.actor())
    assert told.calls == [("session_ended", principal.session_id)]
    with pytest.raises(AppError):  # ended in the store by the time it was told
        await told_services.auth.authenticate(token)


async def test_deactivation_ends_each_session_of_the_member(
        told_services: Services, quiet_clinic: Clinic, told: RecordingNotifier) -> None:
    sessions = [(await told_services.auth.login(quiet_clinic.staff_email, PASSWORD,
                                                Actor("anonymous")))[1].session_id
                for _ in range(2)]
    admin = Actor("staff", quiet_clinic.admin_id)
    _, ended = await told_services.accounts.deactivate_staff(
        quiet_clinic.account_id, quiet_clinic.staff_id, admin)
    assert sorted(ended) == sorted(sessions)
    assert told.calls == [("session_ended", session_id) for session_id in ended]


async def test_settings_change_tells_every_console(
        told_services: Services, quiet_clinic: Clinic, told: RecordingNotifier) -> None:
    admin = Actor("staff", quiet_clinic.admin_id)
    await told_services.accounts.update_settings(
        quiet_clinic.account_id, SettingsUpdate(clinic_name="  Harbor Clinic ",
                                                portal_active=False), admin)
    assert told.calls == [("account_changed", quiet_clinic.account_id, False,
                           "Harbor Clinic")]


async def test_a_refused_change_tells_nobody(
        told_services: Services, quiet_clinic: Clinic, told: RecordingNotifier) -> None:
    admin = Actor("staff", quiet_clinic.admin_id)
    with pytest.raises(AppError) as refused:
        await told_services.accounts.update_settings(
            quiet_clinic.account_id, SettingsUpdate(sms_number="+14155550199"), admin)
    assert refused.value.code is ErrorCode.FORBIDDEN
    with pytest.raises(AppError):
        await told_services.accounts.deactivate_staff(quiet_clinic.account_id,
                                                      quiet_clinic.admin_id, admin)
    with pytest.raises(AppError) as unknown:
        await links(told_services, told).revoke(quiet_clinic.account_id,
                                                str(uuid.uuid4()), admin)
    assert unknown.value.code is ErrorCode.NOT_FOUND
    assert told.calls == []


async def test_patient_end_session_closes_its_sockets(
        told_services: Services, quiet_clinic: Clinic, told: RecordingNotifier) -> None:
    _, principal = await told_services.patient_sessions.open(
        quiet_clinic.account_id, quiet_clinic.patient_id, quiet_clinic.conversation_id,
        Actor("anonymous"))
    await told_services.patient_sessions.end(principal)
    assert told.calls == [("session_ended", principal.session_id)]


async def test_revoking_links_ends_the_conversations_patient_sessions(
        told_services: Services, quiet_clinic: Clinic, told: RecordingNotifier) -> None:
    _, principal = await told_services.patient_sessions.open(
        quiet_clinic.account_id, quiet_clinic.patient_id, quiet_clinic.conversation_id,
        Actor("anonymous"))
    told.calls.clear()
    _, ended = await links(told_services, told).revoke(
        quiet_clinic.account_id, quiet_clinic.conversation_id,
        Actor("staff", quiet_clinic.staff_id))
    assert ended == [principal.session_id]
    assert told.calls == [("session_ended", principal.session_id)]


async def test_a_resent_link_wakes_the_sms_worker_and_tells_the_consoles(
        told_services: Services, quiet_clinic: Clinic, told: RecordingNotifier) -> None:
    await links(told_services, told).resend(
        quiet_clinic.account_id, quiet_clinic.conversation_id, quiet_clinic.staff_id,
        Actor("staff", quiet_clinic.staff_id))
    assert told.calls == [("wake_sms",), ("notice", quiet_clinic.account_id,
                                          quiet_clinic.conversation_id, "link_resent")]
