"""The Model page's confusion matrix, drawn on the server as SVG: a pure function from outcome
counts to markup. No script, no library, nothing fetched by the browser (the charts'
conventions, :mod:`postroom.activity.charts`).

Rows are what the model said, columns what people kept or chose, then "None of these" (a
category taken off). The columns start with the rows' categories in the same order, so the
diagonal is "kept": drawn in green with a dark outline, the changed cells in orange; a cell's
shade grows with its count (``0.15 + 0.85 × count / largest``) and every non-empty cell has its
count written in it. With more than :data:`ALL_UP_TO` categories only the :data:`TOP` with the
most emails are drawn (:attr:`Matrix.cut`), the rest of what people chose summed in a last
column, "Other categories" (so a row still adds up to the model's decisions);
:attr:`Matrix.hidden_rows` says how many of the model's categories were left out. The page
says so, and its table lists them all.

The ``<svg role="img">`` is named by its ``<title>`` and ``<desc>`` (the totals and every
confusion, in words); each cell has a ``<title>`` with the full names and the count. Its
``viewBox`` is sized to the matrix (cells of :data:`CELL` units, the labels' room from their
length); ``width``/``height`` give its natural size (:data:`ZOOM` pixels a unit), and
``model.css`` lets it shrink to its box (a few categories fit a 360 px phone) or, for a wide
matrix (``class="wide"``), keeps it at its size in a box that scrolls sideways, so the page
itself never does.

Every text is escaped here: category names are the workspace's input, and a category named
``<script>`` is drawn as those eight characters. Names longer than :data:`MAX_LABEL` are
shortened with an ellipsis (before escaping, so an entity is never cut); ``<title>`` has them
whole.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from markupsafe import Markup, escape

from postroom.classify.summary import Confusion
from postroom.processing.decide import NONE_OF_THESE

ALL_UP_TO = 30
"""Up to this many categories, every one is drawn."""
TOP = 15
"""Beyond :data:`ALL_UP_TO`, the categories with the most emails that are drawn."""
CELL = 34
FONT = 12
CHAR = FONT * 0.58  # the width of an average character (system sans-serif)
MAX_LABEL = 16
GAP = 6
LEGEND = 30  # the legend's height under the grid
LEGEND_WIDTH = 260
CORNER = ("The model said ↓", "People kept or chose →")
WIDE = 380
"""A matrix wider than this (in units) keeps its size and scrolls in its box instead of
shrinking."""
ZOOM = 1.25
"""Its natural size in pixels per unit: its 12-unit text is 15 px, beside the page's 16 px."""
INK = "#2b2f36"
GRID = "#dde1e7"
KEPT = "#107c10"
CHANGED = "#ca5010"
NONE_LABEL = "None of these"
OTHER_LABEL = "Other categories"
NO_CATEGORY_LABEL = "No category"

NO_DECISIONS = "No model decisions yet."


@dataclass(frozen=True, slots=True)
class Column:
    """What people kept or chose: a category, none of these, or the categories not drawn."""

    label: str
    category: str | None = None
    """The category (:data:`NONE_OF_THESE` for none of these); ``None`` for the others."""


@dataclass(frozen=True, slots=True)
class Matrix:
    rows: tuple[str | None, ...]
    """What the model said, most decisions first (``None``: it said no category)."""
    columns: tuple[Column, ...]
    cells: dict[tuple[int, int], int]
    """Count per (row, column) index; absent is 0."""
    categories: int
    """Categories in all (said by the model or chosen by people)."""
    hidden_rows: int
    """Categories the model said that are not drawn (more than :data:`ALL_UP_TO`)."""

    @property
    def cut(self) -> bool:
        """Only the :data:`TOP` categories with the most emails are drawn."""
        return self.categories > ALL_UP_TO

    @property
    def total(self) -> int:
        return sum(self.cells.values())

    @property
    def kept(self) -> int:
        return sum(n for (r, c), n in self.cells.items() if self.is_kept(r, c))

    def is_kept(self, row: int, column: int) -> bool:
        """On the diagonal: people kept the category the model said."""
        said = self.rows[row]
        return said is not None and self.columns[column].category == said


def _row_label(name: str | None) -> str:
    return NO_CATEGORY_LABEL if name is None else name


def build(counts: Iterable[Confusion]) -> Matrix:
    """The matrix of the outcome counts (every (predicted, chosen) pair, kept ones too)."""
    pairs: Counter[tuple[str | None, str]] = Counter()
    for c in counts:
        if c.count > 0:
            pairs[(c.predicted, c.chosen)] += c.count
    decided: Counter[str | None] = Counter()
    volume: Counter[str] = Counter()  # emails a category was said or chosen for, once each
    for (predicted, chosen), n in pairs.items():
        decided[predicted] += n
        if predicted is not None:
            volume[predicted] += n
        if chosen != NONE_OF_THESE and chosen != predicted:
            volume[chosen] += n
    by_volume = sorted(volume, key=lambda name: (-volume[name], name.casefold(), name))
    shown = set(by_volume if len(by_volume) <= ALL_UP_TO else by_volume[:TOP])
    rows = sorted(
        (p for p in decided if p is None or p in shown),
        key=lambda p: (-decided[p], p is None, (p or "").casefold(), p or ""),
    )
    chosen_only = [
        name
        for name in by_volume
        if name in shown and name not in rows and any(c == name for _, c in pairs)
    ]
    columns = [Column(name, name) for name in rows if name is not None]
    columns += [Column(name, name) for name in chosen_only]
    index = {column.category: i for i, column in enumerate(columns)}
    if any(c == NONE_OF_THESE for _, c in pairs):
        index[NONE_OF_THESE] = len(columns)
        columns.append(Column(NONE_LABEL, NONE_OF_THESE))
    other = -1
    if any(c != NONE_OF_THESE and c not in shown for p, c in pairs if p is None or p in shown):
        other = len(columns)
        columns.append(Column(OTHER_LABEL))
    row_index = {name: i for i, name in enumerate(rows)}
    cells: Counter[tuple[int, int]] = Counter()
    for (predicted, chosen), n in pairs.items():
        if predicted not in row_index:
            continue
        cells[(row_index[predicted], index.get(chosen, other))] += n
    return Matrix(
        rows=tuple(rows),
        columns=tuple(columns),
        cells=dict(cells),
        categories=len(by_volume),
        hidden_rows=sum(1 for p in decided if p is not None and p not in shown),
    )


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _cell_words(predicted: str | None, column: Column, count: int) -> str:
    """A cell's ``<title>``: the full names and the count."""
    said = f"The model said {_row_label(predicted)}"
    if column.category is not None and column.category == predicted:
        return f"{said}; people kept it: {count}"
    return f"{said}; people chose {_column_words(column)}: {count}"


def _column_words(column: Column) -> str:
    if column.category == NONE_OF_THESE:
        return "none of these"
    if column.category is None:
        return "one of the other categories"
    return column.category


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _describe(matrix: Matrix) -> str:
    """The ``<desc>``: what the picture shows, its totals and every confusion, in words."""
    total, kept = matrix.total, matrix.kept
    confusions = sorted(
        ((r, c, n) for (r, c), n in matrix.cells.items() if not matrix.is_kept(r, c)),
        key=lambda item: (-item[2], item[0], item[1]),
    )
    said = "; ".join(
        f"{_row_label(matrix.rows[r])} changed to {_column_words(matrix.columns[c])}: {n}"
        for r, c, n in confusions
    )
    words = (
        f"Rows: what the model said; columns: what people kept or chose. Of "
        f"{_plural(total, 'decision')}, {kept} were kept (the diagonal) and {total - kept} "
        f"corrected: {said}."
    )
    if matrix.cut:
        words += (
            f" Only the {TOP} of {matrix.categories} categories with the most emails are drawn."
        )
    return words


@dataclass(frozen=True, slots=True)
class _Layout:
    left: int  # where the grid starts (the row labels' room before it)
    header: int  # where the grid starts (the column labels' room above it)
    width: int
    height: int


def _layout(matrix: Matrix, row_labels: list[str], column_labels: list[str]) -> _Layout:
    label_width = max([len(label) * CHAR for label in row_labels] + [len(CORNER[0]) * CHAR])
    left = round(label_width + 2 * GAP)
    slant = max(len(label) for label in column_labels) * CHAR * 0.7071  # (at 45°)
    header = round(FONT + 2 * GAP + slant + FONT)  # the "People kept or chose" line, labels
    width = round(left + len(matrix.columns) * CELL + max(slant - CELL / 2, 0) + GAP)
    width = max(width, round(left + len(CORNER[1]) * CHAR + GAP), LEGEND_WIDTH)
    height = header + len(matrix.rows) * CELL + LEGEND + GAP
    return _Layout(left, header, width, height)


def _cell(matrix: Matrix, row: int, column: int, x: float, y: float, largest: int) -> str:
    count = matrix.cells.get((row, column), 0)
    kept = matrix.is_kept(row, column)
    title = escape(_cell_words(matrix.rows[row], matrix.columns[column], count))
    colour = KEPT if kept else CHANGED if count else "#ffffff"
    shade = 0.15 + 0.85 * count / largest if count else 0.06 if kept else 1.0
    inset = 1.0 if kept else 0.5
    outline = f'stroke="{INK}" stroke-width="2"' if kept else f'stroke="{GRID}" stroke-width="1"'
    parts = [
        f'<g class="cell{" kept" if kept else ""}" data-count="{count}"><title>{title}</title>'
        f'<rect x="{_number(x + inset)}" y="{_number(y + inset)}" '
        f'width="{_number(CELL - 2 * inset)}" height="{_number(CELL - 2 * inset)}" '
        f'fill="{colour}" fill-opacity="{_number(shade)}" {outline}/>'
    ]
    if count:  # dark digits with a white halo: readable on every shade
        parts.append(
            f'<text x="{_number(x + CELL / 2)}" y="{_number(y + CELL / 2 + FONT * 0.35)}" '
            f'text-anchor="middle" fill="{INK}" font-weight="600" stroke="#ffffff" '
            f'stroke-width="3" stroke-linejoin="round" paint-order="stroke">{count}</text>'
        )
    parts.append("</g>")
    return "".join(parts)


def confusion_svg(matrix: Matrix, *, svg_id: str = "confusion-matrix") -> Markup:
    """The matrix as an ``<svg>``; a sentence instead when there is nothing to draw (no
    decisions, or none corrected)."""
    total, kept = matrix.total, matrix.kept
    if not total:
        return Markup('<p class="muted confusion-empty" id="{}">{}</p>').format(
            svg_id, NO_DECISIONS
        )
    if kept == total:
        words = (
            "No corrections yet: every model decision so far was kept "
            f"({_plural(total, 'decision')})."
        )
        return Markup('<p class="muted confusion-empty" id="{}">{}</p>').format(svg_id, words)

    key = escape(svg_id)
    row_labels = [_short(_row_label(r)) for r in matrix.rows]
    column_labels = [_short(c.label) for c in matrix.columns]
    box = _layout(matrix, row_labels, column_labels)
    parts = [
        f'<svg class="confusion{" wide" if box.width > WIDE else ""}" id="{key}" role="img" '
        f'width="{round(box.width * ZOOM)}" height="{round(box.height * ZOOM)}" '
        f'viewBox="0 0 {box.width} {box.height}" '
        f'aria-labelledby="{key}-title {key}-desc" font-size="{FONT}" '
        f'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" '
        f'xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{key}-title">What the model said and what people kept or chose</title>',
        f'<desc id="{key}-desc">{escape(_describe(matrix))}</desc>',
        f'<text x="{box.left}" y="{FONT + 2}" fill="{INK}" font-weight="600">{CORNER[1]}</text>',
        f'<text x="{GAP}" y="{box.header - GAP}" fill="{INK}" font-weight="600">{CORNER[0]}</text>',
    ]
    base = box.header - GAP
    for c, label in enumerate(column_labels):
        middle = _number(box.left + c * CELL + CELL / 2)
        parts.append(
            f'<text class="column" x="{middle}" y="{base}" fill="{INK}" '
            f'transform="rotate(-45 {middle} {base})">'
            f"<title>{escape(matrix.columns[c].label)}</title>{escape(label)}</text>"
        )
    for r, label in enumerate(row_labels):
        line = _number(box.header + r * CELL + CELL / 2 + FONT * 0.35)
        parts.append(
            f'<text class="row" x="{box.left - GAP}" y="{line}" text-anchor="end" fill="{INK}">'
            f"<title>{escape(_row_label(matrix.rows[r]))}</title>{escape(label)}</text>"
        )
    largest = max(matrix.cells.values())
    for r in range(len(matrix.rows)):
        for c in range(len(matrix.columns)):
            x, y = box.left + c * CELL, box.header + r * CELL
            parts.append(_cell(matrix, r, c, x, y, largest))
    legend = box.header + len(matrix.rows) * CELL + GAP + 16
    parts.append(
        f'<g class="legend"><rect x="{GAP}" y="{legend - 10}" width="12" height="12" '
        f'fill="{KEPT}" fill-opacity=".6" stroke="{INK}" stroke-width="2"/>'
        f'<text x="{GAP + 18}" y="{legend}" fill="{INK}">kept ({kept})</text>'
        f'<rect x="{GAP + 110}" y="{legend - 10}" width="12" height="12" '
        f'fill="{CHANGED}" fill-opacity=".6" stroke="{GRID}"/>'
        f'<text x="{GAP + 128}" y="{legend}" fill="{INK}">corrected ({total - kept})</text></g>'
        "</svg>"
    )
    return Markup("".join(parts))
