"""Integration records: every function takes the caller's workspace id and stays inside it.

Keyword-only, one short session each, no network calls: views fetch from Microsoft first and
then call these to write.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from postroom.crypto import SecretBox
from postroom.integrations.models import Category, Integration, Mailbox, OAuthFlow
from postroom.integrations.statuses import Reason
from postroom.processing.models import LedgerEntry

FLOW_LIFETIME = timedelta(minutes=15)


def list_integrations(*, db: Session, workspace_id: str) -> list[Integration]:
    return list(
        db.scalars(
            select(Integration)
            .where(Integration.workspace_id == workspace_id)
            .order_by(Integration.created_at)
        )
    )


def get_integration(*, db: Session, workspace_id: str, integration_id: str) -> Integration | None:
    return db.scalar(
        select(Integration).where(
            Integration.id == integration_id, Integration.workspace_id == workspace_id
        )
    )


REMOVED = "removed"  # Mailbox.status of a mailbox taken out of an integration (row kept)


def _in_use() -> Any:
    return or_(Mailbox.status != REMOVED, Mailbox.status.is_(None))


def mailboxes(*, db: Session, integration: Integration) -> list[Mailbox]:
    """The integration's mailboxes in use (not those removed from it: their rows stay, so that
    their ledger — what was done, exactly once — survives)."""
    return list(
        db.scalars(
            select(Mailbox)
            .where(Mailbox.integration_id == integration.id, _in_use())
            .order_by(Mailbox.kind, Mailbox.address)
        )
    )


def categories(*, db: Session, integration: Integration) -> list[Category]:
    return list(
        db.scalars(
            select(Category)
            .where(Category.integration_id == integration.id)
            .order_by(Category.position)
        )
    )


# ---------------------------------------------------------------------- OAuth round trips
def save_flow(
    *,
    db: Session,
    box: SecretBox,
    state: str,
    workspace_id: str,
    user_id: str,
    purpose: str,
    options: dict[str, Any],
    flow: bytes | None,
    integration_id: str | None = None,
    tenant_id: str | None = None,
) -> None:
    db.add(
        OAuthFlow(
            state=state,
            workspace_id=workspace_id,
            user_id=user_id,
            purpose=purpose,
            integration_id=integration_id,
            options=options,
            tenant_id=tenant_id,
            flow=box.encrypt(flow, context=f"oauth-flow:{state}".encode()) if flow else None,
        )
    )


def take_flow(*, db: Session, state: str, user_id: str) -> OAuthFlow | None:
    """The pending flow for this ``state`` started by this user; single use, 15 minutes."""
    cutoff = datetime.now(UTC) - FLOW_LIFETIME
    db.execute(delete(OAuthFlow).where(OAuthFlow.created_at < cutoff))
    if not state or len(state) > 128:
        return None
    flow = db.get(OAuthFlow, state)
    if flow is None or flow.user_id != user_id:
        return None
    db.delete(flow)
    db.flush()
    return flow


def flow_payload(*, box: SecretBox, flow: OAuthFlow) -> bytes | None:
    if flow.flow is None:
        return None
    return box.decrypt(flow.flow, context=f"oauth-flow:{flow.state}".encode())


# ---------------------------------------------------------------------- integrations
def store_token_cache(*, box: SecretBox, integration: Integration, cache: str) -> None:
    integration.token_cache = box.encrypt(
        cache.encode(), context=f"token-cache:{integration.id}".encode()
    )


def token_cache(*, box: SecretBox, integration: Integration) -> str | None:
    if integration.token_cache is None:
        return None
    return box.decrypt(
        integration.token_cache, context=f"token-cache:{integration.id}".encode()
    ).decode()


def find_personal(
    *, db: Session, workspace_id: str, tenant_id: str, account_oid: str
) -> Integration | None:
    return db.scalar(
        select(Integration).where(
            Integration.workspace_id == workspace_id,
            Integration.kind == "personal",
            Integration.tenant_id == tenant_id,
            Integration.account_oid == account_oid,
        )
    )


def find_organization(*, db: Session, workspace_id: str, tenant_id: str) -> Integration | None:
    return db.scalar(
        select(Integration).where(
            Integration.workspace_id == workspace_id,
            Integration.kind == "organization",
            func.lower(Integration.tenant_id) == tenant_id.lower(),
        )
    )


def mailboxes_taken(
    *, db: Session, integration: Integration, wanted: list[dict[str, Any]]
) -> list[str]:
    """Why any of ``wanted`` (wizard mailbox choices) cannot be chosen: each mailbox belongs
    to one integration at most, in any workspace; two would both label the same email and
    move it to whichever folder was written last."""
    ids = {str(m.get("id") or "").lower() for m in wanted} - {""}
    addresses = {str(m.get("address") or "").lower() for m in wanted} - {""}
    rows = db.execute(
        select(Mailbox.address, Mailbox.graph_user_id, Integration.workspace_id, Integration.name)
        .join(Integration, Integration.id == Mailbox.integration_id)
        .where(
            Mailbox.integration_id != integration.id,
            _in_use(),
            (
                func.lower(Mailbox.graph_user_id).in_(ids)
                | func.lower(Mailbox.address).in_(addresses)
            ),
        )
    ).all()
    problems = []
    for address, _graph_id, workspace_id, name in rows:
        where = (
            f"the integration “{name}” in this workspace"
            if workspace_id == integration.workspace_id
            else "an integration in another Postroom workspace"
        )
        problems.append(
            f"{address} is already processed by {where}. A mailbox can belong to one "
            "integration only (two would both label each email and fight over its folder): "
            "remove it there first, or leave it out here."
        )
    return problems


def connected_elsewhere(*, db: Session, workspace_id: str, tenant_id: str) -> bool:
    """Whether another workspace has an organization-wide connection to this tenant (its
    administrator must then confirm again before this workspace gets one too)."""
    return bool(
        db.scalar(
            select(func.count())
            .select_from(Integration)
            .where(
                Integration.workspace_id != workspace_id,
                Integration.kind == "organization",
                func.lower(Integration.tenant_id) == tenant_id.lower(),
            )
        )
    )


def create_integration(
    *, db: Session, workspace_id: str, user_id: str, kind: str, **fields: Any
) -> Integration:
    integration = Integration(
        workspace_id=workspace_id, created_by=user_id, kind=kind, status="setup", **fields
    )
    db.add(integration)
    db.flush()
    return integration


def set_status(
    *,
    db: Session,
    integration: Integration,
    status: str,
    reason: Reason | None = None,
    detail: str | None = None,
) -> None:
    integration.status = status
    integration.status_reason = reason.code if reason else None
    integration.status_detail = detail
    integration.status_changed_at = datetime.now(UTC)
    db.flush()


def mark_failed(
    *, db: Session, integration: Integration, reason: Reason, detail: str | None = None
) -> None:
    """A token or consent failure: a status with its reason, never a retry."""
    set_status(db=db, integration=integration, status=reason.status, reason=reason, detail=detail)


def pause(*, db: Session, integration: Integration) -> bool:
    """Stop processing: the status ``paused`` is outside ``ACTIVE``, so syncs, backfills,
    renewals and the reconcile leave it alone and no alert is sent. False when it is not
    running (a stopped or unfinished integration has nothing to pause)."""
    from postroom.integrations.statuses import ACTIVE, PAUSED

    if integration.status not in ACTIVE:
        return False
    set_status(db=db, integration=integration, status=PAUSED)
    return True


def unpause(*, db: Session, integration: Integration) -> bool:
    """Back to ``connected``; the caller queues the catch-up (delta from where it stopped)."""
    from postroom.integrations.statuses import PAUSED

    if integration.status != PAUSED:
        return False
    set_status(db=db, integration=integration, status="connected")
    return True


def restore_after_reconnect(*, db: Session, integration: Integration) -> None:
    status = "connected" if integration.finished_at else "setup"
    set_status(db=db, integration=integration, status=status)


def save_wizard(*, db: Session, integration: Integration, data: dict[str, Any], step: int) -> None:
    integration.wizard_data = dict(data)
    integration.wizard_step = step
    db.flush()


def finish_setup(*, db: Session, integration: Integration) -> None:
    """Write the wizard's choices as mailboxes and categories; the integration is live.

    Never deletes: mailboxes are matched by their Graph id and categories by name, so
    finishing again (or a row that already exists) keeps every category with its rules,
    examples and position, and every mailbox with its ledger. Existing mail is not processed
    here: the person starts it when their rules and examples are ready (``backfill_since``
    stays unset until then)."""
    data = integration.wizard_data
    sync = data["sync"]
    update_sync_choices(
        db=db, integration=integration, chosen=sync["mailboxes"], folders=sync["folders"]
    )
    existing = {
        c.name.lower(): c
        for c in db.scalars(select(Category).where(Category.integration_id == integration.id))
    }
    position = max((c.position for c in existing.values()), default=-1)
    for cat in data.get("processing", {}).get("categories", []):
        if cat["name"].lower() in existing:
            continue  # configured already (in the editor, or by an earlier Finish): kept as is
        position += 1
        db.add(
            Category(
                integration_id=integration.id,
                name=cat["name"],
                color=cat["color"],
                folder=cat.get("folder"),
                forward_to=list(cat.get("forward_to") or []),
                position=position,
            )
        )
    if integration.finished_at is None:
        integration.finished_at = datetime.now(UTC)
    set_status(db=db, integration=integration, status="connected")


def update_sync_choices(
    *,
    db: Session,
    integration: Integration,
    chosen: list[dict[str, Any]],
    folders: list[dict[str, Any]],
) -> None:
    """Make the integration's mailboxes the ``chosen`` ones (wizard step 2 or the Mailboxes
    and folders page), each with ``folders``. A mailbox left out is marked removed, never
    deleted (its ledger stays: mail it already handled is never handled twice if it comes
    back); one chosen again is back in use. Categories are not touched. The folder syncs follow
    in :func:`postroom.sync.folder_syncs.apply_folder_syncs`."""
    rows = list(db.scalars(select(Mailbox).where(Mailbox.integration_id == integration.id)))
    by_id = {r.graph_user_id.lower(): r for r in rows}
    kept: set[str] = set()
    for box in chosen:
        row = by_id.get(str(box["id"]).lower())
        if row is None:
            row = Mailbox(integration_id=integration.id, graph_user_id=box["id"])
            db.add(row)
        elif row.status == REMOVED:
            row.status, row.status_reason = "connected", None
        row.address = box["address"]
        row.display_name = box.get("name", "")
        row.kind = box["kind"]
        row.folders = [dict(f) for f in folders]
        kept.add(str(box["id"]).lower())
    for row in rows:
        if row.graph_user_id.lower() not in kept:
            row.status, row.status_reason = REMOVED, None
    db.flush()


def record_existing_mail_run(
    *, db: Session, integration: Integration, since: date, forward_history: bool
) -> None:
    """Remember the "Apply to existing mail" run just started: its date (shown on the
    integration page) and whether historical mail is forwarded (the backfill reads it)."""
    integration.backfill_since = since
    data = dict(integration.wizard_data or {})
    data["backfill"] = {
        "mode": "since",
        "since": since.isoformat(),
        "forward_history": bool(forward_history),
    }
    integration.wizard_data = data
    db.flush()


# ---------------------------------------------------------------------- categories after setup
# (the category editor, :mod:`postroom.categories.views`)
def get_category(*, db: Session, integration: Integration, category_id: str) -> Category | None:
    return db.scalar(
        select(Category).where(
            Category.id == category_id, Category.integration_id == integration.id
        )
    )


def save_category(
    *,
    db: Session,
    integration: Integration,
    category_id: str | None,
    name: str,
    color: str,
    folder: str | None,
    forward_to: list[str],
    description: str,
    rules: dict[str, Any] | None,
    forward_comment: str = "",
) -> Category:
    """Update a category of this integration, or add one at the end (``category_id`` None)."""
    category = (
        get_category(db=db, integration=integration, category_id=category_id)
        if category_id
        else None
    )
    if category is None:
        last = max((c.position for c in categories(db=db, integration=integration)), default=-1)
        category = Category(integration_id=integration.id, position=last + 1)
        db.add(category)
    category.name = name
    category.color = color
    category.folder = folder
    category.forward_to = list(forward_to)
    category.forward_comment = forward_comment
    category.description = description
    category.rules = rules
    db.flush()
    return category


def delete_category(*, db: Session, integration: Integration, category_id: str) -> bool:
    category = get_category(db=db, integration=integration, category_id=category_id)
    if category is None:
        return False
    db.delete(category)
    db.flush()
    return True


def move_category(*, db: Session, integration: Integration, category_id: str, offset: int) -> bool:
    """Move a category ``offset`` places (rules are tried in this order; the first match wins)."""
    rows = categories(db=db, integration=integration)
    index = next((i for i, c in enumerate(rows) if c.id == category_id), None)
    if index is None:
        return False
    target = min(max(index + offset, 0), len(rows) - 1)
    rows.insert(target, rows.pop(index))
    for position, row in enumerate(rows):
        row.position = position
    db.flush()
    return True


# ---------------------------------------------------------------------- activity (the ledger)
def activity(
    *,
    db: Session,
    integration: Integration,
    state: str | None,
    category: str | None,
    offset: int,
    limit: int,
) -> tuple[list[tuple[LedgerEntry, Mailbox]], int]:
    """One page of this integration's ledger rows, newest first, with their mailboxes; and the
    number of rows matching the filters. ``category`` "" means rows without a category."""
    query = (
        select(LedgerEntry, Mailbox)
        .join(Mailbox, Mailbox.id == LedgerEntry.mailbox_id)
        .where(LedgerEntry.integration_id == integration.id)
    )
    if state:
        query = query.where(LedgerEntry.state == state)
    if category is not None:
        chosen = LedgerEntry.plan["category"].as_string()
        query = query.where(chosen.is_(None) if category == "" else chosen == category)
    total = db.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = db.execute(
        query.order_by(LedgerEntry.claimed_at.desc(), LedgerEntry.id).offset(offset).limit(limit)
    ).all()
    return [(entry, mailbox) for entry, mailbox in rows], int(total)


def activity_categories(*, db: Session, integration: Integration) -> list[str]:
    """The category names that occur in this integration's ledger."""
    chosen = LedgerEntry.plan["category"].as_string()
    names = db.scalars(
        select(chosen)
        .where(LedgerEntry.integration_id == integration.id, chosen.isnot(None))
        .distinct()
    )
    return sorted((n for n in names if n), key=str.casefold)
