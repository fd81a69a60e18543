"""After setup: the categories editor (with its rule builder and "test against a recent email"),
the colours of the categories in Outlook, and the activity view.

Pages
  ``GET  /integrations/{id}/categories`` — the categories in the order rules are tried; with
  ``?new=1`` or ``?edit={category}`` the editor for managers. ``POST`` to the same path saves,
  adds or removes a condition row, or tests the rules in the form against a recent email.
  ``POST .../categories/{category}/delete`` and ``.../move`` delete and reorder;
  ``POST .../categories/colours`` creates the missing master categories in Outlook.
  ``GET  /integrations/{id}/activity`` — the ledger, newest first, 50 a page.

The rule builder needs no JavaScript: a group mode (all/any) and rows of (field, operator,
value); "Add condition" and "Remove" are submit buttons that re-render the form. Nested groups
of a stored rule (written through other means) are kept as they are and can be removed, not
edited. Every submitted value is checked (:func:`parse_category`); a form with problems is
shown again with each problem in plain words, HTTP 400, and nothing saved.

Invariant 2 — no mailbox content in the database — holds here by construction: the recent
emails of the test and the subjects of the activity view are fetched from Graph for the page
being rendered and only ever reach the template (which escapes them). The test only reads
(GETs) and never writes to the database or the mailbox.
"""

from __future__ import annotations

import asyncio
import json
import math
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from postroom.graph import Conflict, GraphClient, GraphError, NotFound
from postroom.integrations import service, wizard
from postroom.integrations.graph_access import TokenFailure
from postroom.integrations.models import Category, Integration, Mailbox
from postroom.integrations.oauth import GRAPH
from postroom.integrations.statuses import LABELS, REASONS, Reason
from postroom.integrations.views import graph_call, load_integration
from postroom.learning import service as learning
from postroom.learning.views import defer_refit_from_thread, status_words
from postroom.processing.decide import decide, fits_none_words
from postroom.processing.models import LEDGER_STATES
from postroom.processing.outcomes import outcome_words
from postroom.processing.plan import CategoryConfig, Plan
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
from postroom.processing.view import MessageView
from postroom.web.deps import DbSession, current_caller, render
from postroom.web.security import Caller, check_csrf

router = APIRouter()
CallerDep = Annotated[Caller, Depends(current_caller)]
Token = Annotated[str, Form(max_length=200)]

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
# What was done to the email. The ledger's "master_category" and "folder" steps mean the
# category's colour and the folder were made sure of (found, or created): usually they
# existed already, so they are not said to be "created" on every email.
ACTION_WORDS = {
    "label": "labelled",
    "move": "moved",
    "forward_draft": "forward drafted",
    "forward_sent": "forwarded",
}
DECIDED_BY_WORDS = {
    "rule": "rule",
    "model": "learned model",
    "needs_review": "needs review",
    "none": "no match",
}
STATE_WORDS = {"claimed": "in progress", "done": "done", "failed": "failed", "skipped": "skipped"}

MAX_NAME = 255
MAX_DESCRIPTION = 2000
MAX_FORWARD_FIELD = 2000
MAX_FORWARD_COMMENT = 2000
MAX_MESSAGE_ID = 512
RECENT_SELECT = (
    "id,subject,from,receivedDateTime,categories,bodyPreview,hasAttachments,importance,"
    "toRecipients,ccRecipients"
)
PER_PAGE = 50
BATCH_SIZE = 20  # Graph's limit for one $batch
PARALLEL_PER_MAILBOX = 4  # Exchange's concurrency limit per (application, mailbox)
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


# ---------------------------------------------------------------------- the test, pure
@dataclass(frozen=True)
class Verdict:
    """One category's answer in the test: ``matched`` / ``no match`` / ``no rules`` /
    ``not tried`` (an earlier category matched first)."""

    name: str
    outcome: str
    edited: bool
    conditions: tuple[tuple[str, bool], ...] = ()


@dataclass(frozen=True)
class PreviewResult:
    subject: str
    sender: str
    plan: Plan
    verdicts: tuple[Verdict, ...]


def explain(
    view: MessageView,
    configs: list[CategoryConfig],
    edited_index: int,
    *,
    allow_forward: bool,
) -> PreviewResult:
    """What Postroom would do with this message, and each category's part in it. Pure."""
    plan = decide(view, configs, allow_forward=allow_forward, needs_review=None)
    verdicts = []
    decided = False
    for index, config in enumerate(configs):
        rows: tuple[tuple[str, bool], ...] = ()
        if config.rules is not None:
            rows = tuple(
                (
                    f"({describe(item)})"
                    if isinstance(item, RuleGroup)
                    else describe_condition(item),
                    item.matches(view),
                )
                for item in config.rules.items
            )
        if decided:
            outcome = "not tried"
        elif config.rules is None:
            outcome = "no rules"
        elif config.rules.matches(view):
            outcome, decided = "matched", True
        else:
            outcome = "no match"
        verdicts.append(Verdict(config.name, outcome, index == edited_index, rows))
    sender = ""
    if view.sender is not None:
        sender = view.sender.name or view.sender.address
        if view.sender.name and view.sender.address:
            sender = f"{view.sender.name} <{view.sender.address}>"
    return PreviewResult(view.subject, sender, plan, tuple(verdicts))


# ---------------------------------------------------------------------- Graph, read only
@dataclass(frozen=True)
class OtherColour:
    """A category that exists in a mailbox's master list with another colour than Postroom's:
    Outlook shows its colour, not Postroom's."""

    name: str
    outlook: str  # the colour preset in Outlook
    wanted: str  # the category's colour preset in Postroom


@dataclass
class ColourCheck:
    """One mailbox's master list compared with the categories: which have no colour, and
    which have another colour there."""

    address: str
    missing: list[str] = field(default_factory=list)
    problem: str | None = None
    differ: list[OtherColour] = field(default_factory=list)


@dataclass
class RemoteFacts:
    recent: list[dict[str, Any]] | None = None
    recent_problem: str | None = None
    colours: list[ColourCheck] | None = None


def _graph_words(exc: GraphError) -> str:
    if exc.status == 403:
        return "no permission to read it"
    if isinstance(exc, NotFound):
        return "not found"
    return f"Microsoft answered {exc.code or exc.status or 'with an error'}"


async def _recent_messages(client: GraphClient, mailbox: str) -> list[dict[str, Any]]:
    _, body, _ = await client.request(
        "GET",
        f"{client.mailbox_path(mailbox)}/mailFolders/inbox/messages",
        mailbox=mailbox,
        params={"$select": RECENT_SELECT, "$top": "10", "$orderby": "receivedDateTime desc"},
    )
    items = body.get("value", []) if isinstance(body, dict) else []
    return [m for m in items if isinstance(m, dict) and isinstance(m.get("id"), str)]


def _uncoloured(master: list[Any], categories: list[Category]) -> list[str]:
    coloured = {
        str(c.get("displayName") or "").strip().casefold()
        for c in master
        if isinstance(c, dict) and str(c.get("color") or "none").lower() != "none"
    }
    return [c.name for c in categories if c.name.strip().casefold() not in coloured]


def _other_colours(master: list[Any], categories: list[Category]) -> list[OtherColour]:
    """Categories whose name is in the master list with another colour (not "none")."""
    in_outlook = {
        str(c.get("displayName") or "").strip().casefold(): str(c.get("color") or "none").lower()
        for c in master
        if isinstance(c, dict)
    }
    differ = []
    for category in categories:
        colour = in_outlook.get(category.name.strip().casefold(), "none")
        if colour != "none" and colour != category.color.lower():
            differ.append(OtherColour(category.name, colour, category.color))
    return differ


async def _colour_checks(
    client: GraphClient, mailboxes: list[Mailbox], categories: list[Category]
) -> list[ColourCheck]:
    checks = []
    for box in mailboxes[:COLOUR_MAILBOXES]:
        check = ColourCheck(box.address)
        try:
            master = await client.master_categories(box.graph_user_id)
            check.missing = _uncoloured(master, categories)
            check.differ = _other_colours(master, categories)
        except GraphError as exc:
            check.problem = _graph_words(exc)
        checks.append(check)
    return checks


async def _align_colours(
    client: GraphClient, mailboxes: list[Mailbox], categories: list[Category]
) -> tuple[int, list[str]]:
    """Give the categories that exist in Outlook with another colour Postroom's colour (the
    person asked for it on the categories page). Only the colour changes: the name, and every
    email that has the category, stay as they are."""
    changed, problems = 0, []
    wanted = {c.name.strip().casefold(): c.color for c in categories}
    for box in mailboxes[:COLOUR_MAILBOXES]:
        try:
            master = await client.master_categories(box.graph_user_id)
        except GraphError as exc:
            problems.append(f"{box.address}: {_graph_words(exc)}.")
            continue
        for item in master:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                continue
            name = str(item.get("displayName") or "")
            colour = wanted.get(name.strip().casefold())
            if colour is None or str(item.get("color") or "none").lower() in ("none", colour):
                continue
            path = f"{client.mailbox_path(box.graph_user_id)}/outlook/masterCategories"
            try:
                await client.request(
                    "PATCH",
                    f"{path}/{quote(item['id'], safe='')}",
                    mailbox=box.graph_user_id,
                    json={"color": colour},
                )
                changed += 1
            except GraphError as exc:
                problems.append(f"{box.address}: {name}: {_graph_words(exc)}.")
    return changed, problems


async def _create_colours(
    client: GraphClient, mailboxes: list[Mailbox], categories: list[Category]
) -> tuple[int, list[str]]:
    """Create the master categories missing in each mailbox; an existing name is fine."""
    created, problems = 0, []
    for box in mailboxes[:COLOUR_MAILBOXES]:
        try:
            master = await client.master_categories(box.graph_user_id)
        except GraphError as exc:
            problems.append(f"{box.address}: {_graph_words(exc)}.")
            continue
        present = {str(c.get("displayName") or "").strip().casefold() for c in master}
        for category in categories:
            if category.name.strip().casefold() in present:
                continue
            try:
                await client.create_master_category(
                    box.graph_user_id, category.name, category.color
                )
                created += 1
            except Conflict:
                pass  # created meanwhile (by the sync, or in Outlook): that is what we want
            except GraphError as exc:
                problems.append(f"{box.address}: {category.name}: {_graph_words(exc)}.")
    return created, problems


@dataclass(frozen=True)
class LiveMessage:
    subject: str | None  # None: not available (see ``note``)
    sender: str = ""
    note: str = ""


async def fetch_subjects(
    client: GraphClient, wanted: list[tuple[str, str]]
) -> dict[tuple[str, str], LiveMessage]:
    """Subject and sender of (mailbox, message id) pairs, through ``$batch`` (≤20 each).

    Exchange runs at most four requests per mailbox at once and answers the rest of a batch
    429, so each batch is four ``dependsOn`` chains. An item that fails (404: the message is
    gone) fails the rest of its chain with 424; those, and throttled items, are asked again in
    the next round. Rounds go on while they make progress (twice more when they do not).
    """
    found: dict[tuple[str, str], LiveMessage] = {}
    by_mailbox: dict[str, list[str]] = {}
    for mailbox, message_id in wanted:
        ids = by_mailbox.setdefault(mailbox, [])
        if message_id not in ids:
            ids.append(message_id)
    for mailbox, pending in by_mailbox.items():
        stalls = 0
        while pending and stalls < 3:
            again: list[str] = []
            wait = 0.0
            for start in range(0, len(pending), BATCH_SIZE):
                chunk = pending[start : start + BATCH_SIZE]
                answered, retry, pause = await _subject_batch(client, mailbox, chunk)
                found.update(((mailbox, k), v) for k, v in answered.items())
                again += retry
                wait = max(wait, pause)
            stalls = stalls + 1 if len(again) == len(pending) else 0
            pending = again
            if pending and wait:
                await asyncio.sleep(wait)
        for message_id in pending:
            found[(mailbox, message_id)] = LiveMessage(None, note="(not available right now)")
    return found


async def _subject_batch(
    client: GraphClient, mailbox: str, message_ids: list[str]
) -> tuple[dict[str, LiveMessage], list[str], float]:
    """One ``$batch`` of GETs: the answers, the ids to ask again, and how long to wait first."""
    base = client.mailbox_path(mailbox)
    requests = []
    for i, message_id in enumerate(message_ids):
        item: dict[str, Any] = {
            "id": str(i),
            "method": "GET",
            "url": f"{base}/messages/{quote(message_id, safe='')}?$select=subject,from",
        }
        if i >= PARALLEL_PER_MAILBOX:
            item["dependsOn"] = [str(i - PARALLEL_PER_MAILBOX)]
        requests.append(item)
    results = {r.id: r for r in await client.batch(requests, mailbox=mailbox)}
    answered: dict[str, LiveMessage] = {}
    retry: list[str] = []
    wait = 0.0
    for i, message_id in enumerate(message_ids):
        result = results.get(str(i))
        if result is not None and result.ok and isinstance(result.body, dict):
            sender = (result.body.get("from") or {}).get("emailAddress") or {}
            answered[message_id] = LiveMessage(
                str(result.body.get("subject") or ""),
                str(sender.get("name") or sender.get("address") or ""),
            )
        elif result is not None and result.status == 404:
            answered[message_id] = LiveMessage(None, note="(no longer in the mailbox)")
        elif result is None or result.status in (424, 429) or result.status >= 500:
            retry.append(message_id)
            if result is not None and result.status == 429:
                try:
                    pause = float(result.headers.get("retry-after", "1"))
                except ValueError:
                    pause = 1.0
                wait = max(wait, min(pause, 2.0))
        else:
            answered[message_id] = LiveMessage(None, note="(not available)")
    return answered, retry, wait


# ---------------------------------------------------------------------- helpers for the views
def _can_read_colours(integration: Integration) -> bool:
    scopes = integration.granted_scopes or []
    return integration.kind == "organization" or any(
        s in scopes for s in (f"{GRAPH}/MailboxSettings.Read", f"{GRAPH}/MailboxSettings.ReadWrite")
    )


def _can_write_colours(integration: Integration) -> bool:
    return integration.kind == "organization" or f"{GRAPH}/MailboxSettings.ReadWrite" in (
        integration.granted_scopes or []
    )


def _forwarding_allowed(integration: Integration) -> bool:
    return integration.kind == "organization" or f"{GRAPH}/Mail.Send" in (
        integration.granted_scopes or []
    )


def _test_mailbox(mailboxes: list[Mailbox], chosen: str | None = None) -> Mailbox | None:
    """The mailbox whose inbox the test reads: the one chosen (any mailbox of the
    integration), else the first synced one."""
    for box in mailboxes:
        if chosen and box.id == chosen:
            return box
    working = [m for m in mailboxes if m.status == "connected"] or mailboxes
    return working[0] if working else None


def _status_notice(integration: Integration) -> Reason | None:
    if integration.status in ("needs_reconnect", "admin_consent_missing", "access_denied"):
        return REASONS.get(integration.status_reason or "") or REASONS["unknown"]
    return None


def _remote(
    request: Request,
    db: Session,
    integration: Integration,
    *,
    recent: bool,
    colours: bool,
    test_box_id: str | None = None,
) -> RemoteFacts:
    """Read what the page shows from Graph (the recent emails, the colours) in one go."""
    facts = RemoteFacts()
    mailboxes = service.mailboxes(db=db, integration=integration)
    categories = service.categories(db=db, integration=integration)
    test_box = _test_mailbox(mailboxes, test_box_id)
    want_recent = recent and test_box is not None
    want_colours = colours and bool(categories) and _can_read_colours(integration)
    if not want_recent and not want_colours:
        return facts
    if _status_notice(integration) is not None:
        facts.recent_problem = "Reconnect the integration to read its emails."
        return facts

    async def work(client: GraphClient) -> RemoteFacts:
        if want_recent and test_box is not None:
            try:
                facts.recent = await _recent_messages(client, test_box.graph_user_id)
            except GraphError as exc:
                facts.recent_problem = (
                    f"The inbox of {test_box.address} could not be read ({_graph_words(exc)})."
                )
        if want_colours:
            facts.colours = await _colour_checks(client, mailboxes, categories)
        return facts

    try:
        result: RemoteFacts = graph_call(request, db, integration, work)
        return result
    except TokenFailure:
        facts.recent, facts.colours = None, None
        facts.recent_problem = "Reconnect the integration to read its emails."
        return facts


def _categories_page(
    request: Request,
    db: Session,
    caller: Caller,
    integration: Integration,
    *,
    form: CategoryForm | None = None,
    errors: list[str] | None = None,
    result: PreviewResult | None = None,
    notice: str | None = None,
    status_code: int = 200,
    with_colours: bool = True,
    test_box_id: str | None = None,
) -> Response:
    categories = service.categories(db=db, integration=integration)
    editing = form is not None and caller.can_manage
    remote = _remote(
        request, db, integration, recent=editing, colours=with_colours, test_box_id=test_box_id
    )
    colours = {value: (label, hex_) for value, label, hex_ in wizard.COLOURS}
    mailboxes = service.mailboxes(db=db, integration=integration)
    return render(
        request,
        "integrations/categories.html",
        status_code,
        nav="integrations",
        item=integration,
        categories=[(c, rules_text(c)) for c in categories],
        colours=colours,
        colour_list=wizard.COLOURS,
        form=form if editing else None,
        errors=errors or [],
        result=result,
        notice=notice,
        remote=remote,
        test_box=_test_mailbox(mailboxes, test_box_id),
        test_boxes=mailboxes,
        field_labels=FIELD_LABELS,
        operator_labels=OPERATOR_LABELS,
        fields=FIELDS,
        operators=OPERATORS,
        groups=[_group_text(g) for g in (form.groups if form else [])],
        can_read_colours=_can_read_colours(integration),
        can_write_colours=_can_write_colours(integration),
        forwarding_allowed=_forwarding_allowed(integration),
        status_notice=_status_notice(integration),
        model_off=status_words(learning.model_status(db, integration.id)),
        labels=LABELS,
        max_conditions=MAX_CONDITIONS,
    )


def _group_text(raw: str) -> str:
    try:
        return describe(RuleGroup.from_text(raw))
    except RuleError:
        return "(a group that cannot be read)"


def _finished(integration: Integration, caller: Caller) -> Response | None:
    """Categories are edited in the wizard until setup is finished."""
    if integration.finished_at is not None:
        return None
    target = f"/integrations/{integration.id}"
    return RedirectResponse(target + "/setup" if caller.can_manage else target, status_code=303)


# ---------------------------------------------------------------------- categories pages
@router.get("/integrations/{integration_id}/categories")
def categories_page(
    request: Request,
    integration_id: str,
    caller: CallerDep,
    db: DbSession,
) -> Response:
    integration = load_integration(db, caller, integration_id)
    if (redirect := _finished(integration, caller)) is not None:
        return redirect
    form: CategoryForm | None = None
    edit = request.query_params.get("edit")
    if edit and caller.can_manage:
        category = service.get_category(db=db, integration=integration, category_id=edit[:64])
        if category is None:
            raise HTTPException(404)
        form = CategoryForm.from_category(category)
        form.examples = "\n\n".join(learning.examples_of(db, category.id))
    elif request.query_params.get("new") and caller.can_manage:
        form = CategoryForm.from_category(None)
    notice = None
    saved = request.query_params.get("saved")
    if saved:
        category = service.get_category(db=db, integration=integration, category_id=saved[:64])
        notice = f"Saved “{category.name}”." if category else None
        status = learning.model_status(db, integration.id) if notice else None
        if status is not None and status.on and status.rebuilding:  # (off: the page says why)
            notice = f"{notice} The learned model is being retrained in the background."
    aligned = request.query_params.get("aligned")
    if aligned and aligned.isdigit():
        count = int(aligned)
        notice = (
            f"Gave {count} categor{'y' if count == 1 else 'ies'} in Outlook Postroom's colour."
            if count
            else "Every category already has Postroom's colour in Outlook."
        )
    coloured = request.query_params.get("coloured")
    if coloured and coloured.isdigit():
        count = int(coloured)
        notice = (
            f"Created {count} categor{'y' if count == 1 else 'ies'} with colours in Outlook."
            if count
            else "Every category already exists in Outlook."
        )
    chosen = request.query_params.get("test_mailbox")
    return _categories_page(
        request,
        db,
        caller,
        integration,
        form=form,
        notice=notice,
        test_box_id=chosen[:64] if chosen else None,
    )


@router.post("/integrations/{integration_id}/categories")
async def categories_submit(request: Request, integration_id: str, caller: CallerDep) -> Response:
    data = await request.form()
    return await run_in_threadpool(_categories_submit, request, integration_id, caller, data)


def _categories_submit(
    request: Request, integration_id: str, caller: Caller, data: FormData
) -> Response:
    token = data.get("csrf_token")
    check_csrf(request, token if isinstance(token, str) else None)
    caller.require_manager()
    database = request.app.state.db
    with database.session() as db:
        integration = load_integration(db, caller, integration_id)
        if (redirect := _finished(integration, caller)) is not None:
            return redirect
        form = CategoryForm.from_submission(data)
        if form.category_id and (
            service.get_category(db=db, integration=integration, category_id=form.category_id)
            is None
        ):
            raise HTTPException(404)
        raw_action = data.get("action")
        action, _, argument = (raw_action if isinstance(raw_action, str) else "save").partition(":")
        # the mailbox whose recent emails the test shows (any mailbox of the integration)
        shown, chosen = data.get("shown_mailbox"), data.get("test_mailbox")
        box_id = chosen if action == "show_recent" else shown
        box_id = box_id[:64] if isinstance(box_id, str) else None

        def page(**kw: Any) -> Response:
            return _categories_page(
                request,
                db,
                caller,
                integration,
                form=form,
                with_colours=False,
                test_box_id=box_id,
                **kw,
            )

        if action == "show_recent":
            return page()

        if action == "add_condition":
            if len(form.rows) + len(form.groups) < MAX_CONDITIONS:
                form.rows.append(RuleRow())
            return page()
        if action == "remove_condition":
            if argument.isdigit() and int(argument) < len(form.rows):
                del form.rows[int(argument)]
            if not form.rows:
                form.rows.append(RuleRow())
            return page()
        if action == "remove_group":
            if argument.isdigit() and int(argument) < len(form.groups):
                del form.groups[int(argument)]
            return page()
        if action == "test":
            return _test(request, db, caller, integration, form, argument, box_id)
        others = service.categories(db=db, integration=integration)
        parsed, problems = parse_category(
            form, others=others, forwarding_allowed=_forwarding_allowed(integration)
        )
        if parsed is None:
            db.rollback()
            return page(errors=problems, status_code=400)
        category = service.save_category(
            db=db,
            integration=integration,
            category_id=form.category_id or None,
            name=parsed.name,
            color=parsed.color,
            folder=parsed.folder,
            forward_to=parsed.forward_to,
            description=parsed.description,
            rules=parsed.rules.to_json() if parsed.rules is not None else None,
            forward_comment=parsed.forward_comment,
        )
        changed = learning.set_examples(
            db,
            integration_id=integration.id,
            category_id=category.id,
            texts=learning.split_examples(form.examples),
        )
        if changed or learning.state_row(db, integration.id).version > 0:
            # In the background: a model that learned thousands of decisions takes a minute
            # to fit (longer with e5); the request does not wait for it.
            learning.request_refit(db, integration_id=integration.id)
            db.commit()
            defer_refit_from_thread(request, integration.id)
        return RedirectResponse(
            f"/integrations/{integration.id}/categories?saved={category.id}", status_code=303
        )


def _test(
    request: Request,
    db: Session,
    caller: Caller,
    integration: Integration,
    form: CategoryForm,
    message_id: str,
    box_id: str | None = None,
) -> Response:
    """Decide a recent email with the form's unsaved rules: read only, nothing written."""

    def page(**kw: Any) -> Response:
        return _categories_page(
            request,
            db,
            caller,
            integration,
            form=form,
            with_colours=False,
            test_box_id=box_id,
            **kw,
        )

    rules, problems = parse_rules(form)
    if problems:
        return page(errors=problems, status_code=400)
    if not message_id or len(message_id) > MAX_MESSAGE_ID:
        return page(errors=["Choose one of the recent emails to test."], status_code=400)
    box = _test_mailbox(service.mailboxes(db=db, integration=integration), box_id)
    if box is None:
        return page(errors=["This integration has no mailbox to test with."], status_code=400)
    rows = service.categories(db=db, integration=integration)
    configs = [_config(c) for c in rows if c.id != form.category_id]
    edited = CategoryConfig(
        name=form.name.strip() or "(this category)",
        color=form.color,
        folder=form.folder.strip() or None,
        forward_to=tuple(a for a in form.forward_to.replace(";", ",").split(",") if a.strip()),
        rules=rules,
    )
    position = next((i for i, c in enumerate(rows) if c.id == form.category_id), len(configs))
    configs.insert(position, edited)
    needs_body = any(c.rules is not None and "Body" in c.rules.fields for c in configs)

    async def work(client: GraphClient) -> dict[str, Any]:
        path = f"{client.mailbox_path(box.graph_user_id)}/messages/{quote(message_id, safe='')}"
        _, data, _ = await client.request(
            "GET", path, mailbox=box.graph_user_id, params={"$select": RECENT_SELECT}
        )
        if needs_body:
            _, full, _ = await client.request(
                "GET",
                path,
                mailbox=box.graph_user_id,
                params={"$select": "body"},
                headers={"Prefer": 'outlook.body-content-type="text"'},
            )
            data = {**data, "body": full.get("body")}
        return dict(data)

    from postroom.sync.engine import message_view

    try:
        message = graph_call(request, db, integration, work)
    except TokenFailure:
        return page(
            errors=["Microsoft refused the saved sign-in; reconnect the integration."],
            status_code=409,
        )
    except GraphError as exc:
        if isinstance(exc, NotFound) or exc.status == 400:  # gone, or an id that never was
            return page(
                errors=["That email is no longer in the mailbox; choose another."],
                status_code=400,
            )
        return page(errors=[f"The email could not be read ({_graph_words(exc)})."], status_code=502)
    result = explain(
        message_view(message),
        configs,
        position,
        allow_forward=_forwarding_allowed(integration),
    )
    return page(result=result)


@router.post("/integrations/{integration_id}/categories/{category_id}/delete")
def delete_category(
    request: Request,
    integration_id: str,
    category_id: str,
    caller: CallerDep,
    db: DbSession,
    csrf_token: Token = "",
) -> Response:
    check_csrf(request, csrf_token)
    caller.require_manager()
    integration = load_integration(db, caller, integration_id)
    if (redirect := _finished(integration, caller)) is not None:
        return redirect
    if not service.delete_category(db=db, integration=integration, category_id=category_id):
        raise HTTPException(404)
    return RedirectResponse(f"/integrations/{integration.id}/categories", status_code=303)


@router.post("/integrations/{integration_id}/categories/{category_id}/move")
def move_category(
    request: Request,
    integration_id: str,
    category_id: str,
    caller: CallerDep,
    db: DbSession,
    csrf_token: Token = "",
    direction: Token = "",
) -> Response:
    check_csrf(request, csrf_token)
    caller.require_manager()
    integration = load_integration(db, caller, integration_id)
    if (redirect := _finished(integration, caller)) is not None:
        return redirect
    if direction not in ("up", "down"):
        raise HTTPException(400, "Move a category up or down.")
    offset = -1 if direction == "up" else 1
    if not service.move_category(
        db=db, integration=integration, category_id=category_id, offset=offset
    ):
        raise HTTPException(404)
    return RedirectResponse(f"/integrations/{integration.id}/categories", status_code=303)


@router.post("/integrations/{integration_id}/categories/colours")
def create_colours(
    request: Request,
    integration_id: str,
    caller: CallerDep,
    db: DbSession,
    csrf_token: Token = "",
    action: Token = "",
) -> Response:
    """Create the missing master categories with their colours, or (``action=align``) give the
    ones that exist with another colour Postroom's colour (needs MailboxSettings.ReadWrite)."""
    check_csrf(request, csrf_token)
    caller.require_manager()
    integration = load_integration(db, caller, integration_id)
    if (redirect := _finished(integration, caller)) is not None:
        return redirect
    base = f"/integrations/{integration.id}/categories"
    if not _can_write_colours(integration):
        return _categories_page(
            request,
            db,
            caller,
            integration,
            errors=[
                "This connection may not change Outlook's categories (it lacks "
                "MailboxSettings.ReadWrite). Add the colours in Outlook as described below, or "
                "reconnect with “Manage category colours in Outlook”."
            ],
            status_code=403,
        )
    mailboxes = service.mailboxes(db=db, integration=integration)
    categories = service.categories(db=db, integration=integration)
    align = action == "align"
    work = _align_colours if align else _create_colours
    try:
        created, problems = graph_call(
            request, db, integration, lambda c: work(c, mailboxes, categories)
        )
    except TokenFailure:
        return RedirectResponse(base, status_code=303)
    except GraphError as exc:
        problems, created = [_graph_words(exc)], 0
    if problems:
        done = f"Changed {created}." if align else f"Created {created} with colours."
        return _categories_page(
            request,
            db,
            caller,
            integration,
            errors=[
                "Some colours could not be changed:"
                if align
                else "Some colours could not be created:",
                *problems,
            ],
            notice=done if created else None,
            status_code=502,
        )
    answer = {"aligned" if align else "coloured": created}
    return RedirectResponse(f"{base}?{urlencode(answer)}", status_code=303)


# ---------------------------------------------------------------------- activity
@dataclass(frozen=True)
class ActivityRow:
    time: str
    mailbox: str
    state: str
    decided_by: str
    category: str | None
    color: str | None
    folder: str | None
    confidence: str
    actions: list[str]
    error: str | None
    live: LiveMessage | None


@router.get("/integrations/{integration_id}/activity")
def activity_page(
    request: Request,
    integration_id: str,
    caller: CallerDep,
    db: DbSession,
) -> Response:
    integration = load_integration(db, caller, integration_id)
    params = request.query_params
    state = params.get("state") or None
    if state is not None and state not in LEDGER_STATES:
        raise HTTPException(400, "Filter by one of the states in the list.")
    raw_category = params.get("category")
    category = None if raw_category in (None, "*") else raw_category
    if category is not None and len(category) > MAX_NAME:
        raise HTTPException(400, "Filter by one of the categories in the list.")
    raw_page = params.get("page") or "1"
    if not raw_page.isdigit() or not 1 <= int(raw_page) <= 100_000:
        raise HTTPException(400, "The page number is not valid.")
    page = int(raw_page)
    entries, total = service.activity(
        db=db,
        integration=integration,
        state=state,
        category=category,
        offset=(page - 1) * PER_PAGE,
        limit=PER_PAGE,
    )
    colours = {c.name: c.color for c in service.categories(db=db, integration=integration)}
    hexes = {value: hex_ for value, _, hex_ in wizard.COLOURS}
    live: dict[tuple[str, str], LiveMessage] = {}
    subjects_problem = None
    if entries:
        if _status_notice(integration) is not None:
            subjects_problem = "Subjects are hidden until the integration is reconnected."
        else:
            wanted = [(box.graph_user_id, entry.message_id) for entry, box in entries]
            try:
                live = graph_call(request, db, integration, lambda c: fetch_subjects(c, wanted))
            except TokenFailure:
                subjects_problem = "Subjects are hidden until the integration is reconnected."
            except GraphError as exc:
                subjects_problem = f"Subjects are hidden: {_graph_words(exc)}. Reload to retry."
    rows = []
    for entry, box in entries:
        plan = entry.plan or {}
        confidence = plan.get("confidence")
        name = plan.get("category")
        rows.append(
            ActivityRow(
                time=entry.claimed_at.strftime("%Y-%m-%d %H:%M:%S"),
                mailbox=box.address,
                state=STATE_WORDS.get(entry.state, entry.state),
                decided_by=DECIDED_BY_WORDS.get(str(plan.get("decided_by")), "—")
                + (
                    " (same conversation)"
                    if "via:conversation" in (plan.get("reasons") or ())
                    else ""
                )
                + (
                    f" ({fits_none_words(plan.get('reasons') or ()) or 'none of the categories'})"
                    if plan.get("decided_by") == "model" and not name
                    else ""
                ),
                category=str(name) if name else None,
                color=hexes.get(colours.get(str(name), "")) if name else None,
                folder=plan.get("folder"),
                confidence=f"{float(confidence):.0%}"
                if isinstance(confidence, int | float)
                else "—",
                actions=[ACTION_WORDS[a] for a in entry.actions_done or [] if a in ACTION_WORDS],
                error=outcome_words(
                    state=entry.state,
                    last_error=entry.last_error,
                    plan=entry.plan,
                    actions_done=entry.actions_done,
                    attempts=entry.attempts,
                ),
                live=live.get((box.graph_user_id, entry.message_id)),
            )
        )
    pages = max(1, math.ceil(total / PER_PAGE))

    def link(number: int) -> str:
        query: dict[str, str | int] = {"state": state} if state else {}
        if category is not None:
            query["category"] = category
        query["page"] = number
        return f"/integrations/{integration.id}/activity?{urlencode(query)}"

    return render(
        request,
        "integrations/activity.html",
        nav="integrations",
        item=integration,
        rows=rows,
        total=total,
        page=page,
        pages=pages,
        newer=link(page - 1) if page > 1 else None,
        older=link(page + 1) if page < pages else None,
        states=[(s, STATE_WORDS[s]) for s in LEDGER_STATES],
        state=state or "",
        category_names=sorted(
            set(service.activity_categories(db=db, integration=integration)) | set(colours),
            key=str.casefold,
        ),
        category="*" if category is None else category,
        subjects_problem=subjects_problem,
        status_notice=_status_notice(integration),
        labels=LABELS,
    )
