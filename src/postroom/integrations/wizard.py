"""The setup wizard as plain data: steps, their inputs, and the reset rule. Pure functions.

Steps: 1 confirm the connected account, 2 what to sync (mailboxes, folders), 3 processing
(categories: name, Outlook colour, folder, forward-to), 4 backfill (off, or since a date),
5 review and Finish. The state lives server-side in ``Integration.wizard_step`` and
``wizard_data`` (so a reload resumes it).

Submitting an earlier step again resets *progress* only: the steps after it must be confirmed
again before Finish, pre-filled with what was entered there — nothing typed is ever deleted —
and only after the person confirmed a warning that names those steps; without the
confirmation nothing changes. After Finish the wizard is closed: mailboxes and folders,
categories (with their rules and examples) and existing mail each have their own page.

Step 4 only *plans* existing mail: Finish starts real-time processing, never the backfill,
because rules and examples can only be added after Finish and history processed before them
would find no match. The person starts "Apply to existing mail" on the integration page.

A step that cannot be accepted raises :class:`StepError` with each problem in plain words and,
where it belongs to one field or category row, under that field's key (``fields``) so the form
can show it next to what the person typed; the form is re-rendered from their input
(:func:`step_values`), never from the saved data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from postroom.processing import folder_paths

STEPS = {1: "account", 2: "sync", 3: "processing", 4: "backfill", 5: "review"}
TITLES = {
    1: "Confirm account",
    2: "What to sync",
    3: "Processing",
    4: "Existing mail",
    5: "Review",
}
COLOURS = [
    ("preset0", "Red", "#e74856"),
    ("preset1", "Orange", "#ff8c00"),
    ("preset2", "Brown", "#ab7b59"),
    ("preset3", "Yellow", "#fff100"),
    ("preset4", "Green", "#47d041"),
    ("preset5", "Teal", "#30c6cc"),
    ("preset6", "Olive", "#73aa24"),
    ("preset7", "Blue", "#00bcf2"),
    ("preset8", "Purple", "#8764b8"),
    ("preset9", "Cranberry", "#f495bf"),
    ("preset10", "Steel", "#a0aeb2"),
    ("preset11", "Dark steel", "#004b60"),
    ("preset12", "Gray", "#b1adab"),
    ("preset13", "Dark gray", "#5d5a58"),
    ("preset14", "Black", "#000000"),
    ("preset15", "Dark red", "#750b1c"),
    ("preset16", "Dark orange", "#ca5010"),
    ("preset17", "Dark brown", "#603d30"),
    ("preset18", "Dark yellow", "#c19c00"),
    ("preset19", "Dark green", "#0b6a0b"),
    ("preset20", "Dark teal", "#038387"),
    ("preset21", "Dark olive", "#486991"),
    ("preset22", "Dark blue", "#004e8c"),
    ("preset23", "Dark purple", "#5c2e91"),
    ("preset24", "Dark cranberry", "#8e0b3b"),
]
COLOUR_NAMES = {value: name for value, name, _ in COLOURS}
EMAIL_RE = re.compile(r"^[^@\s,;<>]{1,64}@[^@\s,;<>]{1,255}\.[^@\s,;<>]{2,}$")
MAX_CATEGORIES = 50
FOLDER_RE = re.compile(r"^[^\x00-\x1f]{1,255}$")


class StepError(ValueError):
    """Inputs of a step that cannot be accepted: ``errors`` lists each in plain words;
    ``fields`` files them by the field (or ``row-<n>``, a category row from 0) they concern."""

    def __init__(self, errors: list[str], *, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors
        self.fields = fields or {}

    def under(self, field: str) -> StepError:
        """The same problems, each filed under ``field`` (unless already filed)."""
        return StepError(self.errors, fields=self.fields or {field: list(self.errors)})


def later_steps_done(current_step: int, step: int) -> list[int]:
    """The confirmed steps after ``step`` that submitting it again would undo (they must be
    confirmed again before Finish; what they hold stays)."""
    return list(range(step + 1, min(current_step, 5)))


def apply_step(
    data: dict[str, Any], current_step: int, step: int, value: dict[str, Any], *, confirmed: bool
) -> tuple[dict[str, Any], int, bool]:
    """Store a step's value. Returns (new data, new current step, needs_confirmation).

    Re-submitting an earlier step when later steps were confirmed needs ``confirmed``; then the
    wizard continues from ``step + 1`` and those steps are confirmed again, pre-filled. Their
    data is kept: a reset undoes progress, never what the person entered.
    """
    if step > current_step:
        raise StepError([f"Finish step {current_step} first."])
    later = later_steps_done(current_step, step)
    if later and not confirmed:
        return data, current_step, True
    new = dict(data)
    new[STEPS[step]] = value
    next_step = step + 1 if later else max(current_step, step + 1)
    return new, min(next_step, 5), False


def step_values(step: int, data: dict[str, Any], form: dict[str, list[str]] | None) -> Any:
    """What a step's form shows: the person's input when it comes back (an error, or the reset
    confirmation), else what was saved for the step. Pure; ``form`` maps each field to its
    values in order."""
    if step == 2:
        return sync_values(data.get("sync"), form)
    if step == 3:
        return category_rows(data.get("processing"), form)
    if step == 4:
        return backfill_values(data.get("backfill"), form)
    return {}


def _first(form: dict[str, list[str]], key: str, default: str = "") -> str:
    values = form.get(key) or [default]
    return values[0]


def sync_values(saved: dict[str, Any] | None, form: dict[str, list[str]] | None) -> dict[str, Any]:
    if form is not None:
        return {
            "own": _first(form, "own") == "on",
            "shared": _first(form, "shared"),
            "mailboxes": list(form.get("mailboxes") or []),
            "folders": list(form.get("folders") or []),
        }
    if not saved:
        return {"own": True, "shared": "", "mailboxes": [], "folders": ["inbox"]}
    boxes = saved.get("mailboxes") or []
    return {
        "own": any(b.get("kind") == "own" for b in boxes),
        "shared": "\n".join(b["address"] for b in boxes if b.get("kind") == "shared"),
        "mailboxes": [b["id"] for b in boxes],
        "folders": [f["key"] for f in saved.get("folders") or []],
    }


def category_rows(
    saved: dict[str, Any] | None, form: dict[str, list[str]] | None
) -> list[dict[str, str]]:
    """The processing step's rows: exactly as typed after an error (blank rows included), else
    the saved categories and one blank row (three for a first visit)."""
    if form is not None:
        columns = [form.get(k) or [] for k in ("name", "color", "folder", "forward_to")]
        count = max((len(c) for c in columns), default=0) or 1
        return [
            {
                "name": _at(columns[0], i),
                "color": _at(columns[1], i, "preset0"),
                "folder": _at(columns[2], i),
                "forward_to": _at(columns[3], i),
            }
            for i in range(count)
        ]
    rows = [
        {
            "name": c["name"],
            "color": c["color"],
            "folder": c.get("folder") or "",
            "forward_to": ", ".join(c.get("forward_to") or []),
        }
        for c in (saved or {}).get("categories") or []
    ]
    blank = {"name": "", "color": "preset0", "folder": "", "forward_to": ""}
    return rows + [dict(blank) for _ in range(1 if rows else 3)]


def _at(values: list[str], index: int, default: str = "") -> str:
    return values[index] if index < len(values) else default


def backfill_values(
    saved: dict[str, Any] | None, form: dict[str, list[str]] | None
) -> dict[str, Any]:
    if form is not None:
        return {
            "mode": _first(form, "mode"),
            "since": _first(form, "since"),
            "forward_history": _first(form, "forward_history") == "on",
        }
    saved = saved or {"mode": "off"}
    return {
        "mode": saved.get("mode", "off"),
        "since": saved.get("since", ""),
        "forward_history": bool(saved.get("forward_history")),
    }


def parse_emails(raw: str) -> list[str]:
    parts = [p.strip() for p in re.split(r"[,;\s]+", raw or "") if p.strip()]
    bad = [p for p in parts if not EMAIL_RE.match(p)]
    if bad:
        raise StepError([f"Not an email address: {b}" for b in bad[:5]])
    return list(dict.fromkeys(p.lower() for p in parts))


@dataclass
class CategoryInput:
    name: str
    color: str
    folder: str | None
    forward_to: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "color": self.color,
            "folder": self.folder,
            "forward_to": self.forward_to,
        }


def parse_categories(
    names: list[str],
    colors: list[str],
    folders: list[str],
    forwards: list[str],
    *,
    forwarding_allowed: bool,
) -> list[CategoryInput]:
    """Rows of the processing step; blank rows are skipped, problems listed per row (and filed
    under ``row-<index>``)."""
    errors: list[str] = []
    fields: dict[str, list[str]] = {}

    def problem(index: int, text: str) -> None:
        errors.append(f"Row {index + 1}: {text}")
        fields.setdefault(f"row-{index}", []).append(text)

    result: list[CategoryInput] = []
    seen: set[str] = set()
    rows = max(len(names), len(colors), len(folders), len(forwards))
    for i in range(rows):
        name = (names[i] if i < len(names) else "").strip()
        color = (colors[i] if i < len(colors) else "preset0").strip().lower()
        folder = (folders[i] if i < len(folders) else "").strip().strip("/")
        forward_raw = (forwards[i] if i < len(forwards) else "").strip()
        if not name and not folder and not forward_raw:
            continue
        if not name:
            problem(i, "give the category a name.")
            continue
        if len(name) > 255 or any(ord(c) < 32 for c in name) or "," in name:
            problem(
                i,
                "the name may not contain commas or control characters (at most 255 characters).",
            )
            continue
        if name.lower() in seen:
            problem(i, f"the category “{name}” appears twice.")
            continue
        seen.add(name.lower())
        if color not in COLOUR_NAMES:
            problem(i, "choose one of Outlook's colours.")
            continue
        if folder and (not FOLDER_RE.match(folder) or folder_paths.has_blank_segment(folder)):
            problem(i, "the folder path is not valid (use Parent/Child).")
            continue
        protected = folder_paths.protected_folder(folder) if folder else None
        if protected is not None:
            problem(
                i,
                f"“{_shown(folder)}” is in {protected}. Postroom never moves mail into "
                "Deleted Items or Recoverable Items, where Outlook empties and purges it.",
            )
            continue
        folder = folder_paths.clean_path(folder)
        try:
            forward_to = parse_emails(forward_raw)
        except StepError as exc:
            for e in exc.errors:
                problem(i, e)
            continue
        if forward_to and not forwarding_allowed:
            problem(
                i,
                "forwarding needs the Mail.Send permission, which this "
                "connection does not have (minimal permissions).",
            )
            continue
        result.append(CategoryInput(name, color, folder or None, forward_to))
    if len(result) > MAX_CATEGORIES:
        errors.append(f"At most {MAX_CATEGORIES} categories.")
    if errors:
        raise StepError(errors, fields=fields)
    return result


def _shown(text: str, limit: int = 80) -> str:
    """A typed value for a message: cleaned (no invisible characters), shortened."""
    shown = folder_paths.clean_path(text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def parse_backfill(mode: str, since: str, forward_history: bool, *, today: date) -> dict[str, Any]:
    """Existing mail: ``off``, or ``since`` a date (at most three years back, not in the future).
    In the wizard this is a plan; "Apply to existing mail" starts it."""
    if mode == "off":
        return {"mode": "off"}
    if mode != "since":
        raise StepError(
            ["Choose whether to process existing mail."],
            fields={"mode": ["Choose whether to process existing mail."]},
        )
    try:
        day = date.fromisoformat(since.strip())
    except ValueError as exc:
        raise _since_error("Enter the date to start from (YYYY-MM-DD).") from exc
    if day > today:
        raise _since_error("The date cannot be in the future.")
    if day < today - timedelta(days=3 * 365):
        raise _since_error("Existing mail reaches back at most three years.")
    return {"mode": "since", "since": day.isoformat(), "forward_history": bool(forward_history)}


def _since_error(text: str) -> StepError:
    return StepError([text], fields={"since": [text]})
