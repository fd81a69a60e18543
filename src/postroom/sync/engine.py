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
person is a *correction*: learned at once, never acted on again; one whose category a person
took off, or that they moved back here from its category's folder, is "none of these" (also a
correction). Category folders Postroom files into are synced in *watch* mode (corrections
only; also while the model is off, once there are two categories), so corrections of filed
mail and moves between category folders are seen too.

A 410 ``SyncStateNotFound`` restarts the delta from the baseline: nothing already done is
repeated (the ledger). A token failure pauses the integration with its status and returns:
no retry loop. A mailbox Microsoft refuses (403 on its delta or on a message Postroom reads)
stops with status ``access_denied`` and its reason, which the integration's page and list show
(:func:`stopped_mailboxes`); its other mailboxes carry on. A step that only decorates never
stops anything: when a mailbox refuses its master category list, the email is labelled and
filed without the colour and the mailbox gets the note ``colors_refused`` (once), after which
its master list is not asked for again (for a day, or for good where Microsoft never allows
it: a shared mailbox on a personal connection). Subscriptions (``ensure_subscription``/
``renew``) fall back to polling where Graph cannot notify (delegated shared mailboxes, no
public URL).
"""

from __future__ import annotations

import logging
import secrets
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from postroom import metrics
from postroom.graph import (
    AccessDenied,
    AuthFailed,
    GraphClient,
    GraphError,
    NotFound,
    SyncStateExpired,
    Throttled,
    TransientError,
)
from postroom.integrations import service as integrations
from postroom.integrations.graph_access import Connection, IntegrationTokens, TokenFailure
from postroom.integrations.models import Category, Integration, Mailbox
from postroom.integrations.statuses import (
    ACCESS_DENIED,
    COLORS_REFUSED,
    DISCONNECTED,
    DISCONNECTING,
    REASONS,
    colors_refusal_lasts,
)
from postroom.learning import conversations, corrections
from postroom.learning import service as learning
from postroom.processing.decide import decide
from postroom.processing.executor import (
    DECIDE_FAILED,
    MAX_ATTEMPTS,
    Claimed,
    claim,
    claim_many,
    execute,
    find_folder,
    settle,
)
from postroom.processing.models import LedgerEntry
from postroom.processing.outcomes import ALREADY_FILED, FILED_BEFORE_LIVE, LEFT_FOLDER
from postroom.processing.plan import CategoryConfig
from postroom.processing.rules import MessageFacts, RuleGroup
from postroom.processing.view import Address, MessageView
from postroom.sync import shadow
from postroom.sync.models import FolderSync
from postroom.sync.runtime import Runtime

log = logging.getLogger("postroom.sync")

ACTIVE = ("connected", "syncing", "backfilling")
# changeKey: the label is a conditional write naming it (no read before the PATCH); body
# (plain text, see GraphClient.delta): the model and body rules read it from the page, not
# with a GET per email. Baked into the delta link; a link stored before body was selected
# still works (its messages' bodies are read one by one, see _with_body).
SYNC_SELECT = (
    "id,internetMessageId,conversationId,subject,from,toRecipients,ccRecipients,"
    "receivedDateTime,categories,parentFolderId,hasAttachments,importance,bodyPreview,isDraft,"
    "changeKey,body"
)
SUBSCRIPTION_LIFETIME = timedelta(days=2)
COLORS_RETRY = timedelta(days=1)  # a refused master list is asked for again after this
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
    respect_filed: bool = True  # leave alone mail that already has a category of its own
    colors_noted: bool = False  # the mailbox has the note "colors_refused"
    # Suggest only (shadow mode): the whole integration, or these categories (casefolded)
    suggest_all: bool = False
    suggest: frozenset[str] = frozenset()

    def suggests(self, category: str | None) -> bool:
        """Whether a decision for ``category`` is only recorded, never acted on."""
        if not category:
            return False
        return self.suggest_all or category.strip().casefold() in self.suggest


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
        colors_noted = COLORS_REFUSED in (mailbox.notes or {})
        colors_refused = _colors_refused(
            mailbox.notes,
            lasting=colors_refusal_lasts(
                integration_kind=integration.kind, mailbox_kind=mailbox.kind
            ),
        )
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
            manage_colors=(
                integration.kind == "organization"
                or any(s.endswith("/MailboxSettings.ReadWrite") for s in scopes)
            )
            and not colors_refused,
            allow_forward=integration.kind == "organization"
            or any(s.endswith(("/Mail.Send", "/Mail.Send.Shared")) for s in scopes),
            status=integration.status,
            watch=fs.watch,
            respect_filed=respect_filed(integration.options),
            colors_noted=colors_noted,
            suggest_all=bool((integration.options or {}).get("suggest_only")),
            suggest=frozenset(r.name.strip().casefold() for r in rows if r.suggest_only),
        )


def respect_filed(options: dict[str, Any] | None) -> bool:
    """Whether mail that already has a category of its own is left alone (the default)."""
    return bool((options or {}).get("respect_filed", True))


def _colors_refused(notes: dict[str, str] | None, *, lasting: bool) -> bool:
    """Whether to leave the mailbox's master category list alone: it was refused, for good
    (``lasting``) or within the last :data:`COLORS_RETRY`."""
    stamp = (notes or {}).get(COLORS_REFUSED)
    if stamp is None:
        return False
    if lasting:
        return True
    noted = _parse_time(stamp)
    return noted is not None and datetime.now(UTC) - noted < COLORS_RETRY


def _note_colors(runtime: Runtime, work: FolderWork, *, refused: bool) -> None:
    """Record (or, once colours work again, clear) the mailbox's note that its category
    colours cannot be managed. Recorded once: later emails do not ask for the list again."""
    with runtime.database.session() as db:
        mailbox = db.get(Mailbox, work.mailbox_row_id, with_for_update=True)
        if mailbox is None:
            return
        notes = dict(mailbox.notes or {})
        if refused:
            notes[COLORS_REFUSED] = datetime.now(UTC).isoformat()
        else:
            notes.pop(COLORS_REFUSED, None)
        mailbox.notes = notes  # a new dict: the JSON change is seen
    work.colors_noted = refused
    if refused:
        work.manage_colors = False
        log.info("mailbox %s: category colours cannot be managed; noted", work.mailbox_row_id)


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


def note_sync_error(runtime: Runtime, sync_id: str, error: BaseException | str) -> None:
    """Record why the folder's last sync failed, as a code (an exception's text may quote an
    email): the integration's page shows it, and a lag alert names it."""
    if isinstance(error, str):
        code = error
    elif isinstance(error, GraphError):
        code = _code(error)
    else:
        code = type(error).__name__
    _save(runtime, sync_id, last_error=code[:200], last_error_at=datetime.now(UTC))


def _pause(runtime: Runtime, integration_id: str, failure: TokenFailure) -> None:
    with runtime.database.session() as db:
        integration = db.get(Integration, integration_id, with_for_update=True)
        # a person's disconnect is not overwritten by a failure seen on the way out
        if integration is not None and integration.status not in (DISCONNECTING, DISCONNECTED):
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
    log.warning("mailbox %s stopped: %s (%s)", mailbox_row_id, status, reason)


def stopped_mailboxes(db: Session, integration_ids: list[str]) -> dict[str, list[Mailbox]]:
    """Each integration's stopped mailboxes (status access_denied), for its page and the list:
    a mailbox that stops must not hide behind an integration that says Connected."""
    if not integration_ids:
        return {}
    rows = db.scalars(
        select(Mailbox)
        .where(Mailbox.integration_id.in_(integration_ids), Mailbox.status == ACCESS_DENIED)
        .order_by(Mailbox.address)
    )
    found: dict[str, list[Mailbox]] = {}
    for mailbox in rows:
        found.setdefault(mailbox.integration_id, []).append(mailbox)
    return found


class PageModel:
    """The integration's learned model for one page of messages: read with the page's first
    claim, in the same session, and used for the rest of the page (a SELECT per email fewer).
    A model trained meanwhile is used from the next page on.

    With ``messages`` (the page, as Graph sent it), the model's guesses for the page are made
    together (:class:`postroom.learning.service.PagePredictions`): the emails of the page that
    carry their body and are not drafts, older than the baseline (unless ``historical``) or
    already decided in the ledger (our own label's echo; one query, at the first guess), and
    none a rule decides or that a person filed already (with ``respect_filed``)."""

    def __init__(
        self,
        messages: Sequence[dict[str, Any]] = (),
        *,
        runtime: Runtime | None = None,
        work: FolderWork | None = None,
        historical: bool = False,
    ) -> None:
        self._read = False
        self._model: learning.LoadedModel | None = None
        self._messages = messages
        self._runtime, self._work, self._historical = runtime, work, historical
        self._predictions: learning.PagePredictions | None = None
        self._claims: dict[str, Claimed | None] | None = None

    def get(self, db: Session, integration_id: str) -> learning.LoadedModel | None:
        if not self._read:
            self._model = learning.load_model(db, integration_id)
            self._read = True
        return self._model

    def claimed(self, view: MessageView, *, historical: bool) -> tuple[bool, Claimed | None]:
        """(True, the message's claim as :func:`claim` gives it) when the page's claim covers
        it, else (False, None): claim it on its own. The page's first claim claims every
        message of the page that :func:`process_message` would claim, in one statement (one
        round trip and one commit for the page); each is handed out once, so a repeated id
        is claimed again on its own, as before."""
        runtime, work = self._runtime, self._work
        if runtime is None or work is None or historical != self._historical:
            return False, None
        if self._claims is None:
            self._claims = self._claim_page(runtime, work)
        if view.id not in self._claims:
            return False, None
        return True, self._claims.pop(view.id)

    def _claimable(self, work: FolderWork) -> Iterator[tuple[dict[str, Any], MessageView]]:
        """The page's messages that :func:`process_message` claims on their turn (not drafts,
        not mail from before the baseline unless historical, nothing in a watched folder)."""
        if work.watch:
            return
        baseline = work.baseline.replace(microsecond=0)
        for data in self._messages:
            if not isinstance(data, dict) or data.get("isDraft"):
                continue
            try:
                view = message_view(data)
            except (ValueError, TypeError, KeyError, AttributeError):
                continue  # (that email fails on its own turn, not its neighbours')
            if view.id and (self._historical or view.received is None or view.received >= baseline):
                yield data, view

    def _claim_page(self, runtime: Runtime, work: FolderWork) -> dict[str, Claimed | None]:
        with runtime.database.statement() as connection:
            return claim_many(
                connection,
                integration_id=work.integration_id,
                mailbox_id=work.mailbox_row_id,
                messages=[(v.id, v.internet_message_id) for _, v in self._claimable(work)],
                historical=self._historical,
                key_secret=runtime.message_key_secret,
            )

    def predictions(self) -> learning.PagePredictions | None:
        """The page's guesses (made at the first one asked for); None without a model."""
        if self._model is None:
            return None
        if self._predictions is None:
            self._predictions = learning.PagePredictions(self._model.classifier, self._views)
        return self._predictions

    def _views(self) -> list[MessageView]:
        runtime, work = self._runtime, self._work
        if runtime is None or work is None:
            return []
        views: list[MessageView] = []
        for data, view in self._claimable(work):
            if not isinstance(data.get("body"), dict):
                continue
            if work.respect_filed and view.categories:
                continue  # filed by a person or an Outlook rule: left alone
            facts = MessageFacts(view)
            if any(c.rules is not None and c.rules.matches(facts) for c in work.categories):
                continue  # a rule decides it: the model is not asked
            views.append(view)
        if not views:
            return views
        with runtime.database.session() as db:
            decided = set(
                db.scalars(
                    select(LedgerEntry.message_id).where(
                        LedgerEntry.mailbox_id == work.mailbox_row_id,
                        LedgerEntry.message_id.in_([v.id for v in views]),
                        (LedgerEntry.state != "claimed") | LedgerEntry.plan.isnot(None),
                    )
                )
            )
        return [v for v in views if v.id not in decided]


def _claim_alone(
    runtime: Runtime, work: FolderWork, view: MessageView, *, historical: bool
) -> Claimed | None:
    """One message's claim, one statement on its own (no session: one round trip)."""
    with runtime.database.statement() as connection:
        return claim(
            connection,
            integration_id=work.integration_id,
            mailbox_id=work.mailbox_row_id,
            message_id=view.id,
            internet_message_id=view.internet_message_id,
            historical=historical,
            key_secret=runtime.message_key_secret,
        )


async def process_message(
    runtime: Runtime,
    graph: GraphClient,
    work: FolderWork,
    data: dict[str, Any],
    *,
    historical: bool = False,
    forward_historical: bool = False,
    resumed: bool = False,
    page: PageModel | None = None,
) -> bool:
    """Claim, decide and execute one message. True if Postroom acted on it now. ``resumed``:
    a row left claimed (a dead worker's, or a suggestion to file at Go live), read again by
    its id: finished whatever the folder's baseline is now. ``page``: the model of the page
    the message came on (else it is read for this message)."""
    if data.get("isDraft"):
        return False
    view = message_view(data)
    # Graph's receivedDateTime has whole seconds: compare at that precision.
    if (
        not historical
        and not resumed
        and view.received is not None
        and (view.received < work.baseline.replace(microsecond=0))
    ):
        return False  # mail from before setup: only a backfill processes it
    if work.watch:
        await _watched(runtime, graph, work, data, view)
        return False
    page = page or PageModel()
    with runtime.database.session() as db:
        model = page.get(db, work.integration_id)
        remembered = None
        if model is not None:
            remembered = conversations.recall_conversation(
                db, work.integration_id, view, runtime.conversation_secret
            )
    covered, entry = (False, None) if resumed else page.claimed(view, historical=historical)
    if not covered:
        entry = _claim_alone(runtime, work, view, historical=historical)
    entry_id = entry.id if entry is not None else None
    first_time = entry is not None and entry.plan is None and not entry.actions_done
    going_live = entry is not None and shadow.went_live(entry.plan)
    suggested_in = (entry.plan or {}).get("suggested_in") if entry is not None else None
    correction = None
    if entry is None:  # seen before: a person may have changed it since
        with runtime.database.session() as db:
            row = _ledger_row(db, work, view.id)
            if row is not None and shadow.is_suggested(row.plan):
                _, correction = _shadow_seen(db, work, view, None)
            else:
                correction = _correction(work, view, row)
    if correction is not None:
        await _learn_correction(runtime, graph, work, data, *correction)
        return False
    if entry_id is None:
        return False  # done before (our own move/label shows up in delta too)
    if going_live and shadow.filed_since(view, suggested_in, [c.name for c in work.categories]):
        # Go live was asked to file it, but a person filed, moved or deleted it meanwhile.
        settle(runtime.database, entry_id, "skipped", FILED_BEFORE_LIVE)
        metrics.email_processed("skipped", "none")
        return False
    if first_time and work.respect_filed and view.categories:
        # A person or an Outlook rule filed it before Postroom got to it: left alone, and
        # said so in the activity view (a setting per integration turns this off).
        settle(runtime.database, entry_id, "skipped", ALREADY_FILED)
        metrics.email_processed("skipped", "none")
        return False
    if model is not None or _needs_body(work.categories):
        try:
            view = await _with_body(graph, work, data)
        except NotFound:
            settle(runtime.database, entry_id, "skipped", None)  # gone since the delta page
            metrics.email_processed("skipped", "none")
            return False
        except TransientError as exc:
            if isinstance(exc, Throttled) or not _count_attempt(runtime, entry_id, exc):
                raise  # throttling is a delay; the job retries
            metrics.email_processed("failed", "none")
            return False
        except (AccessDenied, AuthFailed):
            raise  # the mailbox or the token: a status; the row resumes when it is back
        except GraphError as exc:
            settle(runtime.database, entry_id, "failed", _code(exc))
            metrics.email_processed("failed", "none")
            return False
    try:
        plan = decide(
            view,
            work.categories,
            classifier=(
                model.adapter_for(remembered, page.predictions()) if model is not None else None
            ),
            threshold=model.threshold if model is not None else 0.6,
            needs_review=model.needs_review if model is not None else None,
            allow_forward=work.allow_forward,
            # a suggestion filed at Go live is old mail: labelled and filed, never forwarded
            historical=historical or going_live,
            forward_historical=forward_historical and not going_live,
        )
    except Exception as exc:  # a bug must not wedge the mailbox: this one email fails, visibly
        where = traceback.extract_tb(exc.__traceback__)[-1]
        log.error(  # the type and the place only: an exception's text may quote the email
            "ledger %s: deciding failed (%s at %s:%s); marked failed",
            entry_id,
            type(exc).__name__,
            where.filename.rsplit("/", 1)[-1],
            where.lineno,
        )
        settle(runtime.database, entry_id, "failed", DECIDE_FAILED)
        metrics.email_processed("failed", "none")
        return False
    if work.suggests(plan.category) and shadow.record_suggestion(
        runtime.database, entry_id, plan, folder_id=view.folder_id or work.folder_id
    ):
        metrics.email_processed("suggested", metrics.decider(plan.decided_by, plan.reasons))
        if plan.folder:
            await _watch_existing_folder(runtime, graph, work, plan.folder)
        return False
    if going_live:
        shadow.replan(runtime.database, entry_id, plan)  # today's decision, not the old one
    result = await execute(
        graph=graph,
        database=runtime.database,
        entry_id=entry_id,
        mailbox=work.mailbox,
        plan=plan,
        current_categories=list(view.categories),
        colors=work.colors,
        manage_colors=work.manage_colors,
        folder_cache=runtime.folder_cache,
        seen=data,
    )
    metrics.email_processed(result.state, metrics.decider(plan.decided_by, plan.reasons))
    if result.colors_refused is not None:
        _note_colors(runtime, work, refused=True)
    elif work.colors_noted and "master_category" in result.performed:
        _note_colors(runtime, work, refused=False)  # a retry after a day worked
    if result.state != "done":
        return False  # failed or skipped, with its reason in the ledger: nothing to learn
    if model is not None and plan.category and plan.decided_by in ("rule", "model"):
        settings = runtime.settings
        learn = settings.learn_from_decisions and (plan.confidence or 0.0) >= (
            settings.learn_confidence
        )
        with runtime.database.session() as db:
            conversations.remember_conversation(
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
    if plan.folder and (model is not None or len(work.categories) >= 2):
        await _watch_folder(runtime, work, plan.folder)  # (see there: also while it is off)
    return True


WATCH_PREFIX = "watch:"


async def _watch_folder(runtime: Runtime, work: FolderWork, path: str) -> None:
    """Sync a category folder in watch mode (once it exists), so that corrections of filed
    mail — category changes there, a category taken off, or moving mail between category
    folders — are learned. Also while the model is off (rules file the mail), as soon as there
    are two categories a correction could choose between: corrections are kept and used once
    the model turns on."""
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
    watched_path = work.folder_key.removeprefix(WATCH_PREFIX)
    learned: tuple[str, corrections.Correction] | None = None
    with runtime.database.session() as db:
        row = _ledger_row(db, work, view.id)
        if row is not None and shadow.is_suggested(row.plan):
            _, learned = _shadow_seen(db, work, view, watched_path)  # Suggest only
        elif row is not None and row.state == "done":
            configured = [c.name for c in work.categories]
            found = (
                corrections.detect_correction(row.plan, view, configured)
                or corrections.detect_move(
                    row.plan, watched_path, [(c.name, c.folder) for c in work.categories]
                )
                or corrections.detect_rejection(
                    row.plan, view, configured, actions=list(row.actions_done or [])
                )
            )
            learned = (row.id, found) if found is not None else None
    if learned is not None:
        await _learn_correction(runtime, graph, work, data, *learned)


LEFT_SELECT = "id,internetMessageId,receivedDateTime,parentFolderId,categories,isDraft"


async def _left_the_folder(
    runtime: Runtime, graph: GraphClient, work: FolderWork, message_ids: list[str]
) -> int:
    """Emails the delta reports gone from the folder that Postroom never saw: a person or an
    Outlook rule moved them between two syncs. Those that arrived after the baseline are left
    alone and logged ("left alone: already filed"), as mail with a category of its own is;
    with that setting off they are processed where they are now (never in Deleted Items).
    Postroom's own moves (in the ledger) cost nothing here; one read per other email tells new
    mail from old mail a person tidies away (passed over). Returns how many were processed."""
    if work.watch or not message_ids:
        return 0
    with runtime.database.session() as db:
        known = set(
            db.scalars(
                select(LedgerEntry.message_id).where(
                    LedgerEntry.mailbox_id == work.mailbox_row_id,
                    LedgerEntry.message_id.in_(message_ids),
                )
            )
        )
    processed = 0
    select_ = LEFT_SELECT if work.respect_filed else SYNC_SELECT  # (processing needs more)
    for message_id in message_ids:
        if message_id in known:
            continue
        try:
            data = await graph.message(work.mailbox, message_id, select=select_)
        except NotFound:
            continue  # gone for good
        view = message_view(data)
        if data.get("isDraft") or view.received is None:
            continue
        if view.received < work.baseline.replace(microsecond=0):
            continue  # old mail a person moved or deleted: not Postroom's business
        if view.folder_id and view.folder_id == work.folder_id:
            continue  # back in the folder: the delta brings it
        gone = view.folder_id in await graph.protected_folder_ids(work.mailbox)
        if not work.respect_filed and not gone:
            processed += int(await process_message(runtime, graph, work, data, resumed=True))
            continue
        entry = _claim_alone(runtime, work, view, historical=False)
        entry_id = entry.id if entry is not None else None
        if entry_id is not None:
            settle(runtime.database, entry_id, "skipped", LEFT_FOLDER)
            metrics.email_processed("skipped", "none")
    return processed


def _shadow_seen(
    db: Session, work: FolderWork, view: MessageView, watched_path: str | None
) -> tuple[bool, tuple[str, corrections.Correction] | None]:
    """A suggested email (Suggest only) seen again: how a person filed it (see sync.shadow)."""
    return shadow.seen(
        db,
        mailbox_row_id=work.mailbox_row_id,
        message_id=view.id,
        categories_on_message=list(view.categories),
        configured=[(c.name, c.folder) for c in work.categories],
        watched_path=watched_path,
    )


async def _watch_existing_folder(
    runtime: Runtime, graph: GraphClient, work: FolderWork, path: str
) -> None:
    """Suggest only: watch the suggested category's folder if it exists (looked up, never
    made), so that a person moving mail there is seen. A failed lookup is tried again with
    the next suggestion."""
    try:
        found = await find_folder(graph, work.mailbox, path, runtime.folder_cache)
    except (AccessDenied, AuthFailed):
        raise  # the mailbox or the token: a status, as for every other request
    except GraphError as exc:
        log.info("folder sync %s: suggested folder not looked up (%s)", work.sync_id, _code(exc))
        return
    if found is not None:
        await _watch_folder(runtime, work, path)


def _code(exc: GraphError) -> str:
    return (exc.code or (f"http_{exc.status}" if exc.status else type(exc).__name__))[:200]


def _count_attempt(runtime: Runtime, entry_id: str, exc: TransientError) -> bool:
    """Count a transient failure before the plan ran; True when the row has now failed
    :data:`MAX_ATTEMPTS` times and was ended ``failed`` (the sync then goes on)."""
    with runtime.database.session() as db:
        row = db.get(LedgerEntry, entry_id, with_for_update=True)
        if row is None or row.state != "claimed":
            return True
        row.attempts += 1
        row.last_error = _code(exc)
        if row.attempts < MAX_ATTEMPTS:
            return False
        row.state = "failed"
        row.done_at = datetime.now(UTC)
    log.warning("ledger %s: %s again; gave up and marked failed", entry_id, _code(exc))
    return True


async def _with_body(graph: GraphClient, work: FolderWork, data: dict[str, Any]) -> MessageView:
    """The view with the full plain-text body (rules on the body and the model read it): from
    the delta page when it carried the body, else one GET."""
    if isinstance(data.get("body"), dict):
        return message_view(data)
    full = await graph.request(
        "GET",
        f"{graph.mailbox_path(work.mailbox)}/messages/{data['id']}",
        mailbox=work.mailbox,
        params={"$select": "body"},
        headers={"Prefer": 'outlook.body-content-type="text"'},
    )
    return message_view({**data, "body": full[1].get("body")})


def _ledger_row(db: Session, work: FolderWork, message_id: str) -> LedgerEntry | None:
    return db.scalars(
        select(LedgerEntry).where(
            LedgerEntry.mailbox_id == work.mailbox_row_id, LedgerEntry.message_id == message_id
        )
    ).one_or_none()


def _correction(
    work: FolderWork, view: MessageView, row: LedgerEntry | None
) -> tuple[str, corrections.Correction] | None:
    """A done ledger row whose message a person re-categorized since, took its category off,
    or moved back here from its category's folder (see learning.service)."""
    if row is None or row.state != "done":
        return None
    configured = [c.name for c in work.categories]
    actions = list(row.actions_done or [])
    back = corrections.moved_back(
        row.plan, actions, folder_key=work.folder_key, folder_id=work.folder_id, view=view
    )
    found = corrections.detect_correction(
        row.plan, view, configured
    ) or corrections.detect_rejection(row.plan, view, configured, actions=actions, moved_back=back)
    return (row.id, found) if found is not None else None


async def _learn_correction(
    runtime: Runtime,
    graph: GraphClient,
    work: FolderWork,
    data: dict[str, Any],
    entry_id: str,
    correction: corrections.Correction,
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
        "(none of these)" if correction.rejected else correction.category,
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
                model = PageModel(page.messages, runtime=runtime, work=work)
                for data in page.messages:
                    if await process_message(runtime, graph, work, data, page=model):
                        acted += 1
                    else:
                        result.skipped += 1
                acted += await _left_the_folder(runtime, graph, work, page.removed)
                result.processed += acted
                link = page.next_link or page.delta_link
                _save(
                    runtime,
                    sync_id,
                    delta_link=link,
                    last_synced_at=datetime.now(UTC),
                    processed_count=FolderSync.processed_count + acted,
                    last_error=None,
                )
                if page.next_link is None:
                    break
                stopped = still_active(runtime, work.integration_id)
                if stopped is not None:
                    result.paused = stopped
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
    """Keep a refreshed token cache - never for an integration being (or) disconnected: a job
    that was running when the person disconnected must not write the tokens back."""
    with runtime.database.session() as db:
        integration = db.get(Integration, integration_id, with_for_update=True)
        if integration is not None and integration.status not in (DISCONNECTING, DISCONNECTED):
            integrations.store_token_cache(box=runtime.box, integration=integration, cache=cache)


def still_active(runtime: Runtime, integration_id: str) -> str | None:
    """None while the integration runs, else its status: a sync or backfill checks it between
    pages, so a Pause or a Disconnect stops a running job after the page in hand."""
    with runtime.database.session() as db:
        status = db.scalar(select(Integration.status).where(Integration.id == integration_id))
    return None if status in ACTIVE else str(status)


def _graph(runtime: Runtime, tokens: IntegrationTokens) -> GraphClient:
    """A Graph client for one sync or job: on the worker's shared connection pool when one is
    open (:meth:`Runtime.shared_graph_http`; closing the client leaves the pool open), else
    with its own connections."""
    settings = runtime.settings
    return GraphClient(
        base_url=settings.graph_base_url,
        token=tokens,
        app_id=settings.ms_client_id,
        http=runtime.graph_http(),
        verify=runtime.graph_verify(),
    )


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


def reason_words(code: str | None) -> str:
    reason = REASONS.get(code or "")
    return reason.words if reason else ""
