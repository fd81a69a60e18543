"""The sync engine: one folder's delta, each new message decided and executed exactly once.

``sync_folder`` is the whole path of ARCHITECTURE.md's data flow for one (mailbox, folder):

1. read the state (short session): folder sync row, mailbox, integration, categories;
2. page through the delta from the stored link (the first run starts at the moment setup
   finished, so existing mail is left alone unless a backfill was chosen);
3. per new message: claim it in the ledger, ``decide`` (pure), ``execute`` (idempotent);
4. store the next/delta link after each page — only once that page's messages are claimed and
   done, so a crash repeats at most one page, and the ledger makes the repeat a no-op.

``decide`` gets the integration's learned classifier once it is trained
(:mod:`postroom.learning.service`). A message already done that comes back re-categorized by a
person is a *correction*: learned at once, never acted on again. Category folders the model
files into are synced in *watch* mode (corrections only), so corrections of filed mail and moves
between category folders are seen too.

A 410 ``SyncStateNotFound`` restarts the delta from the baseline: nothing already done is
repeated (the ledger). A token failure pauses the integration with its status and returns:
no retry loop. Subscriptions (``ensure_subscription``/``renew``) fall back to polling where
Graph cannot notify (delegated shared mailboxes, no public URL).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from postroom.graph import (
    AccessDenied,
    GraphClient,
    GraphError,
    NotFound,
    SyncStateExpired,
)
from postroom.integrations import service as integrations
from postroom.integrations.graph_access import Connection, IntegrationTokens, TokenFailure
from postroom.integrations.models import Category, Integration, Mailbox
from postroom.integrations.statuses import REASONS
from postroom.learning import service as learning
from postroom.processing.decide import decide
from postroom.processing.executor import claim, execute
from postroom.processing.models import LedgerEntry
from postroom.processing.plan import CategoryConfig
from postroom.processing.rules import RuleGroup
from postroom.processing.view import Address, MessageView
from postroom.sync.models import FolderSync
from postroom.sync.runtime import Runtime

log = logging.getLogger("postroom.sync")

ACTIVE = ("connected", "syncing", "backfilling")
SYNC_SELECT = (
    "id,internetMessageId,conversationId,subject,from,toRecipients,ccRecipients,"
    "receivedDateTime,categories,parentFolderId,hasAttachments,importance,bodyPreview,isDraft"
)
SUBSCRIPTION_LIFETIME = timedelta(days=2)
RENEW_WHEN_LEFT = timedelta(days=1)  # renew at half the lifetime


@dataclass
class FolderWork:
    """Everything one sync needs, read in one short session."""

    sync_id: str
    integration_id: str
    mailbox_row_id: str
    mailbox: str  # Graph user id or address
    mailbox_kind: str
    folder_key: str
    folder_id: str | None
    delta_link: str | None
    baseline: datetime
    connection: Connection
    categories: list[CategoryConfig]
    colors: dict[str, str]
    manage_colors: bool
    allow_forward: bool
    status: str
    watch: bool = False  # a category folder: corrections only, nothing is processed


@dataclass
class SyncResult:
    processed: int = 0
    skipped: int = 0
    pages: int = 0
    paused: str | None = None


def _connection(runtime: Runtime, integration: Integration) -> Connection:
    cache = None
    if integration.kind == "personal":
        cache = integrations.token_cache(box=runtime.box, integration=integration)
    return Connection(
        kind=integration.kind,
        tenant_id=integration.tenant_id or "organizations",
        account_oid=integration.account_oid,
        cache=cache,
        scopes=list(integration.granted_scopes or []),
    )


def category_configs(rows: list[Category]) -> list[CategoryConfig]:
    configs = []
    for row in rows:
        rules = None
        raw_rules = getattr(row, "rules", None)
        if raw_rules:
            rules = RuleGroup.from_json(raw_rules)
        configs.append(
            CategoryConfig(
                name=row.name,
                color=row.color,
                folder=row.folder,
                forward_to=tuple(row.forward_to or ()),
                forward_comment=row.forward_comment or "",
                rules=rules,
                description=row.description,
            )
        )
    return configs


def load_work(runtime: Runtime, sync_id: str) -> FolderWork | None:
    with runtime.database.session() as db:
        fs = db.get(FolderSync, sync_id)
        if fs is None or not fs.active:
            return None
        mailbox = db.get(Mailbox, fs.mailbox_id)
        integration = db.get(Integration, fs.integration_id)
        if mailbox is None or integration is None:
            return None
        rows = list(
            db.scalars(
                select(Category)
                .where(Category.integration_id == integration.id)
                .order_by(Category.position)
            )
        )
        scopes = integration.granted_scopes or []
        return FolderWork(
            sync_id=fs.id,
            integration_id=integration.id,
            mailbox_row_id=mailbox.id,
            mailbox=mailbox.graph_user_id,
            mailbox_kind=mailbox.kind,
            folder_key=fs.folder_key,
            folder_id=fs.folder_id,
            delta_link=fs.delta_link,
            baseline=fs.baseline_at,
            connection=_connection(runtime, integration),
            categories=category_configs(rows),
            colors={r.name: r.color for r in rows},
            manage_colors=integration.kind == "organization"
            or any(s.endswith("/MailboxSettings.ReadWrite") for s in scopes),
            allow_forward=integration.kind == "organization"
            or any(s.endswith(("/Mail.Send", "/Mail.Send.Shared")) for s in scopes),
            status=integration.status,
            watch=fs.watch,
        )


def message_view(data: dict[str, Any]) -> MessageView:
    def address(item: Any) -> Address | None:
        if not isinstance(item, dict):
            return None
        email = item.get("emailAddress") or {}
        return Address(str(email.get("name") or ""), str(email.get("address") or ""))

    def addresses(items: Any) -> tuple[Address, ...]:
        found = [address(i) for i in items or []] if isinstance(items, list) else []
        return tuple(a for a in found if a is not None)

    received = None
    raw = data.get("receivedDateTime")
    if isinstance(raw, str):
        try:
            received = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            received = None
    body = data.get("body")
    body_text = ""
    if isinstance(body, dict) and isinstance(body.get("content"), str):
        body_text = body["content"]
    elif isinstance(data.get("bodyPreview"), str):
        body_text = data["bodyPreview"]
    return MessageView(
        id=str(data["id"]),
        internet_message_id=str(data.get("internetMessageId") or data["id"]),
        subject=str(data.get("subject") or ""),
        sender=address(data.get("from")),
        to=addresses(data.get("toRecipients")),
        cc=addresses(data.get("ccRecipients")),
        body_text=body_text,
        has_attachments=bool(data.get("hasAttachments")),
        importance=str(data.get("importance") or "normal"),
        received=received,
        categories=tuple(str(c) for c in data.get("categories") or []),
        folder_id=data.get("parentFolderId"),
        conversation_id=str(data.get("conversationId") or ""),
    )


def _needs_body(categories: list[CategoryConfig]) -> bool:
    return any(c.rules is not None and "Body" in c.rules.fields for c in categories)


async def _resolve_folder(graph: GraphClient, work: FolderWork) -> str:
    try:
        folder = await graph.folder(work.mailbox, work.folder_key)
        return str(folder["id"])
    except NotFound:
        pass
    for candidate in await graph.child_folders(work.mailbox):
        if str(candidate.get("displayName", "")).lower() == work.folder_key.lower():
            return str(candidate["id"])
    raise NotFound(f"folder {work.folder_key!r} not found")


def _save(runtime: Runtime, sync_id: str, **values: Any) -> None:
    with runtime.database.session() as db:
        fs = db.get(FolderSync, sync_id)
        if fs is not None:
            for key, value in values.items():
                setattr(fs, key, value)


def _pause(runtime: Runtime, integration_id: str, failure: TokenFailure) -> None:
    with runtime.database.session() as db:
        integration = db.get(Integration, integration_id)
        if integration is not None:
            integrations.mark_failed(
                db=db,
                integration=integration,
                reason=failure.reason,
                detail=failure.description,
            )


def _mailbox_status(runtime: Runtime, mailbox_row_id: str, status: str, reason: str) -> None:
    with runtime.database.session() as db:
        mailbox = db.get(Mailbox, mailbox_row_id)
        if mailbox is not None:
            mailbox.status = status
            mailbox.status_reason = reason


async def process_message(
    runtime: Runtime,
    graph: GraphClient,
    work: FolderWork,
    data: dict[str, Any],
    *,
    historical: bool = False,
    forward_historical: bool = False,
) -> bool:
    """Claim, decide and execute one message. True if Postroom acted on it now."""
    if data.get("isDraft"):
        return False
    view = message_view(data)
    # Graph's receivedDateTime has whole seconds: compare at that precision.
    if (
        not historical
        and view.received is not None
        and (view.received < work.baseline.replace(microsecond=0))
    ):
        return False  # mail from before setup: only a backfill processes it
    if work.watch:
        await _watched(runtime, graph, work, data, view)
        return False
    with runtime.database.session() as db:
        model = learning.load_model(db, work.integration_id)
        remembered = None
        if model is not None:
            remembered = learning.recall_conversation(
                db, work.integration_id, view, runtime.conversation_secret
            )
        entry = claim(
            db,
            integration_id=work.integration_id,
            mailbox_id=work.mailbox_row_id,
            message_id=view.id,
            internet_message_id=view.internet_message_id,
            historical=historical,
            key_secret=runtime.message_key_secret,
        )
        entry_id = entry.id if entry is not None else None
        correction = None
        if entry is None:
            correction = _correction(db, work, view)
    if correction is not None:
        await _learn_correction(runtime, graph, work, data, *correction)
        return False
    if entry_id is None:
        return False  # done before (our own move/label shows up in delta too)
    if model is not None or _needs_body(work.categories):
        view = await _with_body(graph, work, data)
    plan = decide(
        view,
        work.categories,
        classifier=model.adapter_for(remembered) if model is not None else None,
        threshold=model.threshold if model is not None else 0.6,
        needs_review=model.needs_review if model is not None else None,
        allow_forward=work.allow_forward,
        historical=historical,
        forward_historical=forward_historical,
    )
    await execute(
        graph=graph,
        database=runtime.database,
        entry_id=entry_id,
        mailbox=work.mailbox,
        plan=plan,
        current_categories=list(view.categories),
        colors=work.colors,
        manage_colors=work.manage_colors,
        folder_cache=runtime.folder_cache,
    )
    if model is not None and plan.category and plan.decided_by in ("rule", "model"):
        settings = runtime.settings
        learn = settings.learn_from_decisions and (plan.confidence or 0.0) >= (
            settings.learn_confidence
        )
        with runtime.database.session() as db:
            learning.remember_conversation(
                db,
                work.integration_id,
                view,
                plan.category,
                runtime.conversation_secret,
                by_person=plan.decided_by == "rule",
            )
            if learn:
                learning.record_decision(
                    db,
                    integration_id=work.integration_id,
                    classifier=model.classifier,
                    view=view,
                    category=plan.category,
                    key_secret=runtime.message_key_secret,
                )
    if model is not None and plan.folder:
        await _watch_folder(runtime, work, plan.folder)
    return True


WATCH_PREFIX = "watch:"


async def _watch_folder(runtime: Runtime, work: FolderWork, path: str) -> None:
    """Sync a category folder in watch mode (once it exists), so that corrections of filed
    mail — category changes there, or moving mail between category folders — are learned."""
    folder_id = runtime.folder_cache.get(work.mailbox, path)
    key = f"{WATCH_PREFIX}{path}"[:255]
    if folder_id is None or folder_id == work.folder_id:
        return
    with runtime.database.session() as db:
        exists = db.scalar(
            select(FolderSync.id).where(
                FolderSync.mailbox_id == work.mailbox_row_id, FolderSync.folder_key == key
            )
        )
        if exists is not None:
            return
        watched = FolderSync(
            integration_id=work.integration_id,
            mailbox_id=work.mailbox_row_id,
            folder_key=key,
            folder_id=folder_id,
            watch=True,
            baseline_at=work.baseline,
        )
        db.add(watched)
        db.flush()
        sync_id = watched.id
    await ensure_subscription(runtime, sync_id)


async def _watched(
    runtime: Runtime,
    graph: GraphClient,
    work: FolderWork,
    data: dict[str, Any],
    view: MessageView,
) -> None:
    """A message in a watched category folder: learn if a person corrected it; never act."""
    with runtime.database.session() as db:
        row = db.scalars(
            select(LedgerEntry).where(
                LedgerEntry.mailbox_id == work.mailbox_row_id, LedgerEntry.message_id == view.id
            )
        ).one_or_none()
        if row is None or row.state != "done":
            return
        found = learning.detect_correction(
            row.plan, view, [c.name for c in work.categories]
        ) or learning.detect_move(
            row.plan,
            work.folder_key.removeprefix(WATCH_PREFIX),
            [(c.name, c.folder) for c in work.categories],
        )
        entry_id = row.id
    if found is not None:
        await _learn_correction(runtime, graph, work, data, entry_id, found)


async def _with_body(graph: GraphClient, work: FolderWork, data: dict[str, Any]) -> MessageView:
    """The view with the full plain-text body (rules on the body and the model read it)."""
    full = await graph.request(
        "GET",
        f"{graph.mailbox_path(work.mailbox)}/messages/{data['id']}",
        mailbox=work.mailbox,
        params={"$select": "body"},
        headers={"Prefer": 'outlook.body-content-type="text"'},
    )
    return message_view({**data, "body": full[1].get("body")})


def _correction(
    db: Session, work: FolderWork, view: MessageView
) -> tuple[str, learning.Correction] | None:
    """A done ledger row whose message a person re-categorized since (see learning.service)."""
    row = db.scalars(
        select(LedgerEntry).where(
            LedgerEntry.mailbox_id == work.mailbox_row_id, LedgerEntry.message_id == view.id
        )
    ).one_or_none()
    if row is None or row.state != "done":
        return None
    found = learning.detect_correction(row.plan, view, [c.name for c in work.categories])
    return (row.id, found) if found is not None else None


async def _learn_correction(
    runtime: Runtime,
    graph: GraphClient,
    work: FolderWork,
    data: dict[str, Any],
    entry_id: str,
    correction: learning.Correction,
) -> None:
    """Learn from a person's correction; the message itself is not acted on again."""
    try:
        view = await _with_body(graph, work, data)
    except NotFound:
        return  # gone meanwhile: nothing to learn from
    with runtime.database.session() as db:
        version = learning.record_correction(
            db,
            integration_id=work.integration_id,
            entry_id=entry_id,
            view=view,
            correction=correction,
            config=learning.classifier_config(runtime.settings),
            key_secret=runtime.message_key_secret,
            conversation_secret=runtime.conversation_secret,
        )
    log.info(
        "ledger %s: corrected %s -> %s; model version %d",
        entry_id,
        correction.previous,
        correction.category,
        version,
    )


async def sync_folder(runtime: Runtime, sync_id: str, *, max_pages: int = 200) -> SyncResult:
    result = SyncResult()
    work = load_work(runtime, sync_id)
    if work is None:
        return result
    if work.status not in ACTIVE:
        result.paused = work.status
        return result
    tokens = IntegrationTokens(runtime.identity, work.connection)
    try:
        async with _graph(runtime, tokens) as graph:
            if work.folder_id is None:
                work.folder_id = await _resolve_folder(graph, work)
                _save(runtime, sync_id, folder_id=work.folder_id)
            link = work.delta_link
            while result.pages < max_pages:
                try:
                    page = await graph.delta(
                        work.mailbox,
                        work.folder_id,
                        link=link,
                        select=SYNC_SELECT,
                        received_since=None if link else work.baseline - timedelta(minutes=1),
                    )
                except SyncStateExpired:
                    log.info("delta state expired for folder sync %s; starting over", sync_id)
                    link = None
                    _save(runtime, sync_id, delta_link=None)
                    continue
                result.pages += 1
                acted = 0
                for data in page.messages:
                    if await process_message(runtime, graph, work, data):
                        acted += 1
                    else:
                        result.skipped += 1
                result.processed += acted
                link = page.next_link or page.delta_link
                _save(
                    runtime,
                    sync_id,
                    delta_link=link,
                    last_synced_at=datetime.now(UTC),
                    processed_count=FolderSync.processed_count + acted,
                )
                if page.next_link is None:
                    break
    except TokenFailure as failure:
        _pause(runtime, work.integration_id, failure)
        result.paused = failure.reason.status
    except AccessDenied as denied:
        reason = "policy_denied" if denied.by_policy else "mailbox_access_denied"
        _mailbox_status(runtime, work.mailbox_row_id, "access_denied", reason)
        result.paused = "access_denied"
    finally:
        if tokens.new_cache:
            _store_cache(runtime, work.integration_id, tokens.new_cache)
    return result


def _store_cache(runtime: Runtime, integration_id: str, cache: str) -> None:
    with runtime.database.session() as db:
        integration = db.get(Integration, integration_id)
        if integration is not None:
            integrations.store_token_cache(box=runtime.box, integration=integration, cache=cache)


def _graph(runtime: Runtime, tokens: IntegrationTokens) -> GraphClient:
    import ssl

    settings = runtime.settings
    verify: Any = (
        ssl.create_default_context(cafile=str(settings.ca_bundle)) if settings.ca_bundle else True
    )
    return GraphClient(
        base_url=settings.graph_base_url,
        token=tokens,
        app_id=settings.ms_client_id,
        verify=verify,
    )


# ---------------------------------------------------------------------- backfill
BACKFILL_PAGE = 50


@dataclass
class BackfillProgress:
    done: int
    total: int | None
    finished: bool
    rate_per_minute: float | None
    eta_seconds: float | None


def backfill_progress(fs: FolderSync, now: datetime | None = None) -> BackfillProgress | None:
    """done/total, rate and ETA of a folder's backfill, from its row (pure)."""
    if fs.backfill_since is None:
        return None
    now = now or datetime.now(UTC)
    rate = None
    eta = None
    if fs.backfill_started_at is not None and fs.backfill_done:
        minutes = max((now - fs.backfill_started_at).total_seconds() / 60, 1 / 60)
        rate = fs.backfill_done / minutes
        if fs.backfill_total is not None and rate > 0 and fs.backfill_finished_at is None:
            eta = max(fs.backfill_total - fs.backfill_done, 0) / rate * 60
    return BackfillProgress(
        done=fs.backfill_done,
        total=fs.backfill_total,
        finished=fs.backfill_finished_at is not None,
        rate_per_minute=rate,
        eta_seconds=eta,
    )


async def backfill_folder(runtime: Runtime, sync_id: str, *, max_pages: int = 20) -> bool:
    """Process historical mail since the chosen date, oldest first, one bounded slice per job.
    Returns True when more remains (the caller re-queues). Resumes from the stored cursor;
    the ledger makes re-reading the boundary message harmless. Historical mail is labelled
    and filed; it is forwarded only if the person opted in."""
    work = load_work(runtime, sync_id)
    with runtime.database.session() as db:
        fs = db.get(FolderSync, sync_id)
        integration = db.get(Integration, fs.integration_id) if fs else None
        if fs is None or integration is None or fs.backfill_since is None:
            return False
        if fs.backfill_finished_at is not None:
            return False
        cursor = fs.backfill_cursor or fs.backfill_since
        total = fs.backfill_total
        forward_history = bool(
            (integration.wizard_data or {}).get("backfill", {}).get("forward_history")
        )
        if fs.backfill_started_at is None:
            fs.backfill_started_at = datetime.now(UTC)
        if integration.status == "connected":
            integrations.set_status(db=db, integration=integration, status="backfilling")
    if work is None or work.status not in ACTIVE:
        return False
    tokens = IntegrationTokens(runtime.identity, work.connection)
    more = True
    try:
        async with _graph(runtime, tokens) as graph:
            if work.folder_id is None:
                work.folder_id = await _resolve_folder(graph, work)
                _save(runtime, sync_id, folder_id=work.folder_id)
            path = f"{graph.mailbox_path(work.mailbox)}/mailFolders/{work.folder_id}/messages"
            until = _stamp(work.baseline)
            window = f"receivedDateTime ge {_stamp(cursor)} and receivedDateTime lt {until}"
            if total is None:
                _, counted, _ = await graph.request(
                    "GET",
                    path,
                    mailbox=work.mailbox,
                    params={"$filter": window, "$count": "true", "$top": "1", "$select": "id"},
                )
                total = int(counted.get("@odata.count", 0))
                _save(runtime, sync_id, backfill_total=total)
            url: str | None = path
            params: dict[str, str] | None = {
                "$filter": window,
                "$orderby": "receivedDateTime asc",
                "$top": str(BACKFILL_PAGE),
                "$select": SYNC_SELECT,
            }
            pages = 0
            while url and pages < max_pages:
                _, page, _ = await graph.request("GET", url, mailbox=work.mailbox, params=params)
                params = None
                pages += 1
                acted = 0
                last = cursor
                for data in page.get("value", []):
                    if await process_message(
                        runtime,
                        graph,
                        work,
                        data,
                        historical=True,
                        forward_historical=forward_history,
                    ):
                        acted += 1
                    received = message_view(data).received
                    if received is not None and received > last:
                        last = received
                url = page.get("@odata.nextLink")
                _save(
                    runtime,
                    sync_id,
                    backfill_cursor=last,
                    backfill_done=FolderSync.backfill_done + acted,
                )
            if url is None:
                more = False
                _save(runtime, sync_id, backfill_finished_at=datetime.now(UTC))
                _backfill_finished(runtime, work.integration_id)
    except TokenFailure as failure:
        _pause(runtime, work.integration_id, failure)
        return False
    finally:
        if tokens.new_cache:
            _store_cache(runtime, work.integration_id, tokens.new_cache)
    return more


def _backfill_finished(runtime: Runtime, integration_id: str) -> None:
    """Back to Connected once every folder's backfill is done."""
    with runtime.database.session() as db:
        pending = db.scalar(
            select(FolderSync.id).where(
                FolderSync.integration_id == integration_id,
                FolderSync.backfill_since.is_not(None),
                FolderSync.backfill_finished_at.is_(None),
            )
        )
        integration = db.get(Integration, integration_id)
        if pending is None and integration is not None and integration.status == "backfilling":
            integrations.set_status(db=db, integration=integration, status="connected")


def folder_progress(runtime_db: Any, integration_id: str) -> list[tuple[FolderSync, str, Any]]:
    """(folder sync, mailbox address, backfill progress) for an integration's page."""
    rows = runtime_db.execute(
        select(FolderSync, Mailbox.address)
        .join(Mailbox, Mailbox.id == FolderSync.mailbox_id)
        .where(FolderSync.integration_id == integration_id)
        .order_by(Mailbox.address, FolderSync.folder_key)
    ).all()
    return [(fs, address, backfill_progress(fs)) for fs, address in rows]


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------- subscriptions
def _can_subscribe(runtime: Runtime, work: FolderWork) -> bool:
    # Graph cannot subscribe to another user's mailbox on delegated access (graph.md 2.1).
    if work.connection.kind == "personal" and work.mailbox_kind == "shared":
        return False
    return not runtime.settings.polling_only


async def ensure_subscription(runtime: Runtime, sync_id: str) -> str:
    """Create the folder's change-notification subscription, or fall back to polling.
    Returns the mode in force ("webhook" or "polling")."""
    work = load_work(runtime, sync_id)
    if work is None:
        return "none"
    if not _can_subscribe(runtime, work):
        _save(runtime, sync_id, mode="polling", subscription_error=None)
        return "polling"
    tokens = IntegrationTokens(runtime.identity, work.connection)
    client_state = secrets.token_urlsafe(32)
    expires = datetime.now(UTC) + SUBSCRIPTION_LIFETIME
    try:
        async with _graph(runtime, tokens) as graph:
            if work.folder_id is None:
                work.folder_id = await _resolve_folder(graph, work)
                _save(runtime, sync_id, folder_id=work.folder_id)
            created = await graph.create_subscription(
                mailbox=work.mailbox,
                folder_id=work.folder_id,
                notification_url=runtime.settings.webhook_url,
                lifecycle_url=runtime.settings.webhook_url + "/lifecycle",
                client_state=client_state,
                expires=expires,
            )
    except TokenFailure as failure:
        _pause(runtime, work.integration_id, failure)
        return "paused"
    except GraphError as exc:
        log.warning(
            "subscription for folder sync %s failed (%s); polling instead",
            sync_id,
            exc.code or exc.status,
        )
        _save(runtime, sync_id, mode="polling", subscription_error=str(exc.code or exc.status))
        return "polling"
    finally:
        if tokens.new_cache:
            _store_cache(runtime, work.integration_id, tokens.new_cache)
    granted = _parse_time(created.get("expirationDateTime")) or expires
    _save(
        runtime,
        sync_id,
        mode="webhook",
        subscription_id=str(created["id"]),
        subscription_expires=granted,
        client_state_hash=runtime.client_state_hash(client_state),
        subscription_error=None,
    )
    return "webhook"


async def renew_subscription(runtime: Runtime, sync_id: str) -> str:
    """Extend the subscription; re-create it when Graph no longer knows it."""
    with runtime.database.session() as db:
        fs = db.get(FolderSync, sync_id)
        subscription_id = fs.subscription_id if fs else None
    work = load_work(runtime, sync_id)
    if work is None or subscription_id is None:
        return await ensure_subscription(runtime, sync_id) if work else "none"
    tokens = IntegrationTokens(runtime.identity, work.connection)
    try:
        async with _graph(runtime, tokens) as graph:
            renewed = await graph.renew_subscription(
                subscription_id, datetime.now(UTC) + SUBSCRIPTION_LIFETIME
            )
    except NotFound:
        _save(runtime, sync_id, subscription_id=None, client_state_hash=None)
        return await ensure_subscription(runtime, sync_id)
    except TokenFailure as failure:
        _pause(runtime, work.integration_id, failure)
        return "paused"
    finally:
        if tokens.new_cache:
            _store_cache(runtime, work.integration_id, tokens.new_cache)
    _save(runtime, sync_id, subscription_expires=_parse_time(renewed.get("expirationDateTime")))
    return "renewed"


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    text = value.replace("Z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        tail = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{tail}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


# ---------------------------------------------------------------------- setup
def create_folder_syncs(runtime: Runtime, integration_id: str) -> list[str]:
    """One folder sync per (mailbox, folder) of a finished setup; existing ones are kept."""
    ids: list[str] = []
    with runtime.database.session() as db:
        integration = db.get(Integration, integration_id)
        since = None
        if integration is not None and integration.backfill_since is not None:
            since = datetime.combine(integration.backfill_since, datetime.min.time(), UTC)
        mailboxes = list(
            db.scalars(select(Mailbox).where(Mailbox.integration_id == integration_id))
        )
        for mailbox in mailboxes:
            for folder in mailbox.folders or [{"key": "inbox"}]:
                key = str(folder.get("key") or "inbox")
                existing = db.scalar(
                    select(FolderSync).where(
                        FolderSync.mailbox_id == mailbox.id, FolderSync.folder_key == key
                    )
                )
                if existing is None:
                    existing = FolderSync(
                        integration_id=integration_id,
                        mailbox_id=mailbox.id,
                        folder_key=key,
                        backfill_since=since,
                    )
                    db.add(existing)
                    db.flush()
                ids.append(existing.id)
    return ids


def reason_words(code: str | None) -> str:
    reason = REASONS.get(code or "")
    return reason.words if reason else ""
