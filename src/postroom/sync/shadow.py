"""Suggest only (shadow mode): Postroom decides and records, and touches nothing.

An integration (``Integration.options["suggest_only"]``) or a single category
(``Category.suggest_only``) can run in Suggest only. A decision for such a category is recorded
in the ledger like any other - its plan, who decided, the confidence - with
``plan["suggested"] = True``, the row ``done`` and no action: no Graph write leaves for it (not
the label, not the move, not a folder or a master category, not a forward). The activity view
says "would have: Invoices → Finance/Invoices".

People then file that mail themselves. Postroom sees it through delta, as it sees corrections:
a configured category put on the email in the folder it reads, or the email moved into a
category's folder (the suggested category's folder is watched as soon as it exists; Postroom
looks it up, never creates it). The first such filing is recorded in ``plan["shadow"]``
(which category, whether it agreed); a disagreement is also learned as a correction, through
the same path as a correction made in Outlook. :func:`agreement` counts them per category.

**Go live** (:func:`go_live`) turns Suggest only off for all categories or one. It acts on new
mail only, unless the person asks to also file the mail suggested so far that nobody filed:
those rows become ``claimed`` again with ``plan["went_live"]`` and are finished by the
``resume_stale_claims`` job (:mod:`postroom.sync.stale_claims`), which executes their stored
plan exactly once like any resumed row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from postroom.db import Database
from postroom.integrations.models import Category, Integration
from postroom.learning.corrections import Correction
from postroom.processing.models import LedgerEntry
from postroom.processing.plan import Plan
from postroom.processing.view import MessageView

SUGGESTED = "suggested"  # plan key: decided, recorded, not acted on
SHADOW = "shadow"  # plan key: how a person filed a suggested email (the first time)
WENT_LIVE = "went_live"  # plan key: a suggestion filed after Go live, at the person's request


def is_suggested(plan: dict[str, Any] | None) -> bool:
    return bool((plan or {}).get(SUGGESTED))


def went_live(plan: dict[str, Any] | None) -> bool:
    return bool((plan or {}).get(WENT_LIVE))


def record_suggestion(
    database: Database, entry_id: str, plan: Plan, *, folder_id: str | None
) -> bool:
    """End the claimed row ``done`` with the plan marked suggested, and the folder the email
    was in (``suggested_in``: Go live files it only if it is still there); nothing is executed.
    False when the row is not a fresh claim (a resumed row whose plan was stored before
    Suggest only was turned on is finished as it began: executed)."""
    stored = {**plan.to_json(), SUGGESTED: True, "suggested_in": folder_id}
    with database.session() as db:
        row = db.get(LedgerEntry, entry_id, with_for_update=True)
        if row is None or row.state != "claimed":
            return False
        if row.plan is not None and not (is_suggested(row.plan) or went_live(row.plan)):
            return False
        if row.actions_done:
            return False
        row.plan = stored
        row.state = "done"
        row.last_error = None
        row.done_at = datetime.now(UTC)
    return True


def _key(name: str) -> str:
    return name.strip().casefold()


def _path_key(path: str) -> str:
    return "/".join(_key(s) for s in path.split("/") if s.strip())


def seen(
    db: Session,
    *,
    mailbox_row_id: str,
    message_id: str,
    categories_on_message: list[str],
    configured: list[tuple[str, str | None]],
    watched_path: str | None,
) -> tuple[bool, tuple[str, Correction] | None]:
    """A suggested email seen again through delta: in the folder Postroom reads
    (``watched_path`` None: a category a person put on it counts) or in a category's watched
    folder (the person moved it there). Returns (whether the row is a suggestion, the
    correction to learn when the person filed it differently). The first filing is recorded."""
    row = db.scalars(
        select(LedgerEntry)
        .where(LedgerEntry.mailbox_id == mailbox_row_id, LedgerEntry.message_id == message_id)
        .with_for_update()
    ).one_or_none()
    if row is None or row.state != "done" or not is_suggested(row.plan):
        return False, None
    plan = dict(row.plan or {})
    suggested = str(plan.get("category") or "")
    filed_as: str | None = None
    if watched_path is not None:
        where = _path_key(watched_path)
        owners = [n for n, folder in configured if folder and _path_key(folder) == where]
        if len(owners) == 1:
            filed_as = owners[0]
    if filed_as is None:
        present = {_key(c) for c in categories_on_message}
        names = [n for n, _ in configured if _key(n) in present]
        if suggested and _key(suggested) in {_key(n) for n in names}:
            filed_as = next(n for n in names if _key(n) == _key(suggested))
        elif names:
            filed_as = names[0]
    if filed_as is None:
        return True, None
    agreed = _key(filed_as) == _key(suggested)
    if SHADOW not in plan:
        plan[SHADOW] = {
            "filed_as": filed_as,
            "agreed": agreed,
            "by": "folder" if watched_path is not None else "category",
            "at": datetime.now(UTC).isoformat(),
        }
        row.plan = plan
    if agreed or plan.get("corrected_to") == filed_as:
        return True, None
    decided_by = plan.get("decided_by")
    return True, (
        row.id,
        Correction(
            suggested or None, filed_as, decided_by if isinstance(decided_by, str) else None
        ),
    )


# ---------------------------------------------------------------------- agreement
@dataclass(frozen=True)
class Agreement:
    category: str
    suggested: int  # emails Postroom suggested this category for
    filed: int  # of those, how many a person filed since (with a configured category)
    agreed: int  # of those, filed as suggested

    @property
    def rate(self) -> float | None:
        return self.agreed / self.filed if self.filed else None


def agreement(db: Session, integration_id: str) -> dict[str, Agreement]:
    """Per suggested category: suggestions, how many people filed, how many as suggested."""
    rows = db.execute(
        text(
            "SELECT plan->>'category' AS category, count(*) AS suggested,"
            " count(*) FILTER (WHERE plan->'shadow' IS NOT NULL) AS filed,"
            " count(*) FILTER (WHERE plan->'shadow'->>'agreed' = 'true') AS agreed"
            " FROM ledger WHERE integration_id = :id AND plan->>'suggested' = 'true'"
            " GROUP BY 1"
        ),
        {"id": integration_id},
    ).all()
    return {
        str(category): Agreement(str(category), int(suggested), int(filed), int(agreed))
        for category, suggested, filed, agreed in rows
        if category
    }


# ---------------------------------------------------------------------- go live
def suggesting(integration: Integration, categories: list[Category]) -> list[Category]:
    """The categories whose decisions are only suggested now."""
    if (integration.options or {}).get("suggest_only"):
        return list(categories)
    return [c for c in categories if c.suggest_only]


def set_suggest_only(
    integration: Integration, categories: list[Category], *, category_id: str | None, on: bool
) -> None:
    """Turn Suggest only on or off for all categories (``category_id`` None) or one. Going
    live for one category while the whole integration suggests keeps the others suggesting."""
    options = dict(integration.options or {})
    if on:
        options["suggested_ever"] = True  # (the page counts agreement from then on)
    if category_id is None:
        options["suggest_only"] = on
        if on:
            options.setdefault("suggest_since", datetime.now(UTC).isoformat())
        else:
            options.pop("suggest_since", None)
            for category in categories:
                category.suggest_only = False
        integration.options = options
        return
    if options.get("suggest_only"):
        for category in categories:
            category.suggest_only = True  # the integration-wide switch becomes per category
        options["suggest_only"] = False
    for category in categories:
        if category.id == category_id:
            category.suggest_only = on
    if on:
        options.setdefault("suggest_since", datetime.now(UTC).isoformat())
    elif not any(c.suggest_only for c in categories):
        options.pop("suggest_since", None)
    integration.options = options


UNFILED = (
    "ledger.plan->>'suggested' = 'true' AND ledger.plan->'shadow' IS NULL"
    " AND ledger.plan->'corrected_to' IS NULL AND ledger.undo_state IS NULL"
)
"""A suggestion nobody filed: no filing seen, no correction, no Undo or Fix asked."""


def unfiled_counts(db: Session, integration_id: str) -> dict[str, int]:
    """Per category (casefolded): suggestions nobody filed yet."""
    rows = db.execute(
        text(
            "SELECT lower(plan->>'category'), count(*) FROM ledger"
            " WHERE integration_id = :id AND state = 'done' AND " + UNFILED + " GROUP BY 1"
        ),
        {"id": integration_id},
    ).all()
    return {str(k): int(n) for k, n in rows if k}


def unfiled_suggestions(db: Session, integration_id: str, names: list[str]) -> list[LedgerEntry]:
    """Suggested emails of these categories that nobody has filed yet (rows locked)."""
    wanted = {_key(n) for n in names}
    rows = db.scalars(
        select(LedgerEntry)
        .where(
            LedgerEntry.integration_id == integration_id,
            LedgerEntry.state == "done",
            text(UNFILED),
        )
        .with_for_update()
    )
    return [r for r in rows if _key(str((r.plan or {}).get("category") or "")) in wanted]


def file_suggestions(db: Session, rows: list[LedgerEntry]) -> set[str]:
    """Make these suggestions claimed again (Go live with "also file the mail suggested so
    far"). The resumed run (:func:`postroom.sync.engine.process_message`) leaves alone an email
    a person filed, moved or deleted since, decides again with today's configuration, and
    labels and files it without a forward (old mail). Returns the mailbox row ids to queue."""
    mailboxes: set[str] = set()
    for row in rows:
        plan = {k: v for k, v in (row.plan or {}).items() if k != SUGGESTED}
        plan[WENT_LIVE] = True
        row.plan = plan
        row.state = "claimed"
        row.done_at = None
        mailboxes.add(row.mailbox_id)
    return mailboxes


def filed_since(view: MessageView, suggested_in: Any, configured: list[str]) -> bool:
    """Whether a person dealt with a suggested email since: it left the folder it was
    suggested in (filed, moved, deleted), or carries a configured category."""
    if isinstance(suggested_in, str) and view.folder_id and view.folder_id != suggested_in:
        return True
    present = {_key(c) for c in view.categories}
    return any(_key(name) in present for name in configured)


def replan(database: Database, entry_id: str, plan: Plan) -> None:
    """A Go-live row about to be executed: its stored plan becomes today's decision (the
    executor runs the stored plan), still marked went live, while nothing was done yet."""
    with database.session() as db:
        row = db.get(LedgerEntry, entry_id, with_for_update=True)
        if row is None or row.state != "claimed" or row.actions_done:
            return
        row.plan = {**plan.to_json(), WENT_LIVE: True}
