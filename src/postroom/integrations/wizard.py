"""The setup wizard as plain data: steps, their inputs, and the reset rule. Pure functions.

Steps: 1 confirm the connected account, 2 what to sync (mailboxes, folders), 3 processing
(categories: name, Outlook colour, folder, forward-to), 4 backfill (off, or since a date),
5 review and Finish. The state lives server-side in ``Integration.wizard_step`` and
``wizard_data`` (so a reload resumes it). Submitting an earlier step again resets every later
step — but only after the person confirmed a warning; without the confirmation nothing changes.
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
    4: "Backfill",
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
    """Inputs of a step that cannot be accepted; ``errors`` lists each in plain words."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def later_steps_with_data(data: dict[str, Any], step: int) -> list[int]:
    return [n for n in range(step + 1, 6) if STEPS[n] in data]


def apply_step(
    data: dict[str, Any], current_step: int, step: int, value: dict[str, Any], *, confirmed: bool
) -> tuple[dict[str, Any], int, bool]:
    """Store a step's value. Returns (new data, new current step, needs_confirmation).

    Re-submitting an earlier step when later steps hold data needs ``confirmed``; then the later
    steps are cleared and the wizard continues from ``step + 1``.
    """
    if step > current_step:
        raise StepError([f"Finish step {current_step} first."])
    later = later_steps_with_data(data, step)
    if later and not confirmed:
        return data, current_step, True
    new = {k: v for k, v in data.items() if k not in {STEPS[n] for n in later}}
    new[STEPS[step]] = value
    next_step = step + 1 if later else max(current_step, step + 1)
    return new, min(next_step, 5), False


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
    """Rows of the processing step; blank rows are skipped, problems listed per row."""
    errors: list[str] = []
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
        label = f"Row {i + 1}"
        if not name:
            errors.append(f"{label}: give the category a name.")
            continue
        if len(name) > 255 or any(ord(c) < 32 for c in name) or "," in name:
            errors.append(
                f"{label}: the name may not contain commas or control characters "
                "(at most 255 characters)."
            )
            continue
        if name.lower() in seen:
            errors.append(f"{label}: the category “{name}” appears twice.")
            continue
        seen.add(name.lower())
        if color not in COLOUR_NAMES:
            errors.append(f"{label}: choose one of Outlook's colours.")
            continue
        if folder and (not FOLDER_RE.match(folder) or folder_paths.has_blank_segment(folder)):
            errors.append(f"{label}: the folder path is not valid (use Parent/Child).")
            continue
        protected = folder_paths.protected_folder(folder) if folder else None
        if protected is not None:
            errors.append(
                f"{label}: “{_shown(folder)}” is in {protected}. Postroom never moves mail into "
                "Deleted Items or Recoverable Items, where Outlook empties and purges it."
            )
            continue
        folder = folder_paths.clean_path(folder)
        try:
            forward_to = parse_emails(forward_raw)
        except StepError as exc:
            errors.extend(f"{label}: {e}" for e in exc.errors)
            continue
        if forward_to and not forwarding_allowed:
            errors.append(
                f"{label}: forwarding needs the Mail.Send permission, which this "
                "connection does not have (minimal permissions)."
            )
            continue
        result.append(CategoryInput(name, color, folder or None, forward_to))
    if len(result) > MAX_CATEGORIES:
        errors.append(f"At most {MAX_CATEGORIES} categories.")
    if errors:
        raise StepError(errors)
    return result


def _shown(text: str, limit: int = 80) -> str:
    """A typed value for a message: cleaned (no invisible characters), shortened."""
    shown = folder_paths.clean_path(text)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def parse_backfill(mode: str, since: str, forward_history: bool, *, today: date) -> dict[str, Any]:
    if mode == "off":
        return {"mode": "off"}
    if mode != "since":
        raise StepError(["Choose whether to backfill."])
    try:
        day = date.fromisoformat(since.strip())
    except ValueError as exc:
        raise StepError(["Enter the date to backfill from (YYYY-MM-DD)."]) from exc
    if day > today:
        raise StepError(["The backfill date cannot be in the future."])
    if day < today - timedelta(days=3 * 365):
        raise StepError(["Backfill reaches back at most three years."])
    return {"mode": "since", "since": day.isoformat(), "forward_history": bool(forward_history)}
