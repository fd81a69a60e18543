"""``GET /integrations/{id}/activity``: the ledger, newest first, 50 a page, each row in people's
words, with the subjects fetched live (:mod:`.live`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import func, select, update

from postroom.accounts.models import utcnow
from postroom.activity.live import LiveMessage, fetch_subjects
from postroom.categories.colours import _graph_words
from postroom.categories.form import FIELD_LABELS, MAX_NAME, OPERATOR_LABELS
from postroom.categories.views import _forwarding_allowed, _status_notice
from postroom.graph import GraphError
from postroom.integrations import service, wizard
from postroom.integrations.graph_access import TokenFailure
from postroom.integrations.statuses import LABELS
from postroom.integrations.web import graph_call, load_integration
from postroom.processing import undo as undoing
from postroom.processing.decide import fits_none_words
from postroom.processing.forwarding import FORWARD_UNCONFIRMED
from postroom.processing.models import LEDGER_STATES, LedgerEntry
from postroom.processing.outcomes import outcome_words
from postroom.sync import shadow
from postroom.web.deps import DbSession, current_caller, render
from postroom.web.security import Caller, check_csrf

# What was done to the email. The ledger's "master_category" and "folder" steps mean the
# category's colour and the folder were made sure of (found, or created): usually they
# existed already, so they are not said to be "created" on every email.
ACTION_WORDS = {
    "label": "labelled",
    "move": "moved",
    "forward_draft": "forward drafted",
    "forward_sent": "forwarded",
}
DECIDED_BY_WORDS = {
    "rule": "rule",
    "model": "learned model",
    "needs_review": "needs review",
    "none": "no match",
}
STATE_WORDS = {"claimed": "in progress", "done": "done", "failed": "failed", "skipped": "skipped"}
UNDO_NOTES = {
    undoing.NOTE_LEFT_MOVED: "left in the folder a person moved it to",
    undoing.NOTE_TO_INBOX: "the folder it came from is gone, so it went to the Inbox",
    undoing.NOTE_NO_SOURCE: "filed before Postroom recorded where mail came from: not moved back",
    undoing.NOTE_GONE: "the email is gone",
    undoing.NOTE_DISCONNECTED: "the integration was disconnected before Postroom got to it; "
    "what was not reversed yet stays as it is in Outlook",
    FORWARD_UNCONFIRMED: "the forward may not have gone out: its draft disappeared after "
    "Postroom asked Microsoft to send it, so it was not sent again",
}
UNDO_NOTICES = {
    "requested": "Undo requested: Postroom is reversing what it did to that email.",
    "bulk": "Undo requested for those emails: Postroom reverses them one by one; the count of "
    "undos under way is shown above the list until it is done.",
    "fix": "Fix requested: Postroom is moving that email to the category you chose, and "
    "learns from it.",
    "fix_forward": "Fix requested: Postroom is moving that email to the category you chose, "
    "forwards it as you confirmed, and learns from it.",
    "already": "That email was undone already (or its undo is under way).",
}

PER_PAGE = 50

router = APIRouter()
CallerDep = Annotated[Caller, Depends(current_caller)]
Token = Annotated[str, Form(max_length=200)]


# ---------------------------------------------------------------------- activity
def _filters(request: Request) -> tuple[str | None, str | None]:
    """The state and category filters of the query string (category "" = no category)."""
    params = request.query_params
    state = params.get("state") or None
    if state is not None and state not in LEDGER_STATES:
        raise HTTPException(400, "Filter by one of the states in the list.")
    raw_category = params.get("category")
    category = None if raw_category in (None, "*") else raw_category
    if category is not None and len(category) > MAX_NAME:
        raise HTTPException(400, "Filter by one of the categories in the list.")
    return state, category


@dataclass(frozen=True)
class ActivityRow:
    time: str
    mailbox: str
    state: str
    decided_by: str
    category: str | None
    color: str | None
    folder: str | None
    confidence: str
    actions: list[str]
    error: str | None
    live: LiveMessage | None
    entry_id: str = ""
    can_undo: bool = False
    can_fix: bool = False
    undo: str | None = None
    """What became of an undo, in words (None: not asked)."""
    forwarded: bool = False
    suggestion: str | None = None
    """Suggest only: what Postroom would have done, and how a person filed it since."""
    why: str | None = None
    """Why, in words: the rule's conditions that matched, or what the model weighed next."""


def _why_words(plan: dict[str, Any]) -> str | None:
    """``Plan.why`` in words: "Subject contains “invoice”" for a rule, "next: Receipts 11 %"
    for the model (configuration and numbers only)."""
    rules, weighed = [], []
    for item in plan.get("why") or ():
        if not isinstance(item, list | tuple) or not item:
            continue
        if item[0] == "rule" and len(item) == 4 and item[1] in FIELD_LABELS:
            words = f"{FIELD_LABELS[item[1]]} {OPERATOR_LABELS.get(item[2], item[2].lower())}"
            rules.append(f"{words} “{item[3]}”" if item[3] else words)
        elif item[0] == "next" and len(item) == 3:
            try:
                weighed.append(f"{item[1]} {float(item[2]):.0%}")
            except ValueError:
                continue
    if rules:
        return "matched: " + "; ".join(rules)
    if weighed:
        return "next: " + ", ".join(weighed)
    return None


def _suggestion_words(plan: dict[str, Any]) -> str | None:
    if not shadow.is_suggested(plan) or not plan.get("category"):
        return None
    words = f"would have: {plan['category']}"
    if plan.get("folder"):
        words += f" → {plan['folder']}"
    forward = plan.get("forward")
    if isinstance(forward, dict) and forward.get("to"):
        words += f", forwarded to {', '.join(str(a) for a in forward['to'])}"
    seen = plan.get(shadow.SHADOW)
    if isinstance(seen, dict) and seen.get("filed_as"):
        verdict = "agreed" if seen.get("agreed") else "disagreed"
        words += f"; filed by a person as {seen['filed_as']} ({verdict})"
    return words


@router.get("/integrations/{integration_id}/activity")
def activity_page(
    request: Request,
    integration_id: str,
    caller: CallerDep,
    db: DbSession,
) -> Response:
    integration = load_integration(db, caller, integration_id)
    params = request.query_params
    state, category = _filters(request)
    raw_page = params.get("page") or "1"
    if not raw_page.isdigit() or not 1 <= int(raw_page) <= 100_000:
        raise HTTPException(400, "The page number is not valid.")
    page = int(raw_page)
    entries, total = service.activity(
        db=db,
        integration=integration,
        state=state,
        category=category,
        offset=(page - 1) * PER_PAGE,
        limit=PER_PAGE,
    )
    colours = {c.name: c.color for c in service.categories(db=db, integration=integration)}
    hexes = {value: hex_ for value, _, hex_ in wizard.COLOURS}
    live: dict[tuple[str, str], LiveMessage] = {}
    subjects_problem = None
    if entries:
        if _status_notice(integration) is not None:
            subjects_problem = "Subjects are hidden until the integration is reconnected."
        else:
            wanted = [(box.graph_user_id, entry.message_id) for entry, box in entries]
            try:
                live = graph_call(request, db, integration, lambda c: fetch_subjects(c, wanted))
            except TokenFailure:
                subjects_problem = "Subjects are hidden until the integration is reconnected."
            except GraphError as exc:
                subjects_problem = f"Subjects are hidden: {_graph_words(exc)}. Reload to retry."
    rows = []
    for entry, box in entries:
        plan = entry.plan or {}
        confidence = plan.get("confidence")
        name = plan.get("category")
        rows.append(
            ActivityRow(
                time=entry.claimed_at.strftime("%Y-%m-%d %H:%M:%S"),
                mailbox=box.address,
                state="suggested"
                if shadow.is_suggested(plan)
                else STATE_WORDS.get(entry.state, entry.state),
                decided_by=DECIDED_BY_WORDS.get(str(plan.get("decided_by")), "—")
                + (
                    " (same conversation)"
                    if "via:conversation" in (plan.get("reasons") or ())
                    else ""
                )
                + (
                    f" ({fits_none_words(plan.get('reasons') or ()) or 'none of the categories'})"
                    if plan.get("decided_by") == "model" and not name
                    else ""
                ),
                category=str(name) if name else None,
                color=hexes.get(colours.get(str(name), "")) if name else None,
                folder=plan.get("folder"),
                confidence=f"{float(confidence):.0%}"
                if isinstance(confidence, int | float)
                else "—",
                actions=[ACTION_WORDS[a] for a in entry.actions_done or [] if a in ACTION_WORDS],
                error=outcome_words(
                    state=entry.state,
                    last_error=entry.last_error,
                    plan=entry.plan,
                    actions_done=entry.actions_done,
                    attempts=entry.attempts,
                ),
                live=live.get((box.graph_user_id, entry.message_id)),
                entry_id=entry.id,
                can_undo=undoing.undoable(entry),
                can_fix=undoing.fixable(entry),
                undo=_undo_words(entry),
                forwarded="forward_sent" in [*(entry.actions_done or []), *(entry.undo_done or [])],
                suggestion=_suggestion_words(plan),
                why=_why_words(plan),
            )
        )
    pages = max(1, math.ceil(total / PER_PAGE))

    def link(number: int) -> str:
        query: dict[str, str | int] = {"state": state} if state else {}
        if category is not None:
            query["category"] = category
        query["page"] = number
        return f"/integrations/{integration.id}/activity?{urlencode(query)}"

    return render(
        request,
        "integrations/activity.html",
        nav="integrations",
        item=integration,
        rows=rows,
        total=total,
        page=page,
        pages=pages,
        newer=link(page - 1) if page > 1 else None,
        older=link(page + 1) if page < pages else None,
        states=[(s, STATE_WORDS[s]) for s in LEDGER_STATES],
        state=state or "",
        category_names=sorted(
            set(service.activity_categories(db=db, integration=integration)) | set(colours),
            key=str.casefold,
        ),
        fix_names=[c.name for c in service.categories(db=db, integration=integration)],
        category="*" if category is None else category,
        subjects_problem=subjects_problem,
        undo_notice=UNDO_NOTICES.get(params.get("undo") or ""),
        undos_pending=db.scalar(
            select(func.count()).where(
                LedgerEntry.integration_id == integration.id,
                LedgerEntry.undo_state == "requested",
            )
        )
        or 0,
        bulk_since=utcnow().strftime("%Y-%m-%d %H:%M"),
        is_manager=caller.can_manage,
        status_notice=_status_notice(integration),
        labels=LABELS,
    )


def _undo_words(entry: LedgerEntry) -> str | None:
    if entry.undo_state is None:
        return None
    fix = undoing.fix_of(entry)
    forward = undoing.fix_forward(entry)
    to = ", ".join(forward["to"]) if forward is not None else ""
    if entry.undo_state == "requested":
        if fix and forward is not None:
            return f"fix to {fix['category']} (and a forward to {to}) under way"
        return f"fix to {fix['category']} under way" if fix else "undo under way"
    note = UNDO_NOTES.get(entry.undo_note or "")
    if entry.undo_state == "done":
        done = f"fixed: {fix['category']}" if fix else "undone"
        if forward is not None and "forward_sent" in (entry.undo_done or []):
            done += f", forwarded to {to}"
        return done + (f" ({note})" if note else "")
    return "undo failed: " + (note or str(entry.undo_note or "an error at Microsoft"))


@router.post("/integrations/{integration_id}/activity/{entry_id}/undo")
def undo_email(
    request: Request,
    integration_id: str,
    entry_id: str,
    caller: CallerDep,
    db: DbSession,
    csrf_token: Token = "",
) -> Response:
    """Ask for the undo of one email: recorded at once (one request however often it is
    clicked), carried out by the ``undo_message`` job (:mod:`postroom.processing.undo`)."""
    check_csrf(request, csrf_token)
    integration = load_integration(db, caller, integration_id)
    entry = _entry(db, integration.id, entry_id)
    back = f"/integrations/{integration.id}/activity"
    if not undoing.askable(entry):
        return RedirectResponse(f"{back}?undo=already", status_code=303)
    if not undoing.undoable(entry):
        raise HTTPException(
            409,
            "Only an email Postroom has finished, and labelled or moved, can be undone.",
        )
    if not _ask(db, [entry.id]):
        return RedirectResponse(f"{back}?undo=already", status_code=303)
    _queue_undo(request, entry)
    return RedirectResponse(f"{back}?undo=requested", status_code=303)


CSV_COLUMNS = (
    "time_utc",
    "mailbox",
    "message_id",
    "state",
    "category",
    "decided_by",
    "confidence",
    "actions",
    "undo",
)
CSV_BATCH = 2_000
CSV_MAX_ROWS = 500_000


def _cell(value: object) -> str:
    """A CSV cell that a spreadsheet shows as text: a value starting like a formula (a
    category name is the workspace's own input) gets a leading apostrophe."""
    text = "" if value is None else str(value)
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@router.get("/integrations/{integration_id}/activity.csv")
def activity_csv(
    request: Request,
    integration_id: str,
    caller: CallerDep,
    db: DbSession,
) -> Response:
    """The decisions as CSV, newest first, with the page's filters: times, ids, category
    names, who decided, confidence and actions — never a subject, sender or body."""
    import csv
    import io

    integration = load_integration(db, caller, integration_id)
    state, category = _filters(request)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    offset = 0
    while offset < CSV_MAX_ROWS:
        entries, _ = service.activity(
            db=db,
            integration=integration,
            state=state,
            category=category,
            offset=offset,
            limit=CSV_BATCH,
        )
        for entry, box in entries:
            plan = entry.plan or {}
            confidence = plan.get("confidence")
            writer.writerow(
                [
                    _cell(entry.claimed_at.strftime("%Y-%m-%dT%H:%M:%SZ")),
                    _cell(box.address),
                    _cell(entry.message_id),
                    _cell(entry.state),
                    _cell(plan.get("category") or ""),
                    _cell(plan.get("decided_by") or ""),
                    f"{float(confidence):.3f}" if isinstance(confidence, int | float) else "",
                    _cell(" ".join(a for a in entry.actions_done or [] if a in ACTION_WORDS)),
                    _cell(entry.undo_state or ""),
                ]
            )
        if len(entries) < CSV_BATCH:
            break
        offset += CSV_BATCH
    stamp = utcnow().strftime("%Y%m%d-%H%M")
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="postroom-activity-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )


FORWARD_ANSWERS = ("", "yes", "no")  # "": not asked yet


@router.post("/integrations/{integration_id}/activity/{entry_id}/fix")
def fix_email(
    request: Request,
    integration_id: str,
    entry_id: str,
    caller: CallerDep,
    db: DbSession,
    csrf_token: Token = "",
    category: Annotated[str, Form(max_length=MAX_NAME)] = "",
    forward: Annotated[str, Form(max_length=10)] = "",
    forward_to: Annotated[str, Form(max_length=20_000)] = "",
    forward_comment: Annotated[str, Form(max_length=20_000)] = "",
) -> Response:
    """Give one email the category a person chose: Postroom undoes its own action, applies the
    chosen category's label and folder, and learns the correction. When that category
    forwards, a second step asks first: only "Fix and forward" (``forward=yes``, naming the
    addresses the person was shown in ``forward_to``) records the forward, with the addresses
    and comment the category has now; "Fix without forwarding" (``forward=no``) sends none."""
    check_csrf(request, csrf_token)
    integration = load_integration(db, caller, integration_id)
    entry = _entry(db, integration.id, entry_id)
    back = f"/integrations/{integration.id}/activity"
    if not undoing.askable(entry):
        return RedirectResponse(f"{back}?undo=already", status_code=303)
    if not undoing.fixable(entry):
        raise HTTPException(409, "Only an email Postroom has finished can be fixed.")
    chosen = next(
        (c for c in service.categories(db=db, integration=integration) if c.name == category),
        None,
    )
    if chosen is None:
        raise HTTPException(400, "Choose one of this integration's categories.")
    current = (entry.plan or {}).get("category")
    suggested = shadow.is_suggested(entry.plan)  # Suggest only: nothing was put on it
    if (
        not suggested
        and isinstance(current, str)
        and current.strip().casefold() == chosen.name.casefold()
    ):
        raise HTTPException(409, f"This email already has {chosen.name}: nothing to fix.")
    if forward not in FORWARD_ANSWERS:
        raise HTTPException(400, "Answer with one of the two buttons: forward, or do not.")
    # Only owners and admins may send mail out of the mailbox, and only where the connection
    # may send at all; anyone else fixes without a forward.
    may_forward = caller.can_manage and _forwarding_allowed(integration)
    addresses = [a for a in chosen.forward_to or [] if isinstance(a, str) and a]
    if forward == "yes" and not caller.can_manage:
        raise HTTPException(403, "Only owners and admins can send a forward with a fix.")
    if forward == "yes" and not may_forward:
        raise HTTPException(400, "This connection may not send mail: fix without a forward.")
    if forward == "yes" and not addresses:
        raise HTTPException(400, f"{chosen.name} forwards to no one: there is no forward to send.")
    comment = chosen.forward_comment or ""
    if forward == "yes" and (forward_to != ", ".join(addresses) or forward_comment != comment):
        return _confirm_forward(request, integration, entry, chosen, addresses, changed=True)
    if forward == "" and addresses and may_forward:
        return _confirm_forward(request, integration, entry, chosen, addresses)
    fix: dict[str, Any] = {"category": chosen.name, "folder": (chosen.folder or "").strip() or None}
    if forward == "yes":
        fix["forward"] = {"to": addresses, "comment": comment}
    if not _ask(db, [entry.id], plan={**(entry.plan or {}), "fix": fix}):
        return RedirectResponse(f"{back}?undo=already", status_code=303)
    _queue_undo(request, entry)
    notice = "fix_forward" if "forward" in fix else "fix"
    return RedirectResponse(f"{back}?undo={notice}", status_code=303)


def _confirm_forward(
    request: Request,
    integration: Any,
    entry: LedgerEntry,
    chosen: Any,
    addresses: list[str],
    *,
    changed: bool = False,
) -> Response:
    """The second step of a fix to a category that forwards: nothing is recorded until the
    person answers. ``changed``: the addresses they confirmed are not the category's now (409,
    asked again with the new ones)."""
    return render(
        request,
        "integrations/fix_forward.html",
        status_code=409 if changed else 200,
        nav="integrations",
        item=integration,
        entry_id=entry.id,
        time=entry.claimed_at.strftime("%Y-%m-%d %H:%M:%S"),
        category=chosen.name,
        folder=(chosen.folder or "").strip() or None,
        addresses=addresses,
        comment=chosen.forward_comment or "",
        changed=changed,
    )


def _entry(db: DbSession, integration_id: str, entry_id: str) -> LedgerEntry:
    """The ledger row ``entry_id`` of this integration (404 for any other)."""
    entry = db.scalar(
        select(LedgerEntry).where(
            LedgerEntry.id == entry_id[:64], LedgerEntry.integration_id == integration_id
        )
    )
    if entry is None:
        raise HTTPException(404, "There is no such email in this integration's activity.")
    return entry


def _ask(db: DbSession, entry_ids: list[str], **values: Any) -> list[str]:
    """Record an undo (or fix) request on each finished row no request was made for yet (or
    whose request a disconnect ended, :func:`~postroom.processing.undo.askable`), in one
    conditional update, and commit; the ids it took (two clicks make one request)."""
    if not entry_ids:
        return []
    taken = db.scalars(
        update(LedgerEntry)
        .where(
            LedgerEntry.id.in_(entry_ids),
            undoing.askable_clause(),
            LedgerEntry.state == "done",
        )
        .values(undo_state="requested", undo_requested_at=utcnow(), undo_note=None, **values)
        .returning(LedgerEntry.id)
    ).all()
    db.commit()
    return list(taken)


def _queue_undo(request: Request, entry: LedgerEntry) -> None:
    from anyio import from_thread

    from postroom.sync.jobs import defer_undo

    try:
        from_thread.run(defer_undo, request.app.state.runtime, entry.id, entry.mailbox_id)
    except Exception:  # recorded anyway: the reconcile queues a standing request again
        import logging

        logging.getLogger(__name__).warning("ledger %s: could not queue the undo now", entry.id)


# ---------------------------------------------------------------------- bulk undo
def _bulk_filter(integration_id: str, category: str, since: datetime) -> Any:
    """Rows "undo everything category X did since T" takes: finished, labelled or moved,
    decided for ``category``, claimed at or after ``since``, no undo asked yet (or one a
    disconnect ended)."""
    return (
        LedgerEntry.integration_id == integration_id,
        LedgerEntry.state == "done",
        undoing.askable_clause(),
        LedgerEntry.plan["category"].as_string() == category,
        LedgerEntry.claimed_at >= since,
    )


def _bulk_params(request: Request, names: list[str]) -> tuple[str, datetime]:
    params = request.query_params
    category = params.get("category") or ""
    if category not in names:
        raise HTTPException(400, "Choose one of this integration's categories.")
    raw = (params.get("since") or "").strip()
    try:
        since = datetime.fromisoformat(raw)
    except ValueError:
        raise HTTPException(400, "Give the time to undo from as YYYY-MM-DD HH:MM (UTC).") from None
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return category, since


@router.get("/integrations/{integration_id}/activity/bulk-undo")
def bulk_undo_preview(
    request: Request, integration_id: str, caller: CallerDep, db: DbSession
) -> Response:
    """What "undo everything category X did since T" would undo: a count, before anything."""
    integration = load_integration(db, caller, integration_id)
    names = [c.name for c in service.categories(db=db, integration=integration)]
    category, since = _bulk_params(request, names)
    rows = db.scalars(select(LedgerEntry).where(*_bulk_filter(integration.id, category, since)))
    count = sum(1 for entry in rows if undoing.undoable(entry))
    return render(
        request,
        "integrations/bulk_undo.html",
        nav="integrations",
        item=integration,
        category=category,
        since=since.strftime("%Y-%m-%d %H:%M"),
        count=count,
    )


@router.post("/integrations/{integration_id}/activity/bulk-undo")
def bulk_undo(
    request: Request,
    integration_id: str,
    caller: CallerDep,
    db: DbSession,
    csrf_token: Token = "",
) -> Response:
    """Ask for the undo of every email the preview counted: recorded at once, carried out one
    email at a time under each mailbox's lock (the Graph client keeps to Microsoft's budget);
    a lost job is queued again by the reconcile, so it resumes after a crash."""
    check_csrf(request, csrf_token)
    caller.require_manager()
    integration = load_integration(db, caller, integration_id)
    names = [c.name for c in service.categories(db=db, integration=integration)]
    category, since = _bulk_params(request, names)
    chosen = [
        entry
        for entry in db.scalars(
            select(LedgerEntry).where(*_bulk_filter(integration.id, category, since))
        )
        if undoing.undoable(entry)
    ]
    recorded = set(_ask(db, [entry.id for entry in chosen]))
    asked = [entry for entry in chosen if entry.id in recorded]
    for entry in asked:
        _queue_undo(request, entry)
    return RedirectResponse(
        f"/integrations/{integration.id}/activity?undo=bulk&asked={len(asked)}", status_code=303
    )
