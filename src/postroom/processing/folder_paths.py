"""Folder paths as people type them ("Finance/Invoices"), normalized once for everyone.

The wizard and the category editor validate a path with these functions, the executor resolves
it with them, so what a person is refused and what the executor would find are the same thing.

* :func:`clean_segment` — what a segment *is*: Unicode NFKC (full-width and compatibility
  forms fold to their plain letters), every format or control character dropped (zero-width
  spaces and joiners, the byte-order mark, bidi controls, soft hyphens), every kind of
  whitespace (no-break, en/em and ideographic spaces, ...) turned into one ASCII space, and
  trimmed. Outlook would show ``"Deleted\\u00a0Items "`` and ``"Deleted Items"`` alike.
* :func:`segment_key` — how two segments compare: the clean segment, case-folded. The
  executor matches an existing folder's display name with it.
* :func:`protected_folder` — the protected folder a path starts in, if any: Deleted Items or
  Recoverable Items, by English or well-known name or a common localized name, compared with
  spaces removed (``"DeletedItems"``, ``"deleted  items"``).

Names are only the first line of defence, for a clear message where a person types. The rule
itself is decided by folder identity (ids and ancestry) in the Graph client's guard: a folder
that lies in Deleted Items under any name is refused there.
"""

from __future__ import annotations

import unicodedata

# Keys (case-folded, spaces removed) of the folders mail disappears from: Deleted Items is
# emptied by Outlook and retention, Recoverable Items is purged. Well-known names, the English
# display names and the common localized ones (nl, de, fr, es, it, pt).
PROTECTED_KEYS: dict[str, str] = {
    "deleteditems": "Deleted Items",
    "verwijderdeitems": "Deleted Items",
    "gelöschteelemente": "Deleted Items",
    "élémentssupprimés": "Deleted Items",
    "elementoseliminados": "Deleted Items",
    "postaeliminata": "Deleted Items",
    "itensexcluídos": "Deleted Items",
    "recoverableitems": "Recoverable Items",
    "recoverableitemsroot": "Recoverable Items",
    "recoverableitemsdeletions": "Recoverable Items",
    "recoverableitemspurges": "Recoverable Items",
    "recoverableitemsversions": "Recoverable Items",
    "recoverableitemsdiscoveryholds": "Recoverable Items",
    "herstelbareitems": "Recoverable Items",
    "wiederherstellbareelemente": "Recoverable Items",
}


def clean_segment(segment: str) -> str:
    """One path segment as Outlook would show it: NFKC, no invisible characters, each run of
    whitespace of any kind one space, trimmed."""
    out: list[str] = []
    for char in unicodedata.normalize("NFKC", segment):
        if char.isspace():
            out.append(" ")
        elif unicodedata.category(char) in ("Cf", "Cc"):
            continue  # zero-width, BOM, bidi controls, soft hyphen, control characters
        else:
            out.append(char)
    return " ".join("".join(out).split())


def segments(path: str) -> list[str]:
    """The clean, non-empty segments of ``"Parent/Child"`` (blank segments dropped)."""
    return [s for s in (clean_segment(p) for p in path.split("/")) if s]


def has_blank_segment(path: str) -> bool:
    """True when a segment is empty once cleaned (``"A//B"``, ``"A/\\u200b/B"``)."""
    parts = path.strip().strip("/").split("/")
    return any(not clean_segment(p) for p in parts)


def clean_path(path: str) -> str:
    """The path with every segment cleaned, joined with ``/`` (what is stored and shown)."""
    return "/".join(segments(path))


def segment_key(segment: str) -> str:
    """How two folder names compare (Outlook compares display names case-insensitively)."""
    return clean_segment(segment).casefold()


def path_key(path: str) -> str:
    """How two paths compare: each segment's key, joined with ``/``."""
    return "/".join(segment_key(s) for s in segments(path))


def protected_folder(path: str | list[str]) -> str | None:
    """ "Deleted Items" or "Recoverable Items" when the path starts in one of them (by name),
    else None."""
    parts = segments(path) if isinstance(path, str) else path
    if not parts:
        return None
    return PROTECTED_KEYS.get(segment_key(parts[0]).replace(" ", ""))
