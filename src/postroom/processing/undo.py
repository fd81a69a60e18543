"""Undo: reverse exactly what Postroom did to one email, once, crash-safe like every action.

A person asks from the activity view (``undo_state = "requested"``, set by one conditional
UPDATE, so two clicks make one request); the ``undo_message`` job runs :func:`undo` under the
mailbox's lock. Its steps are recorded in ``undo_done`` right after each one took effect, the
same way :mod:`.executor` records actions, and each checks the mailbox before acting, so a
resumed run repeats nothing:

1. ``learned`` — the model learns "not this category" (the caller's ``learn``; the same path
   as a category a person takes off in Outlook, :func:`postroom.learning.service.record_correction`,
   which also marks the row ``corrected_to`` so the sync does not learn it a second time when
   it sees the categories change). Only for a rule or model decision that no one corrected yet.
2. ``unlabel`` — remove the categories Postroom added (the plan's ``add_categories``, and only
   when the ``label`` action was recorded), compared case-insensitively as Outlook does; the
   person's own categories stay. A conditional write naming the change key just read; a
   person changing the message in between costs one more read.
3. ``move_back`` — when Postroom moved the email, move it back to the folder it came from
   (``source_folder_id``, recorded before the move), but only while it still sits in the folder
   Postroom filed it into (``filed_folder_id``): an email a person moved since stays where
   they put it. When the source folder is gone (404) or now lies in Deleted Items (the Graph
   client's never-delete guard refuses), the email goes to the Inbox instead, and the note
   says so.

**Fix** is an undo that ends in the category the person chose (``plan["fix"]``: its name and
folder, copied from the configuration when they asked): ``learned`` teaches the model the
correction (previous → chosen, as a correction made in Outlook), ``unlabel`` takes Postroom's
category off, ``fix_label`` adds the chosen one (the person's own stay), and ``move_back``
files the email into the chosen category's folder instead — or, when that category has no
folder, back where it came from. When the chosen category forwards and the person confirmed
it (only then does ``plan["fix"]["forward"]`` hold the addresses and comment, copied from the
category when they asked), the email is forwarded last, exactly once, by the executor's code
(:class:`~.forwarding.Forwarder`): the draft's id is recorded in
``plan["fix"]["forward"]["draft_id"]`` before anything is sent, and the steps
``forward_draft``, ``forward_send_attempted`` and ``forward_sent`` in ``undo_done``, so a retry
never sends twice. A draft purged after a send was asked ends the fix ``done`` with the note
``forward_unconfirmed``.

Nothing is deleted: a folder Postroom created stays, even when it is empty now. A forward
cannot be recalled; the activity view says so. Graph failures follow the executor: a
transient error or a lost token leaves the request standing for a retry (the job's, or the
reconcile's), anything else ends it ``failed`` with the error code.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, or_

from postroom.accounts.models import utcnow
from postroom.db import Database
from postroom.graph import (
    AccessDenied,
    AuthFailed,
    DeletionRefused,
    GraphClient,
    GraphError,
    NotFound,
    StaleChangeKey,
    TransientError,
)
from postroom.processing.executor import (
    LABEL_ATTEMPTS,
    SNAPSHOT_SELECT,
    FolderCache,
    _etag,
    _locked,
    _Run,
)
from postroom.processing.forwarding import Forwarder
from postroom.processing.models import LedgerEntry
from postroom.processing.plan import Plan

log = logging.getLogger(__name__)

# Notes (codes, shown in words by the activity view)
NOTE_LEFT_MOVED = "left_where_moved"  # a person moved the email since: not moved back
NOTE_TO_INBOX = "source_gone_inbox"  # the folder it came from is gone: moved to the Inbox
NOTE_NO_SOURCE = "source_unknown"  # filed before sources were recorded: not moved back
NOTE_GONE = "message_gone"  # the email itself is gone
NOTE_DISCONNECTED = "disconnected"  # the integration was disconnected before it was done


@dataclass(frozen=True)
class UndoResult:
    state: str  # "done", "failed", or "requested" (left for a retry)
    steps: tuple[str, ...]
    note: str | None


def askable(entry: LedgerEntry) -> bool:
    """No undo or fix was asked for this email, or the one asked for ended because the
    integration was disconnected first (nothing was wrong with it: after a reconnect it can be
    asked again, and goes on from the steps already done)."""
    return entry.undo_state is None or (
        entry.undo_state == "failed" and entry.undo_note == NOTE_DISCONNECTED
    )


def askable_clause() -> ColumnElement[bool]:
    """:func:`askable` as SQL."""
    return or_(
        LedgerEntry.undo_state.is_(None),
        and_(LedgerEntry.undo_state == "failed", LedgerEntry.undo_note == NOTE_DISCONNECTED),
    )


def fixable(entry: LedgerEntry) -> bool:
    """Whether the activity view offers Fix: a finished email no undo or fix was asked for
    (also one Postroom left without a category: Fix then files it)."""
    return entry.state == "done" and askable(entry)


def fix_of(entry: LedgerEntry) -> dict[str, Any] | None:
    fix = (entry.plan or {}).get("fix")
    return fix if isinstance(fix, dict) and isinstance(fix.get("category"), str) else None


def fix_forward(entry: LedgerEntry) -> dict[str, Any] | None:
    """The forward a person confirmed for their fix (``to``, ``comment``, and once made the
    draft's id), or None: no forward."""
    fix = fix_of(entry)
    forward = fix.get("forward") if fix is not None else None
    if not isinstance(forward, dict):
        return None
    to = forward.get("to")
    if not isinstance(to, list) or not to or not all(isinstance(a, str) for a in to):
        return None
    return forward


def undoable(entry: LedgerEntry) -> bool:
    """Whether the activity view offers Undo: a finished email Postroom labelled or moved."""
    return (
        entry.state == "done"
        and askable(entry)
        and bool({"label", "move"} & set(entry.actions_done or []))
    )


async def undo(
    *,
    graph: GraphClient,
    database: Database,
    entry_id: str,
    mailbox: str,
    learn: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    folder_cache: FolderCache | None = None,
) -> UndoResult:
    """Carry out the requested undo of ledger row ``entry_id`` in ``mailbox`` (a Graph user
    id). ``learn`` gets the message as read (with its body) and teaches the model."""
    row = _load(database, entry_id)
    if row is None or row.undo_state != "requested":
        state = row.undo_state if row is not None and row.undo_state else "done"
        return UndoResult(state, tuple(row.undo_done or []) if row else (), None)
    done = set(row.undo_done or [])
    fix = fix_of(row)
    run = _UndoRun(graph, database, entry_id, mailbox, row.message_id, done)
    try:
        try:
            message = await run.read()
        except NotFound:
            return run.finish("failed", NOTE_GONE)
        if "learned" not in done:
            if learn is not None and (_learnable(row) or fix is not None):
                await learn(message)
            run.record("learned")
        if "unlabel" not in done:
            ours = [c for c in _ours(row) if fix is None or _key(c) != _key(fix["category"])]
            message = await run.unlabel(message, ours)
        if fix is not None and "fix_label" not in done:
            message = await run.add_label(message, str(fix["category"]))
        if "move_back" not in done:
            folder = str(fix.get("folder") or "") if fix is not None else ""
            if folder:
                await run.refile(message, row, folder, folder_cache or FolderCache())
            else:
                note = await run.move_back(message, row)
                run.note = note or run.note
        forward = fix_forward(row)
        if forward is not None and "forward_sent" not in done:
            await run.forward(forward)
    except NotFound:
        return run.finish("failed", NOTE_GONE)
    except (TransientError, AuthFailed, AccessDenied) as exc:
        if isinstance(exc, AccessDenied) and not exc.by_policy:
            return run.finish("failed", exc.code or "ErrorAccessDenied")
        log.warning("undo of ledger %s: %s; left for a retry", entry_id, exc.code)
        raise
    except GraphError as exc:
        log.warning("undo of ledger %s: %s; failed", entry_id, exc.code)
        return run.finish("failed", exc.code or "GraphError")
    return run.finish("done", run.note)


def _key(name: str) -> str:
    return name.strip().casefold()


def _load(database: Database, entry_id: str) -> LedgerEntry | None:
    with database.session() as db:
        row = db.get(LedgerEntry, entry_id)
        if row is not None:
            db.expunge(row)
        return row


def _ours(row: LedgerEntry) -> list[str]:
    """The categories Postroom added (and recorded) to this email."""
    if "label" not in (row.actions_done or []):
        return []
    added = (row.plan or {}).get("add_categories") or []
    return [str(name) for name in added if isinstance(name, str)]


def _learnable(row: LedgerEntry) -> bool:
    plan = row.plan or {}
    return (
        plan.get("decided_by") in ("model", "rule")
        and bool(plan.get("category"))
        and "corrected_to" not in plan
    )


@dataclass
class _UndoRun:
    graph: GraphClient
    database: Database
    entry_id: str
    mailbox: str
    message_id: str
    done: set[str]
    note: str | None = None

    def record(self, step: str) -> None:
        def change(row: LedgerEntry) -> None:
            steps = list(row.undo_done or [])
            if step not in steps:
                row.undo_done = [*steps, step]

        _locked(self.database, self.entry_id, change)
        self.done.add(step)
        log.info("undo of ledger %s: %s recorded", self.entry_id, step)

    async def forward(self, spec: dict[str, Any]) -> None:
        """Fix's confirmed forward, exactly once (the executor's :class:`Forwarder`)."""
        draft = spec.get("draft_id")
        sender = Forwarder(
            graph=self.graph,
            mailbox=self.mailbox,
            message_id=self.message_id,
            to=tuple(str(a) for a in spec["to"]),
            comment=str(spec.get("comment") or ""),
            done=self.done,
            draft_id=draft if isinstance(draft, str) and draft else None,
            keep_draft=self.keep_draft,
            record=self.record,
            label=f"fix of ledger {self.entry_id}",
        )
        await sender.run()
        self.note = sender.warning or self.note

    def keep_draft(self, ours: str, vanished: str | None) -> str:
        """Record the fix's forward draft in ``plan["fix"]["forward"]["draft_id"]`` (the first
        recorded wins; ``vanished``: replace that one), and ``forward_draft`` with it."""

        def change(row: LedgerEntry) -> str:
            plan = dict(row.plan or {})
            fix = dict(plan.get("fix") or {})
            forward = dict(fix.get("forward") or {})
            recorded = forward.get("draft_id")
            if (not recorded) if vanished is None else recorded == vanished:
                forward["draft_id"] = recorded = ours
                row.plan = {**plan, "fix": {**fix, "forward": forward}}  # a new dict: seen
            if vanished is None:
                steps = list(row.undo_done or [])
                if "forward_draft" not in steps:
                    row.undo_done = [*steps, "forward_draft"]
            return str(recorded or ours)

        recorded = _locked(self.database, self.entry_id, change)
        if vanished is None:
            self.done.add("forward_draft")
        return recorded

    def finish(self, state: str, note: str | None) -> UndoResult:
        def change(row: LedgerEntry) -> None:
            row.undo_state = state
            row.undo_note = note
            row.undone_at = utcnow()

        _locked(self.database, self.entry_id, change)
        return UndoResult(state, tuple(sorted(self.done)), note)

    async def read(self) -> dict[str, Any]:
        return await self.graph.message(self.mailbox, self.message_id, select=SNAPSHOT_SELECT)

    async def unlabel(self, message: dict[str, Any], ours: list[str]) -> dict[str, Any]:
        """Take Postroom's categories off, keeping the person's."""
        gone = {_key(name) for name in ours}
        message = await self.rewrite(message, lambda now: [c for c in now if _key(c) not in gone])
        self.record("unlabel")
        return message

    async def add_label(self, message: dict[str, Any], name: str) -> dict[str, Any]:
        """Add the category a person chose (Fix), keeping every other."""
        message = await self.rewrite(
            message, lambda now: now if any(_key(c) == _key(name) for c in now) else [*now, name]
        )
        self.record("fix_label")
        return message

    async def rewrite(
        self, message: dict[str, Any], change: Callable[[list[str]], list[str]]
    ) -> dict[str, Any]:
        """Write ``change(categories)`` as one conditional write naming the change key just
        read (no write when nothing changes); a person changing the message in between costs
        one more read."""
        for _ in range(LABEL_ATTEMPTS):
            current = [str(c) for c in message.get("categories") or []]
            wanted = change(current)
            if wanted == current:
                return message
            try:
                return await self.graph.set_categories(
                    self.mailbox, self.message_id, wanted, if_match=_etag(message)
                )
            except StaleChangeKey:
                message = await self.read()
        raise TransientError("the message kept changing", code="ErrorIrresolvableConflict")

    async def refile(
        self, message: dict[str, Any], row: LedgerEntry, path: str, cache: FolderCache
    ) -> None:
        """Fix: file the email into the chosen category's folder (found or made by path, with
        the executor's never-delete checks), unless a person moved it since Postroom acted."""
        here = message.get("parentFolderId")
        if row.filed_folder_id is not None and here not in (row.filed_folder_id, None):
            if "move" in (row.actions_done or []):
                self.note = NOTE_LEFT_MOVED
                self.record("move_back")
                return
        resolver = _Run(
            graph=self.graph,
            database=self.database,
            entry_id=self.entry_id,
            mailbox=self.mailbox,
            message_id=self.message_id,
            plan=Plan(category=None, folder=path),
            done=set(),
            draft_id=None,
            cache=cache,
        )
        folder_id = await resolver.ensure_folder(path)
        if here != folder_id:
            await self.graph.move(self.mailbox, self.message_id, folder_id)
        self.record("move_back")

    async def move_back(self, message: dict[str, Any], row: LedgerEntry) -> str | None:
        if "move" not in (row.actions_done or []):
            self.record("move_back")
            return None
        source, filed = row.source_folder_id, row.filed_folder_id
        here = message.get("parentFolderId")
        if source is None:
            self.record("move_back")
            return NOTE_NO_SOURCE
        if here == source:
            self.record("move_back")  # already back (a resumed run, or the person did it)
            return None
        if filed is not None and here != filed:
            self.record("move_back")
            return NOTE_LEFT_MOVED
        note = None
        try:
            await self.graph.move(self.mailbox, self.message_id, source)
        except (NotFound, DeletionRefused):
            # The folder it came from is gone, or lies in Deleted Items now: the Inbox instead
            # (a 404 for the message itself is told apart by reading it again).
            await self.read()
            await self.graph.move(self.mailbox, self.message_id, "inbox")
            note = NOTE_TO_INBOX
        self.record("move_back")
        return note
