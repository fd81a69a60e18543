"""The category form as data: what a person typed, checked value by value, and rules in words.

Pure: no HTTP, no database. Every submitted value is checked (:func:`parse_category`); problems
come back in plain words and nothing is saved.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import FormData

from postroom.integrations import wizard
from postroom.integrations.models import Category
from postroom.learning import service as learning
from postroom.processing.plan import CategoryConfig
from postroom.processing.rules import (
    FIELD_KINDS,
    FIELDS,
    MAX_CONDITIONS,
    MODES,
    OPERATORS,
    OPERATORS_BY_KIND,
    Condition,
    RuleError,
    RuleGroup,
)

# ---------------------------------------------------------------------- vocabulary in words
FIELD_LABELS = {
    "From.Email": "From (address)",
    "From.Name": "From (name)",
    "To": "To",
    "Cc": "Cc",
    "Subject": "Subject",
    "Body": "Body (text)",
    "HasAttachments": "Has attachments",
    "Importance": "Importance",
    "ReceivedDateTime": "Received",
}
OPERATOR_LABELS = {
    "EQUAL": "equals",
    "NOT_EQUALS": "does not equal",
    "CONTAINS": "contains",
    "NOT_CONTAINS": "does not contain",
    "STARTS_WITH": "starts with",
    "ENDS_WITH": "ends with",
    "EXISTS": "exists",
    "DOES_NOT_EXIST": "does not exist",
    "BEFORE": "before",
    "AFTER": "after",
}
MAX_NAME = 255
MAX_DESCRIPTION = 2000
MAX_FORWARD_FIELD = 2000
MAX_FORWARD_COMMENT = 2000
MAX_MESSAGE_ID = 512
RECENT_SELECT = (
    "id,subject,from,receivedDateTime,categories,bodyPreview,hasAttachments,importance,"
    "toRecipients,ccRecipients"
)
COLOUR_MAILBOXES = 20  # colours are checked in at most this many mailboxes per page


# ---------------------------------------------------------------------- the form, as data
@dataclass
class RuleRow:
    field: str = ""
    operator: str = "CONTAINS"
    value: str = ""


@dataclass
class CategoryForm:
    """What the editor shows and submits; strings as typed, checked by :func:`parse_category`."""

    category_id: str = ""
    name: str = ""
    color: str = "preset0"
    folder: str = ""
    forward_to: str = ""
    forward_comment: str = ""
    description: str = ""
    examples: str = ""  # pasted example texts, one per paragraph (configuration)
    mode: str = "all"
    rows: list[RuleRow] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)  # nested groups, kept as JSON

    @classmethod
    def from_category(cls, category: Category | None) -> CategoryForm:
        if category is None:
            return cls(rows=[RuleRow()])
        form = cls(
            category_id=category.id,
            name=category.name,
            color=category.color,
            folder=category.folder or "",
            forward_to=", ".join(category.forward_to or []),
            forward_comment=category.forward_comment or "",
            description=category.description or "",
        )
        stored = category.rules or {}
        if isinstance(stored, dict):
            form.mode = str(stored.get("mode") or "all")
            for item in stored.get("items") or []:
                if isinstance(item, dict) and ("items" in item or "mode" in item):
                    form.groups.append(json.dumps(item, ensure_ascii=False))
                elif isinstance(item, dict):
                    value = item.get("value")
                    form.rows.append(
                        RuleRow(
                            str(item.get("field") or ""),
                            str(item.get("operator") or ""),
                            ""
                            if value is None
                            else str(value).lower()
                            if isinstance(value, bool)
                            else str(value),
                        )
                    )
        if not form.rows:
            form.rows.append(RuleRow())
        return form

    @classmethod
    def from_submission(cls, data: FormData) -> CategoryForm:
        def one(key: str, default: str = "") -> str:
            value = data.get(key)
            return value if isinstance(value, str) else default

        def many(key: str) -> list[str]:
            return [v for v in data.getlist(key) if isinstance(v, str)]

        fields, operators, values = many("rule_field"), many("rule_operator"), many("rule_value")
        rows = [
            RuleRow(
                fields[i] if i < len(fields) else "",
                operators[i] if i < len(operators) else "",
                values[i] if i < len(values) else "",
            )
            for i in range(max(len(fields), len(operators), len(values)))
        ]
        return cls(
            category_id=one("category_id"),
            name=one("name"),
            color=one("color", "preset0"),
            folder=one("folder"),
            forward_to=one("forward_to"),
            forward_comment=one("forward_comment"),
            description=one("description"),
            examples=one("examples"),
            mode=one("mode", "all"),
            rows=rows,
            groups=many("rule_group"),
        )


@dataclass(frozen=True)
class ParsedCategory:
    name: str
    color: str
    folder: str | None
    forward_to: list[str]
    description: str
    rules: RuleGroup | None
    forward_comment: str = ""


def _short(text: str, limit: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _has_control(text: str) -> bool:
    """Control characters other than tab and line breaks (NUL cannot even be stored)."""
    return any(ord(c) < 32 and c not in "\t\n\r" for c in text)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def parse_rules(form: CategoryForm) -> tuple[RuleGroup | None, list[str]]:
    """The rule in the form (None when it has no conditions) and its problems, in words."""
    problems: list[str] = []
    if len(form.rows) + len(form.groups) > MAX_CONDITIONS:
        return None, [f"A rule holds at most {MAX_CONDITIONS} conditions."]
    if form.mode not in MODES:
        problems.append("Choose whether all conditions or any condition must match.")
    items: list[Any] = []
    for number, row in enumerate(form.rows, start=1):
        if not row.field.strip() and not row.value.strip():
            continue  # an empty row: ignored, like an empty line
        label = f"Condition {number}"
        if row.field not in FIELDS:
            problems.append(
                f"{label}: choose a field from the list"
                + (f" (“{_short(row.field)}” is not one)." if row.field.strip() else ".")
            )
            continue
        if row.operator not in OPERATORS:
            problems.append(f"{label}: choose how to compare from the list.")
            continue
        allowed = OPERATORS_BY_KIND[FIELD_KINDS[row.field]]
        if row.operator not in allowed:
            problems.append(
                f"{label}: {FIELD_LABELS[row.field]} cannot be compared with "
                f"“{OPERATOR_LABELS[row.operator]}”; use "
                + ", ".join(f"“{OPERATOR_LABELS[o]}”" for o in allowed)
                + "."
            )
            continue
        try:
            condition = Condition(row.field, row.operator, row.value)
        except RuleError as exc:
            problems.extend(f"{label}: {p}." for p in exc.problems)
            continue
        items.append(condition.to_json())
    for number, raw in enumerate(form.groups, start=1):
        try:
            items.append(RuleGroup.from_text(raw).to_json())
        except RuleError:
            problems.append(f"Group {number} could not be read; remove it.")
    if problems:
        return None, problems
    if not items:
        return None, []
    try:
        return RuleGroup.from_json({"mode": form.mode, "items": items}), []
    except RuleError as exc:
        return None, [_sentence(p) + "." for p in exc.problems]


def parse_category(
    form: CategoryForm, *, others: list[Category], forwarding_allowed: bool
) -> tuple[ParsedCategory | None, list[str]]:
    """Check everything in the form; the category to save, or the problems in plain words."""
    problems: list[str] = []
    name = form.name.strip()
    parsed: wizard.CategoryInput | None = None
    if not name:
        problems.append("Give the category a name.")
    elif len(form.name) > MAX_NAME or len(form.folder) > 400:
        problems.append(f"The name may be at most {MAX_NAME} characters, the folder path 400.")
    elif len(form.forward_to) > MAX_FORWARD_FIELD:
        problems.append("Too many forward addresses.")
    else:
        try:
            parsed = wizard.parse_categories(
                [name],
                [form.color],
                [form.folder],
                [form.forward_to],
                forwarding_allowed=forwarding_allowed,
            )[0]
        except wizard.StepError as exc:
            problems.extend(e.removeprefix("Row 1: ") for e in exc.errors)
    if name and any(
        c.id != form.category_id and c.name.strip().casefold() == name.casefold() for c in others
    ):
        problems.append(f"There is already a category named “{_short(name)}”.")
    if not form.category_id and len(others) >= wizard.MAX_CATEGORIES:
        problems.append(f"An integration has at most {wizard.MAX_CATEGORIES} categories.")
    if len(form.description) > MAX_DESCRIPTION:
        problems.append(f"The description may be at most {MAX_DESCRIPTION} characters.")
    elif _has_control(form.description):
        problems.append("The description may not contain control characters.")
    if _has_control(form.examples):
        problems.append("The examples may not contain control characters.")
    comment = form.forward_comment.replace("\r\n", "\n").strip()
    if len(comment) > MAX_FORWARD_COMMENT:
        problems.append(f"The forward comment may be at most {MAX_FORWARD_COMMENT} characters.")
    elif any(ord(c) < 32 and c not in "\n\t" for c in comment):
        problems.append("The forward comment may not contain control characters.")
    elif comment and not form.forward_to.strip():
        problems.append("A forward comment needs a forward address to go with.")
    pasted = [p for p in form.examples.replace("\r\n", "\n").split("\n\n") if p.strip()]
    if len(pasted) > learning.MAX_EXAMPLES_PER_CATEGORY or any(
        len(p.strip()) > learning.MAX_EXAMPLE_CHARS for p in pasted
    ):
        problems.append(
            f"Give at most {learning.MAX_EXAMPLES_PER_CATEGORY} examples of at most "
            f"{learning.MAX_EXAMPLE_CHARS} characters each."
        )
    rules, rule_problems = parse_rules(form)
    problems += rule_problems
    if problems or parsed is None:
        return None, problems
    return (
        ParsedCategory(
            name=parsed.name,
            color=parsed.color,
            folder=parsed.folder,
            forward_to=parsed.forward_to,
            description=form.description.strip(),
            rules=rules,
            forward_comment=comment,
        ),
        [],
    )


# ---------------------------------------------------------------------- rules in words
def describe(rules: RuleGroup) -> str:
    """A rule as one line of words, e.g. ``any of: Subject contains “invoice”; …``."""
    parts = []
    for item in rules.items:
        if isinstance(item, RuleGroup):
            parts.append(f"({describe(item)})")
        else:
            parts.append(describe_condition(item))
    joined = "; ".join(parts)
    if len(rules.items) == 1:
        return joined
    return f"{'all' if rules.mode == 'all' else 'any'} of: {joined}"


def describe_condition(condition: Condition) -> str:
    words = f"{FIELD_LABELS[condition.field]} {OPERATOR_LABELS[condition.operator]}"
    if condition.value is None:
        return words
    value = str(condition.value).lower() if isinstance(condition.value, bool) else condition.value
    return f"{words} “{_short(value, 80)}”"


def rules_text(category: Category) -> str:
    if not category.rules:
        return ""
    try:
        return describe(RuleGroup.from_json(category.rules))
    except RuleError:
        return "This rule cannot be read; edit the category to fix it."


def _config(category: Category) -> CategoryConfig:
    try:
        rules = RuleGroup.from_json(category.rules) if category.rules else None
    except RuleError:
        rules = None  # the sync refuses such a rule too; the page says so
    return CategoryConfig(
        name=category.name,
        color=category.color,
        folder=category.folder,
        forward_to=tuple(category.forward_to or ()),
        forward_comment=category.forward_comment or "",
        rules=rules,
        description=category.description or "",
    )
