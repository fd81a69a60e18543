"""The charts page (issue 18, "Charts people read at a glance"): emails per day by category and
by who decided, corrections and undos per day, and the weekly agreement, as server-rendered SVG.

The SVG builders are pure and tested on numbers; the counts are tested on ledger rows written
at chosen times in a real PostgreSQL; the page is tested end to end — mail delivered to m365sim,
processed by Postroom's sync, corrected in Outlook, undone and fixed from the activity page —
over HTTP and in a real browser at a phone's width.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select, text

from m365sim.state import EmulatorState
from postroom.accounts.models import Workspace
from postroom.activity import charts
from postroom.activity.counts import chart_counts, decider, window
from postroom.db import Database
from postroom.integrations.models import Category, Integration, Mailbox
from postroom.learning.models import LearningEvent
from postroom.processing.models import LedgerEntry
from tests.postroom.conftest import Postroom
from tests.postroom.test_browser import browser, page, shot  # noqa: F401  (fixtures)
from tests.postroom.test_newcomer_browser import _signed_in, _width
from tests.postroom.test_requests_per_email import _drain_all
from tests.postroom.test_sync import folder_of, setup_personal, wait_for_jobs
from tests.postroom.webtools import post_form

SVG = "{http://www.w3.org/2000/svg}"
EVIL = '<script>alert("x")</script>'
DAY = date(2026, 11, 18)  # a Wednesday


def _svg(markup: str) -> ET.Element:
    """The chart parsed as XML: it must be well-formed (escaping done right)."""
    return ET.fromstring(markup)


def _bars(root: ET.Element) -> list[ET.Element]:
    return [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]


def _legend(root: ET.Element) -> list[tuple[str | None, str | None, str | None]]:
    """(colour, words, whole name) of each legend item."""
    return [
        (g.find(f"{SVG}rect").get("fill"), g.findtext(f"{SVG}text"), g.findtext(f"{SVG}title"))  # type: ignore[union-attr]
        for g in root.iter(f"{SVG}g")
        if g.get("class") == "legend-item"
    ]


# ---------------------------------------------------------------------- the SVG, pure
def test_stacked_bars_draw_the_counts_of_each_day_and_leave_empty_days_empty() -> None:
    days = [DAY - timedelta(days=n) for n in range(29, -1, -1)]
    series = [
        charts.Series("Invoices", "#00bcf2", {days[-1]: 3, days[0]: 1}),
        charts.Series("Orders", "#47d041", {days[-1]: 1}),
    ]
    markup = charts.stacked_bars(
        chart_id="c", title="Emails per day", desc="Emails.", days=days, series=series, empty="-"
    )
    root = _svg(markup)
    assert root.get("viewBox") == f"0 0 {charts.WIDTH} " + root.get("viewBox", "").split()[-1]
    assert root.get("role") == "img" and root.get("aria-labelledby") == "c-title c-desc"
    assert "width" not in root.attrib  # it takes its box's width
    assert root.findtext(f"{SVG}title") == "Emails per day"
    assert root.findtext(f"{SVG}desc") == (
        "Emails. From Tue 20 Oct 2026 to Wed 18 Nov 2026, 5 in all: Invoices 4, Orders 1."
    )
    bars = {r.findtext(f"{SVG}title"): r for r in _bars(root)}
    assert set(bars) == {"18 Nov: Invoices 3", "18 Nov: Orders 1", "20 Oct: Invoices 1"}
    # scaled to 4 (the busiest day): 3 of 4 is three quarters of the plot, stacked under 1
    height = {t: float(r.get("height", "0")) for t, r in bars.items()}
    assert height["18 Nov: Invoices 3"] == charts.PLOT * 3 / 4
    assert height["18 Nov: Orders 1"] == charts.PLOT / 4
    assert float(bars["18 Nov: Orders 1"].get("y", "0")) == charts.TOP  # the top of the stack
    assert bars["18 Nov: Invoices 3"].get("fill") == "#00bcf2"
    # the legend: colour and words and number
    assert _legend(root) == [
        ("#00bcf2", "Invoices (4)", "Invoices (4)"),
        ("#47d041", "Orders (1)", "Orders (1)"),
    ]
    # x labels: today and each week before it
    under = str(charts.TOP + charts.PLOT + 15)
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("y") == under]
    assert labels == ["21 Oct", "28 Oct", "4 Nov", "11 Nov", "18 Nov"]


def test_a_category_name_is_text_in_the_chart_never_markup() -> None:
    days = [DAY]
    series = [
        charts.Series(EVIL, "#e74856", {DAY: 2}),
        charts.Series("A&B", "javascript:x", {DAY: 1}),
    ]
    markup = str(
        charts.stacked_bars(
            chart_id="c", title=f"Of {EVIL}", desc="d", days=days, series=series, empty="-"
        )
    )
    assert "<script" not in markup and "&lt;script&gt;" in markup
    assert "A&amp;B" in markup and "javascript:" not in markup  # a colour is checked too
    root = _svg(markup)
    assert root.findtext(f"{SVG}title") == f"Of {EVIL}"
    assert _legend(root)[0] == ("#e74856", f"{EVIL} (2)", f"{EVIL} (2)")  # as text
    assert [r.get("fill") for r in _bars(root)] == ["#e74856", charts.FALLBACK]
    rates = str(
        charts.rate_bars(
            chart_id="r",
            title="t",
            desc="d",
            periods=[charts.Rate(EVIL, 1, 2)],
            colour="#0b6a0b",
            legend=EVIL,
            empty="-",
        )
    )
    assert "<script" not in rates
    _svg(rates)
    empty = str(
        charts.stacked_bars(chart_id="c", title="t", desc="d", days=days, series=[], empty=EVIL)
    )
    assert "<script" not in empty and "&lt;script&gt;" in empty


def test_no_email_says_so_instead_of_an_empty_chart() -> None:
    days, _ = window(DAY)
    nothing = [charts.Series("Invoices", "#00bcf2", {}), charts.Series("rule", "#004e8c", {})]
    markup = str(
        charts.stacked_bars(
            chart_id="chart-x",
            title="t",
            desc="d",
            days=days,
            series=nothing,
            empty="No email processed in the last 30 days.",
        )
    )
    assert "<svg" not in markup
    assert markup == (
        '<p class="chart-empty" id="chart-x">No email processed in the last 30 days.</p>'
    )
    assert "<svg" not in str(
        charts.rate_bars(
            chart_id="r",
            title="t",
            desc="d",
            periods=[charts.Rate("this week", 0, 0)],
            colour="#0b6a0b",
            legend="kept",
            empty="Not measured yet.",
        )
    )


def test_rate_bars_show_each_weeks_share_and_what_it_is_of() -> None:
    periods = [
        charts.Rate("2 Nov", 0, 0),
        charts.Rate("9 Nov", 3, 4),
        charts.Rate("this week", 5, 5),
    ]
    root = _svg(
        str(
            charts.rate_bars(
                chart_id="r",
                title="Agreement",
                desc="Kept.",
                periods=periods,
                colour="#0b6a0b",
                legend="kept as Postroom decided",
                empty="-",
            )
        )
    )
    bars = {r.findtext(f"{SVG}title"): float(r.get("height", "0")) for r in _bars(root)}
    tall = charts.PLOT - charts.HEADROOM
    assert bars == {"9 Nov: 3 of 4 kept": tall * 0.75, "this week: 5 of 5 kept": tall}
    words = [t.text for t in root.iter(f"{SVG}text")]
    assert "75%" in words and "100%" in words and "none" in words and "3 of 4" in words
    assert root.findtext(f"{SVG}desc") == (
        "Kept. 2 Nov: none; 9 Nov: 75% of 4; this week: 100% of 5."
    )


def test_scale_series_and_who_decided() -> None:
    assert charts.nice_scale(0) == (1, 1)
    assert charts.nice_scale(3) == (3, 1)
    assert charts.nice_scale(7) == (8, 2)
    assert charts.nice_scale(37) == (40, 10)
    assert charts.nice_scale(1234) == (1500, 500)

    counts = {f"C{n}": {DAY: n} for n in range(1, 11)} | {None: {DAY: 2}}
    drawn, listed = charts.category_series(counts, {"C10": "#e74856"})
    assert [s.label for s in drawn] == [
        *[f"C{n}" for n in range(10, 2, -1)],
        "other categories",  # C2 and C1 summed
        "no category (left alone)",
    ]
    assert drawn[0].colour == "#e74856" and drawn[1].colour == charts.FALLBACK
    assert drawn[-2].counts == {DAY: 3}
    assert len(listed) == 11  # the table lists every category

    def who(**plan: Any) -> str | None:
        values: dict[str, Any] = {
            "state": "done",
            "last_error": None,
            "decided_by": None,
            "category": None,
            "conversation": False,
        }
        return decider(**(values | plan))

    assert who(decided_by="rule", category="Invoices") == "rule"
    assert who(decided_by="model", category="Invoices") == "model"
    assert who(decided_by="model", category="Invoices", conversation=True) == "conversation"
    assert who(decided_by="needs_review", category="Needs review") == "needs_review"
    assert who(decided_by="model") == "left_alone"  # none of the categories fits
    assert who(decided_by="none") == "left_alone"  # no rule matched, no model
    assert who(state="skipped", last_error="already_filed") == "left_alone"
    assert who(state="skipped") is None  # gone before Postroom got to it
    assert who(state="failed", decided_by="rule", category="Invoices") is None
    assert who(state="claimed", decided_by="rule", category="Invoices") is None


# ---------------------------------------------------------------------- the counts, in SQL
def _integration(db: Any) -> tuple[str, str]:
    workspace = Workspace(name="Acme")
    db.add(workspace)
    db.flush()
    integration = Integration(workspace_id=workspace.id, kind="personal", status="connected")
    db.add(integration)
    db.flush()
    mailbox = Mailbox(integration_id=integration.id, graph_user_id="u", address="a@x", kind="own")
    db.add(mailbox)
    db.flush()
    return integration.id, mailbox.id


def _at(day: date, hour: int = 12) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def test_counts_group_by_utc_day_and_week_within_the_window(clean_db: Database) -> None:
    with clean_db.session() as db:
        integration_id, mailbox_id = _integration(db)
        other_id, other_box = _integration(db)
        n = 0

        def row(
            when: datetime,
            plan: dict[str, Any] | None,
            state: str = "done",
            *,
            into: tuple[str, str] = (integration_id, mailbox_id),
            **values: Any,
        ) -> LedgerEntry:
            nonlocal n
            n += 1
            entry = LedgerEntry(
                integration_id=into[0],
                mailbox_id=into[1],
                message_id=f"m{n}",
                message_key=f"k{n}",
                state=state,
                plan=plan,
                claimed_at=when,
                **values,
            )
            db.add(entry)
            return entry

        rule = {"category": "Invoices", "decided_by": "rule", "reasons": ["rule:Invoices"]}
        model = {"category": "Orders", "decided_by": "model", "reasons": ["model:Orders:0.9>=0.6"]}
        followed = {**model, "reasons": ["model:Orders:0.9>=0.6", "via:conversation"]}
        row(_at(DAY, 23), rule)  # 23:59 UTC is still that day
        row(_at(DAY, 0), {**rule, "corrected_to": "Orders"})
        row(_at(DAY - timedelta(days=1)), model)
        row(_at(DAY - timedelta(days=1)), followed)
        row(_at(DAY), {"category": "Needs review", "decided_by": "needs_review"})
        row(_at(DAY), {"category": None, "decided_by": "none"})
        row(_at(DAY), None, "skipped", last_error="already_filed")
        row(_at(DAY), None, "skipped")  # gone: not counted
        row(_at(DAY), rule, "failed", last_error="http_500")  # failed: not counted
        row(_at(DAY), rule, into=(other_id, other_box))  # another integration's
        # 31 days ago: outside the 30 days, inside the oldest week (Monday 20 Oct)
        row(_at(DAY - timedelta(days=29)), rule)  # the first day shown
        row(_at(DAY - timedelta(days=30)), rule)
        row(_at(DAY - timedelta(days=40)), rule)  # before the oldest week: not read
        undone = row(_at(DAY - timedelta(days=45)), rule)  # old email, undone today
        undone.undo_state = "done"
        undone.undo_requested_at = _at(DAY, 9)
        fixed = row(_at(DAY - timedelta(days=2)), {**model, "fix": {"category": "Invoices"}})
        fixed.undo_state = "requested"
        fixed.undo_requested_at = _at(DAY, 10)
        for when, key, kind in (
            (_at(DAY, 8), "kA", "correction"),  # in Outlook
            (_at(DAY - timedelta(days=3)), "kB", "rejection"),  # in Outlook
            (_at(DAY, 9), undone.message_key, "rejection"),  # the undo's own learning
            (_at(DAY, 10), fixed.message_key, "correction"),  # the fix's own learning
            (_at(DAY), "kC", "example"),
        ):
            db.add(
                LearningEvent(
                    integration_id=integration_id,
                    kind=kind,
                    category="Invoices",
                    message_key=key,
                    created_at=when,
                )
            )
        db.commit()

        counts = chart_counts(db, integration_id=integration_id, today=DAY)

    yesterday = DAY - timedelta(days=1)
    assert counts.days[0] == DAY - timedelta(days=29) and counts.days[-1] == DAY
    assert counts.by_decider == {
        "rule": {DAY: 2, DAY - timedelta(days=29): 1},
        "model": {yesterday: 1, DAY - timedelta(days=2): 1},
        "conversation": {yesterday: 1},
        "needs_review": {DAY: 1},
        "left_alone": {DAY: 2},
    }
    assert counts.by_category == {
        "Invoices": {DAY: 2, DAY - timedelta(days=29): 1},
        "Orders": {yesterday: 2, DAY - timedelta(days=2): 1},
        "Needs review": {DAY: 1},
        None: {DAY: 2},
    }
    assert counts.emails == 9
    assert counts.feedback == {
        "corrected": {DAY: 1, DAY - timedelta(days=3): 1},
        "undone": {DAY: 1},
        "fixed": {DAY: 1},
    }
    weeks = [(a.week, a.decided, a.kept) for a in counts.agreement]
    assert weeks == [
        (date(2026, 10, 19), 2, 2),  # 29 and 30 days ago: the second is read for this only
        (date(2026, 10, 26), 0, 0),
        (date(2026, 11, 2), 0, 0),
        (date(2026, 11, 9), 0, 0),
        # rule, rule corrected, model, conversation, model being fixed (needs review is not
        # counted): the correction and the fix disagree
        (date(2026, 11, 16), 5, 3),
    ]
    assert counts.agreement[-1].rate == 0.6 and counts.agreement[1].rate is None


def test_the_chart_queries_use_the_integrations_time_indexes(clean_db: Database) -> None:
    """EXPLAIN with sequential scans off (a small table is always scanned): the indexes exist
    and fit the queries, so a long ledger is read only for the days shown."""
    since = datetime.now(UTC) - timedelta(days=35)
    with clean_db.engine.connect() as conn:
        conn.execute(text("SET enable_seqscan = off"))
        plans = {}
        for name, where in (
            ("claimed", "claimed_at >= :since"),
            ("undo", "undo_requested_at >= :since"),
        ):
            plans[name] = "\n".join(
                r[0]
                for r in conn.execute(
                    text(f"EXPLAIN SELECT 1 FROM ledger WHERE integration_id = 'i' AND {where}"),
                    {"since": since},
                )
            )
    assert "ix_ledger_integration_claimed" in plans["claimed"]
    assert "ix_ledger_integration_undo_asked" in plans["undo"]


# ---------------------------------------------------------------------- the page, end to end
ORDER_RULES = {
    "mode": "any",
    "items": [{"field": "Subject", "operator": "CONTAINS", "value": "order"}],
}


def _processed(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, *, second: str
) -> tuple[str, dict[str, str]]:
    """Alice's mail through the real sync: three invoices (rule Invoices, filed), an order
    (rule ``second``, no folder), a lunch note (no rule: left alone) and an email with her own
    category (left alone: already filed). Then she corrects the order to Invoices in Outlook,
    and from the activity page undoes the first invoice and fixes the third to ``second``."""
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    postroom.drain()
    integration_id = base.rsplit("/", 1)[-1]
    with postroom.database.session() as db:
        db.add(
            Category(
                integration_id=integration_id,
                name=second,
                color="preset4",
                rules=ORDER_RULES,
                position=1,
            )
        )
    sent = {
        "invoice1": org.deliver(org.alice, subject="Invoice 1"),
        "invoice2": org.deliver(org.alice, subject="Invoice 2"),
        "invoice3": org.deliver(org.alice, subject="Invoice 3"),
        "order": org.deliver(org.alice, subject="Order 7"),
        "lunch": org.deliver(org.alice, subject="Lunch on Friday?"),
        "filed": org.deliver(org.alice, subject="Invoice 9", categories=["Personal"]),
    }
    ids = {name: msg.immutable_id for name, msg in sent.items()}
    _drain_all(postroom)
    assert folder_of(org.alice, ids["invoice1"]) == "Invoices"
    assert org.alice.mailbox.messages[ids["order"]].categories == [second]
    assert org.alice.mailbox.messages[ids["filed"]].categories == ["Personal"]

    # In Outlook, Alice says the order is an invoice.
    order = org.alice.mailbox.messages[ids["order"]]
    order.categories = ["Invoices"]
    sim.store.update_message(org.tenant, org.alice.mailbox, order)
    assert wait_for_jobs(postroom) >= 1
    _drain_all(postroom)
    with postroom.database.session() as db:
        rows = {e.message_id: e for e in db.scalars(select(LedgerEntry))}
    assert (rows[ids["order"]].plan or {}).get("corrected_to") == "Invoices"

    # On the activity page: undo the first invoice, fix the third.
    undo = post_form(web, f"{base}/activity", f"{base}/activity/{rows[ids['invoice1']].id}/undo")
    assert undo.status_code == 303
    fix = post_form(
        web,
        f"{base}/activity",
        f"{base}/activity/{rows[ids['invoice3']].id}/fix",
        {"category": second},
    )
    assert fix.status_code == 303 and fix.headers["location"].endswith("?undo=fix")
    _drain_all(postroom)
    with postroom.database.session() as db:
        undone = {
            e.message_id: e.undo_state
            for e in db.scalars(select(LedgerEntry).where(LedgerEntry.undo_state.is_not(None)))
        }
        kinds = sorted(e.kind for e in db.scalars(select(LearningEvent)))
    assert undone == {ids["invoice1"]: "done", ids["invoice3"]: "done"}
    assert kinds == ["correction", "correction", "rejection"]  # Outlook, fix, undo
    return base, ids


def _desc(markup: str, chart: str) -> str:
    found = re.search(rf'<desc id="{chart}-desc">(.*?)</desc>', markup)
    assert found, f"no chart {chart}"
    return html.unescape(found.group(1))


def _totals(markup: str, chart: str) -> list[str]:
    """The "In all" row of a chart's table of numbers."""
    table = re.search(rf'data-table="{chart}">(.*?)</table>', markup, re.S)
    assert table, f"no table for {chart}"
    foot = re.search(r"<tfoot>(.*?)</tfoot>", table.group(1), re.S)
    assert foot
    return re.findall(r"<td>(\d+)</td>", foot.group(1))


def test_the_charts_page_counts_what_the_sync_did_and_people_changed(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    base, _ = _processed(web, postroom, sim, second=EVIL)
    assert f'href="{base}/charts"' in web.get(f"{base}/activity").text
    answer = web.get(f"{base}/charts")
    assert answer.status_code == 200
    shown = answer.text
    assert 'data-emails="6"' in shown
    assert _desc(shown, "chart-deciders").endswith(", 6 in all: rule 4, left alone 2.")
    assert _totals(shown, "chart-deciders") == ["4", "2", "6"]
    assert _desc(shown, "chart-categories").endswith(
        f", 6 in all: Invoices 3, {EVIL} 1, no category (left alone) 2."
    )
    # the category's name is text: escaped in the chart, its title and desc, and the table
    assert EVIL not in shown and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in shown
    # the correction in Outlook, the undo and the fix: each once (the undo's and the fix's own
    # learning is not counted again as a correction)
    assert _desc(shown, "chart-feedback").endswith(
        ", 3 in all: corrected in Outlook 1, undone in Postroom 1, fixed in Postroom 1."
    )
    assert _totals(shown, "chart-feedback") == ["1", "1", "1", "3"]
    # of the four emails given a category this week, one was kept
    assert _desc(shown, "chart-agreement").endswith("; this week: 25% of 4.")
    assert shown.count('<svg class="chart"') == 4
    assert "No email processed" not in shown

    # another workspace: 404; signed out: no page
    from tests.postroom.test_security_invitations import client
    from tests.postroom.webtools import sign_up

    with client(postroom) as stranger:
        assert stranger.get(f"{base}/charts").status_code in (303, 401)
        sign_up(stranger, email="mallory@evil.test", workspace="Evil")
        theirs = stranger.get(f"{base}/charts")
        assert theirs.status_code == 404 and "chart" not in theirs.text.lower().split("<main")[-1]
        # and a made-up id is the same 404
        assert stranger.get("/integrations/nope/charts").status_code == 404


def test_an_integration_with_no_mail_says_so(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    from tests.postroom.test_editor import finished

    _, base = finished(web, postroom, sim)
    shown = web.get(f"{base}/charts").text
    assert "<svg" not in shown
    assert shown.count("No email processed in the last 30 days.") == 2
    assert "No corrections, undos or fixes in the last 30 days." in shown
    assert "Not measured yet" in shown
    assert 'data-emails="0"' in shown


def _history(postroom: Postroom) -> None:
    """A month of earlier decisions, written to the ledger as the sync writes them (as
    ``test_activity`` does), so the charts have days to show."""
    today = datetime.now(UTC).replace(hour=9, minute=0, second=0, microsecond=0)
    with postroom.database.session() as db:
        mailbox = db.scalar(select(Mailbox))
        assert mailbox is not None
        for back in range(1, 30):
            when = today - timedelta(days=back)
            weekend = when.weekday() >= 5
            for n in range(2 if weekend else 4 + (back * 7) % 9):
                kind = (back + n) % 7
                category, by = (
                    ("Invoices", "rule")
                    if kind < 3
                    else ("Orders", "model")
                    if kind < 5
                    else ("Needs review", "needs_review")
                    if kind == 5
                    else (None, "none")
                )
                plan: dict[str, Any] = {"category": category, "decided_by": by, "reasons": []}
                if by == "model" and n % 3 == 0:
                    plan["reasons"] = ["via:conversation"]
                if by in ("rule", "model") and (back + n) % 11 == 0:
                    plan["corrected_to"] = "Invoices" if category == "Orders" else "Orders"
                    db.add(
                        LearningEvent(
                            integration_id=mailbox.integration_id,
                            kind="correction",
                            category=plan["corrected_to"],
                            message_key=f"h{back}-{n}",
                            created_at=when + timedelta(hours=2),
                        )
                    )
                db.add(
                    LedgerEntry(
                        integration_id=mailbox.integration_id,
                        mailbox_id=mailbox.id,
                        message_id=f"history-{back}-{n}",
                        message_key=f"h{back}-{n}",
                        state="done",
                        plan=plan,
                        claimed_at=when + timedelta(minutes=n),
                    )
                )


def test_the_charts_render_at_a_phones_width_in_a_browser(
    page: Any,  # noqa: F811
    web: httpx.Client,
    postroom: Postroom,
    sim: EmulatorState,
) -> None:
    with ThreadPoolExecutor(1) as worker:  # (playwright's loop runs in this thread)
        base, _ = worker.submit(_processed, web, postroom, sim, second="Orders").result()
    _history(postroom)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.set_viewport_size({"width": 360, "height": 780})
    _signed_in(page, web, postroom)
    page.goto(f"{postroom.url}{base}/activity")
    page.get_by_role("link", name="Charts").click()
    page.wait_for_url(f"**{base}/charts")
    charts_drawn = page.locator("svg.chart")
    assert charts_drawn.count() == 4
    for n in range(4):
        chart = charts_drawn.nth(n)
        box = chart.bounding_box()
        assert box is not None and 250 <= box["width"] <= 360 and box["height"] > 150, box
        assert chart.get_attribute("role") == "img"
        assert chart.locator("title").first.text_content()
    # drawn, not only present: bars on the screen, a legend readable at this size
    assert page.locator("#chart-deciders rect title").count() > 30
    legend = page.locator("#chart-categories .legend-item text").first
    size = legend.bounding_box()
    assert size is not None and size["height"] >= 9, size
    totals = page.locator("[data-table=chart-categories] tfoot td").all_text_contents()
    legends = page.locator("#chart-categories .legend-item text").all_text_contents()
    assert legends[:2] == [f"Invoices ({totals[0]})", f"Orders ({totals[1]})"]
    assert _width(page) <= 360
    for summary in page.locator("summary", has_text="The numbers").all():
        summary.click()  # the tables of numbers scroll in their own box, not the page
    assert _width(page) <= 360
    assert page.locator("[data-table=chart-deciders] tbody tr").count() >= 25
    page.evaluate("document.querySelectorAll('details[open]').forEach(d => { d.open = false })")
    assert dialogs == []
    shot(page, "charts")
