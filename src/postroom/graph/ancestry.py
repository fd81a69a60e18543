"""Where folders sit, by id: what the never-delete guard decides on (invariant 1).

Per mailbox the guard needs the ids of ``msgfolderroot`` and of the protected folders (Deleted
Items, Recoverable Items), resolved once, and for each destination folder its parent's id, up
to the root. A folder id names the same folder for its whole life (container ids are stable),
so both are cached here and shared by every :class:`~postroom.graph.client.GraphClient` of the
process (a sync job makes a new client; its knowledge should not start from nothing):

* the root and protected ids never expire (well-known folders cannot move);
* a parent learned from Graph (a listing, a folder read, a folder Postroom created) is trusted
  for ``ttl`` seconds. Folders rarely move, but a person can delete a category folder, which
  moves it (and everything in it) into Deleted Items; after ``ttl`` the guard reads the
  folder's parent again before it files mail there. That read is one GET per destination
  folder per ``ttl``, whatever the volume of mail.

Nothing here is message content: folder ids only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DEFAULT_TTL = 30.0
MAX_ENTRIES = 100_000


@dataclass(frozen=True)
class MailboxAnchors:
    """The ids the guard measures a folder against, for one mailbox."""

    root: str | None  # msgfolderroot; None if Graph would not say (every destination refused)
    protected: frozenset[str]  # Deleted Items and Recoverable Items folders


class FolderAncestry:
    """Per-process cache of mailbox anchors and folder parents (keys: mailbox, folder id)."""

    def __init__(
        self,
        *,
        ttl: float = DEFAULT_TTL,
        max_entries: int = MAX_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._anchors: dict[str, MailboxAnchors] = {}
        self._parents: dict[tuple[str, str], tuple[str | None, float]] = {}

    def anchors(self, mailbox: str) -> MailboxAnchors | None:
        return self._anchors.get(mailbox.lower())

    def set_anchors(self, mailbox: str, anchors: MailboxAnchors) -> None:
        self._anchors[mailbox.lower()] = anchors

    def parent(self, mailbox: str, folder_id: str) -> tuple[bool, str | None]:
        """(True, parent id) while a learned parent is fresh, else (False, None)."""
        found = self._parents.get((mailbox.lower(), folder_id))
        if found is None or self._clock() - found[1] > self.ttl:
            return False, None
        return True, found[0]

    def learn(self, mailbox: str, folder_id: str, parent_id: str | None) -> None:
        if len(self._parents) >= self._max:
            self._parents.clear()  # a bound, not a policy: everything is re-read on demand
        self._parents[(mailbox.lower(), folder_id)] = (parent_id, self._clock())

    def learn_folder(self, mailbox: str, folder: Any) -> None:
        """Remember the parent of a folder as Graph returned it (listing, read or create)."""
        if isinstance(folder, dict) and isinstance(folder.get("id"), str):
            parent = folder.get("parentFolderId")
            self.learn(mailbox, folder["id"], parent if isinstance(parent, str) else None)

    def forget(self, mailbox: str, folder_id: str) -> None:
        self._parents.pop((mailbox.lower(), folder_id), None)


DEFAULT_ANCESTRY = FolderAncestry()
