"""Rules: Tekst's filter blocks as plain data, parsed strictly and evaluated purely.

A rule is a tree. A :class:`RuleGroup` combines its items with ``"all"`` (every item matches)
or ``"any"`` (at least one matches); an item is a :class:`Condition` ``(field, operator,
value)`` or another group. Stored as JSON in the category's ``rules`` column::

    {"mode": "any", "items": [
        {"field": "From.Email", "operator": "ENDS_WITH", "value": "@vendor.nl"},
        {"mode": "all", "items": [
            {"field": "Subject", "operator": "CONTAINS", "value": "factuur"},
            {"field": "HasAttachments", "operator": "EQUAL", "value": true}]}]}

Vocabulary (the operators Tekst offers per data type, :data:`OPERATORS_BY_KIND`):

* text — ``From.Email``, ``From.Name``, ``To``, ``Cc``, ``Subject``, ``Body``: ``EQUAL``,
  ``NOT_EQUALS``, ``CONTAINS``, ``NOT_CONTAINS``, ``STARTS_WITH``, ``ENDS_WITH``, ``EXISTS``,
  ``DOES_NOT_EXIST``. ``To`` and ``Cc`` are lists: a positive operator matches when *any*
  recipient's address or name matches; ``NOT_EQUALS``/``NOT_CONTAINS`` match when *none*
  does, so a negative operator is exactly the negation of its positive twin, also for an
  empty list or a missing sender.
* date — ``ReceivedDateTime``: ``BEFORE``, ``AFTER``, ``EXISTS``, ``DOES_NOT_EXIST``. The value
  is an ISO date or date-time; a naive one is UTC. A date stands for the whole UTC day:
  ``BEFORE 2024-03-01`` is before that day starts, ``AFTER 2024-03-01`` is from the next day
  on. A date-time is strict on both sides: a message received exactly then is neither.
* ``HasAttachments``: ``EQUAL``/``NOT_EQUALS`` ``true``/``false``;
  ``Importance``: ``EQUAL``/``NOT_EQUALS`` ``low``/``normal``/``high``.

Text comparison (:func:`normalise`, applied to both sides): NFKC, then ``casefold``, then
combining accents removed, then runs of white space collapsed to one space and the ends
trimmed. So ``STRASSE`` equals ``Straße``, ``ＩＮＶＯＩＣＥ`` equals ``invoice``, the Dutch
``ĳ`` ligature equals ``ij``, and ``coordinatie``/``financiele`` match the ``coördinatie``/
``financiële`` people often type without the diaeresis. Accent-insensitive on purpose: a rule
is a search, and a missing accent should not silently drop mail. An empty or blank text counts
as absent (``EXISTS`` is false for a message without subject).

Invariants:

* Everything is immutable and validated on construction; :meth:`RuleGroup.from_json` reports
  *all* problems of a stored rule at once, in plain words, as :class:`RuleError`.
* At most :data:`MAX_DEPTH` nested groups, :data:`MAX_CONDITIONS` conditions in one tree and
  :data:`MAX_VALUE_LENGTH` characters per value, so a rule is cheap to evaluate; parsing is
  bounded too (:meth:`RuleGroup.from_text`: size first, then nesting, never a RecursionError).
* An empty group never matches (neither ``"all"`` nor ``"any"``): a half-built rule in the
  editor must not catch every email.
* Evaluation is pure: no I/O, no logging; message content never ends up in an error.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, TypeAlias, cast, get_args

from postroom.processing.view import MessageView

FieldName = Literal[
    "From.Email",
    "From.Name",
    "To",
    "Cc",
    "Subject",
    "Body",
    "HasAttachments",
    "Importance",
    "ReceivedDateTime",
]
Operator = Literal[
    "EQUAL",
    "NOT_EQUALS",
    "CONTAINS",
    "NOT_CONTAINS",
    "STARTS_WITH",
    "ENDS_WITH",
    "EXISTS",
    "DOES_NOT_EXIST",
    "BEFORE",
    "AFTER",
]
Mode = Literal["all", "any"]
FieldKind = Literal["text", "date", "boolean", "importance"]
Value: TypeAlias = str | bool | None

FIELDS: tuple[FieldName, ...] = get_args(FieldName)
OPERATORS: tuple[Operator, ...] = get_args(Operator)
MODES: tuple[Mode, ...] = get_args(Mode)
IMPORTANCES = ("low", "normal", "high")

FIELD_KINDS: Mapping[FieldName, FieldKind] = {
    "From.Email": "text",
    "From.Name": "text",
    "To": "text",
    "Cc": "text",
    "Subject": "text",
    "Body": "text",
    "HasAttachments": "boolean",
    "Importance": "importance",
    "ReceivedDateTime": "date",
}
OPERATORS_BY_KIND: Mapping[FieldKind, tuple[Operator, ...]] = {
    "text": (
        "EQUAL",
        "NOT_EQUALS",
        "CONTAINS",
        "NOT_CONTAINS",
        "STARTS_WITH",
        "ENDS_WITH",
        "EXISTS",
        "DOES_NOT_EXIST",
    ),
    "date": ("BEFORE", "AFTER", "EXISTS", "DOES_NOT_EXIST"),
    "boolean": ("EQUAL", "NOT_EQUALS"),
    "importance": ("EQUAL", "NOT_EQUALS"),
}
_NO_VALUE: tuple[Operator, ...] = ("EXISTS", "DOES_NOT_EXIST")
# Tekst spells these two asymmetrically; accept the obvious other spelling.
_OPERATOR_ALIASES: Mapping[str, Operator] = {"EQUALS": "EQUAL", "NOT_EQUAL": "NOT_EQUALS"}

MAX_DEPTH = 5
MAX_CONDITIONS = 50
MAX_VALUE_LENGTH = 1000
# the JSON text of one submitted group: MAX_CONDITIONS conditions of MAX_VALUE_LENGTH characters
# fit with room to spare; anything longer is refused before it is parsed
MAX_JSON_CHARS = 2 * MAX_CONDITIONS * (MAX_VALUE_LENGTH + 100)

_WHITESPACE = re.compile(r"\s+")


class RuleError(ValueError):
    """A rule that cannot be used; ``problems`` says why, one plain sentence each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems: list[str] = list(problems)
        super().__init__("; ".join(self.problems))


def normalise(text: str) -> str:
    """The form both sides of a text comparison are reduced to (see the module docstring)."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    if not folded.isascii():
        decomposed = unicodedata.normalize("NFD", folded)
        bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
        folded = unicodedata.normalize("NFC", bare)
    return _WHITESPACE.sub(" ", folded).strip()


class MessageFacts:
    """A message's fields as rules compare them, each normalised at most once.

    Pass one to :meth:`RuleGroup.matches` when several rules are evaluated against the same
    message, so a long body is normalised once, not once per condition. In memory only.
    """

    __slots__ = ("view", "_texts")

    def __init__(self, view: MessageView) -> None:
        self.view = view
        self._texts: dict[FieldName, tuple[str, ...]] = {}

    def texts(self, name: FieldName) -> tuple[str, ...]:
        """The non-empty normalised strings of a text field (several for ``To``/``Cc``)."""
        cached = self._texts.get(name)
        if cached is None:
            cached = tuple(t for t in map(normalise, self._raw(name)) if t)
            self._texts[name] = cached
        return cached

    def _raw(self, name: FieldName) -> Iterable[str]:
        view = self.view
        if name == "From.Email":
            return (view.sender.address,) if view.sender else ()
        if name == "From.Name":
            return (view.sender.name,) if view.sender else ()
        if name in ("To", "Cc"):
            recipients = view.to if name == "To" else view.cc
            return [part for r in recipients for part in (r.address, r.name)]
        if name == "Subject":
            return (view.subject,)
        if name == "Body":
            return (view.body_text,)
        raise AssertionError(f"{name} is not a text field")

    @property
    def received(self) -> datetime | None:
        moment = self.view.received
        if moment is not None and moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment


_TEXT_TESTS: Mapping[Operator, Callable[[str, str], bool]] = {
    "EQUAL": lambda text, value: text == value,
    "CONTAINS": lambda text, value: value in text,
    "STARTS_WITH": lambda text, value: text.startswith(value),
    "ENDS_WITH": lambda text, value: text.endswith(value),
}
_NEGATIONS: Mapping[Operator, Operator] = {"NOT_EQUALS": "EQUAL", "NOT_CONTAINS": "CONTAINS"}


@dataclass(frozen=True)
class _DateValue:
    moment: datetime  # UTC; for a date, the start of that UTC day
    whole_day: bool


def _check_condition(name: str, operator: str, value: object) -> tuple[Value, list[str]]:
    """Validate one condition; returns its canonical value and the problems found."""
    if name not in FIELDS:
        return None, [f"unknown field {name!r}; use one of {', '.join(FIELDS)}"]
    kind = FIELD_KINDS[name]
    allowed = OPERATORS_BY_KIND[kind]
    if operator not in OPERATORS:
        return None, [f"unknown operator {operator!r}; use one of {', '.join(allowed)}"]
    if operator not in allowed:
        return None, [f"{operator} cannot be used with {name}; use one of {', '.join(allowed)}"]
    if operator in _NO_VALUE:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None, []
        return None, [f"{name} {operator} takes no value"]
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, [f"{name} {operator} needs a value"]
    if kind == "boolean":
        if isinstance(value, bool):
            return value, []
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true", []
        return None, [f"{name} must be compared with true or false"]
    if not isinstance(value, str):
        return None, [f"the value for {name} must be text"]
    text = value.strip()
    if len(text) > MAX_VALUE_LENGTH:
        return None, [f"the value for {name} is longer than {MAX_VALUE_LENGTH} characters"]
    if "\x00" in text:  # no field of an email holds one; PostgreSQL cannot store it in text
        return None, [f"the value for {name} may not contain the NUL character"]
    if kind == "importance":
        if text.lower() not in IMPORTANCES:
            return None, [f"Importance must be one of {', '.join(IMPORTANCES)}"]
        return text.lower(), []
    if kind == "date":
        if _parse_date(text) is None:
            return None, [
                f"{text!r} is not a date; write 2024-03-01 or 2024-03-01T14:30 (UTC) "
                "or 2024-03-01T14:30+01:00"
            ]
        return text, []
    if not normalise(text):
        return None, [f"{name} {operator} needs a value"]
    return text, []


def _parse_date(text: str) -> _DateValue | None:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        return _DateValue(datetime.combine(day, time(), tzinfo=UTC), whole_day=True)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return _DateValue(moment.astimezone(UTC), whole_day=False)


@dataclass(frozen=True)
class Condition:
    """One filter block: ``field operator value``. Raises :class:`RuleError` when invalid.

    The value is kept in canonical form: text stripped, ``HasAttachments`` a bool,
    ``Importance`` lower case, dates as written, ``None`` for ``EXISTS``/``DOES_NOT_EXIST``.
    """

    field: FieldName
    operator: Operator
    value: Value = None
    _compiled: str | _DateValue | None = dataclass_field(
        default=None, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        value, problems = _check_condition(self.field, self.operator, self.value)
        if problems:
            raise RuleError(problems)
        object.__setattr__(self, "value", value)
        if isinstance(value, str):
            kind = FIELD_KINDS[self.field]
            compiled = _parse_date(value) if kind == "date" else normalise(value)
            object.__setattr__(self, "_compiled", compiled)

    def matches(self, message: MessageView | MessageFacts) -> bool:
        facts = message if isinstance(message, MessageFacts) else MessageFacts(message)
        kind = FIELD_KINDS[self.field]
        if kind == "text":
            return self._text_matches(facts.texts(self.field))
        if kind == "date":
            return self._date_matches(facts.received)
        if kind == "boolean":
            equal = facts.view.has_attachments == self.value
        else:
            equal = normalise(facts.view.importance) == self.value
        return equal if self.operator == "EQUAL" else not equal

    def _text_matches(self, texts: tuple[str, ...]) -> bool:
        if self.operator == "EXISTS":
            return bool(texts)
        if self.operator == "DOES_NOT_EXIST":
            return not texts
        value = cast(str, self._compiled)
        positive = _NEGATIONS.get(self.operator)
        test = _TEXT_TESTS[positive or self.operator]
        found = any(test(text, value) for text in texts)
        return not found if positive else found

    def _date_matches(self, received: datetime | None) -> bool:
        if self.operator == "EXISTS":
            return received is not None
        if self.operator == "DOES_NOT_EXIST":
            return received is None
        if received is None:
            return False
        bound = cast(_DateValue, self._compiled)
        if self.operator == "BEFORE":
            return received < bound.moment
        if bound.whole_day:
            return received >= bound.moment + timedelta(days=1)
        return received > bound.moment

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"field": self.field, "operator": self.operator}
        if self.value is not None:
            data["value"] = self.value
        return data


@dataclass(frozen=True)
class RuleGroup:
    """Items combined with ``"all"`` or ``"any"``; groups nest up to :data:`MAX_DEPTH`."""

    mode: Mode
    items: tuple[Condition | RuleGroup, ...] = ()
    depth: int = dataclass_field(default=1, init=False, repr=False, compare=False)
    condition_count: int = dataclass_field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "items", tuple(self.items))
        problems = []
        if self.mode not in MODES:
            problems.append(f"unknown mode {self.mode!r}; use all or any")
        groups = [i for i in self.items if isinstance(i, RuleGroup)]
        depth = 1 + max((g.depth for g in groups), default=0)
        count = sum(g.condition_count for g in groups) + sum(
            isinstance(i, Condition) for i in self.items
        )
        if any(not isinstance(i, Condition | RuleGroup) for i in self.items):
            problems.append("a group holds only conditions and groups")
        if depth > MAX_DEPTH:
            problems.append(f"groups are nested more than {MAX_DEPTH} deep")
        if count > MAX_CONDITIONS:
            problems.append(f"a rule has {count} conditions; at most {MAX_CONDITIONS} allowed")
        if problems:
            raise RuleError(problems)
        object.__setattr__(self, "depth", depth)
        object.__setattr__(self, "condition_count", count)

    def matches(self, message: MessageView | MessageFacts) -> bool:
        """Whether the message passes this group. An empty group never matches."""
        if not self.items:
            return False
        facts = message if isinstance(message, MessageFacts) else MessageFacts(message)
        results = (item.matches(facts) for item in self.items)
        return all(results) if self.mode == "all" else any(results)

    def matched(self, message: MessageView | MessageFacts) -> tuple[Condition, ...]:
        """The conditions that made the message pass (empty when it does not): every item of
        an ``all`` group, the first matching item of an ``any`` group - what the activity view
        shows as the reason."""
        if not self.items:
            return ()
        facts = message if isinstance(message, MessageFacts) else MessageFacts(message)
        found: list[Condition] = []
        for item in self.items:
            part = (
                item.matched(facts)
                if isinstance(item, RuleGroup)
                else ((item,) if item.matches(facts) else ())
            )
            if self.mode == "any" and part:
                return part
            if self.mode == "all" and not part:
                return ()
            found.extend(part)
        return tuple(found) if self.mode == "all" else ()

    @property
    def fields(self) -> frozenset[FieldName]:
        """Every field the rule looks at (e.g. to fetch the body only when a rule needs it)."""
        found: set[FieldName] = set()
        for item in self.items:
            found |= item.fields if isinstance(item, RuleGroup) else {item.field}
        return frozenset(found)

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "items": [item.to_json() for item in self.items]}

    @classmethod
    def from_text(cls, raw: str) -> RuleGroup:
        """Parse a rule submitted as JSON text (a nested group in the editor): bounded in size
        and nesting whatever arrives; raises :class:`RuleError`."""
        if len(raw) > MAX_JSON_CHARS:
            raise RuleError([f"the rule is longer than {MAX_JSON_CHARS} characters"])
        try:
            data = json.loads(raw)
        except RecursionError:  # nesting beyond the interpreter's limit
            raise RuleError([f"groups are nested more than {MAX_DEPTH} deep"]) from None
        except ValueError:
            raise RuleError(["the rule is not valid JSON"]) from None
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: object) -> RuleGroup:
        """Parse a stored or submitted rule; raises :class:`RuleError` listing every problem."""
        parser = _Parser()
        group = parser.group(data, path=(), depth=1)
        if parser.conditions > MAX_CONDITIONS:
            parser.problems.append(
                f"the rule has {parser.conditions} conditions; at most {MAX_CONDITIONS} allowed"
            )
        if parser.problems or group is None:
            raise RuleError(parser.problems or ["the rule is not valid"])
        return group


class _Parser:
    """Collects every problem in a JSON rule instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.conditions = 0
        self._deep = False

    def group(self, data: object, path: tuple[int, ...], depth: int) -> RuleGroup | None:
        where = f"group {_label(path)}" if path else "the rule"
        if not isinstance(data, dict):
            self.problems.append(f"{where} must be an object with mode and items")
            return None
        if depth > MAX_DEPTH:
            if not self._deep:
                self.problems.append(f"groups are nested more than {MAX_DEPTH} deep")
                self._deep = True
            return None
        mode = data.get("mode")
        canonical_mode = mode.strip().lower() if isinstance(mode, str) else mode
        if canonical_mode not in MODES:
            self.problems.append(f"{where}: mode must be all or any, not {mode!r}")
        raw_items = data.get("items", [])
        if not isinstance(raw_items, list):
            self.problems.append(f"{where}: items must be a list")
            raw_items = []
        items: list[Condition | RuleGroup | None] = []
        for index, raw in enumerate(raw_items, start=1):
            child = (*path, index)
            if isinstance(raw, dict) and ("items" in raw or "mode" in raw):
                items.append(self.group(raw, child, depth + 1))
            elif isinstance(raw, dict) and ("field" in raw or "operator" in raw):
                items.append(self.condition(raw, child))
            else:
                self.problems.append(
                    f"item {_label(child)} is neither a condition (field, operator, value) "
                    "nor a group (mode, items)"
                )
        if self.problems or self.conditions > MAX_CONDITIONS:
            return None  # from_json reports; building would only raise again
        return RuleGroup(cast(Mode, canonical_mode), tuple(i for i in items if i is not None))

    def condition(self, data: Mapping[str, object], path: tuple[int, ...]) -> Condition | None:
        self.conditions += 1
        name, operator = data.get("field"), data.get("operator")
        if not isinstance(name, str) or not isinstance(operator, str):
            self.problems.append(f"condition {_label(path)} needs a field and an operator")
            return None
        canonical_name = _FIELDS_BY_KEY.get(name.strip().casefold(), name)
        canonical_op = operator.strip().upper()
        canonical_op = _OPERATOR_ALIASES.get(canonical_op, canonical_op)
        value, problems = _check_condition(canonical_name, canonical_op, data.get("value"))
        if problems:
            self.problems.extend(f"condition {_label(path)}: {p}" for p in problems)
            return None
        return Condition(cast(FieldName, canonical_name), cast(Operator, canonical_op), value)


_FIELDS_BY_KEY: Mapping[str, FieldName] = {name.casefold(): name for name in FIELDS}


def _label(path: tuple[int, ...]) -> str:
    return ".".join(map(str, path))
