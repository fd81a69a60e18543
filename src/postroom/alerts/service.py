"""Opening, resolving and sending incidents (see :mod:`postroom.alerts`).

:func:`check_now` runs in the reconcile job. One pass:

1. read the problems (short session): integrations whose status stops them, stopped
   mailboxes, and mailboxes whose least recently synced folder in use was last synced more than
   ``alert_lag_minutes`` ago (a lag is not *opened* while its integration or mailbox is stopped:
   that incident already says so; it is resolved only once the mailbox has caught up);
2. open an incident for each new problem, resolve those whose problem is over (a stop whose
   status changed is replaced: the new status gets its own message);
3. send what is missing: the opening message of each open incident to every owner and admin
   (and the webhooks), the recovery message of each resolved incident to the channels that got
   its opening. Each channel is recorded right after it was sent; a failure is tried again at
   the next reconcile. No session is held while sending.

Two webhooks, each its own channel: the operator's ``POSTROOM_ALERT_WEBHOOK_URL`` (channel
``webhook``; trusted, every workspace's alerts) and the workspace's own URL, set on its Alerts
page (channel ``webhook:workspace``; stored encrypted, hostile: checked and pinned by
:mod:`postroom.alerts.webhook` before every post, and its last failure kept for the page).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from postroom import metrics
from postroom.accounts.models import MANAGING_ROLES, Membership, User, Workspace
from postroom.alerts import messages, webhook
from postroom.alerts.models import LAGGING, STOPPED, Incident
from postroom.crypto import DecryptionFailed, SecretBox, load_or_create_key
from postroom.integrations.models import Integration, Mailbox
from postroom.integrations.statuses import (
    ACCESS_DENIED,
    ACTIVE,
    ADMIN_CONSENT_MISSING,
    NEEDS_RECONNECT,
)
from postroom.mail import MailError, mailer
from postroom.settings import Settings
from postroom.sync.models import FolderSync

log = logging.getLogger("postroom.alerts")

STOPPING = (NEEDS_RECONNECT, ADMIN_CONSENT_MISSING, ACCESS_DENIED)
CLAIM = timedelta(minutes=2)  # one pass's hold on an incident while it sends
WEBHOOK_TIMEOUT = webhook.TIMEOUT  # both webhooks: 5 s to connect, 10 s each read or write
REMOVED = "removed"  # (integrations.service.REMOVED: a mailbox taken out, row kept)
OPERATOR_WEBHOOK = "webhook"  # the channel of POSTROOM_ALERT_WEBHOOK_URL
WORKSPACE_WEBHOOK = "webhook:workspace"  # the channel of the workspace's own webhook

Key = tuple[str, str, str]  # (integration id, scope, kind)


@dataclass(frozen=True)
class Problem:
    workspace_id: str
    integration_id: str
    mailbox_id: str | None
    scope: str
    kind: str
    code: str
    reason: str | None
    suppressed: bool = False  # a lag behind a stop: kept open if open, never opened

    @property
    def key(self) -> Key:
        return (self.integration_id, self.scope, self.kind)


def find_problems(db: Session, *, now: datetime, lag_minutes: int) -> dict[Key, Problem]:
    found: dict[Key, Problem] = {}
    stopped_integrations: set[str] = set()
    for integration in db.scalars(
        select(Integration).where(
            Integration.finished_at.is_not(None), Integration.status.in_(STOPPING)
        )
    ):
        stopped_integrations.add(integration.id)
        problem = Problem(
            workspace_id=integration.workspace_id,
            integration_id=integration.id,
            mailbox_id=None,
            scope="integration",
            kind=STOPPED,
            code=integration.status,
            reason=integration.status_reason,
        )
        found[problem.key] = problem
    stopped_mailboxes: set[str] = set()
    for mailbox, workspace_id in db.execute(
        select(Mailbox, Integration.workspace_id)
        .join(Integration, Integration.id == Mailbox.integration_id)
        .where(Integration.finished_at.is_not(None), Mailbox.status == ACCESS_DENIED)
    ).all():
        stopped_mailboxes.add(mailbox.id)
        if mailbox.integration_id in stopped_integrations:
            continue  # the integration's own incident says it
        problem = Problem(
            workspace_id=workspace_id,
            integration_id=mailbox.integration_id,
            mailbox_id=mailbox.id,
            scope=f"mailbox:{mailbox.id}",
            kind=STOPPED,
            code=ACCESS_DENIED,
            reason=mailbox.status_reason,
        )
        found[problem.key] = problem
    behind = now - timedelta(minutes=lag_minutes)
    oldest = func.min(func.coalesce(FolderSync.last_synced_at, FolderSync.baseline_at))
    for mailbox_id, integration_id, workspace_id, status, _oldest in db.execute(
        select(
            FolderSync.mailbox_id,
            FolderSync.integration_id,
            Integration.workspace_id,
            Integration.status,
            oldest,
        )
        .join(Integration, Integration.id == FolderSync.integration_id)
        .join(Mailbox, Mailbox.id == FolderSync.mailbox_id)
        .where(
            FolderSync.active.is_(True),
            FolderSync.watch.is_(False),
            Integration.finished_at.is_not(None),
            Mailbox.status != REMOVED,
        )
        .group_by(
            FolderSync.mailbox_id,
            FolderSync.integration_id,
            Integration.workspace_id,
            Integration.status,
        )
        .having(oldest < behind)
    ).all():
        problem = Problem(
            workspace_id=workspace_id,
            integration_id=integration_id,
            mailbox_id=mailbox_id,
            scope=f"mailbox:{mailbox_id}",
            kind=LAGGING,
            code="lag",
            reason=None,
            suppressed=status not in ACTIVE or mailbox_id in stopped_mailboxes,
        )
        found[problem.key] = problem
    return found


def reconcile_incidents(db: Session, *, now: datetime, lag_minutes: int) -> dict[str, int]:
    """Open incidents for new problems and resolve those that are over (no sending here)."""
    problems = find_problems(db, now=now, lag_minutes=lag_minutes)
    open_incidents = {
        (i.integration_id, i.scope, i.kind): i
        for i in db.scalars(
            select(Incident).where(Incident.resolved_at.is_(None)).with_for_update()
        )
    }
    counts = {"opened": 0, "resolved": 0}
    for key, incident in open_incidents.items():
        problem = problems.get(key)
        if problem is None:
            incident.resolved_at = now
            counts["resolved"] += 1
        elif incident.kind == STOPPED and incident.code != problem.code:
            # another status now: that one gets its own message; no "works again" for this
            incident.resolved_at = now
            incident.resolved_sent = ["superseded"]
            _open(db, problem, now)
            counts["opened"] += 1
    db.flush()
    for key, problem in problems.items():
        if key in open_incidents or problem.suppressed:
            continue
        _open(db, problem, now)
        counts["opened"] += 1
    db.flush()
    return counts


def _open(db: Session, problem: Problem, now: datetime) -> None:
    db.flush()  # a replaced incident is resolved before its successor is inserted
    db.add(
        Incident(
            workspace_id=problem.workspace_id,
            integration_id=problem.integration_id,
            mailbox_id=problem.mailbox_id,
            scope=problem.scope,
            kind=problem.kind,
            code=problem.code,
            reason=problem.reason,
            opened_at=now,
            opened_sent=[],
            resolved_sent=[],
        )
    )


# ---------------------------------------------------------------------- sending
@dataclass(frozen=True)
class Outgoing:
    incident_id: str
    recovery: bool
    message: messages.Message
    recipients: dict[str, str]  # channel "email:<user id>" -> address
    webhook: bool  # the operator's webhook still needs it
    workspace_id: str = ""
    workspace_webhook: bool = False  # the workspace's own webhook still needs it


def _about(db: Session, incident: Incident, settings: Settings, now: datetime) -> messages.About:
    integration = db.get(Integration, incident.integration_id)
    workspace = db.get(Workspace, incident.workspace_id)
    mailbox = db.get(Mailbox, incident.mailbox_id) if incident.mailbox_id else None
    lag = None
    last_error = None
    if incident.kind == LAGGING and incident.mailbox_id:
        oldest = db.execute(
            select(
                func.min(func.coalesce(FolderSync.last_synced_at, FolderSync.baseline_at)),
                func.max(FolderSync.last_error),
            ).where(
                FolderSync.mailbox_id == incident.mailbox_id,
                FolderSync.active.is_(True),
                FolderSync.watch.is_(False),
            )
        ).one()
        if oldest[0] is not None:
            lag = max(int((now - oldest[0]).total_seconds() // 60), 0)
        last_error = oldest[1]
    return messages.About(
        workspace_name=workspace.name if workspace else "",
        integration_name=integration.name if integration else "Outlook",
        integration_url=f"{settings.public_base_url}/integrations/{incident.integration_id}",
        kind=incident.kind,
        code=incident.code,
        reason=incident.reason,
        mailbox_address=mailbox.address if mailbox else None,
        since=incident.opened_at,
        lag_minutes=lag,
        threshold_minutes=settings.alert_lag_minutes,
        last_error=last_error,
    )


def _recipients(db: Session, workspace_id: str) -> dict[str, str]:
    rows = db.execute(
        select(User.id, User.email)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.workspace_id == workspace_id, Membership.role.in_(MANAGING_ROLES))
        .order_by(User.email)
    ).all()
    return {f"email:{user_id}": email for user_id, email in rows}


def _claim(db: Session, incident_id: str, now: datetime) -> bool:
    claimed = db.execute(
        update(Incident)
        .where(
            Incident.id == incident_id,
            (Incident.sending_until.is_(None)) | (Incident.sending_until < now),
        )
        .values(sending_until=now + CLAIM)
    )
    return bool(getattr(claimed, "rowcount", 0))


def pending(db: Session, settings: Settings, now: datetime) -> list[Outgoing]:
    """The messages still to send, each incident claimed for this pass."""
    webhook_on = settings.alert_webhook_url is not None
    hooked = set(db.scalars(select(Workspace.id).where(Workspace.alert_webhook.is_not(None))).all())
    outgoing: list[Outgoing] = []
    rows = list(
        db.scalars(
            select(Incident).where(
                (Incident.resolved_at.is_(None)) | (Incident.resolved_at > now - timedelta(days=2))
            )
        )
    )
    for incident in rows:
        sent = set(incident.opened_sent or [])
        if incident.resolved_at is None:
            recipients = {
                c: a for c, a in _recipients(db, incident.workspace_id).items() if c not in sent
            }
            webhook = webhook_on and OPERATOR_WEBHOOK not in sent
            own = incident.workspace_id in hooked and WORKSPACE_WEBHOOK not in sent
            recovery = False
        else:
            if not sent or "superseded" in (incident.resolved_sent or []):
                continue  # never announced (it passed before a message went out), or replaced
            done = set(incident.resolved_sent or [])
            everyone = _recipients(db, incident.workspace_id)
            recipients = {c: everyone[c] for c in sent if c in everyone and c not in done}
            webhook = webhook_on and OPERATOR_WEBHOOK in sent and OPERATOR_WEBHOOK not in done
            own = (
                incident.workspace_id in hooked
                and WORKSPACE_WEBHOOK in sent
                and WORKSPACE_WEBHOOK not in done
            )
            recovery = True
        if not recipients and not webhook and not own:
            continue
        if not _claim(db, incident.id, now):
            continue
        about = _about(db, incident, settings, now)
        message = (
            messages.recovery(about, at=incident.resolved_at or now)
            if recovery
            else messages.problem(about)
        )
        outgoing.append(
            Outgoing(
                incident.id,
                recovery,
                message,
                recipients,
                webhook,
                workspace_id=incident.workspace_id,
                workspace_webhook=own,
            )
        )
    return outgoing


def _record(db: Session, incident_id: str, channel: str, *, recovery: bool) -> None:
    incident = db.get(Incident, incident_id, with_for_update=True)
    if incident is None:
        return
    if recovery:
        incident.resolved_sent = [*(incident.resolved_sent or []), channel]
    else:
        incident.opened_sent = [*(incident.opened_sent or []), channel]


def post_webhook(
    url: str, payload: dict[str, Any], *, transport: httpx.BaseTransport | None = None
) -> None:
    """POST the JSON to a Slack or Teams incoming webhook; raise unless it answers 2xx."""
    with httpx.Client(timeout=WEBHOOK_TIMEOUT, trust_env=False, transport=transport) as client:
        response = client.post(url, json=payload)
    if not response.is_success:
        raise httpx.HTTPStatusError(
            f"the webhook answered {response.status_code}",
            request=response.request,
            response=response,
        )


def send(
    database: Any,
    settings: Settings,
    outgoing: Outgoing,
    *,
    box: SecretBox | None = None,
    now: datetime | None = None,
) -> tuple[int, int]:
    """Send one incident's message on each channel still missing it; returns how many went and
    how many failed (tried again at the next pass). ``box`` decrypts the workspace's webhook."""
    kind = "recovery" if outgoing.recovery else "problem"
    sent = failed = 0
    backend = mailer(settings)
    for channel, address in outgoing.recipients.items():
        try:
            backend.send(to=address, subject=outgoing.message.subject, text=outgoing.message.text)
        except MailError as exc:
            log.warning("incident %s: an alert email was not sent (%s)", outgoing.incident_id, exc)
            failed += 1
            continue
        with database.session() as db:
            _record(db, outgoing.incident_id, channel, recovery=outgoing.recovery)
        metrics.ALERTS_SENT.labels(kind, "email").inc()
        sent += 1
    if outgoing.webhook and settings.alert_webhook_url is not None:
        try:
            post_webhook(
                settings.alert_webhook_url.get_secret_value(),
                messages.webhook_payload(outgoing.message),
            )
        except httpx.HTTPError as exc:
            log.warning(
                "incident %s: the alert webhook failed (%s)",
                outgoing.incident_id,
                type(exc).__name__,
            )
            failed += 1
        else:
            with database.session() as db:
                _record(db, outgoing.incident_id, OPERATOR_WEBHOOK, recovery=outgoing.recovery)
            metrics.ALERTS_SENT.labels(kind, "webhook").inc()
            sent += 1
    if outgoing.workspace_webhook and _backing_off(database, outgoing.workspace_id, now):
        failed += 1  # it failed a moment ago: tried again after WEBHOOK_BACKOFF
    elif outgoing.workspace_webhook:
        delivery = post_workspace_webhook(
            database,
            settings,
            box or settings_box(settings),
            workspace_id=outgoing.workspace_id,
            payload=messages.webhook_payload(outgoing.message),
            incident_id=outgoing.incident_id,
        )
        if delivery.delivered:
            with database.session() as db:
                _record(db, outgoing.incident_id, WORKSPACE_WEBHOOK, recovery=outgoing.recovery)
            metrics.ALERTS_SENT.labels(kind, "workspace_webhook").inc()
            sent += 1
        else:
            failed += 1
    with database.session() as db:
        db.execute(
            update(Incident).where(Incident.id == outgoing.incident_id).values(sending_until=None)
        )
    return sent, failed


WEBHOOK_BACKOFF = timedelta(minutes=10)
"""After a workspace's webhook failed, its alerts wait this long before the next post: a
slow or dead hook of one workspace must not hold up every workspace's alerts pass after
pass (each post may take up to its timeout)."""


def _backing_off(database: Any, workspace_id: str, now: datetime | None) -> bool:
    with database.session() as db:
        row = db.execute(
            select(Workspace.alert_webhook_error, Workspace.alert_webhook_error_at).where(
                Workspace.id == workspace_id
            )
        ).one_or_none()
    if row is None or row[0] is None or row[1] is None:
        return False
    return bool(row[1] > (now or datetime.now(UTC)) - WEBHOOK_BACKOFF)


def check_sync(
    database: Any,
    settings: Settings,
    *,
    now: datetime | None = None,
    box: SecretBox | None = None,
) -> dict[str, int]:
    """One pass: open and resolve incidents, then send what is missing (blocking I/O). ``box``
    decrypts workspaces' webhooks (by default the one of ``settings``' token key)."""
    now = now or datetime.now(UTC)
    with database.session() as db:
        counts = reconcile_incidents(db, now=now, lag_minutes=settings.alert_lag_minutes)
    with database.session() as db:
        outgoing = pending(db, settings, now)
    if box is None and any(item.workspace_webhook for item in outgoing):
        box = settings_box(settings)
    counts["sent"] = counts["failed"] = 0
    for item in outgoing:
        sent, failed = send(database, settings, item, box=box, now=now)
        counts["sent"] += sent
        counts["failed"] += failed
    if counts["opened"] or counts["resolved"] or counts["sent"] or counts["failed"]:
        log.info(
            "alerts: %d opened, %d resolved, %d messages sent, %d failed",
            counts["opened"],
            counts["resolved"],
            counts["sent"],
            counts["failed"],
        )
    return counts


async def check_now(runtime: Any) -> dict[str, int]:
    """From the reconcile job: :func:`check_sync` off the event loop (SMTP is blocking)."""
    return await asyncio.to_thread(check_sync, runtime.database, runtime.settings, box=runtime.box)


# ---------------------------------------------------------- the workspace's own webhook
@dataclass(frozen=True)
class WebhookView:
    """What the Alerts page shows of a workspace's webhook: never the whole URL."""

    host: str
    ending: str  # the URL's last 4 characters
    error: str | None  # why the last post failed (a test or an alert), if it did
    error_at: datetime | None


@dataclass(frozen=True)
class Delivery:
    """The outcome of a post to a workspace's webhook."""

    error: str | None = None  # why it was not delivered, in plain words; None: delivered
    upstream: bool = False  # the webhook itself failed: no answer, or not 2xx

    @property
    def delivered(self) -> bool:
        return self.error is None


def settings_box(settings: Settings) -> SecretBox:
    """The SecretBox of ``settings``' token key (as the web app and the worker build it)."""
    configured = settings.token_key.get_secret_value() if settings.token_key else None
    return SecretBox(load_or_create_key(configured, settings.data_dir / "token.key"))


def _context(workspace_id: str) -> bytes:
    return f"alert-webhook:{workspace_id}".encode()


def set_workspace_webhook(
    *, db: Session, box: SecretBox, workspace_id: str, url: str, allow_private: bool
) -> None:
    """Check ``url`` (:func:`webhook.check`: the SSRF rules, its host resolved; raises
    :class:`webhook.Refused`, nothing stored) and store it encrypted, replacing the previous
    one. The check comes before the first query: no connection is held during the lookup."""
    url = url.strip()
    webhook.check(url, allow_private=allow_private)
    db.execute(
        update(Workspace)
        .where(Workspace.id == workspace_id)
        .values(
            alert_webhook=box.encrypt(url.encode(), context=_context(workspace_id)),
            alert_webhook_error=None,
            alert_webhook_error_at=None,
        )
    )


def remove_workspace_webhook(*, db: Session, workspace_id: str) -> None:
    db.execute(
        update(Workspace)
        .where(Workspace.id == workspace_id)
        .values(alert_webhook=None, alert_webhook_error=None, alert_webhook_error_at=None)
    )


def workspace_webhook_url(*, db: Session, box: SecretBox, workspace_id: str) -> str | None:
    """The workspace's webhook URL, decrypted (None when unset); :class:`DecryptionFailed`
    when the token key changed since it was saved."""
    blob = db.scalar(select(Workspace.alert_webhook).where(Workspace.id == workspace_id))
    if blob is None:
        return None
    return box.decrypt(blob, context=_context(workspace_id)).decode()


def workspace_webhook_view(*, db: Session, box: SecretBox, workspace_id: str) -> WebhookView | None:
    workspace = db.get(Workspace, workspace_id)
    if workspace is None or workspace.alert_webhook is None:
        return None
    try:
        url = workspace_webhook_url(db=db, box=box, workspace_id=workspace_id)
    except DecryptionFailed:
        return WebhookView(
            host="(unreadable)",
            ending="",
            error="The saved URL cannot be decrypted (the token key changed): set it again.",
            error_at=None,
        )
    assert url is not None
    return WebhookView(
        host=webhook.host_of(url),
        ending=url[-4:],
        error=workspace.alert_webhook_error,
        error_at=workspace.alert_webhook_error_at,
    )


def _webhook_outcome(database: Any, workspace_id: str, error: str | None) -> None:
    with database.session() as db:
        db.execute(
            update(Workspace)
            .where(Workspace.id == workspace_id, Workspace.alert_webhook.is_not(None))
            .values(
                alert_webhook_error=error[:200] if error else None,
                alert_webhook_error_at=datetime.now(UTC) if error else None,
            )
        )


def post_workspace_webhook(
    database: Any,
    settings: Settings,
    box: SecretBox,
    *,
    workspace_id: str,
    payload: dict[str, Any],
    incident_id: str | None = None,
) -> Delivery:
    """Post ``payload`` to the workspace's own webhook, checked again (:func:`webhook.post`).
    The outcome is kept for the Alerts page; a failure is logged with the workspace id and the
    host only (never the URL, never the answer's body)."""
    about = f"workspace {workspace_id}"
    if incident_id:
        about = f"incident {incident_id}, {about}"
    with database.session() as db:
        try:
            url = workspace_webhook_url(db=db, box=box, workspace_id=workspace_id)
        except DecryptionFailed:
            url = None
            error: str | None = "The saved URL cannot be decrypted (the token key changed)."
        else:
            error = None if url else "No webhook is set."
    upstream = False
    if url is None:
        log.warning("%s: the alert webhook was not posted to: %s", about, error)
    else:
        try:
            webhook.post(url, payload, allow_private=settings.alert_webhook_allow_private)
        except webhook.Refused as exc:
            error = f"Postroom did not post: {exc}"
        except webhook.Failed as exc:
            error, upstream = str(exc), True
        if error is not None:
            log.warning(
                "%s: the alert webhook at %s failed: %s", about, webhook.host_of(url), error
            )
    _webhook_outcome(database, workspace_id, error)
    return Delivery(error=error, upstream=upstream)


def send_test_message(
    database: Any, settings: Settings, box: SecretBox, *, workspace_id: str, workspace_name: str
) -> Delivery:
    """What "Send a test message" on the Alerts page does."""
    return post_workspace_webhook(
        database,
        settings,
        box,
        workspace_id=workspace_id,
        payload=messages.webhook_payload(messages.webhook_test(workspace_name)),
    )
