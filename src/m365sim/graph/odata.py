"""OData system query options as Outlook's Graph endpoints parse them.

``$select``
  :func:`select_fields`: a comma-separated list of property names, matched case-insensitively;
  ``id`` is always returned. An unknown name answers 400 with the property and the entity type
  in the message. Outlook resources answer ``RequestBroker--ParseUri`` ("Could not find a
  property named 'x' on type 'microsoft.graph.message'."), directory resources ``BadRequest``.

``$filter``
  :func:`parse_filter` parses the subset of OData 4 expressions Outlook supports on messages
  and folders into a small tree (:class:`Node`): comparisons ``eq ne gt ge lt le`` between a
  property and a literal (``'text'`` with ``''`` escapes, ``true``/``false``, ``null``,
  numbers, unquoted ISO 8601 date-times or dates), ``and``/``or``/``not``, parentheses, the
  string functions ``startswith``/``endswith``/``contains`` and lambdas over string
  collections (``categories/any(c:c eq 'Invoices')``). A bare boolean property means
  ``prop eq true``. Syntax errors answer 400 ``BadRequest`` "Invalid filter clause: Syntax
  error at position N in '...'." (Graph's "Invalid filter clause" followed by ODataLib's
  detail); unknown properties answer ``RequestBroker--ParseUri`` like ``$select``; a literal of
  the wrong type answers ODataLib's "A binary operator with incompatible types was detected."

``$orderby``
  :func:`parse_orderby`: ``prop [asc|desc], ...``. :func:`check_inefficient_filter` applies
  Exchange's rule (graph.md 3.3): with a ``$filter``, every ``$orderby`` property must also be
  in the filter, in the same order, and before any other filter property, else 400
  ``InefficientFilter`` "The restriction or sort order is too complex for this operation.".

``$top`` / ``$skip`` / ``$skiptoken``
  :func:`parse_top` (1..``max_page_size``), :func:`parse_skip`, and opaque page tokens
  (:func:`encode_token` / :func:`decode_token`: base64url JSON; clients replay
  ``@odata.nextLink`` verbatim and never parse it).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from m365sim.clock import parse_iso
from m365sim.errors import GraphError

PARSE_URI = "RequestBroker--ParseUri"


def select_fields(
    query: dict[str, str],
    *,
    allowed: Iterable[str],
    default: Iterable[str],
    type_name: str = "microsoft.graph.entity",
    code: str = "BadRequest",
) -> list[str]:
    """Fields named by ``$select`` (``id`` always included), or ``default``.

    Unknown names answer 400 as Graph does:
    "Could not find a property named 'x' on type 'microsoft.graph.user'."
    """
    raw = query.get("$select")
    if raw is None or not raw.strip():
        return list(default)
    by_lower = {name.lower(): name for name in allowed}
    fields: list[str] = []
    for part in raw.split(","):
        name = part.strip()
        if not name:
            continue
        real = by_lower.get(name.lower())
        if real is None:
            raise unknown_property(name, type_name, code)
        if real not in fields:
            fields.append(real)
    if "id" in by_lower and "id" not in fields:
        fields.append("id")
    return fields


def unknown_property(name: str, type_name: str, code: str = PARSE_URI) -> GraphError:
    return GraphError(400, code, f"Could not find a property named '{name}' on type '{type_name}'.")


# ------------------------------------------------------------------------------- properties

Kind = Literal["string", "bool", "datetime", "int", "enum", "strings"]

EDM_NAMES: dict[Kind, str] = {
    "string": "Edm.String",
    "bool": "Edm.Boolean",
    "datetime": "Edm.DateTimeOffset",
    "int": "Edm.Int32",
    "enum": "Edm.String",  # replaced by the enum's own name in messages
    "strings": "Collection(Edm.String)",
}


@dataclass(frozen=True)
class Prop:
    """A filterable/sortable property: its path as Graph spells it and its value kind."""

    name: str  # e.g. "receivedDateTime", "from/emailAddress/address"
    kind: Kind
    enum_type: str | None = None  # e.g. "microsoft.graph.importance"

    @property
    def edm(self) -> str:
        return self.enum_type or EDM_NAMES[self.kind]


@dataclass(frozen=True)
class EntityInfo:
    """What ``$filter``/``$orderby`` may name on one entity type."""

    type_name: str  # "microsoft.graph.message"
    props: Mapping[str, Prop]  # lower-cased path -> property

    def prop(self, name: str) -> Prop:
        found = self.props.get(name.lower())
        if found is None:
            raise unknown_property(name.split("/")[0], self.type_name)
        return found


# --------------------------------------------------------------------------------- filter

Resolver = Callable[[str], Any]  # property name -> value of the entity being tested


class Node:
    """A ``$filter`` expression."""

    def evaluate(self, resolve: Resolver) -> bool:
        raise NotImplementedError


@dataclass
class Compare(Node):
    prop: Prop | None  # None: the lambda variable
    op: str  # eq ne gt ge lt le
    value: Any

    def evaluate(self, resolve: Resolver) -> bool:
        left = resolve(self.prop.name if self.prop else "")
        return _compare(left, self.op, self.value)


@dataclass
class Function(Node):
    name: str  # startswith endswith contains
    prop: Prop | None
    value: str

    def evaluate(self, resolve: Resolver) -> bool:
        left = resolve(self.prop.name if self.prop else "")
        if not isinstance(left, str):
            return False
        text, needle = left.lower(), self.value.lower()
        if self.name == "startswith":
            return text.startswith(needle)
        if self.name == "endswith":
            return text.endswith(needle)
        return needle in text


@dataclass
class AnyOf(Node):
    """``prop/any(v: <predicate over v>)``; ``all`` when ``every``."""

    prop: Prop
    predicate: Node
    every: bool = False

    def evaluate(self, resolve: Resolver) -> bool:
        items = resolve(self.prop.name) or []
        results = (self.predicate.evaluate(_constant(item)) for item in items)
        return all(results) if self.every else any(results)


def _constant(value: Any) -> Resolver:
    """The resolver inside a lambda: the variable is the collection item."""

    def resolve(_name: str) -> Any:
        return value

    return resolve


@dataclass
class BoolOp(Node):
    """``a and b and c`` / ``a or b or c``: n-ary, so a long chain never recurses."""

    op: Literal["and", "or"]
    operands: list[Node]

    def evaluate(self, resolve: Resolver) -> bool:
        if self.op == "and":
            return all(o.evaluate(resolve) for o in self.operands)
        return any(o.evaluate(resolve) for o in self.operands)


@dataclass
class Not(Node):
    inner: Node

    def evaluate(self, resolve: Resolver) -> bool:
        return not self.inner.evaluate(resolve)


@dataclass
class Filter:
    """A parsed ``$filter``: the expression and the properties it names, in order."""

    root: Node
    properties: list[Prop] = field(default_factory=list)

    def matches(self, resolve: Resolver) -> bool:
        return self.root.evaluate(resolve)


def _compare(left: Any, op: str, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        left, right = left.lower(), right.lower()
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if left is None or right is None:
        return False
    try:
        if op == "gt":
            return bool(left > right)
        if op == "ge":
            return bool(left >= right)
        if op == "lt":
            return bool(left < right)
        return bool(left <= right)
    except TypeError:
        return False


_OP_KINDS = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}
        (?:T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|z|[+-]\d{2}:\d{2})?)?)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<ident>[A-Za-z_$@][A-Za-z0-9_$@./]*)
  | (?P<punct>[(),:])
    """,
    re.VERBOSE,
)


_STRING = re.compile(r"'(?:[^']|'')*'")


@dataclass
class _Token:
    kind: str  # string datetime number ident punct end
    text: str
    pos: int


@dataclass
class _Literal:
    kind: str  # string datetime bool null number
    value: Any

    @property
    def edm(self) -> str:
        return {
            "string": "Edm.String",
            "datetime": "Edm.DateTimeOffset",
            "bool": "Edm.Boolean",
            "null": "null",
            "number": "Edm.Int32",
        }[self.kind]


def _invalid_filter(detail: str) -> GraphError:
    return GraphError(400, "BadRequest", f"Invalid filter clause: {detail}")


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        if text[pos] == "'" and not _STRING.match(text, pos):
            raise _invalid_filter(f"Unterminated string literal at position {pos} in '{text}'.")
        match = _TOKEN.match(text, pos)
        if match is None:
            raise _invalid_filter(f"Syntax error at position {pos} in '{text}'.")
        kind = match.lastgroup or "ws"
        if kind != "ws":
            tokens.append(_Token(kind, match.group(), pos))
        pos = match.end()
    tokens.append(_Token("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str, entity: EntityInfo, max_depth: int, max_terms: int) -> None:
        self.text = text
        self.entity = entity
        self.tokens = _tokenize(text)
        self.index = 0
        self.properties: list[Prop] = []
        self.lambda_var: str | None = None
        self.max_depth = max_depth
        self.max_terms = max_terms
        self.depth = 0
        self.terms = 0

    def enter(self) -> None:
        """One more nesting level (brackets, ``not``, a lambda), within ``max_depth``."""
        self.depth += 1
        if self.depth > self.max_depth:
            raise _too_deep()

    def term(self) -> None:
        """One more comparison, function call or lambda, within ``max_terms``."""
        self.terms += 1
        if self.terms > self.max_terms:
            raise GraphError(
                400,
                "ErrorInvalidUrlQueryFilter",
                f"The query filter is too complex: it has more than {self.max_terms} terms.",
            )

    # -- token helpers
    @property
    def current(self) -> _Token:
        return self.tokens[self.index]

    def advance(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != "end":
            self.index += 1
        return token

    def syntax_error(self, token: _Token | None = None) -> GraphError:
        token = token or self.current
        if token.kind == "end":
            return _invalid_filter(f"Expression expected at position {token.pos} in '{self.text}'.")
        return _invalid_filter(f"Syntax error at position {token.pos} in '{self.text}'.")

    def is_word(self, *words: str) -> bool:
        return self.current.kind == "ident" and self.current.text.lower() in words

    def expect_punct(self, char: str) -> None:
        if self.current.kind != "punct" or self.current.text != char:
            raise self.syntax_error()
        self.advance()

    # -- grammar
    def parse(self) -> Filter:
        if self.current.kind == "end":
            raise self.syntax_error()
        root = self.parse_or()
        if self.current.kind != "end":
            raise self.syntax_error()
        return Filter(root, self.properties)

    def parse_or(self) -> Node:
        operands = [self.parse_and()]
        while self.is_word("or"):
            self.advance()
            operands.append(self.parse_and())
        return operands[0] if len(operands) == 1 else BoolOp("or", operands)

    def parse_and(self) -> Node:
        operands = [self.parse_not()]
        while self.is_word("and"):
            self.advance()
            operands.append(self.parse_not())
        return operands[0] if len(operands) == 1 else BoolOp("and", operands)

    def parse_not(self) -> Node:
        if self.is_word("not"):
            self.advance()
            self.enter()
            node = Not(self.parse_not())
            self.depth -= 1
            return node
        return self.parse_primary()

    def parse_primary(self) -> Node:
        token = self.current
        if token.kind == "punct" and token.text == "(":
            self.advance()
            self.enter()
            node = self.parse_or()
            self.expect_punct(")")
            self.depth -= 1
            return node
        self.term()
        if token.kind != "ident":
            raise self.syntax_error()
        lowered = token.text.lower()
        if lowered in ("startswith", "endswith", "contains"):
            return self.parse_function(lowered)
        if lowered.endswith(("/any", "/all")) and self.tokens[self.index + 1].text == "(":
            return self.parse_lambda()
        self.advance()
        prop = self.resolve_operand(token)
        if self.current.kind == "ident" and self.current.text.lower() in _OP_KINDS:
            op_token = self.advance()
            op = op_token.text.lower()
            literal = self.parse_literal()
            self.check_types(prop, literal, op)
            return Compare(prop, op, literal.value)
        if prop is not None and prop.kind == "bool":
            return Compare(prop, "eq", True)
        raise self.syntax_error()

    def resolve_operand(self, token: _Token) -> Prop | None:
        if self.lambda_var is not None and token.text == self.lambda_var:
            return None
        if token.text.lower() in ("true", "false", "null"):
            raise self.syntax_error(token)
        prop = self.entity.prop(token.text)
        if prop.kind == "strings" and self.lambda_var is None:
            # collections can only be tested through any()/all()
            raise _invalid_filter(
                f"The operand for a binary operator '{prop.name}' is not a single value. "
                "Binary operators require both operands to be single values."
            )
        if prop not in self.properties:
            self.properties.append(prop)
        return prop

    def parse_function(self, name: str) -> Node:
        self.advance()
        self.expect_punct("(")
        token = self.advance()
        if token.kind != "ident":
            raise self.syntax_error(token)
        prop = self.resolve_operand(token)
        self.expect_punct(",")
        literal = self.parse_literal()
        self.expect_punct(")")
        if literal.kind != "string" or (prop is not None and prop.kind not in ("string", "enum")):
            raise _invalid_filter(
                f"No function signature for the function with name '{name}' matches the "
                "specified arguments."
            )
        return Function(name, prop, literal.value)

    def parse_lambda(self) -> Node:
        token = self.advance()
        path, _, kind = token.text.rpartition("/")
        prop = self.entity.prop(path)
        if prop.kind != "strings":
            raise _invalid_filter(
                f"The parent value for the Any/All query expression '{path}' is not a collection."
            )
        if prop not in self.properties:
            self.properties.append(prop)
        self.enter()
        self.expect_punct("(")
        var = self.advance()
        if var.kind != "ident" or "/" in var.text:
            raise self.syntax_error(var)
        self.expect_punct(":")
        outer = self.lambda_var
        self.lambda_var = var.text
        predicate = self.parse_or()
        self.lambda_var = outer
        self.expect_punct(")")
        self.depth -= 1
        return AnyOf(prop, predicate, every=kind.lower() == "all")

    def parse_literal(self) -> _Literal:
        token = self.advance()
        if token.kind == "string":
            return _Literal("string", token.text[1:-1].replace("''", "'"))
        if token.kind == "datetime":
            try:
                return _Literal("datetime", parse_datetime_literal(token.text))
            except ValueError as exc:
                raise _invalid_filter(
                    f"The DateTimeOffset text '{token.text}' should be in format "
                    "'yyyy-mm-ddThh:mm:ss('.'s+)?(zzzzzz)?' and each field value is within "
                    "valid range."
                ) from exc
        if token.kind == "number":
            return _Literal("number", float(token.text) if "." in token.text else int(token.text))
        if token.kind == "ident" and token.text.lower() in ("true", "false"):
            return _Literal("bool", token.text.lower() == "true")
        if token.kind == "ident" and token.text.lower() == "null":
            return _Literal("null", None)
        raise self.syntax_error(token)

    def check_types(self, prop: Prop | None, literal: _Literal, op: str) -> None:
        if literal.kind == "null":
            return
        kind = prop.kind if prop is not None else "string"  # lambda variables: strings
        expected = {
            "string": ("string",),
            "enum": ("string",),
            "strings": ("string",),
            "bool": ("bool",),
            "datetime": ("datetime",),
            "int": ("number",),
        }[kind]
        if literal.kind not in expected:
            left = prop.edm if prop is not None else "Edm.String"
            raise _invalid_filter(
                "A binary operator with incompatible types was detected. Found operand types "
                f"'{left}' and '{literal.edm}' for operator kind '{_OP_KINDS[op]}'."
            )


def parse_datetime_literal(text: str) -> datetime:
    """An OData date-time literal (or a bare date, meaning midnight UTC) as an aware UTC time."""
    if len(text) == 10:  # a date: midnight UTC
        return datetime.fromisoformat(text).replace(tzinfo=UTC)
    return parse_iso(text)


def parse_filter(
    text: str, entity: EntityInfo, *, max_depth: int = 100, max_terms: int = 500
) -> Filter:
    """Parse ``$filter`` for ``entity`` or raise Graph's 400 (also for a filter nested deeper
    than ``max_depth`` levels or with more than ``max_terms`` terms)."""
    try:
        return _Parser(text, entity, max_depth, max_terms).parse()
    except RecursionError as exc:  # a max_depth set beyond what Python's stack allows
        raise _too_deep() from exc


def _too_deep() -> GraphError:
    return _invalid_filter("The recursion limit has been exceeded.")


# -------------------------------------------------------------------------------- orderby


@dataclass(frozen=True)
class OrderBy:
    prop: Prop
    descending: bool


def parse_orderby(text: str, entity: EntityInfo) -> list[OrderBy]:
    order: list[OrderBy] = []
    for clause in text.split(","):
        words = clause.split()
        if not words or len(words) > 2:
            position = text.find(clause.strip()) if clause.strip() else len(text)
            raise GraphError(
                400, "BadRequest", f"Syntax error at position {max(position, 0)} in '{text}'."
            )
        prop = entity.prop(words[0])
        direction = words[1].lower() if len(words) == 2 else "asc"
        if direction not in ("asc", "desc"):
            raise GraphError(
                400,
                "BadRequest",
                f"Syntax error at position {text.find(words[1])} in '{text}'.",
            )
        order.append(OrderBy(prop, direction == "desc"))
    return order


def check_inefficient_filter(parsed: Filter | None, order: list[OrderBy]) -> None:
    """Exchange's restriction rule for ``$filter`` together with ``$orderby`` (graph.md 3.3)."""
    if parsed is None or not order:
        return
    wanted = [o.prop.name for o in order]
    named = [p.name for p in parsed.properties]
    if named[: len(wanted)] != wanted:
        raise GraphError(
            400,
            "InefficientFilter",
            "The restriction or sort order is too complex for this operation.",
        )


def sort_key(order: list[OrderBy], resolve: Callable[[Any, str], Any]) -> Callable[[Any], Any]:
    """A key for ``sorted`` honouring mixed directions; ``None`` values sort first ascending."""

    def key(item: Any) -> tuple[Any, ...]:
        parts: list[Any] = []
        for clause in order:
            value = resolve(item, clause.prop.name)
            parts.append(_Directional(value, clause.descending))
        return tuple(parts)

    return key


class _Directional:
    __slots__ = ("value", "descending")

    def __init__(self, value: Any, descending: bool) -> None:
        self.value = value.lower() if isinstance(value, str) else value
        self.descending = descending

    def __lt__(self, other: _Directional) -> bool:
        a, b = self.value, other.value
        if a == b:
            return False
        if a is None:
            less = True
        elif b is None:
            less = False
        else:
            less = bool(a < b)
        return not less if self.descending else less

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Directional) and self.value == other.value

    __hash__ = None  # type: ignore[assignment]


# ------------------------------------------------------------------------ top, skip, tokens


def parse_top(query: Mapping[str, str], *, maximum: int) -> int | None:
    raw = query.get("$top")
    if raw is None:
        return None
    text = raw.strip()
    if not text.lstrip("-").isdigit():
        raise GraphError(
            400,
            "BadRequest",
            f"Invalid value '{raw}' for $top query option found. The $top query option "
            "requires a non-negative integer value.",
        )
    value = int(text)
    if not 1 <= value <= maximum:
        raise GraphError(
            400,
            "ErrorInvalidUrlQuery",
            f"The value '{raw}' of the query parameter '$top' is not valid; it must be between "
            f"1 and {maximum}.",
        )
    return value


def parse_skip(query: Mapping[str, str]) -> int:
    raw = query.get("$skip")
    if raw is None:
        return 0
    if not raw.strip().isdigit():
        raise GraphError(
            400,
            "BadRequest",
            f"Invalid value '{raw}' for $skip query option found. The $skip query option "
            "requires a non-negative integer value.",
        )
    return int(raw.strip())


def encode_token(data: Mapping[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> dict[str, Any] | None:
    """The token's content, or ``None`` when it is not one of ours."""
    try:
        padded = token.strip() + "=" * (-len(token.strip()) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None
