"""``GET /integrations/{id}/charts``: an integration's last 30 days at a glance — emails per day
by category and by who decided, corrections and undos per day, and the weekly agreement — as
server-rendered SVG (:mod:`.charts`) from counts grouped in SQL (:mod:`.counts`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from markupsafe import Markup

from postroom.accounts.models import utcnow
from postroom.activity import charts
from postroom.activity.counts import DAYS, chart_counts
from postroom.integrations import service, wizard
from postroom.integrations.web import load_integration
from postroom.web.deps import DbSession, current_caller, render
from postroom.web.security import Caller

router = APIRouter()
CallerDep = Annotated[Caller, Depends(current_caller)]

NO_EMAIL = f"No email processed in the last {DAYS} days."
AGREEMENT_COLOUR = "#0b6a0b"


@dataclass(frozen=True)
class Chart:
    id: str
    heading: str
    explanation: str
    svg: Markup
    table: charts.Table | None = None
    rates: list[charts.Rate] | None = None


@router.get("/integrations/{integration_id}/charts")
def charts_page(
    request: Request,
    integration_id: str,
    caller: CallerDep,
    db: DbSession,
) -> Response:
    integration = load_integration(db, caller, integration_id)
    today = utcnow().date()
    counts = chart_counts(db, integration_id=integration.id, today=today)
    hexes = {value: hex_ for value, _, hex_ in wizard.COLOURS}
    colours = {
        c.name: hexes.get(c.color, charts.FALLBACK)
        for c in service.categories(db=db, integration=integration)
    }
    days = counts.days
    drawn, listed = charts.category_series(counts.by_category, colours)
    deciders = charts.keyed_series(counts.by_decider, charts.DECIDER_SERIES)
    feedback = charts.keyed_series(counts.feedback, charts.FEEDBACK_SERIES)
    rates = [
        charts.Rate(
            "this week" if n == len(counts.agreement) - 1 else charts.day_words(week.week),
            week.kept,
            week.decided,
        )
        for n, week in enumerate(counts.agreement)
    ]
    shown = [
        Chart(
            id="chart-categories",
            heading="Emails per day by category",
            explanation="The category Postroom gave each email, in its colour in Outlook.",
            svg=charts.stacked_bars(
                chart_id="chart-categories",
                title="Emails per day by category",
                desc="Emails Postroom processed per day (UTC), by the category it gave them.",
                days=days,
                series=drawn,
                empty=NO_EMAIL,
            ),
            table=charts.table(days, listed),
        ),
        Chart(
            id="chart-deciders",
            heading="Emails per day by who decided",
            explanation="Same conversation: the learned model followed where the "
            "conversation's earlier mail went. Left alone: no rule matched and no category "
            "fitted, or the email already had a category of its own.",
            svg=charts.stacked_bars(
                chart_id="chart-deciders",
                title="Emails per day by who decided",
                desc="Emails Postroom processed per day (UTC), by what decided their category.",
                days=days,
                series=deciders,
                empty=NO_EMAIL,
            ),
            table=charts.table(days, deciders),
        ),
        Chart(
            id="chart-feedback",
            heading="Corrections and undos per day",
            explanation="Corrections: a person moved an email Postroom handled, or changed or "
            "took off its category, in Outlook. Undos and fixes: asked for on the activity "
            "page, counted on the day they were asked.",
            svg=charts.stacked_bars(
                chart_id="chart-feedback",
                title="Corrections and undos per day",
                desc="People's corrections in Outlook, and undos and fixes asked for in "
                "Postroom, per day (UTC).",
                days=days,
                series=feedback,
                empty=f"No corrections, undos or fixes in the last {DAYS} days.",
            ),
            table=charts.table(days, feedback),
        ),
        Chart(
            id="chart-agreement",
            heading="Agreement per week",
            explanation="Of the emails Postroom gave one of your categories in a week (by a "
            "rule, the learned model or the conversation; not needs review), the share nobody "
            "has corrected, undone or fixed since; in Suggest only, of the suggestions people "
            "filed themselves, the share they filed as Postroom suggested. Weeks start on "
            "Monday (UTC); a recent week can still go down, as people may not have looked at "
            "its emails yet.",
            svg=charts.rate_bars(
                chart_id="chart-agreement",
                title="Agreement per week",
                desc="Share of the emails given a category each week that nobody corrected, "
                "undid or fixed since.",
                periods=rates,
                colour=AGREEMENT_COLOUR,
                legend="kept as Postroom decided",
                empty="Not measured yet: Postroom gave no email a category in these weeks.",
            ),
            rates=rates,
        ),
    ]
    return render(
        request,
        "integrations/charts.html",
        nav="integrations",
        item=integration,
        charts=shown,
        emails=counts.emails,
        first_day=charts.long_day_words(days[0]),
        last_day=charts.long_day_words(days[-1]),
    )
