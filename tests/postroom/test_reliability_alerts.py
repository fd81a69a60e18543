"""Issue 15, alerts: when an integration or a mailbox stops, or a mailbox's sync lags, the
workspace's owners and admins are told once per incident — by email through a real SMTP server
(aiosmtpd) and on a Slack/Teams-style webhook (a real HTTP server here) — with what happened,
why and the one button to press, and once more when it works again. The integration's page
shows each folder's last successful sync, lag and last error."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from m365sim.identity import events
from m365sim.state import EmulatorState
from postroom.accounts.models import Membership, User, Workspace
from postroom.alerts import service as alerts
from postroom.alerts.models import Incident
from postroom.integrations.models import Integration, Mailbox
from postroom.settings import Settings
from postroom.sync.models import FolderSync
from tests.helpers import Org
from tests.postroom.conftest import Postroom
from tests.postroom.msdriver import reconnect
from tests.postroom.smtp import INBOX, Mail
from tests.postroom.test_sync import _run, setup_personal, wait_for_jobs

OWNER = "owner@acme.test"
ADMIN = "ada.admin@acme.test"
MEMBER = "max.member@acme.test"


class Hook:
    """A Slack/Teams incoming webhook stand-in: records each JSON body; answers ``status``."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.status = 200
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                if hook.status == 200:
                    hook.bodies.append(json.loads(raw))
                self.send_response(hook.status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/services/T000/B000/XXXX"

    @property
    def texts(self) -> list[str]:
        return [str(b["text"]) for b in self.bodies]


@pytest.fixture
def hook() -> Iterator[Hook]:
    server = Hook()
    yield server
    server.server.shutdown()
    server.server.server_close()


def alert_settings(postroom: Postroom, hook: Hook, **more: Any) -> Settings:
    return postroom.settings.model_copy(
        update={"alert_webhook_url": SecretStr(hook.url), "alert_lag_minutes": 30, **more}
    )


def add_people(postroom: Postroom) -> None:
    """An admin and a member beside the owner (straight into the database: the invitation flow
    has its own tests)."""
    with postroom.database.session() as db:
        workspace = db.scalar(select(Workspace))
        assert workspace is not None
        for email, role in ((ADMIN, "admin"), (MEMBER, "member")):
            user = User(email=email, name=email.split("@")[0], password_hash="x")
            db.add(user)
            db.flush()
            db.add(Membership(workspace_id=workspace.id, user_id=user.id, role=role))


def alerts_to(address: str) -> list[Mail]:
    return [m for m in INBOX.to(address) if m.subject.startswith("Postroom ")]


def integration_of(postroom: Postroom) -> Integration:
    with postroom.database.session() as db:
        found = db.scalar(select(Integration))
        assert found is not None
        return found


def set_up(web: httpx.Client, postroom: Postroom, org: Org) -> str:
    base = setup_personal(web, postroom, org)
    postroom.drain()
    add_people(postroom)
    return base


def test_a_stopped_integration_is_told_once_and_its_recovery_once(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, hook: Hook
) -> None:
    org = postroom.org(sim)
    base = set_up(web, postroom, org)
    settings = alert_settings(postroom, hook)
    assert alerts.check_sync(postroom.database, settings)["opened"] == 0

    # Microsoft revokes the sign-in (a password reset): the next sync gets Needs reconnect.
    events.revoke_sign_in_sessions(sim, org.alice)
    sim.clock.advance(3700)
    org.deliver(org.alice, subject="Invoice while disconnected")
    wait_for_jobs(postroom)
    postroom.drain()
    assert integration_of(postroom).status == "needs_reconnect"

    name = integration_of(postroom).name  # "Outlook — <the account>"
    counts = alerts.check_sync(postroom.database, settings)
    assert counts["opened"] == 1 and counts["sent"] == 3  # owner, admin, webhook
    for address in (OWNER, ADMIN):
        [mail] = alerts_to(address)
        assert mail.subject == f'Postroom stopped: "{name}" — Needs reconnect'
        assert "Microsoft revoked the sign-in" in mail.text  # why
        assert "press Reconnect" in mail.text  # the one button
        assert f"{postroom.url}/integrations/" in mail.text  # where it is
        assert "nothing is lost" in mail.text
        assert "Invoice" not in mail.text  # nothing from any email
    assert alerts_to(MEMBER) == []
    [chat] = hook.texts
    assert "Needs reconnect" in chat and "Press Reconnect" in chat
    assert org.alice.user_principal_name not in chat and "…@" in chat

    # Once per incident: later passes (and the reconcile job itself) send nothing more.
    assert alerts.check_sync(postroom.database, settings)["sent"] == 0
    from postroom.sync.jobs import reconcile_now

    assert _run(postroom, reconcile_now)["alerts_sent"] == 0
    assert len(alerts_to(OWNER)) == 1 and len(hook.bodies) == 1

    # Reconnect: the recovery message, once, to the same people and the webhook.
    reconnect(
        web,
        base,
        back_to=postroom.url,
        username=org.alice.user_principal_name,
        password="alice-pass",
    )
    counts = alerts.check_sync(postroom.database, settings)
    assert counts["resolved"] == 1 and counts["sent"] == 3
    for address in (OWNER, ADMIN):
        first, second = alerts_to(address)
        assert second.subject == f'Postroom works again: "{name}"'
        assert "nothing was lost" in second.text
    assert "works again" in hook.texts[1]
    assert alerts.check_sync(postroom.database, settings)["sent"] == 0
    assert len(alerts_to(OWNER)) == 2 and len(hook.bodies) == 2


def test_admin_consent_missing_asks_to_retry_admin_consent(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, hook: Hook
) -> None:
    org = postroom.org(sim)
    set_up(web, postroom, org)
    with postroom.database.session() as db:
        db.execute(
            update(Integration).values(
                status="admin_consent_missing", status_reason="consent_missing"
            )
        )
    alerts.check_sync(postroom.database, alert_settings(postroom, hook))
    [mail] = alerts_to(OWNER)
    assert "Admin consent missing" in mail.subject
    assert "press Retry admin consent" in mail.text
    assert "no application access in this tenant" in mail.text


def test_a_stopped_mailbox_names_itself_by_email_but_not_in_chat(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, hook: Hook
) -> None:
    org = postroom.org(sim)
    set_up(web, postroom, org)
    address = org.alice.user_principal_name
    with postroom.database.session() as db:
        db.execute(update(Mailbox).values(status="access_denied", status_reason="policy_denied"))
    settings = alert_settings(postroom, hook)
    alerts.check_sync(postroom.database, settings)
    [mail] = alerts_to(OWNER)
    assert f"the mailbox {address}" in mail.text
    assert "application access policy" in mail.text and "press Check connection" in mail.text
    [chat] = hook.texts
    assert address not in chat and "for a mailbox" in chat
    with postroom.database.session() as db:
        db.execute(update(Mailbox).values(status="connected", status_reason=None))
    assert alerts.check_sync(postroom.database, settings)["sent"] == 3
    assert "works again" in alerts_to(OWNER)[-1].subject


def test_a_lagging_mailbox_is_told_with_its_last_error_and_when_it_caught_up(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, hook: Hook
) -> None:
    org = postroom.org(sim)
    base = set_up(web, postroom, org)
    settings = alert_settings(postroom, hook)
    now = datetime.now(UTC)
    with postroom.database.session() as db:
        db.execute(
            update(FolderSync).values(
                last_synced_at=now - timedelta(minutes=20), last_error="http_503"
            )
        )
    assert alerts.check_sync(postroom.database, settings)["opened"] == 0  # under 30 minutes
    with postroom.database.session() as db:
        db.execute(update(FolderSync).values(last_synced_at=now - timedelta(minutes=45)))
    assert alerts.check_sync(postroom.database, settings)["sent"] == 3
    [mail] = alerts_to(OWNER)
    assert mail.subject == f'Postroom is behind: "{integration_of(postroom).name}"'
    assert "45 minutes ago" in mail.text and "http_503" in mail.text
    assert org.alice.user_principal_name in mail.text
    assert alerts.check_sync(postroom.database, settings)["sent"] == 0

    # the page shows the lag and the last error
    page = web.get(base)
    assert page.status_code == 200
    assert '<th scope="col">Lag</th>' in page.text
    assert 'data-last-error="http_503"' in page.text
    assert 'data-lag="27' in page.text or 'data-lag="26' in page.text  # 45 min in seconds

    # a sync that works: caught up, told once, and the error is gone from the page
    with postroom.database.session() as db:
        db.execute(update(FolderSync).values(last_synced_at=None, delta_link=None))
    from postroom.sync.jobs import reconcile_now

    _run(postroom, reconcile_now)
    postroom.drain()
    with postroom.database.session() as db:
        fs = db.scalar(select(FolderSync).where(FolderSync.watch.is_(False)))
        assert fs is not None and fs.last_error is None and fs.last_synced_at is not None
    alerts.check_sync(postroom.database, settings)
    assert alerts_to(OWNER)[-1].subject.startswith("Postroom caught up: ")
    assert len(alerts_to(OWNER)) == 2
    assert 'data-last-error=""' in web.get(base).text


def test_no_lag_alert_behind_a_stop_and_a_failed_send_is_tried_again(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, hook: Hook
) -> None:
    org = postroom.org(sim)
    set_up(web, postroom, org)
    with postroom.database.session() as db:
        db.execute(
            update(Integration).values(status="needs_reconnect", status_reason="sessions_revoked")
        )
        db.execute(update(FolderSync).values(last_synced_at=datetime.now(UTC) - timedelta(hours=3)))
    # SMTP unreachable and the webhook failing: nothing is recorded as sent
    broken = alert_settings(postroom, hook, smtp_url=SecretStr("smtp://127.0.0.1:1"))
    hook.status = 500
    counts = alerts.check_sync(postroom.database, broken)
    assert counts["opened"] == 1 and counts["sent"] == 0  # the stop only: no lag incident
    assert alerts_to(OWNER) == [] and hook.bodies == []
    # back: the next pass sends it, once
    hook.status = 200
    settings = alert_settings(postroom, hook)
    assert alerts.check_sync(postroom.database, settings)["sent"] == 3
    assert alerts.check_sync(postroom.database, settings)["sent"] == 0
    with postroom.database.session() as db:
        kinds = [i.kind for i in db.scalars(select(Incident))]
    assert kinds == ["stopped"]
    assert len(alerts_to(OWNER)) == 1


def test_a_change_of_stop_is_a_new_message_without_a_false_recovery(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, hook: Hook
) -> None:
    org = postroom.org(sim)
    set_up(web, postroom, org)
    settings = alert_settings(postroom, hook)
    with postroom.database.session() as db:
        db.execute(
            update(Integration).values(status="needs_reconnect", status_reason="sessions_revoked")
        )
    alerts.check_sync(postroom.database, settings)
    with postroom.database.session() as db:
        db.execute(
            update(Integration).values(
                status="admin_consent_missing", status_reason="consent_missing"
            )
        )
    alerts.check_sync(postroom.database, settings)
    subjects = [m.subject.rsplit(" — ", 1)[-1] for m in alerts_to(OWNER)]
    assert subjects == ["Needs reconnect", "Admin consent missing"]
