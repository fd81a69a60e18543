"""``$search`` on message lists: the KQL subset mail clients send.

``GET /messages?$search="invoice"`` (the value in double quotes, as Microsoft documents it; an
unquoted value is accepted too). What is understood:

* free words: each must match one of the default search properties, ``from`` (name or
  address), ``subject`` and ``body``; several words must all match (KQL's implicit AND);
* ``"a phrase"`` (inside the outer quotes written ``\\"a phrase\\"``, or with single
  quotes): the words in that order;
* property restrictions ``from:``, ``to:``, ``cc:``, ``bcc:``, ``participants:`` (from, to,
  cc, bcc), ``subject:``, ``body:``, ``attachment:`` (attachment names) and
  ``hasAttachments:true|false``; a value with ``@`` matches addresses by substring;
* ``AND``, ``OR`` (upper case, as in KQL) and ``NOT`` / a leading ``-``.

A word matches a text when a word of the text starts with it, case-insensitively (KQL's
prefix matching for mail). Results come newest ``sentDateTime`` first, Graph's order for
searches.

Graph's restrictions (errors are 400 ``ErrorInvalidUrlQuery``; the wording is ours, the
restriction is documented): ``$search`` cannot be combined with ``$filter`` or ``$orderby``,
nor with ``$skip`` (search results page with ``$skiptoken``). A search that is empty after
its quotes are removed answers 400 too. Not emulated: relevance ranking, the 1,000 / 250
result caps, stemming, searching inside attachments' contents.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from m365sim.errors import GraphError
from m365sim.graph.serialize import html_to_text
from m365sim.store import Message

_WORD = re.compile(r"\w+", re.UNICODE)
_PROPERTIES = {
    "from",
    "to",
    "cc",
    "bcc",
    "participants",
    "subject",
    "body",
    "attachment",
    "attachments",
    "hasattachment",
    "hasattachments",
}
MAX_SEARCH_LENGTH = 4096

Test = Callable[[Message], bool]


def invalid(message: str) -> GraphError:
    return GraphError(400, "ErrorInvalidUrlQuery", message)


def check_combination(query: Mapping[str, str]) -> None:
    """Graph refuses ``$search`` together with ``$filter``, ``$orderby`` or ``$skip``."""
    for option, word in (("$filter", "Filter"), ("$orderby", "OrderBy"), ("$skip", "Skip")):
        if option in query:
            raise invalid(
                f"The query parameter '{word}' is invalid: it cannot be combined with $search."
            )


@dataclass
class _Token:
    kind: str  # word phrase op lparen rparen
    text: str
    prop: str | None = None
    negated: bool = False


def _unquote(raw: str) -> str:
    text = raw.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1].replace('\\"', '"')
    return text


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char.isspace():
            pos += 1
            continue
        if char in "()":
            tokens.append(_Token("lparen" if char == "(" else "rparen", char))
            pos += 1
            continue
        negated = False
        if char == "-" and pos + 1 < len(text) and not text[pos + 1].isspace():
            negated = True
            pos += 1
        prop: str | None = None
        match = re.match(r"([A-Za-z]+):", text[pos:])
        if match and match.group(1).lower() in _PROPERTIES:
            prop = match.group(1).lower()
            pos += match.end()
        if pos < len(text) and text[pos] in "\"'":
            quote = text[pos]
            end = text.find(quote, pos + 1)
            if end < 0:
                raise invalid("The search query has an unterminated quoted phrase.")
            tokens.append(_Token("phrase", text[pos + 1 : end], prop, negated))
            pos = end + 1
            continue
        end = pos
        while end < len(text) and not text[end].isspace() and text[end] not in "()":
            end += 1
        word = text[pos:end]
        pos = end
        if prop is None and not negated and word in ("AND", "OR", "NOT"):
            tokens.append(_Token("op", word))
        elif word or prop is not None:
            tokens.append(_Token("word", word, prop, negated))
    return tokens


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.depth = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def parse_or(self) -> Test:
        parts = [self.parse_and()]
        while (token := self.peek()) is not None and token.kind == "op" and token.text == "OR":
            self.index += 1
            parts.append(self.parse_and())
        return parts[0] if len(parts) == 1 else (lambda m: any(p(m) for p in parts))

    def parse_and(self) -> Test:
        parts = [self.parse_not()]
        while (token := self.peek()) is not None and not (
            token.kind == "rparen" or (token.kind == "op" and token.text == "OR")
        ):
            if token.kind == "op" and token.text == "AND":
                self.index += 1
            parts.append(self.parse_not())
        return parts[0] if len(parts) == 1 else (lambda m: all(p(m) for p in parts))

    def parse_not(self) -> Test:
        token = self.peek()
        if token is not None and token.kind == "op" and token.text == "NOT":
            self.index += 1
            inner = self.parse_not()
            return lambda m: not inner(m)
        return self.parse_primary()

    def parse_primary(self) -> Test:
        token = self.peek()
        if token is None or token.kind in ("rparen", "op"):
            raise invalid("The search query is not valid KQL: a term was expected.")
        self.index += 1
        if token.kind == "lparen":
            self.depth += 1
            if self.depth > 20:
                raise invalid("The search query is nested too deeply.")
            inner = self.parse_or()
            closing = self.peek()
            if closing is None or closing.kind != "rparen":
                raise invalid("The search query is not valid KQL: ')' was expected.")
            self.index += 1
            self.depth -= 1
            return inner
        test = _term(token)
        if token.negated:
            return lambda m: not test(m)
        return test


def parse_search(raw: str) -> Test:
    """A predicate over messages for a ``$search`` value, or Graph's 400."""
    if len(raw) > MAX_SEARCH_LENGTH:
        raise invalid(f"The search query is longer than {MAX_SEARCH_LENGTH} characters.")
    text = _unquote(raw)
    tokens = _tokens(text)
    if not tokens:
        raise invalid("The $search query option must not be empty.")
    parser = _Parser(tokens)
    test = parser.parse_or()
    if parser.peek() is not None:
        raise invalid("The search query is not valid KQL: unexpected ')'.")
    return test


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _matches_text(needle: _Token, text: str) -> bool:
    wanted = _words(needle.text)
    if not wanted:
        return True
    words = _words(text)
    if needle.kind == "phrase" or len(wanted) > 1:
        size = len(wanted)
        return any(
            all(
                words[i + k].startswith(wanted[k]) if k == size - 1 else words[i + k] == wanted[k]
                for k in range(size)
            )
            for i in range(len(words) - size + 1)
        )
    return any(w.startswith(wanted[0]) for w in words)


def _matches_people(needle: _Token, people: list[tuple[str, str]]) -> bool:
    value = needle.text.lower()
    if "@" in value:
        return any(value in address.lower() for _, address in people)
    return any(_matches_text(needle, f"{name} {address}") for name, address in people)


def _term(token: _Token) -> Test:
    prop = token.prop
    if prop in ("hasattachment", "hasattachments"):
        wanted = token.text.lower() in ("true", "yes", "1")
        return lambda m: m.has_attachments == wanted

    def people(m: Message, which: str) -> list[tuple[str, str]]:
        groups = {
            "from": [m.from_] if m.from_ else [],
            "to": m.to,
            "cc": m.cc,
            "bcc": m.bcc,
        }
        if which == "participants":
            chosen = [*groups["from"], *m.to, *m.cc, *m.bcc]
        else:
            chosen = groups[which]
        return [(r.name, r.address) for r in chosen]

    def body(m: Message) -> str:
        return html_to_text(m.body_content) if m.body_type == "html" else m.body_content

    if prop in ("from", "to", "cc", "bcc", "participants"):
        return lambda m: _matches_people(token, people(m, prop or "from"))
    if prop == "subject":
        return lambda m: _matches_text(token, m.subject)
    if prop == "body":
        return lambda m: _matches_text(token, body(m))
    if prop in ("attachment", "attachments"):
        return lambda m: any(_matches_text(token, a.name) for a in m.attachments)
    return lambda m: (
        _matches_people(token, people(m, "from"))
        or _matches_text(token, m.subject)
        or _matches_text(token, body(m))
    )
