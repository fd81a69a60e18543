"""What the charts page draws (:mod:`.charts_views`): per-day and per-week counts of one
integration's ledger and learning events, grouped in SQL, bounded in time.

Days and weeks are UTC calendar days and ISO weeks (from Monday). Three queries, each bounded
by a time column and the integration:

* the ledger by the day Postroom claimed the email (``claimed_at``), from the Monday of the
  oldest week shown (at most 35 days back): who decided, the category, and whether a person
  disagreed since — grouped, so a busy month is a few hundred rows, not one per email;
* corrections: ``learning_events`` of kind ``correction`` or ``rejection`` (a person moved the
  email or changed or took off its category in Outlook), by day, without those an Undo or Fix
  from the activity page wrote (it learns through the same path, and is counted as the undo or
  fix): an event about an email after an undo or fix was asked for it is that undo's;
* undos and fixes by the day a person asked for them (``undo_requested_at``), whatever became
  of them since: asking is what the person did.

The two ledger queries read only their days' rows through the indexes of migration 0019
(``ix_ledger_integration_claimed``, ``ix_ledger_integration_undo_asked``; the ledger is never
pruned); the corrections are few and found by ``learning_events``' integration index.

Which emails count (:func:`decider`): those Postroom finished (``done``) and those it left
alone because they already had a category of their own (``skipped``, ``already_filed``). An
email still in progress, failed, or gone before Postroom got to it is on the activity page,
not in the charts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Date, and_, cast, exists, func, or_, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from postroom.learning.models import LearningEvent
from postroom.processing.models import LedgerEntry
from postroom.processing.outcomes import LEFT_ALONE

DAYS = 30
WEEKS = 5
DECIDERS = ("rule", "model", "conversation", "needs_review", "left_alone")
"""Who decided, as the charts tell them apart: a rule, the learned model, the learned model
recalling where the conversation went, the needs-review fallback, and nobody (left alone)."""
FEEDBACK = ("corrected", "undone", "fixed")


def decider(
    *,
    state: str,
    last_error: str | None,
    decided_by: str | None,
    category: str | None,
    conversation: bool,
) -> str | None:
    """Which of :data:`DECIDERS` an email counts under, or None when it is not counted.

    Left alone: no rule matched and the model was off or unsure with no needs-review category
    (``none``), the model said none of the categories fits, or the email already had a
    category of its own when Postroom got to it (``already_filed``)."""
    if state == "skipped":
        return "left_alone" if last_error in LEFT_ALONE else None
    if state != "done":
        return None
    if decided_by == "rule" and category:
        return "rule"
    if decided_by == "model" and category:
        return "conversation" if conversation else "model"
    if decided_by == "needs_review" and category:
        return "needs_review"
    return "left_alone"


@dataclass(frozen=True)
class Agreement:
    """One week's emails Postroom gave a category by a rule or the model, and how many of
    them nobody corrected, undid or fixed since."""

    week: date  # its Monday
    decided: int
    kept: int

    @property
    def rate(self) -> float | None:
        return self.kept / self.decided if self.decided else None


@dataclass
class ChartCounts:
    days: list[date]
    """The :data:`DAYS` days shown, oldest first; the last is today (UTC)."""
    by_category: dict[str | None, dict[date, int]] = field(default_factory=dict)
    """Emails per category name per day; ``None``: no category (left alone)."""
    by_decider: dict[str, dict[date, int]] = field(default_factory=dict)
    feedback: dict[str, dict[date, int]] = field(default_factory=dict)
    """:data:`FEEDBACK` per day: corrected in Outlook, undone or fixed from the activity page."""
    agreement: list[Agreement] = field(default_factory=list)
    """The :data:`WEEKS` weeks to this one, oldest first."""

    @property
    def emails(self) -> int:
        return sum(sum(per_day.values()) for per_day in self.by_decider.values())


def window(today: date) -> tuple[list[date], list[date]]:
    """The days and the weeks (Mondays) shown on ``today``, oldest first."""
    days = [today - timedelta(days=n) for n in range(DAYS - 1, -1, -1)]
    monday = today - timedelta(days=today.weekday())
    weeks = [monday - timedelta(weeks=n) for n in range(WEEKS - 1, -1, -1)]
    return days, weeks


def _start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _utc_day(column: Any) -> ColumnElement[date]:
    """The UTC calendar day of a ``timestamptz`` column, whatever the session's time zone."""
    return cast(func.timezone("UTC", column), Date)


def chart_counts(db: Session, *, integration_id: str, today: date) -> ChartCounts:
    """The counts of integration ``integration_id`` for the days and weeks to ``today`` (UTC).
    The caller has checked the integration belongs to its workspace."""
    days, weeks = window(today)
    counts = ChartCounts(days=days)
    first_day = days[0]
    since = _start(min(first_day, weeks[0]))

    plan = LedgerEntry.plan
    day = _utc_day(LedgerEntry.claimed_at).label("day")
    decided_by = plan["decided_by"].as_string().label("decided_by")
    category = plan["category"].as_string().label("category")
    conversation = func.coalesce(
        cast(plan["reasons"], JSONB).contains(["via:conversation"]), False
    ).label("conversation")
    disagreed = or_(plan["corrected_to"].is_not(None), LedgerEntry.undo_state.is_not(None)).label(
        "disagreed"
    )
    rows = db.execute(
        select(
            day,
            LedgerEntry.state,
            LedgerEntry.last_error,
            decided_by,
            category,
            conversation,
            disagreed,
            func.count(),
        )
        .where(
            LedgerEntry.integration_id == integration_id,
            LedgerEntry.claimed_at >= since,
            # Suggest only: decided but not done to the mailbox - not counted as acted on
            func.coalesce(plan["suggested"].as_string(), "") != "true",
            or_(
                LedgerEntry.state == "done",
                and_(LedgerEntry.state == "skipped", LedgerEntry.last_error.in_(LEFT_ALONE)),
            ),
        )
        .group_by(day, LedgerEntry.state, LedgerEntry.last_error, decided_by, category)
        .group_by(conversation, disagreed)
    ).all()
    by_category: dict[str | None, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    by_decider: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    decided: dict[date, int] = defaultdict(int)
    kept: dict[date, int] = defaultdict(int)
    for when, state, last_error, by, name, via, changed, number in rows:
        who = decider(
            state=state,
            last_error=last_error,
            decided_by=by,
            category=name,
            conversation=bool(via),
        )
        if who is None:
            continue
        if who in ("rule", "model", "conversation"):
            monday = when - timedelta(days=when.weekday())
            decided[monday] += number
            kept[monday] += 0 if changed else number
        if when < first_day:
            continue  # (read for the oldest week's agreement only)
        by_decider[who][when] += number
        by_category[name if who != "left_alone" else None][when] += number
    # Suggest only (postroom.sync.shadow): a suggestion a person has filed since counts too -
    # kept when they filed it as Postroom suggested.
    filed_as = plan["shadow"]["agreed"].as_string()
    for when, agreed, number in db.execute(
        select(day, filed_as, func.count())
        .where(
            LedgerEntry.integration_id == integration_id,
            LedgerEntry.claimed_at >= since,
            func.coalesce(plan["suggested"].as_string(), "") == "true",
            filed_as.is_not(None),
        )
        .group_by(day, filed_as)
    ).all():
        monday = when - timedelta(days=when.weekday())
        decided[monday] += number
        kept[monday] += number if agreed == "true" else 0
    counts.by_decider = {key: dict(value) for key, value in by_decider.items()}
    counts.by_category = {key: dict(value) for key, value in by_category.items()}
    counts.agreement = [
        Agreement(week=monday, decided=decided[monday], kept=kept[monday]) for monday in weeks
    ]

    feedback: dict[str, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    event_day = _utc_day(LearningEvent.created_at).label("day")
    from_undo = exists().where(  # the learning an Undo or Fix did (counted as that)
        LedgerEntry.integration_id == LearningEvent.integration_id,
        LedgerEntry.message_key == LearningEvent.message_key,
        LedgerEntry.undo_requested_at <= LearningEvent.created_at,
    )
    for when, number in db.execute(
        select(event_day, func.count())
        .where(
            LearningEvent.integration_id == integration_id,
            LearningEvent.kind.in_(("correction", "rejection")),
            LearningEvent.created_at >= _start(first_day),
            ~from_undo,
        )
        .group_by(event_day)
    ):
        feedback["corrected"][when] += number
    asked_day = _utc_day(LedgerEntry.undo_requested_at).label("day")
    is_fix = plan["fix"].is_not(None).label("fix")
    for when, fix, number in db.execute(
        select(asked_day, is_fix, func.count())
        .where(
            LedgerEntry.integration_id == integration_id,
            LedgerEntry.undo_requested_at >= _start(first_day),
        )
        .group_by(asked_day, is_fix)
    ):
        feedback["fixed" if fix else "undone"][when] += number
    counts.feedback = {key: dict(value) for key, value in feedback.items()}
    return counts
