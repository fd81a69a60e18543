"""What a person changed in Outlook, read from a processed message (pure, no I/O).

:func:`detect_correction` (another configured category on it), :func:`detect_move` (moved
into another category's folder) and :func:`detect_rejection` (the category taken off, or moved
back to where it came from: "none of these", :data:`~postroom.classify.NONE_OF_THESE`) give a
:class:`Correction`; :func:`postroom.learning.service.record_correction` learns it. See
``docs/processing.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from postroom.classify import (
    NONE_OF_THESE,
)
from postroom.processing.view import MessageView


@dataclass(frozen=True)
class Correction:
    """What a person changed: Postroom said ``previous``, the message now carries ``category``
    — or, with ``category`` :data:`~postroom.classify.NONE_OF_THESE`, a person took
    ``previous`` off (or moved the message out of its folder) and chose no other category."""

    previous: str | None
    category: str
    decided_by: str | None

    @property
    def rejected(self) -> bool:
        """A "not this category": negative feedback (see :func:`detect_rejection`)."""
        return self.category == NONE_OF_THESE


def detect_correction(
    plan: dict[str, Any] | None, view: MessageView, configured: list[str]
) -> Correction | None:
    """Pure: did a person re-categorize this processed message? (see docs/processing.md)

    Yes when the category Postroom gave is gone (or was the needs-review category) and another
    configured category is on the message, which was not already recorded as the correction.
    """
    if not plan:
        return None
    previous = plan.get("category")
    present = {c.strip().casefold(): c for c in view.categories}
    decided_by = plan.get("decided_by")
    if isinstance(previous, str) and previous.strip().casefold() in present:
        if decided_by != "needs_review":
            return None
    candidates = [
        name
        for name in configured
        if name.strip().casefold() in present
        and (not isinstance(previous, str) or name.strip().casefold() != previous.casefold())
    ]
    if not candidates:
        return None
    chosen = candidates[0]
    if plan.get("corrected_to") == chosen:
        return None
    return Correction(
        previous if isinstance(previous, str) else None,
        chosen,
        decided_by if isinstance(decided_by, str) else None,
    )


def detect_move(
    plan: dict[str, Any] | None, watched_path: str, folders: list[tuple[str, str | None]]
) -> Correction | None:
    """Pure: was this processed message moved by a person into category Y's folder?

    ``watched_path`` is the folder it is in now; ``folders`` the configured (category, folder).
    Yes when exactly one category files into that folder, it is not the category Postroom gave,
    and Postroom did not put the message there itself.
    """
    if not plan:
        return None
    key = _path_key(watched_path)
    owners = [name for name, folder in folders if folder and _path_key(folder) == key]
    if len(owners) != 1 or _path_key(str(plan.get("folder") or "")) == key:
        return None
    chosen, previous = owners[0], plan.get("category")
    if isinstance(previous, str) and previous.casefold() == chosen.casefold():
        return None
    if plan.get("corrected_to") == chosen:
        return None
    decided_by = plan.get("decided_by")
    return Correction(
        previous if isinstance(previous, str) else None,
        chosen,
        decided_by if isinstance(decided_by, str) else None,
    )


def _path_key(path: str) -> str:
    return "/".join(s.strip().casefold() for s in path.split("/") if s.strip())


REJECTABLE = ("model", "rule")
"""Decisions whose category a person can reject: a needs-review label taken off means "looked
at", not "none of these", and a message left alone has nothing to reject."""


def moved_back(
    plan: dict[str, Any] | None,
    actions: Sequence[str],
    *,
    folder_key: str,
    folder_id: str | None,
    view: MessageView,
) -> bool:
    """Pure: is this message, which Postroom moved into its category's folder, back in a
    folder Postroom processes (``folder_key``/``folder_id``: where delta found it now)?

    Only when the move is recorded as done (a move that failed is no correction) and the
    message's own ``parentFolderId``, when given, is that folder."""
    if not plan or "move" not in actions:
        return False
    filed = plan.get("folder")
    if not isinstance(filed, str) or not _path_key(filed):
        return False
    if _path_key(filed) == _path_key(folder_key):
        return False  # Postroom filed it where it is (a category folder that is synced)
    return not (folder_id and view.folder_id and view.folder_id != folder_id)


def detect_rejection(
    plan: dict[str, Any] | None,
    view: MessageView,
    configured: list[str],
    *,
    actions: Sequence[str],
    moved_back: bool = False,
) -> Correction | None:
    """Pure: did a person say "not this category" of a processed message? (see
    docs/processing.md)

    Yes when a rule or the model gave category X, Postroom put X on the message, and now X is
    gone from it — or the message was moved out of X's folder back to where Postroom reads new
    mail (``moved_back``) — while no other configured category is on it (that would be a
    correction to it, :func:`detect_correction`, or two categories: no clear answer). After a
    person corrected X to Y, only moving it back without Y on it counts: Y may never have been
    on the message (a correction by moving it into Y's folder), and taking the wrong X off
    then is tidying up. Once per message: the ledger row records it.
    """
    if not plan or plan.get("decided_by") not in REJECTABLE:
        return None
    given = plan.get("category")
    if not isinstance(given, str) or not given.strip():
        return None
    corrected = plan.get("corrected_to")
    if corrected == NONE_OF_THESE:
        return None  # already learned
    current = corrected if isinstance(corrected, str) else given
    present = {c.strip().casefold() for c in view.categories}
    others = [
        name
        for name in configured
        if name.strip().casefold() in present and name.casefold() != current.casefold()
    ]
    if others:
        return None
    gone = current.strip().casefold() not in present
    if isinstance(corrected, str):
        rejected = moved_back and gone
    else:
        # Postroom put it on (or it was there already); a label that failed was never there.
        labelled = "label" in actions or not plan.get("add_categories")
        rejected = (labelled and gone) or moved_back
    if not rejected:
        return None
    decided_by = plan.get("decided_by")
    return Correction(current, NONE_OF_THESE, decided_by if isinstance(decided_by, str) else None)
