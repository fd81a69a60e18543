"""Charts drawn on the server as SVG: pure functions from counts to markup. No script, no
library, nothing fetched by the browser.

Each chart is an ``<svg role="img">`` named by its ``<title>`` and ``<desc>`` (what it shows
and its totals, in words), with its legend inside (colour *and* name *and* count), and a
``viewBox`` 320 units wide with no fixed size: it takes the width of its box, so in a card on
a phone (360 px wide) its text is about its own size, and ``charts.css`` caps its width on wide
screens. Every segment carries a ``<title>`` (a tooltip: the day, the series and the number),
and :func:`table` gives the same numbers as rows for the page's table under the chart.

Every text is escaped here (category names are the workspace's input: a category named
``<script>`` is drawn as those eight characters). Colours come from Postroom's own tables
and are checked to be ``#rrggbb`` anyway, since they land in attributes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

from markupsafe import Markup, escape

WIDTH = 320
LEFT = 36  # room for the y axis' numbers ("100%")
RIGHT = 6
TOP = 10
PLOT = 130  # the plot's height
AXIS = 20  # the x axis' labels under the plot
LEGEND_ROW = 17
FONT = 12
HEADROOM = 16  # above a share's bar: room for its percentage
INK = "#2b2f36"
GRID = "#dde1e7"
MAX_LABEL = 28  # characters of a name in the legend (the table has the whole name)
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_HEX = re.compile(r"#[0-9a-fA-F]{6}")
FALLBACK = "#7a7574"


@dataclass(frozen=True)
class Series:
    """One coloured part of a stacked bar: a name and its count per day."""

    label: str
    colour: str
    counts: Mapping[date, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Rate:
    """One bar of a share: ``part`` of ``whole`` (no bar when ``whole`` is 0)."""

    label: str
    part: int
    whole: int

    @property
    def share(self) -> float | None:
        return self.part / self.whole if self.whole else None


@dataclass(frozen=True)
class Table:
    """A chart's numbers for people who read them rather than look: a row per day with any."""

    columns: list[str]
    rows: list[tuple[str, list[int], int]]  # (day, a number per column, the day's total)
    totals: list[int]


def day_words(day: date) -> str:
    """``3 Nov`` (English, whatever the server's locale)."""
    return f"{day.day} {MONTHS[day.month - 1]}"


def long_day_words(day: date) -> str:
    """``Tue 3 Nov 2026``."""
    return f"{WEEKDAYS[day.weekday()]} {day_words(day)} {day.year}"


def _colour(value: str) -> str:
    return value if _HEX.fullmatch(value) else FALLBACK


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def _number(value: float) -> str:
    """Coordinates with at most two decimals (an SVG's size stays small)."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def nice_scale(largest: int) -> tuple[int, int]:
    """(top of the y axis, step between its lines) for a largest value: a step of 1, 2 or 5
    times a power of ten, at most four steps, the top at or above ``largest``."""
    largest = max(largest, 1)
    power = 1
    while True:
        for factor in (1, 2, 5):
            step = factor * power
            if math.ceil(largest / step) <= 4:
                return step * math.ceil(largest / step), step
        power *= 10


def _open(chart_id: str, title: str, desc: str, height: float) -> list[str]:
    key = escape(chart_id)
    return [
        f'<svg class="chart" id="{key}" role="img" viewBox="0 0 {WIDTH} {_number(height)}" '
        f'aria-labelledby="{key}-title {key}-desc" font-size="{FONT}" '
        f'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{key}-title">{escape(title)}</title>',
        f'<desc id="{key}-desc">{escape(desc)}</desc>',
    ]


def _y_axis(top: int, step: int, suffix: str = "", height: float = PLOT) -> list[str]:
    """Lines across the plot at each step, numbered; ``top`` at ``height`` above the axis."""
    parts = []
    for value in range(0, top + 1, step):
        y = TOP + PLOT - height * value / top
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_number(y)}" y2="{_number(y)}" '
            f'stroke="{GRID}" stroke-width="1"/>'
            f'<text x="{LEFT - 4}" y="{_number(y + 4)}" text-anchor="end" fill="{INK}">'
            f"{value}{suffix}</text>"
        )
    return parts


def _legend(items: Sequence[tuple[str, str, str]], y: float) -> tuple[list[str], float]:
    """Swatch and words per item (name, what follows it, colour), wrapped into rows across
    the width; the parts and the height they take. A long name is shortened, never what
    follows it (the count); its ``<title>`` has it whole."""
    parts = ['<g class="legend">']
    x = float(LEFT)
    rows = 1
    for name, after, colour in items:
        label = name + after
        words = _short(name) + after
        width = 16 + len(words) * FONT * 0.56 + 12
        if x > LEFT and x + width > WIDTH:
            x = float(LEFT)
            y += LEGEND_ROW
            rows += 1
        parts.append(
            f'<g class="legend-item"><title>{escape(label)}</title>'
            f'<rect x="{_number(x)}" y="{_number(y - 9)}" width="10" height="10" rx="2" '
            f'fill="{_colour(colour)}" stroke="{INK}" stroke-opacity=".35"/>'
            f'<text x="{_number(x + 14)}" y="{_number(y)}" fill="{INK}">{escape(words)}</text></g>'
        )
        x += width
    parts.append("</g>")
    return parts, rows * LEGEND_ROW


def _x_label(middle: float, words: str) -> str:
    """A label under the axis, centred on ``middle`` unless that would cut it at an edge."""
    half = len(words) * FONT * 0.28
    anchor, x = "middle", middle
    if middle + half > WIDTH:
        anchor, x = "end", WIDTH - 1
    elif middle - half < 0:
        anchor, x = "start", 1
    return (
        f'<text x="{_number(x)}" y="{TOP + PLOT + 15}" text-anchor="{anchor}" fill="{INK}">'
        f"{escape(words)}</text>"
    )


def _totals(series: Sequence[Series]) -> str:
    return ", ".join(f"{s.label} {s.total}" for s in series if s.total)


def stacked_bars(
    *,
    chart_id: str,
    title: str,
    desc: str,
    days: Sequence[date],
    series: Sequence[Series],
    empty: str,
) -> Markup:
    """A bar per day, stacked by series in the given order (the first at the bottom); a day
    with nothing has no bar. With nothing at all, the ``empty`` sentence instead of a chart."""
    if not days or not any(s.total for s in series):
        return Markup('<p class="chart-empty" id="{}">{}</p>').format(chart_id, empty)
    shown = [s for s in series if s.total]
    day_totals = [sum(s.counts.get(day, 0) for s in shown) for day in days]
    top, step = nice_scale(max(day_totals))
    slot = (WIDTH - LEFT - RIGHT) / len(days)
    bar = slot * 0.72
    legend_y = TOP + PLOT + AXIS + 16
    legend, legend_height = _legend([(s.label, f" ({s.total})", s.colour) for s in shown], legend_y)
    words = f"{desc} From {long_day_words(days[0])} to {long_day_words(days[-1])}, "
    words += f"{sum(day_totals)} in all: {_totals(shown)}."
    parts = _open(chart_id, title, words, legend_y + legend_height - 6)
    parts += _y_axis(top, step)
    for index, day in enumerate(days):
        x = LEFT + index * slot + (slot - bar) / 2
        base: float = TOP + PLOT
        for s in shown:
            count = s.counts.get(day, 0)
            if not count:
                continue
            height = PLOT * count / top
            base -= height
            parts.append(
                f'<rect x="{_number(x)}" y="{_number(base)}" width="{_number(bar)}" '
                f'height="{_number(height)}" fill="{_colour(s.colour)}" stroke="#ffffff" '
                f'stroke-width=".6"><title>{escape(day_words(day))}: '
                f"{escape(s.label)} {count}</title></rect>"
            )
        if (len(days) - 1 - index) % 7 == 0:  # today and each week before it
            parts.append(_x_label(LEFT + index * slot + slot / 2, day_words(day)))
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + PLOT}" y2="{TOP + PLOT}" '
        f'stroke="{INK}" stroke-width="1"/>'
    )
    parts += legend
    parts.append("</svg>")
    return Markup("".join(parts))


def rate_bars(
    *,
    chart_id: str,
    title: str,
    desc: str,
    periods: Sequence[Rate],
    colour: str,
    legend: str,
    empty: str,
) -> Markup:
    """A bar per period for a share (0–100 %), its percentage above it and ``part of whole``
    under its label; a period with no ``whole`` has no bar and says so. With no ``whole`` at
    all, the ``empty`` sentence instead of a chart."""
    if not any(p.whole for p in periods):
        return Markup('<p class="chart-empty" id="{}">{}</p>').format(chart_id, empty)
    slot = (WIDTH - LEFT - RIGHT) / len(periods)
    bar = min(slot * 0.6, 40)
    legend_y = TOP + PLOT + AXIS + 32
    legend_parts, legend_height = _legend([(legend, "", colour)], legend_y)
    said = "; ".join(
        f"{p.label}: {round(p.share * 100)}% of {p.whole}"
        if p.share is not None
        else f"{p.label}: none"
        for p in periods
    )
    parts = _open(chart_id, title, f"{desc} {said}.", legend_y + legend_height - 6)
    parts += _y_axis(100, 50, "%", PLOT - HEADROOM)
    for index, period in enumerate(periods):
        middle = LEFT + index * slot + slot / 2
        share = period.share
        if share is not None:
            height = (PLOT - HEADROOM) * share
            y = TOP + PLOT - height
            parts.append(
                f'<rect x="{_number(middle - bar / 2)}" y="{_number(y)}" '
                f'width="{_number(bar)}" height="{_number(height)}" fill="{_colour(colour)}">'
                f"<title>{escape(period.label)}: {period.part} of {period.whole} kept"
                f"</title></rect>"
                f'<text x="{_number(middle)}" y="{_number(y - 4)}" '
                f'text-anchor="middle" fill="{INK}" font-weight="600">'
                f"{round(share * 100)}%</text>"
            )
        parts.append(
            f'<text x="{_number(middle)}" y="{TOP + PLOT + 15}" text-anchor="middle" '
            f'fill="{INK}">{escape(period.label)}</text>'
            f'<text x="{_number(middle)}" y="{TOP + PLOT + 30}" text-anchor="middle" '
            f'fill="{INK}" fill-opacity=".75">'
            f"{f'{period.part} of {period.whole}' if period.whole else 'none'}</text>"
        )
    parts.append(
        f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + PLOT}" y2="{TOP + PLOT}" '
        f'stroke="{INK}" stroke-width="1"/>'
    )
    parts += legend_parts
    parts.append("</svg>")
    return Markup("".join(parts))


def table(days: Sequence[date], series: Sequence[Series]) -> Table:
    """The numbers of a stacked chart: a row per day that has any (newest first)."""
    shown = [s for s in series if s.total]
    rows = []
    for day in reversed(days):
        values = [s.counts.get(day, 0) for s in shown]
        if any(values):
            rows.append((long_day_words(day), values, sum(values)))
    return Table(
        columns=[s.label for s in shown],
        rows=rows,
        totals=[s.total for s in shown],
    )


# ---------------------------------------------------------------------- the page's series
DECIDER_SERIES = {
    # who decided: words as on the activity page, colours apart from each other
    "rule": ("rule", "#004e8c"),
    "model": ("learned model", "#8764b8"),
    "conversation": ("same conversation", "#038387"),
    "needs_review": ("needs review", "#ff8c00"),
    "left_alone": ("left alone", "#b1adab"),
}
FEEDBACK_SERIES = {
    "corrected": ("corrected in Outlook", "#ca5010"),
    "undone": ("undone in Postroom", "#750b1c"),
    "fixed": ("fixed in Postroom", "#5c2e91"),
}
MAX_CATEGORIES = 8
"""Categories drawn apart; the rest are summed as "other categories" (the table lists all)."""
NO_CATEGORY = ("no category (left alone)", "#d2d0ce")
OTHER_CATEGORIES = ("other categories", "#605e5c")


def category_series(
    by_category: Mapping[str | None, Mapping[date, int]], hexes: Mapping[str, str]
) -> tuple[list[Series], list[Series]]:
    """(what the chart draws, what the table lists): the categories with the most emails in
    their colours in Outlook (``hexes``: name → ``#rrggbb``; a name no longer configured is
    grey), then the others summed, then the emails left with no category."""
    named = sorted(
        (
            Series(name, hexes.get(name, FALLBACK), dict(counts))
            for name, counts in by_category.items()
            if name is not None
        ),
        key=lambda s: (-s.total, s.label.casefold()),
    )
    left = by_category.get(None)
    tail = [Series(NO_CATEGORY[0], NO_CATEGORY[1], dict(left))] if left else []
    drawn = named[:MAX_CATEGORIES]
    rest = named[MAX_CATEGORIES:]
    if rest:
        summed: dict[date, int] = {}
        for s in rest:
            for day, count in s.counts.items():
                summed[day] = summed.get(day, 0) + count
        drawn.append(Series(OTHER_CATEGORIES[0], OTHER_CATEGORIES[1], summed))
    return drawn + tail, named + tail


def keyed_series(
    counts: Mapping[str, Mapping[date, int]], words: Mapping[str, tuple[str, str]]
) -> list[Series]:
    """A series per key of ``words`` (its label and colour), in that order."""
    return [
        Series(label, colour, dict(counts.get(key, {}))) for key, (label, colour) in words.items()
    ]
