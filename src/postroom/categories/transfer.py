"""Configuration people can carry: an integration's categories as a JSON file, and back.

The document (:func:`export`)::

    {"postroom_export": 1,
     "categories": [{"name": "Invoices", "color": "preset7", "folder": "Finance/Invoices",
                     "description": "", "rules": {"mode": "any", "items": [...]},
                     "forward_to": [], "forward_comment": "", "examples": ["..."]}, ...]}

The list is in the order rules are tried. It holds what people configured and nothing else:
no ids, no tokens, no mailbox of the tenant, no ledger, no model state, and of mail content only
the examples people pasted into the editor.

Importing is three steps, each checking everything again:

* :func:`parse` — the file alone, read as hostile: at most :data:`MAX_FILE_BYTES`, UTF-8 JSON,
  version :data:`VERSION` only, no unknown or repeated key, every value of the right type, and
  every category checked by the category editor's own validators
  (:func:`~postroom.categories.form.parse_category` for name, colour, folder, forward
  addresses and comment, description and examples; :meth:`RuleGroup.from_json
  <postroom.processing.rules.RuleGroup.from_json>` for the rules, as for a nested group), with
  the editor's limits; a name may appear once. Each problem says where: ``Category 3
  (“Invoices”): …``.
* :func:`preview` — the file against the integration: a category is the same one when its name
  matches (ignoring case); the editor's checks run again in this integration's context (its
  other names, its at most :data:`~postroom.integrations.wizard.MAX_CATEGORIES` categories,
  whether it may forward). Says what would be added, what changed field by field, what is
  already the same, and which categories are not in the file — those are kept, never deleted.
  New categories go after the existing ones, in the file's order; existing ones keep their
  place. The preview's :attr:`Preview.fingerprint` names the file *and* the state it was
  computed from.
* :func:`apply` — in the caller's transaction, under a lock on the integration: parse and
  preview again, refuse when the fingerprint differs from the one the person saw (someone
  changed the categories meanwhile), then write and ask for a refit the way the editor does, so
  the examples take effect.

Pure except :func:`export`, :func:`preview` and :func:`apply`, which read and write through the
services.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from postroom.categories.form import (
    CategoryForm,
    _short,
    describe,
    parse_category,
)
from postroom.categories.views import _forwarding_allowed
from postroom.integrations import service, wizard
from postroom.integrations.models import Category, Integration
from postroom.learning import service as learning
from postroom.processing.rules import RuleError, RuleGroup

VERSION = 1
MAX_FILE_BYTES = 2 * 1024 * 1024
MAX_PROBLEMS = 30  # problems listed; the rest are counted
TOP_KEYS = ("postroom_export", "categories")
CATEGORY_KEYS = (
    "name",
    "color",
    "folder",
    "description",
    "rules",
    "forward_to",
    "forward_comment",
    "examples",
)
FIELD_WORDS = {
    "name": "name",
    "color": "colour",
    "folder": "folder",
    "description": "description",
    "rules": "rules",
    "forward_to": "forward to",
    "forward_comment": "forward comment",
    "examples": "examples",
}


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class ImportedCategory:
    """One category of a file, checked: the values as the editor would store them."""

    number: int  # its place in the file, from 1
    name: str
    color: str
    folder: str | None
    forward_to: tuple[str, ...]
    forward_comment: str
    description: str
    rules: dict[str, Any] | None  # canonical RuleGroup JSON; None without conditions
    examples: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"Category {self.number} (“{_short(self.name)}”)"

    def form(self, category_id: str = "") -> CategoryForm:
        """The editor's form holding these values (the rules are checked apart)."""
        return CategoryForm(
            category_id=category_id,
            name=self.name,
            color=self.color,
            folder=self.folder or "",
            forward_to=", ".join(self.forward_to),
            forward_comment=self.forward_comment,
            description=self.description,
            examples="\n\n".join(self.examples),
        )


@dataclass(frozen=True)
class Plan:
    """A file that passed :func:`parse`. ``document`` is the file as compact JSON (never larger
    than what was read): what the apply step carries back to be checked again."""

    categories: tuple[ImportedCategory, ...]
    document: str


@dataclass(frozen=True)
class Errors:
    """Why nothing can be imported, one problem per line, each saying where."""

    problems: tuple[str, ...]


@dataclass(frozen=True)
class Change:
    field: str  # in words: "colour", "forward to", ...
    before: str
    after: str


@dataclass(frozen=True)
class Entry:
    category: ImportedCategory
    existing_id: str | None  # the category of the integration it updates; None: added
    changes: tuple[Change, ...] = ()

    @property
    def status(self) -> str:
        if self.existing_id is None:
            return "add"
        return "change" if self.changes else "same"


@dataclass(frozen=True)
class Preview:
    entries: tuple[Entry, ...]
    kept: tuple[str, ...]  # the integration's categories the file does not name: kept as they are
    fingerprint: str  # the file and the state this preview was computed from

    def _with(self, status: str) -> list[Entry]:
        return [e for e in self.entries if e.status == status]

    @property
    def added(self) -> list[Entry]:
        return self._with("add")

    @property
    def changed(self) -> list[Entry]:
        return self._with("change")

    @property
    def same(self) -> list[Entry]:
        return self._with("same")


@dataclass(frozen=True)
class Stale:
    """The categories changed after the person saw the preview: ``preview`` is the new one."""

    preview: Preview


@dataclass(frozen=True)
class Applied:
    added: int
    changed: int
    unchanged: int
    refit_requested: bool


# ---------------------------------------------------------------------- export
def export(db: Session, integration: Integration) -> dict[str, Any]:
    """The integration's categories as a versioned document, in the order rules are tried."""
    return {
        "postroom_export": VERSION,
        "categories": [
            {
                "name": c.name,
                "color": c.color,
                "folder": c.folder,
                "description": c.description or "",
                "rules": c.rules,
                "forward_to": list(c.forward_to or []),
                "forward_comment": c.forward_comment or "",
                "examples": learning.examples_of(db, c.id),
            }
            for c in service.categories(db=db, integration=integration)
        ],
    }


# ---------------------------------------------------------------------- parse (the file alone)
class _Refused(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise _Refused(f"The file repeats the key “{_shown(key)}” in one object.")
        seen[key] = value
    return seen


def _constant(name: str) -> Any:
    raise _Refused(f"The file holds {name}, which is not a number JSON allows.")


def _shown(text: str) -> str:
    """A value from the file for a message: printable characters only, shortened."""
    return _short("".join(c if c.isprintable() else " " for c in text))


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _strings(data: object) -> Iterator[str]:
    """Every key and text in a parsed document (iteratively: its nesting is not trusted)."""
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            yield from item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _capped(problems: list[str]) -> Errors:
    shown = problems[:MAX_PROBLEMS]
    if len(problems) > MAX_PROBLEMS:
        shown.append(f"… and {len(problems) - MAX_PROBLEMS} more problems.")
    return Errors(tuple(shown))


def parse(raw: bytes) -> Plan | Errors:
    """Read an export file as hostile input; the categories it holds, or every problem."""
    if len(raw) > MAX_FILE_BYTES:
        return Errors(
            (
                f"The file is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB; "
                "an export is smaller.",
            )
        )
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return Errors(("The file is not UTF-8 text; choose the .json file Postroom exported.",))
    if not text.strip():
        return Errors(("The file is empty.",))
    try:
        data = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except _Refused as exc:
        return Errors((str(exc),))
    except json.JSONDecodeError as exc:
        return Errors(
            (f"The file is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).",)
        )
    except RecursionError:
        return Errors(("The file nests lists or objects too deeply to be an export.",))
    except ValueError:  # e.g. a number of 5,000 digits
        return Errors(("The file is not valid JSON.",))
    if not isinstance(data, dict) or "postroom_export" not in data:
        return Errors(
            (
                "This is not a Postroom export: it should be an object with "
                "“postroom_export” and “categories”.",
            )
        )
    version = data["postroom_export"]
    if type(version) is not int or version != VERSION:
        shown = _short(str(version), 12) if type(version) is int else _kind(version)
        return Errors(
            (
                f"This file is version {shown} of Postroom's export format; this installation "
                f"reads version {VERSION}.",
            )
        )
    unknown = [k for k in data if k not in TOP_KEYS]
    if unknown:
        return Errors((f"Unknown field “{_shown(unknown[0])}” at the top of the file.",))
    if any("\x00" in s for s in _strings(data)):
        return Errors(("The file contains the NUL character (\\u0000), which no field may hold.",))
    entries = data.get("categories")
    if not isinstance(entries, list):
        return Errors((f"“categories” must be a list, not {_kind(entries)}.",))
    if len(entries) > wizard.MAX_CATEGORIES:
        return Errors(
            (
                f"The file holds {len(entries)} categories; an integration has at most "
                f"{wizard.MAX_CATEGORIES}.",
            )
        )
    problems: list[str] = []
    categories: list[ImportedCategory] = []
    first: dict[str, int] = {}
    for number, entry in enumerate(entries, start=1):
        category, found = _category(number, entry)
        problems += found
        if category is None:
            continue
        key = category.name.casefold()
        if key in first:
            problems.append(
                f"{category.label}: category {first[key]} has this name already; "
                "a name may appear once."
            )
            continue
        first[key] = number
        categories.append(category)
    if problems:
        return _capped(problems)
    return Plan(tuple(categories), json.dumps(data, ensure_ascii=False, separators=(",", ":")))


def _category(number: int, entry: object) -> tuple[ImportedCategory | None, list[str]]:
    """One entry of ``categories``: its types here, its values by the editor's validators."""
    if not isinstance(entry, dict):
        return None, [f"Category {number}: must be an object with a name, not {_kind(entry)}."]
    name = entry.get("name")
    label = f"Category {number}" + (
        f" (“{_shown(name)}”)" if isinstance(name, str) and name.strip() else ""
    )
    problems = [f"{label}: unknown field “{_shown(k)}”." for k in entry if k not in CATEGORY_KEYS]

    def text(key: str, *, default: str = "", nullable: bool = False) -> str:
        value = entry.get(key, default)
        if value is None and nullable:
            return ""
        if not isinstance(value, str):
            problems.append(f"{label}: {FIELD_WORDS[key]} must be text, not {_kind(value)}.")
            return default
        return value

    def texts(key: str) -> list[str]:
        value = entry.get(key, [])
        if not isinstance(value, list):
            problems.append(
                f"{label}: {FIELD_WORDS[key]} must be a list of texts, not {_kind(value)}."
            )
            return []
        wrong = next((i for i, v in enumerate(value, start=1) if not isinstance(v, str)), None)
        if wrong is not None:
            problems.append(
                f"{label}: {FIELD_WORDS[key]}: item {wrong} must be text, "
                f"not {_kind(value[wrong - 1])}."
            )
            return []
        return list(value)

    if "name" not in entry:
        problems.append(f"{label}: give the category a name.")
    form = CategoryForm(
        name=text("name"),
        color=text("color", default="preset0"),
        folder=text("folder", nullable=True),
        description=text("description"),
        forward_to=", ".join(texts("forward_to")),
        forward_comment=text("forward_comment"),
        examples="\n\n".join(texts("examples")),
    )
    rules: dict[str, Any] | None = None
    raw_rules = entry.get("rules")
    if raw_rules is not None:
        try:
            group = RuleGroup.from_json(raw_rules)
        except RuleError as exc:
            problems += [f"{label}: rules: {p}." for p in exc.problems]
        else:
            rules = group.to_json() if group.items else None
    if problems:  # types first: values of the wrong type are not worth checking further
        return None, problems
    parsed, found = parse_category(form, others=[], forwarding_allowed=True)
    if parsed is None:
        return None, [f"{label}: {p}" for p in found]
    return (
        ImportedCategory(
            number=number,
            name=parsed.name,
            color=parsed.color,
            folder=parsed.folder,
            forward_to=tuple(parsed.forward_to),
            forward_comment=parsed.forward_comment,
            description=parsed.description,
            rules=rules,
            examples=tuple(learning.split_examples(form.examples)),
        ),
        [],
    )


# ---------------------------------------------------------------------- preview (in context)
def _canonical_rules(stored: dict[str, Any] | None) -> Any:
    if not stored:
        return None
    try:
        group = RuleGroup.from_json(stored)
    except RuleError:
        return stored  # unreadable: compared as stored (an import replaces it)
    return group.to_json() if group.items else None


def _rules_words(rules: Any) -> str:
    if rules is None:
        return "no rules"
    try:
        return describe(RuleGroup.from_json(rules))
    except RuleError:
        return "a rule that cannot be read"


def _examples_words(texts: list[str] | tuple[str, ...]) -> str:
    return f"{len(texts)} example{'' if len(texts) == 1 else 's'}"


def _changes(current: Category, examples: list[str], new: ImportedCategory) -> tuple[Change, ...]:
    colours = wizard.COLOUR_NAMES
    pairs: list[tuple[str, object, object, str, str]] = [
        ("name", current.name, new.name, current.name, new.name),
        (
            "colour",
            current.color,
            new.color,
            colours.get(current.color, current.color),
            colours[new.color],
        ),
        ("folder", current.folder, new.folder, current.folder or "—", new.folder or "—"),
        (
            "forward to",
            list(current.forward_to or []),
            list(new.forward_to),
            ", ".join(current.forward_to or []) or "—",
            ", ".join(new.forward_to) or "—",
        ),
        (
            "forward comment",
            current.forward_comment or "",
            new.forward_comment,
            current.forward_comment or "—",
            new.forward_comment or "—",
        ),
        (
            "description",
            current.description or "",
            new.description,
            current.description or "—",
            new.description or "—",
        ),
        (
            "rules",
            _canonical_rules(current.rules),
            new.rules,
            _rules_words(_canonical_rules(current.rules)),
            _rules_words(new.rules),
        ),
    ]
    changes = [
        Change(word, _short(shown_before, 120), _short(shown_after, 120))
        for word, before, after, shown_before, shown_after in pairs
        if before != after
    ]
    if examples != list(new.examples):
        before, after = _examples_words(examples), _examples_words(new.examples)
        if before == after:
            after += " (other texts)"
        changes.append(Change("examples", before, after))
    return tuple(changes)


def preview(db: Session, integration: Integration, plan: Plan) -> Preview | Errors:
    """What importing ``plan`` into the integration would do, or why it cannot."""
    existing = service.categories(db=db, integration=integration)
    by_key = {c.name.strip().casefold(): c for c in existing}
    allowed = _forwarding_allowed(integration)  # the editor's rule
    too_many = f"An integration has at most {wizard.MAX_CATEGORIES} categories."
    problems: list[str] = []
    entries: list[Entry] = []
    state: list[Any] = []
    for category in plan.categories:
        current = by_key.get(category.name.casefold())
        _, found = parse_category(
            category.form(current.id if current else ""),
            others=existing,
            forwarding_allowed=allowed,
        )
        problems += [f"{category.label}: {p}" for p in found if p != too_many]
        if current is None:
            entries.append(Entry(category, None))
            continue
        examples = learning.examples_of(db, current.id)
        state.append(
            [
                current.id,
                current.name,
                current.color,
                current.folder,
                current.forward_to,
                current.forward_comment,
                current.description,
                current.rules,
                examples,
            ]
        )
        entries.append(Entry(category, current.id, _changes(current, examples, category)))
    added = sum(e.existing_id is None for e in entries)
    if len(existing) + added > wizard.MAX_CATEGORIES:
        problems.append(f"{too_many[:-1]}; this one has {len(existing)} and the file adds {added}.")
    if problems:
        return _capped(problems)
    named = {e.existing_id for e in entries}
    fingerprint = hashlib.sha256(
        json.dumps(
            [plan.document, [(c.id, c.name) for c in existing], state, allowed],
            sort_keys=True,
            ensure_ascii=True,
            default=str,
        ).encode()
    ).hexdigest()
    return Preview(
        entries=tuple(entries),
        kept=tuple(c.name for c in existing if c.id not in named),
        fingerprint=fingerprint,
    )


# ---------------------------------------------------------------------- apply
def apply(
    db: Session, integration: Integration, raw: bytes, *, expected: str
) -> Applied | Stale | Errors:
    """Import the file in the caller's transaction (the caller commits): everything is checked
    again, and nothing is written unless the preview still is the one the person saw."""
    db.execute(select(Integration.id).where(Integration.id == integration.id).with_for_update())
    plan = parse(raw)
    if isinstance(plan, Errors):
        return plan
    result = preview(db, integration, plan)
    if isinstance(result, Errors):
        return result
    if result.fingerprint != expected:
        return Stale(result)
    examples_changed = False
    for entry in result.entries:
        if entry.status == "same":
            continue
        new = entry.category
        saved = service.save_category(
            db=db,
            integration=integration,
            category_id=entry.existing_id,
            name=new.name,
            color=new.color,
            folder=new.folder,
            forward_to=list(new.forward_to),
            description=new.description,
            rules=new.rules,
            forward_comment=new.forward_comment,
        )
        examples_changed |= learning.set_examples(
            db, integration_id=integration.id, category_id=saved.id, texts=list(new.examples)
        )
    written = len(result.added) + len(result.changed)
    # as the editor does after a save: the examples (and a trained model's categories) change
    refit = written > 0 and (examples_changed or learning.state_row(db, integration.id).version > 0)
    if refit:
        learning.request_refit(db, integration_id=integration.id)
    return Applied(
        added=len(result.added),
        changed=len(result.changed),
        unchanged=len(result.same),
        refit_requested=refit,
    )
