"""The Model page's per-category accuracy against people's corrections and its confusion matrix
drawn as SVG (issue 17).

The pure parts first (:func:`postroom.classify.summary.category_accuracy`, the percentages, and
:mod:`postroom.learning.confusion_svg`); then the page with real data: the model decides emails
delivered to Alice in m365sim, Alice corrects some in Outlook (her own Graph calls), Postroom
sees it through delta, and the page's figures and picture count exactly that; then the page at
a phone's width in Chromium.
"""

from __future__ import annotations

import html
import re
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from markupsafe import escape
from sqlalchemy import select

from m365sim.state import EmulatorState
from postroom.classify import NONE_OF_THESE, Outcome, summarize
from postroom.classify.summary import Confusion, category_accuracy
from postroom.integrations.models import Mailbox
from postroom.learning import confusion_svg
from postroom.learning.views import percent
from postroom.processing.models import LedgerEntry
from tests.postroom.conftest import Postroom
from tests.postroom.test_learning import (
    SALES,
    SUPPORT,
    _add_categories,
    _integration_id,
    _plan,
    _train,
)
from tests.postroom.test_learning_feedback import Outlook, _synced, _text
from tests.postroom.test_sync import setup_personal, wait_for_jobs
from tests.postroom.webtools import post_form

SVG = "{http://www.w3.org/2000/svg}"
EVIL = "<script>alert(1)</script>"
QUOTES = "\"&'"


def _svg(markup: str) -> ET.Element:
    """The confusion matrix in a page or builder output, parsed (it must be well-formed XML)."""
    found = re.search(r'<svg class="confusion.*?</svg>', markup, re.S)
    assert found, markup
    return ET.fromstring(found.group(0))


def _cells(root: ET.Element) -> dict[str, tuple[int, bool]]:
    """Each cell's title (full names and count) → (count, on the diagonal)."""
    cells = {}
    for g in root.iter(f"{SVG}g"):
        if "cell" not in (g.get("class") or "").split():
            continue
        title = g.find(f"{SVG}title")
        assert title is not None and title.text
        count = int(g.get("data-count") or -1)
        assert title.text.endswith(f": {count}")
        written = [t.text for t in g.findall(f"{SVG}text")]
        assert written == ([str(count)] if count else []), (title.text, written)
        cells[title.text] = (count, "kept" in (g.get("class") or ""))
    return cells


def _opacity(root: ET.Element, title: str) -> float:
    for g in root.iter(f"{SVG}g"):
        found = g.find(f"{SVG}title")
        if found is not None and found.text == title:
            rect = g.find(f"{SVG}rect")
            assert rect is not None
            return float(rect.get("fill-opacity") or 0)
    raise AssertionError(title)


# ---------------------------------------------------------------------- pure: the figures
def test_per_category_accuracy_counts_decisions_kept_and_corrected() -> None:
    pairs: dict[tuple[str | None, str], int] = {
        ("Support", "Support"): 44,
        ("Support", "Sales"): 3,
        ("Support", NONE_OF_THESE): 1,
        ("Sales", "Sales"): 3,
        ("Sales", "Support"): 1,
        ("Quotes", "Quotes"): 5,
        ("Empty", "Empty"): 0,  # (a zero count is no decision)
    }
    rows = category_accuracy(pairs)
    assert [(r.category, r.decided, r.kept, r.corrected, r.to_none) for r in rows] == [
        ("Support", 48, 44, 4, 1),
        ("Quotes", 5, 5, 0, 0),
        ("Sales", 4, 3, 1, 0),
    ]
    support, quotes, sales = rows
    assert support.accuracy == pytest.approx(44 / 48)
    assert quotes.accuracy == 1.0  # five decisions: enough to tell
    assert sales.accuracy is None  # four: too few to tell
    assert category_accuracy({}) == ()


def test_overall_and_per_category_rest_on_the_same_window_of_outcomes() -> None:
    old = [Outcome("Sales", "Support")] * 50  # outside the window
    recent = [Outcome("Support", "Support")] * 7 + [Outcome("Support", "Sales")] * 2
    recent += [Outcome("Support", NONE_OF_THESE)] + [Outcome("Sales", "Sales")] * 3
    summary = summarize([], old + recent, window=len(recent))
    assert summary.window == len(recent) and summary.recent_outcomes == 13
    by = {c.category: c for c in summary.by_category}
    assert set(by) == {"Support", "Sales"}
    assert (by["Support"].decided, by["Support"].kept, by["Support"].to_none) == (10, 7, 1)
    assert (by["Sales"].decided, by["Sales"].kept) == (3, 3) and by["Sales"].accuracy is None
    kept = sum(c.kept for c in summary.by_category)
    assert summary.recent_accuracy == pytest.approx(kept / summary.recent_outcomes)
    # the matrix's counts: every pair, the kept ones too, adding up to the window
    assert {(c.predicted, c.chosen): c.count for c in summary.outcome_counts} == {
        ("Support", "Support"): 7,
        ("Support", "Sales"): 2,
        ("Support", NONE_OF_THESE): 1,
        ("Sales", "Sales"): 3,
    }
    # the existing confusion list is unchanged: the disagreeing pairs, most first
    assert [(c.predicted, c.chosen, c.count) for c in summary.confusions] == [
        ("Support", "Sales", 2),
        ("Support", NONE_OF_THESE, 1),
    ]


def test_percentages_never_round_to_all_or_nothing() -> None:
    assert percent(44, 48) == "92%"
    assert percent(199, 200) == "99%"  # one changed: not 100%
    assert percent(1, 200) == "1%"  # one kept: not 0%
    assert (percent(5, 5), percent(0, 5), percent(1, 2)) == ("100%", "0%", "50%")


# ---------------------------------------------------------------------- pure: the picture
def test_the_matrix_draws_each_pair_with_its_count_and_the_diagonal_apart() -> None:
    counts = [
        Confusion("Support", "Support", 40),
        Confusion("Support", "Sales", 3),
        Confusion("Support", NONE_OF_THESE, 1),
        Confusion("Sales", "Sales", 12),
        Confusion("Sales", "Billing", 2),  # chosen, never said by the model
    ]
    matrix = confusion_svg.build(counts)
    assert matrix.rows == ("Support", "Sales")
    assert [c.label for c in matrix.columns] == ["Support", "Sales", "Billing", "None of these"]
    assert (matrix.total, matrix.kept, matrix.hidden_rows, matrix.categories) == (58, 52, 0, 3)
    markup = str(confusion_svg.confusion_svg(matrix))
    root = _svg(markup)
    assert root.get("role") == "img"
    _, _, units_wide, units_high = (float(n) for n in (root.get("viewBox") or "").split())
    assert int(root.get("width") or 0) == round(units_wide * confusion_svg.ZOOM)
    assert int(root.get("height") or 0) == round(units_high * confusion_svg.ZOOM)
    assert units_wide <= confusion_svg.WIDE  # small enough to shrink to a phone's width
    assert root.get("class") == "confusion"
    assert root.get("aria-labelledby") == "confusion-matrix-title confusion-matrix-desc"
    title, desc = root.find(f"{SVG}title"), root.find(f"{SVG}desc")
    assert title is not None and title.text and "what people kept or chose" in title.text
    assert desc is not None and desc.text == (
        "Rows: what the model said; columns: what people kept or chose. Of 58 decisions, 52 "
        "were kept (the diagonal) and 6 corrected: Support changed to Sales: 3; Sales changed "
        "to Billing: 2; Support changed to none of these: 1."
    )
    cells = _cells(root)
    assert len(cells) == 2 * 4  # every cell drawn, the empty ones without a number
    assert cells["The model said Support; people kept it: 40"] == (40, True)
    assert cells["The model said Sales; people kept it: 12"] == (12, True)
    assert cells["The model said Support; people chose Sales: 3"] == (3, False)
    assert cells["The model said Support; people chose none of these: 1"] == (1, False)
    assert cells["The model said Sales; people chose Billing: 2"] == (2, False)
    assert cells["The model said Sales; people chose Support: 0"] == (0, False)
    assert sum(n for n, _ in cells.values()) == 58
    # the shade grows with the count, the largest full
    assert _opacity(root, "The model said Support; people kept it: 40") == 1.0
    assert (
        _opacity(root, "The model said Sales; people kept it: 12")
        > _opacity(root, "The model said Support; people chose Sales: 3")
        > _opacity(root, "The model said Support; people chose none of these: 1")
    )
    # axis labels: the rows' and the columns' names, and what each axis is
    texts = ["".join(t.itertext()) for t in root.iter(f"{SVG}text")]
    assert "The model said ↓" in texts and "People kept or chose →" in texts
    for name in ("SupportSupport", "SalesSales", "BillingBilling", "None of theseNone of these"):
        assert name in texts  # (the <title> inside a label, then the label)


def test_category_names_are_text_in_the_picture_never_markup() -> None:
    long = "Customer complaints and escalations"
    counts = [
        Confusion(EVIL, EVIL, 6),
        Confusion(EVIL, QUOTES, 2),
        Confusion(QUOTES, long, 1),
        Confusion(long, long, 3),
    ]
    markup = str(confusion_svg.confusion_svg(confusion_svg.build(counts)))
    assert EVIL not in markup and "<script" not in markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in markup
    assert "&#34;&amp;&#39;" in markup and QUOTES not in markup
    root = _svg(markup)  # well-formed: nothing closed an attribute or an element early
    labels = {}  # a label's <title> (the whole name) → the words drawn after it
    for t in root.iter(f"{SVG}text"):
        title = t.find(f"{SVG}title")
        if title is not None:
            labels[title.text] = title.tail
    # a long name is cut with an ellipsis in the picture, whole in its <title>
    assert labels[EVIL] == EVIL[: confusion_svg.MAX_LABEL - 1] + "…"
    assert labels[long] == long[: confusion_svg.MAX_LABEL - 1] + "…"
    assert labels[QUOTES] == QUOTES
    cells = _cells(root)
    assert cells[f"The model said {EVIL}; people chose {QUOTES}: 2"] == (2, False)
    assert cells[f"The model said {QUOTES}; people chose {long}: 1"] == (1, False)
    assert cells[f"The model said {EVIL}; people kept it: 6"] == (6, True)
    # and the id given is escaped too
    odd = str(confusion_svg.confusion_svg(confusion_svg.build(counts), svg_id='x" onload="y'))
    assert 'onload="y"' not in odd


def test_no_decisions_or_no_corrections_say_so_instead_of_a_picture() -> None:
    nothing = str(confusion_svg.confusion_svg(confusion_svg.build([])))
    assert "<svg" not in nothing and "No model decisions yet." in nothing
    kept = confusion_svg.build([Confusion("Support", "Support", 3), Confusion("Sales", "Sales", 1)])
    said = str(confusion_svg.confusion_svg(kept))
    assert "<svg" not in said
    assert "No corrections yet: every model decision so far was kept (4 decisions)." in said


def test_beyond_thirty_categories_the_top_fifteen_are_drawn_and_rows_still_add_up() -> None:
    counts = []
    for n in range(36):
        name = f"Category {n:02d}"
        counts.append(Confusion(name, name, 100 - n))  # 00 has the most emails
        counts.append(Confusion(name, f"Category {(n + 1) % 36:02d}", 1))
    counts.append(Confusion("Category 00", NONE_OF_THESE, 2))
    matrix = confusion_svg.build(counts)
    assert matrix.categories == 36 and matrix.hidden_rows == 36 - confusion_svg.TOP
    assert matrix.cut
    assert matrix.rows == tuple(f"Category {n:02d}" for n in range(confusion_svg.TOP))
    labels = [c.label for c in matrix.columns]
    assert labels == [*matrix.rows, "None of these", "Other categories"]
    # Category 14 was changed to 15, which is not drawn: counted under the other categories
    decided = Counter[str | None]()
    for c in counts:
        decided[c.predicted] += c.count
    for r, said in enumerate(matrix.rows):
        assert sum(n for (row, _), n in matrix.cells.items() if row == r) == decided[said]
    assert matrix.cells[(14, len(labels) - 1)] == 1
    markup = str(confusion_svg.confusion_svg(matrix))
    root = _svg(markup)
    assert root.get("class") == "confusion wide"  # keeps its size, scrolls in its own box
    desc = root.find(f"{SVG}desc")
    assert desc is not None and desc.text
    assert desc.text.endswith("Only the 15 of 36 categories with the most emails are drawn.")
    assert len(_cells(root)) == 15 * 17
    # up to thirty, every one is drawn
    thirty = [Confusion(f"C{n}", f"C{(n + 1) % 30}", 1 + n) for n in range(30)]
    few = confusion_svg.build(thirty)
    assert (few.categories, few.hidden_rows, len(few.rows), len(few.columns)) == (30, 0, 30, 30)
    assert not few.cut


# ---------------------------------------------------------------------- the page, real data
def _deliver_all(postroom: Postroom, org: object, bodies: list[tuple[str, str]]) -> list[str]:
    ids = [
        org.deliver(org.alice, sender="someone@contoso.test", subject=s, body=b).immutable_id  # type: ignore[attr-defined]
        for s, b in bodies
    ]
    assert wait_for_jobs(postroom) >= 1
    postroom.drain()
    return ids


def _decided_and_corrected(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, http: httpx.Client
) -> str:
    """Six emails the model gives Support and two it gives Sales; Alice changes one Support
    to Sales and takes Support off another ("none of these") in Outlook. The integration's
    page path."""
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    integration_id = _integration_id(base)
    _add_categories(postroom, integration_id, support_folder=None)
    postroom.drain()
    _train(postroom, integration_id)
    support = _deliver_all(
        postroom,
        org,
        [("Help", body) for body in SUPPORT]
        + [("Printer", SUPPORT[0].replace("an error", "error 51"))]
        + [("Laptop", SUPPORT[1].replace("laptop", "notebook"))],
    )
    sales = _deliver_all(postroom, org, [("Quote", body) for body in SALES[:2]])
    for message_id, want in [(m, "Support") for m in support] + [(m, "Sales") for m in sales]:
        plan = _plan(postroom, message_id)
        assert (plan["category"], plan["decided_by"]) == (want, "model"), plan
    outlook = Outlook(http, org)
    outlook.set_categories(support[0], ["Sales"])
    _synced(postroom)
    outlook.set_categories(support[1], [])
    _synced(postroom)
    assert _plan(postroom, support[0])["corrected_to"] == "Sales"
    assert _plan(postroom, support[1])["corrected_to"] == NONE_OF_THESE
    return base


def _row(page: str, category: str) -> tuple[dict[str, str], str]:
    """A row of the per-category table: its data attributes and its text."""
    table = page.split('id="accuracy-per-category"', 1)[1].split("</table>", 1)[0]
    for row in re.findall(r"<tr (data-[^>]*)>(.*?)</tr>", table, re.S):
        attributes = dict(re.findall(r'data-(\w+)="(\d+)"', row[0]))
        if f'<th scope="row">{escape(category)}</th>' in row[1]:  # (escaped as Jinja does)
            return attributes, html.unescape(_text(row[1]))
    raise AssertionError(category)


def test_the_model_page_counts_what_people_kept_and_changed_per_category(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, http: httpx.Client
) -> None:
    base = _decided_and_corrected(web, postroom, sim, http)
    response = web.get(f"{base}/model")
    assert response.status_code == 200
    page = response.text
    words = _text(page)
    assert "75%</strong> of the last 8" in page  # 6 of 8 kept, the figure as before
    assert "at most 200 (here 8)" in words  # the window, stated
    support, support_words = _row(page, "Support")
    assert support == {"decided": "6", "kept": "4", "corrected": "2"}
    assert support_words == "Support 67% — 6 decisions, 2 corrected (1 to none of these)"
    sales, sales_words = _row(page, "Sales")
    assert sales == {"decided": "2", "kept": "2", "corrected": "0"}
    assert sales_words == "Sales too few to tell — 2 decisions, 0 corrected"

    root = _svg(page)
    assert root.get("id") == "confusion-matrix"
    assert _cells(root) == {
        "The model said Support; people kept it: 4": (4, True),
        "The model said Support; people chose Sales: 1": (1, False),
        "The model said Support; people chose none of these: 1": (1, False),
        "The model said Sales; people chose Support: 0": (0, False),
        "The model said Sales; people kept it: 2": (2, True),
        "The model said Sales; people chose none of these: 0": (0, False),
    }
    # the table of confusions is still there, for those who read rather than look
    assert "<td>Support</td><td>Sales</td><td>1</td>" in page
    assert "<td>Support</td><td>None of these</td><td>1</td>" in page
    assert '<link rel="stylesheet" href="/static/model.css">' in page
    assert "svg.confusion" in web.get("/static/model.css").text

    # a bad threshold: the 400 page shows the same figures
    bad = post_form(web, f"{base}/model", f"{base}/model", {"threshold": "very sure"})
    assert bad.status_code == 400 and "a number between 0 and 1" in bad.text
    assert _cells(_svg(bad.text)) == _cells(root)

    # another workspace sees nothing of it
    from tests.postroom.test_security_invitations import client
    from tests.postroom.webtools import sign_up

    with client(postroom) as stranger:
        assert stranger.get(f"{base}/model").status_code in (303, 401)
        sign_up(stranger, email="mallory@evil.test", workspace="Evil")
        theirs = stranger.get(f"{base}/model")
        assert theirs.status_code == 404 and "confusion" not in theirs.text


def _history(postroom: Postroom, decided: dict[tuple[str, str], int]) -> None:
    """Earlier model decisions written to the ledger as the sync writes them (the plan's
    ``category``, ``decided_by`` and, when a person changed it, ``corrected_to``)."""
    earlier = datetime.now(UTC) - timedelta(days=2)
    with postroom.database.session() as db:
        mailbox = db.scalar(select(Mailbox))
        assert mailbox is not None
        n = 0
        for (said, chosen), count in decided.items():
            for _ in range(count):
                n += 1
                plan: dict[str, object] = {"category": said, "decided_by": "model", "reasons": []}
                if chosen != said:
                    plan["corrected_to"] = chosen
                key = uuid.uuid4().hex
                db.add(
                    LedgerEntry(
                        integration_id=mailbox.integration_id,
                        mailbox_id=mailbox.id,
                        message_id=f"history-{key}",
                        message_key=key,
                        state="done",
                        plan=plan,
                        claimed_at=earlier + timedelta(minutes=n),
                        done_at=earlier + timedelta(minutes=n),
                    )
                )


def test_a_hostile_category_name_is_text_on_the_page_and_many_categories_are_cut_to_fifteen(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    postroom.drain()
    _history(postroom, {(EVIL, EVIL): 5, (EVIL, QUOTES): 2, (QUOTES, QUOTES): 1})
    page = web.get(f"{base}/model").text
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    evil, evil_words = _row(page, EVIL)
    assert evil == {"decided": "7", "kept": "5", "corrected": "2"}
    assert evil_words == f"{EVIL} 71% — 7 decisions, 2 corrected"
    assert _row(page, QUOTES)[1] == f"{QUOTES} too few to tell — 1 decision, 0 corrected"
    assert _cells(_svg(page))[f"The model said {EVIL}; people chose {QUOTES}: 2"] == (2, False)
    assert 'id="matrix-top"' not in page

    # 32 more categories (all within the window of 200 decisions): every fourth corrected to
    # Sales, which the model never said
    _history(
        postroom,
        {
            (f"Team {n:02d}", "Sales" if n % 4 == 0 else f"Team {n:02d}"): 5 if n < 10 else 4
            for n in range(32)
        },
    )
    page = web.get(f"{base}/model").text
    assert "There are 35 categories: the picture shows the 15 with the most emails" in _text(page)
    root = _svg(page)
    rows = [t.find(f"{SVG}title") for t in root.iter(f"{SVG}text") if t.get("class") == "row"]
    # Sales (35 emails), the hostile one (7), Teams 00-09 (5 each) and 10-12 (4, by name);
    # Sales is a column only: the model never said it
    assert [t.text for t in rows if t is not None] == [
        EVIL,
        *(f"Team {n:02d}" for n in range(13)),
    ]
    columns = [t.find(f"{SVG}title") for t in root.iter(f"{SVG}text") if t.get("class") == "column"]
    assert [t.text for t in columns if t is not None] == [
        *(t.text for t in rows if t is not None),
        "Sales",
        "Other categories",  # the hostile one changed to the quotes one, which is not drawn
    ]
    # every category the model decided is in the table, drawn or not
    assert page.split('id="accuracy-per-category"', 1)[1].count('<th scope="row">') == 34


# ---------------------------------------------------------------------- a phone, in Chromium
def test_the_model_page_fits_a_phone_and_shows_the_picture(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, http: httpx.Client
) -> None:
    from tests.postroom.test_editor import CHROMIUM, shot

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    base = _decided_and_corrected(web, postroom, sim, http)
    # earlier weeks: more categories, one with a long name and one with a hostile one
    long = "Customer complaints and escalations"
    _history(
        postroom,
        {
            ("Support", "Support"): 30,
            ("Support", long): 3,
            ("Sales", "Sales"): 18,
            ("Sales", NONE_OF_THESE): 2,
            (long, long): 9,
            (long, "Support"): 4,
            (EVIL, EVIL): 3,
            (EVIL, "Sales"): 1,
        },
    )
    phone = {"width": 360, "height": 780}
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        context = browser.new_context(viewport=phone)
        context.add_cookies(
            [{"name": c.name, "value": c.value or "", "url": postroom.url} for c in web.cookies.jar]
        )
        page = context.new_page()
        page.set_default_timeout(20_000)
        dialogs: list[str] = []

        def dialog_opened(dialog: Any) -> None:  # (no script on this page may open one)
            dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", dialog_opened)
        errors: list[str] = []  # e.g. a style the Content-Security-Policy refused

        def console(message: Any) -> None:
            where = str(message.location.get("url") or "")
            if message.type == "error" and not where.endswith("/favicon.ico"):  # (none exists)
                errors.append(f"{message.text} {where}")

        page.on("console", console)
        page.goto(f"{postroom.url}{base}/model")

        def width() -> int:
            return int(page.evaluate("document.documentElement.scrollWidth"))

        assert width() <= phone["width"], width()
        picture = page.locator("svg.confusion")
        assert picture.count() == 1 and picture.is_visible()
        picture.scroll_into_view_if_needed()
        box = picture.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= phone["width"]
        assert box["width"] >= 250 and box["height"] >= 200, box  # drawn, not a speck
        # readable: a count in a cell is about its own size, not scaled to nothing
        digits = page.locator("svg.confusion g.cell text").first.bounding_box()
        assert digits is not None and digits["height"] >= 9, digits
        assert page.locator("svg.confusion g.cell.kept").count() == 4
        assert EVIL in page.locator("svg.confusion").inner_html().replace("&lt;", "<").replace(
            "&gt;", ">"
        )
        support = page.locator("#accuracy-per-category tr", has_text="Support").first
        assert support.is_visible()
        assert " ".join(support.inner_text().split()) == (
            "Support 87% — 39 decisions, 5 corrected (1 to none of these)"
        )
        shot(page, "model-accuracy")

        # many categories: the picture keeps its size in its own box; the page does not scroll
        _history(postroom, {(f"Team {n:02d}", f"Team {n:02d}"): 20 for n in range(12)})
        _history(postroom, {("Team 00", "Team 01"): 3})
        page.reload()
        assert page.locator("svg.confusion.wide").count() == 1
        assert width() <= phone["width"], width()
        inner = page.evaluate(
            "(() => { const b = document.querySelector('.confusion-box');"
            " return [b.scrollWidth, b.clientWidth]; })()"
        )
        assert inner[0] > inner[1], inner  # it scrolls inside its box
        assert dialogs == [] and errors == []
        browser.close()
