"""Doing a plan exactly once: claim the message in the ledger, then each action, each recorded.

Invariant 3 — each action on a message happens at most once and, unless the integration is
stopped, at least once — rests on three rules:

1. **Claim first.** :func:`claim` inserts the ledger row with ``INSERT ... ON CONFLICT DO
   NOTHING`` on ``(mailbox_id, message_id)``, so any number of workers produce one row. A row
   that is ``done``/``skipped``/``failed`` is never touched again (``claim`` returns None); a
   row still ``claimed`` is handed back so the work resumes. Mutual exclusion between workers
   comes from the job queue (one sync per mailbox at a time); the steps below stay correct even
   if two workers do resume the same row at once (tested).
2. **Record right after Graph confirms.** Each step is recorded in ``actions_done`` by one
   ``UPDATE`` statement (decision 0015) right after Graph answered, or with the row's next
   write when a resumed run would find it done (decision 0014); no database session is held
   across a Graph call (STYLE rule 6). A resumed run skips what is recorded.
3. **Make every step safe to repeat when the record was lost.** A crash can always fall
   between "Graph acted" and "we recorded it", so each step checks the mailbox before acting:

   * ``master_category`` — create only names missing from the (per-worker cached) master list;
     "already exists" is success.
   * ``label`` — a conditional write, without a read: the union of the categories the delta
     page showed and the planned labels (Graph replaces the array), PATCHed with ``If-Match``
     naming the change key that page showed (the message's ``@odata.etag``). If a person
     changed the message in between, Graph refuses (``ErrorIrresolvableConflict``,
     :class:`~postroom.graph.StaleChangeKey`) and only then is the message read again and the
     union written under the fresh key. The user's own categories are never removed; a label
     already there is not written again. Without a change key (a caller that has none) the
     message is read first and the write names the key of that read.
   * ``folder`` — find by display name (compared after :mod:`.folder_paths` normalization:
     NFKC, any whitespace, case) before creating; ``ErrorFolderExists`` (another worker, or
     the user, was faster) means re-list and use it.
   * ``move`` — skipped when ``parentFolderId`` (from the label's answer, or else the delta
     page) already is the target; with immutable ids the message keeps its id, so a repeated
     move is harmless anyway.

So a filed email costs two writes (label, move) and its share of the delta page: no read
(invariant 5). Folder ids and the master category list come from :class:`FolderCache`, kept
for the life of the worker process across messages and syncs; a cached folder that vanished
or now lies in Deleted Items is detected when the move fails or the guard refuses it, then
forgotten and resolved again (once, not per email).
   * ``forward`` — the one action that cannot be undone or repeated harmlessly, so it is split
     in two: ``createForward`` makes a draft whose immutable id is recorded
     (``forward_draft_id``, action ``forward_draft``) *before* anything is sent; then that one
     draft is sent. Graph sends a draft at most once (after ``send`` the id names the sent
     item, ``isDraft`` false, and a second ``send`` is refused), so the recorded draft id is
     the idempotency key of the forward.

The forward's crash windows (a draft made but not recorded, a send not confirmed, a draft
purged) and what a resumed run does are told in :mod:`.forwarding`, the code Fix's forward
shares; a draft that may have gone out ends the row ``done`` with ``last_error =
"forward_unconfirmed"`` for the UI.

Never-delete (invariant 1): a plan whose folder path starts in Deleted Items or Recoverable
Items by name (:func:`~postroom.processing.folder_paths.protected_folder`) is refused before any
request; while resolving a path, a folder whose id is one of the mailbox's protected folders is
refused (a localized or renamed Deleted Items found by its display name); and the Graph
client's guard refuses every folder creation and move whose destination's ancestry, by id,
passes Deleted Items or Recoverable Items (a folder a person created beneath Deleted Items,
or a category folder a person deleted since). Each ends the row ``failed`` with
``last_error = "DeletionRefused"``: nothing moved, visible in the activity page.

Decorating never blocks: ``master_category`` only gives a label its colour. When Microsoft
refuses that step for good (a personal connection may not touch a shared mailbox's master
list: 403 ``ErrorAccessDenied``), the message is still labelled, filed and forwarded, the
result carries ``colors_refused`` (the sync engine notes it once on the mailbox and stops asking
there), and ``master_category`` is not recorded.

Errors: no email stays ``claimed`` for good. :class:`~postroom.graph.Throttled` is a delay
inside the client. A :class:`~postroom.graph.TransientError` leaves the row ``claimed``
(``attempts`` + 1, ``last_error`` = the code) and is re-raised so the job retries — until the
row has failed :data:`MAX_ATTEMPTS` times, then it ends ``failed`` (a message Microsoft keeps
answering 5xx for must not wedge its mailbox); a throttled answer never counts toward that.
:class:`AuthFailed` leaves the row ``claimed`` and is re-raised for the caller to turn into a
status. :class:`AccessDenied` on a step is read once more against the message: when the mailbox
itself is refused (that read is refused too, or an application access policy answered), the
row stays ``claimed`` and the error is re-raised — the mailbox stops with its status and the row
resumes once access is back; when only the step is refused, the row ends ``failed``. A message
that is gone (404 on the message itself) makes the row ``skipped``. Any other Graph error (a
bug, bad input, a refused deletion) makes it ``failed`` with the code, so one bad message cannot
wedge a sync. :func:`settle` ends a row the same way when a failure came before the executor
(the sync reading the message's body).

Invariant 2: the ledger and the logs get ids, codes and the plan (category names, folder path,
configured forward addresses) — never a subject, body, sender or recipient of the message.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from postroom.accounts.models import new_id, utcnow
from postroom.db import Database
from postroom.graph.client import GraphClient
from postroom.graph.errors import (
    AccessDenied,
    AuthFailed,
    Conflict,
    DeletionRefused,
    GraphError,
    NotFound,
    PermanentError,
    StaleChangeKey,
    Throttled,
    TransientError,
)
from postroom.processing import folder_paths
from postroom.processing.forwarding import (
    FORWARD_UNCONFIRMED as FORWARD_UNCONFIRMED,  # (re-exported: outcomes, tests)
)
from postroom.processing.forwarding import SEND_ATTEMPTED, Forwarder
from postroom.processing.message_keys import message_key
from postroom.processing.models import CreatedMasterCategory, LedgerEntry
from postroom.processing.plan import Plan

log = logging.getLogger("postroom.processing")

T = TypeVar("T")

SNAPSHOT_SELECT = "id,categories,parentFolderId,changeKey"
# Single-segment folder paths that name a well-known folder rather than a folder to create.
WELL_KNOWN_TARGETS = frozenset({"archive", "inbox", "junkemail"})
FINAL_STATES = ("done", "skipped", "failed")
MAX_ATTEMPTS = 10  # transient failures of one message before its row ends failed
DECIDE_FAILED = "decide_failed"  # last_error when deciding raised (a bug; logged, not retried)
LABEL_ATTEMPTS = 4  # conditional writes of one label before a busy message is left for a retry


# --------------------------------------------------------------------------- claim
@dataclass(frozen=True)
class Claimed:
    """A claimed ledger row, as much of it as a worker needs to go on (not an ORM entity:
    nothing to flush, nothing held in a session's identity map)."""

    id: str
    state: str
    plan: dict[str, Any] | None
    actions_done: list[str]
    message_key: str | None


_CLAIMED_COLUMNS = (
    LedgerEntry.id,
    LedgerEntry.state,
    LedgerEntry.plan,
    LedgerEntry.actions_done,
    LedgerEntry.message_key,
)


def claim(
    db: Session | Connection,
    *,
    integration_id: str,
    mailbox_id: str,
    message_id: str,
    internet_message_id: str,
    historical: bool,
    key_secret: bytes,
) -> Claimed | None:
    """Claim a message: its new ledger row, the unfinished row to resume, or None when the
    message was already dealt with (done, skipped or failed). Safe across any number of
    workers: the unique key makes exactly one INSERT create the row. The row keeps a keyed
    hash of the internetMessageId under ``key_secret`` (:mod:`.message_keys`), never the
    header nor its plain hash.

    One Core statement (``INSERT … ON CONFLICT DO NOTHING RETURNING``, :func:`claim_many`),
    so it can run on its own on an autocommit connection (:meth:`Database.statement`): one
    round trip where a session takes three, and no ORM entity built (decision 0015)."""
    return claim_many(
        db,
        integration_id=integration_id,
        mailbox_id=mailbox_id,
        messages=[(message_id, internet_message_id)],
        historical=historical,
        key_secret=key_secret,
    )[message_id]


def claim_many(
    db: Session | Connection,
    *,
    integration_id: str,
    mailbox_id: str,
    messages: Sequence[tuple[str, str]],
    historical: bool,
    key_secret: bytes,
) -> dict[str, Claimed | None]:
    """:func:`claim` for several messages of one mailbox at once — ``(message id,
    internetMessageId)`` pairs — in one ``INSERT`` (and one ``SELECT`` for those claimed
    before): a delta page's claims in one round trip and one commit. Each message gets what
    it would get alone; the first of a repeated id counts."""
    unique: dict[str, str] = {}
    for message_id, internet_message_id in messages:
        unique.setdefault(message_id, internet_message_id)
    if not unique:
        return {}
    now = utcnow()
    inserted = db.execute(
        pg_insert(LedgerEntry)
        .values(
            [
                {
                    "id": new_id(),
                    "integration_id": integration_id,
                    "mailbox_id": mailbox_id,
                    "message_id": message_id,
                    "message_key": message_key(internet_message_id, key_secret),
                    "legacy_key": False,
                    "state": "claimed",
                    "actions_done": [],
                    "historical": historical,
                    "attempts": 0,
                    "claimed_at": now,
                }
                for message_id, internet_message_id in unique.items()
            ]
        )
        .on_conflict_do_nothing(index_elements=["mailbox_id", "message_id"])
        .returning(LedgerEntry.message_id, *_CLAIMED_COLUMNS)
    ).all()
    rows = {row.message_id: row for row in inserted}
    before = [message_id for message_id in unique if message_id not in rows]
    if before:
        for row in db.execute(
            select(LedgerEntry.message_id, *_CLAIMED_COLUMNS).where(
                LedgerEntry.mailbox_id == mailbox_id, LedgerEntry.message_id.in_(before)
            )
        ):
            rows[row.message_id] = row
    return {message_id: _claimed(rows[message_id]) for message_id in unique}


def _claimed(row: Any) -> Claimed | None:
    """The row as :class:`Claimed`, or None when it was dealt with already."""
    if row.state != "claimed":
        return None
    return Claimed(
        id=row.id,
        state=row.state,
        plan=row.plan,
        actions_done=list(row.actions_done or []),
        message_key=row.message_key,
    )


# --------------------------------------------------------------------------- caches
class FolderCache:
    """Per-worker, in-memory knowledge of mailbox structure: folder ids by (mailbox, path) and
    the names on each mailbox's master category list. Only ever a shortcut: a stale entry is
    corrected by :func:`execute` (a vanished folder is forgotten and resolved again)."""

    def __init__(self) -> None:
        self._folders: dict[tuple[str, str], str] = {}
        self._categories: dict[str, set[str]] = {}

    @staticmethod
    def _key(mailbox: str, path: str) -> tuple[str, str]:
        return mailbox.lower(), folder_paths.path_key(path)

    def get(self, mailbox: str, path: str) -> str | None:
        return self._folders.get(self._key(mailbox, path))

    def put(self, mailbox: str, path: str, folder_id: str) -> None:
        self._folders[self._key(mailbox, path)] = folder_id

    def forget(self, mailbox: str, path: str) -> None:
        """Drop a path and every path below it."""
        box, key = self._key(mailbox, path)
        for cached in list(self._folders):
            if cached[0] == box and (cached[1] == key or cached[1].startswith(key + "/")):
                del self._folders[cached]

    def master_categories(self, mailbox: str) -> set[str] | None:
        """Lower-cased names on the master list, or None when not read yet."""
        return self._categories.get(mailbox.lower())

    def set_master_categories(self, mailbox: str, names: set[str]) -> None:
        self._categories[mailbox.lower()] = {n.lower() for n in names}

    def add_master_category(self, mailbox: str, name: str) -> None:
        self._categories.setdefault(mailbox.lower(), set()).add(name.lower())


def record_created_category(db: Session, mailbox_row_id: str, name: str, graph_id: str) -> None:
    """Record a master category Postroom created in a mailbox, so that a disconnect can offer
    to remove exactly those (never a person's own)."""
    if not graph_id:
        return
    db.execute(
        pg_insert(CreatedMasterCategory)
        .values(id=new_id(), mailbox_id=mailbox_row_id, name=name[:255], graph_id=graph_id)
        .on_conflict_do_update(
            constraint="uq_created_master_categories", set_={"graph_id": graph_id}
        )
    )


def _remember_created(database: Database, entry_id: str, name: str, graph_id: str) -> None:
    with database.session() as db:
        mailbox_row_id = db.scalar(select(LedgerEntry.mailbox_id).where(LedgerEntry.id == entry_id))
        if mailbox_row_id is not None:
            record_created_category(db, mailbox_row_id, name, graph_id)


async def find_folder(
    graph: GraphClient, mailbox: str, path: str, cache: FolderCache
) -> str | None:
    """The id of the folder at ``path`` if it exists (looked up, never made; cached like the
    executor's), None when a segment is missing or the path leads into Deleted Items or
    Recoverable Items (Suggest only watches it; it files nothing)."""
    segments = folder_paths.segments(path)
    if not segments or folder_paths.protected_folder(segments) is not None:
        return None
    cached = cache.get(mailbox, path)
    if cached is not None:
        return cached
    if len(segments) == 1 and segments[0].lower() in WELL_KNOWN_TARGETS:
        folder = await graph.folder(mailbox, segments[0].lower())
        cache.put(mailbox, path, str(folder["id"]))
        return str(folder["id"])
    parent: str | None = None
    for depth, name in enumerate(segments, start=1):
        prefix = "/".join(segments[:depth])
        known = cache.get(mailbox, prefix)
        if known is None:
            wanted = folder_paths.segment_key(name)
            known = next(
                (
                    str(f["id"])
                    for f in await graph.child_folders(mailbox, parent)
                    if folder_paths.segment_key(str(f.get("displayName", ""))) == wanted
                ),
                None,
            )
            if known is None or known in await graph.protected_folder_ids(mailbox):
                return None
            cache.put(mailbox, prefix, known)
        parent = known
    return parent


# --------------------------------------------------------------------------- result
@dataclass(frozen=True)
class ExecutionResult:
    entry_id: str
    state: str  # claimed (only while an exception propagates) | done | skipped | failed
    performed: tuple[str, ...] = ()  # actions recorded during this run
    actions_done: tuple[str, ...] = ()  # everything recorded for the message so far
    last_error: str | None = None
    colors_refused: str | None = None  # Microsoft's code refusing the mailbox's master list


class _MessageGone(Exception):
    """The message itself answered 404: the user deleted it or moved it out of reach."""


class _StepRefused(Exception):
    """A step answered 403 while the message itself can still be read: only that step is
    refused (a folder the account may not create, a send it may not make)."""

    def __init__(self, error: AccessDenied) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class _Entry:
    message_id: str
    state: str
    actions_done: list[str]
    forward_draft_id: str | None
    plan: dict[str, Any] | None
    last_error: str | None
    attempts: int


# --------------------------------------------------------------------------- ledger writes
def _locked(database: Database, entry_id: str, change: Callable[[LedgerEntry], T]) -> T:
    """Run ``change`` on the row under a row lock, in one short transaction."""
    with database.session() as db:
        row = db.scalars(
            select(LedgerEntry).where(LedgerEntry.id == entry_id).with_for_update()
        ).one()
        return change(row)


# The two writes every email makes, as one plain UPDATE each (no ORM read-modify-write under a
# row lock: a third of the worker's time went there). The UPDATE takes the row lock itself, and
# every column is computed from the row as it is, so two runs of one row still merge their steps.
_LOAD_AND_PLAN = text(
    """
    UPDATE ledger SET plan = CASE
        WHEN state = 'claimed' AND (plan IS NULL OR CAST(plan AS text) = 'null')
        THEN CAST(:plan AS json) ELSE plan END
    WHERE id = :id
    RETURNING message_id, state, actions_done, forward_draft_id, plan, last_error, attempts
    """
)
_RECORD = text(
    """
    UPDATE ledger SET
        actions_done = CASE WHEN CAST(:actions AS jsonb) = CAST('[]' AS jsonb) THEN actions_done
            ELSE (
                SELECT COALESCE(json_agg(step ORDER BY position), CAST('[]' AS json)) FROM (
                    SELECT step, position FROM json_array_elements_text(
                        COALESCE(actions_done, CAST('[]' AS json))
                    ) WITH ORDINALITY AS have(step, position)
                    UNION ALL
                    SELECT step, 1000 + position
                    FROM jsonb_array_elements_text(CAST(:actions AS jsonb))
                        WITH ORDINALITY AS adding(step, position)
                    WHERE NOT COALESCE(CAST(actions_done AS jsonb), CAST('[]' AS jsonb)) ? step
                ) AS merged
            ) END,
        source_folder_id = COALESCE(source_folder_id, CAST(:source_folder_id AS varchar)),
        filed_folder_id = COALESCE(CAST(:filed_folder_id AS varchar), filed_folder_id),
        state = COALESCE(CAST(:state AS varchar), state),
        last_error = CASE WHEN :set_error THEN CAST(:last_error AS varchar) ELSE last_error END,
        attempts = attempts + :attempts,
        done_at = COALESCE(CAST(:done_at AS timestamptz), done_at)
    WHERE id = :id
    """
)


def _load_and_plan(database: Database, entry_id: str, plan: dict[str, Any]) -> _Entry:
    """The row as it is, with ``plan`` recorded (durably, before any write to the mailbox)
    when it is still claimed and has none: one statement."""
    with database.statement() as connection:
        row = connection.execute(_LOAD_AND_PLAN, {"id": entry_id, "plan": json.dumps(plan)}).one()
    return _Entry(
        message_id=row.message_id,
        state=row.state,
        actions_done=list(row.actions_done or []),
        forward_draft_id=row.forward_draft_id,
        plan=dict(row.plan) if isinstance(row.plan, dict) else None,
        last_error=row.last_error,
        attempts=row.attempts,
    )


def _record(
    database: Database,
    entry_id: str,
    steps: list[tuple[str, dict[str, str]]],
    *,
    state: str | None = None,
    last_error: str | None = None,
    set_error: bool = False,
    attempts: int = 0,
    done: bool = False,
) -> None:
    """Steps (each with the columns it sets) and optionally a new state, in one UPDATE: the
    steps are added to ``actions_done`` in order, each once; ``source_folder_id`` keeps its
    first value (a resumed run may see the message moved already); ``filed_folder_id`` takes
    the newest."""
    actions: list[str] = []
    columns: dict[str, str] = {}
    for action, values in steps:
        if action and action not in actions:  # "": columns only
            actions.append(action)
        for name, value in values.items():
            if name == "source_folder_id":
                columns.setdefault(name, value)  # the first one seen: where the email was
            elif name == "filed_folder_id":
                columns[name] = value
            else:
                raise ValueError(f"not a column a step sets: {name}")
    with database.statement() as connection:
        connection.execute(
            _RECORD,
            {
                "id": entry_id,
                "actions": json.dumps(actions),
                "source_folder_id": columns.get("source_folder_id"),
                "filed_folder_id": columns.get("filed_folder_id"),
                "state": state,
                "set_error": set_error,
                "last_error": last_error,
                "attempts": attempts,
                "done_at": utcnow() if done else None,
            },
        )


def _append(row: LedgerEntry, action: str) -> None:
    if action not in (row.actions_done or []):
        row.actions_done = [*(row.actions_done or []), action]  # a new list: JSON change seen


def _error_code(exc: GraphError) -> str:
    code = exc.code or (f"http_{exc.status}" if exc.status else type(exc).__name__)
    return code[:200]


def settle(database: Database, entry_id: str, state: str, code: str | None) -> None:
    """End a still-claimed row in a final state (``failed`` or ``skipped``) with its reason,
    for a failure that came before the plan was executed. A final row is left alone."""
    assert state in FINAL_STATES

    def change(row: LedgerEntry) -> None:
        if row.state != "claimed":
            return
        row.state = state
        row.last_error = code
        row.done_at = utcnow()
        if state == "failed":
            row.attempts += 1

    _locked(database, entry_id, change)


# --------------------------------------------------------------------------- execute
async def execute(
    *,
    graph: GraphClient,
    database: Database,
    entry_id: str,
    mailbox: str,
    plan: Plan,
    current_categories: list[str],
    colors: dict[str, str] | None,
    manage_colors: bool,
    folder_cache: FolderCache,
    seen: dict[str, Any] | None = None,
) -> ExecutionResult:
    """Carry out ``plan`` for the claimed ledger entry ``entry_id`` in the mailbox ``mailbox``
    (a Graph user id), exactly once. ``current_categories`` are the message's categories as
    the delta reported them (when every planned label is already there, nothing is written).
    ``seen`` is the message as the delta page showed it: its ``@odata.etag`` makes the label
    a conditional write without a read, its ``parentFolderId`` tells the move whether the
    message is already there. On a resumed entry the plan stored at the first run wins over
    ``plan``, so a configuration change cannot mix two plans on one message."""
    stored = plan.to_json()
    entry = _load_and_plan(database, entry_id, stored)
    if entry.state != "claimed":
        return ExecutionResult(
            entry_id, entry.state, (), tuple(entry.actions_done), entry.last_error
        )
    if entry.plan is not None and entry.plan != stored:
        plan = Plan.from_json(entry.plan)  # the first run's plan wins

    run = _Run(
        graph=graph,
        database=database,
        entry_id=entry_id,
        mailbox=mailbox,
        message_id=entry.message_id,
        plan=plan,
        done=set(entry.actions_done),
        draft_id=entry.forward_draft_id,
        cache=folder_cache,
        seen_etag=_etag(seen),
    )
    if seen is not None and isinstance(seen.get("parentFolderId"), str):
        run.snapshot = {"parentFolderId": seen["parentFolderId"]}
    try:
        try:
            await run.steps(current_categories, colors if manage_colors else None)
        except AccessDenied as denied:
            if denied.by_policy or not await run.message_readable():
                raise  # the mailbox is refused, not this step: a status, not a failed row
            raise _StepRefused(denied) from denied
    except _MessageGone:
        log.info("ledger %s: message %s is gone; skipped", entry_id, entry.message_id)
        return run.finish("skipped", None)
    except TransientError as exc:
        code = _error_code(exc)
        counted = not isinstance(exc, Throttled)
        if counted and entry.attempts + 1 >= MAX_ATTEMPTS:
            log.warning("ledger %s: %s again; gave up and marked failed", entry_id, code)
            run.fail("failed", code)
            return run.result("failed", code)
        log.warning("ledger %s: %s; left claimed for a retry", entry_id, code)
        run.fail("claimed", code, count=counted)
        raise
    except (AuthFailed, AccessDenied) as exc:
        code = _error_code(exc)
        log.warning("ledger %s: %s; left claimed until access is back", entry_id, code)
        run.fail("claimed", code)
        raise
    except _StepRefused as refused:
        code = _error_code(refused.error)
        log.warning("ledger %s: a step was refused (%s); marked failed", entry_id, code)
        run.fail("failed", code)
        return run.result("failed", code)
    except GraphError as exc:
        code = _error_code(exc)
        level = logging.ERROR if isinstance(exc, DeletionRefused) else logging.WARNING
        log.log(level, "ledger %s: %s; marked failed", entry_id, code)
        run.fail("failed", code)
        return run.result("failed", code)
    return run.finish("done", run.warning)


@dataclass
class _Run:
    graph: GraphClient
    database: Database
    entry_id: str
    mailbox: str
    message_id: str
    plan: Plan
    done: set[str]
    draft_id: str | None
    cache: FolderCache
    seen_etag: str | None = None  # the message's change key as the delta page showed it
    performed: list[str] = field(default_factory=list)
    snapshot: dict[str, Any] | None = None  # the message as Graph last showed it (this run)
    warning: str | None = None
    colors_refused: str | None = None
    source_recorded: bool = False  # where the message was is in the row (for Undo)
    # steps done but not yet written to the row: each rides on the next write (see record)
    pending: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    # ------------------------------------------------------------------ bookkeeping
    def record(self, action: str, *, defer: bool = False, **columns: str) -> None:
        """Note a step as done in the row. ``defer``: not now, with the row's next write (the
        next step's record, or the final state), which saves a transaction per step. Only for
        a step that a resumed run redoes harmlessly or finds done: the master list and the
        folder are looked up before anything is made, a move finds the message already in
        its folder. A label, and everything before a send, is written before the next step."""
        self.pending.append((action, columns))
        self.source_recorded = self.source_recorded or "source_folder_id" in columns
        self.done.add(action)
        if action != SEND_ATTEMPTED:
            self.performed.append(action)
        if not defer:
            self.flush()
        log.info("ledger %s: %s done for message %s", self.entry_id, action, self.message_id)

    def _write(self, change: Callable[[LedgerEntry], T]) -> T:
        """``change`` on the row in one short transaction, with the pending steps."""
        pending, self.pending = self.pending, []

        def apply(row: LedgerEntry) -> T:
            for action, columns in pending:
                _append(row, action)
                for name, value in columns.items():
                    if name == "source_folder_id" and row.source_folder_id is not None:
                        continue  # where it was first: a resumed run may see it moved
                    setattr(row, name, value)
            return change(row)

        return _locked(self.database, self.entry_id, apply)

    def flush(self, **change: Any) -> None:
        """The pending steps and ``change`` (see :func:`_record`) in one UPDATE."""
        pending, self.pending = self.pending, []
        _record(self.database, self.entry_id, pending, **change)

    def fail(self, state: str, code: str, *, count: bool = True) -> None:
        self.flush(
            state=state,
            last_error=code,
            set_error=True,
            attempts=int(count),
            done=state in FINAL_STATES,
        )

    def finish(self, state: str, last_error: str | None) -> ExecutionResult:
        self.flush(state=state, last_error=last_error, set_error=True, done=True)
        return self.result(state, last_error)

    def result(self, state: str, last_error: str | None) -> ExecutionResult:
        ordered = tuple(sorted(self.done, key=_action_order))
        return ExecutionResult(
            self.entry_id,
            state,
            tuple(self.performed),
            ordered,
            last_error,
            colors_refused=self.colors_refused,
        )

    # ------------------------------------------------------------------ message access
    async def on_message(self, call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
        """Await a request addressed to the message itself: its 404 means the message is gone."""
        try:
            return await call
        except NotFound as exc:
            raise _MessageGone() from exc

    async def read_message(self) -> dict[str, Any]:
        self.snapshot = await self.on_message(
            self.graph.message(self.mailbox, self.message_id, select=SNAPSHOT_SELECT)
        )
        return self.snapshot

    async def message_readable(self) -> bool:
        """After a 403 on a step: may the message itself still be read? False when that is
        refused too (the mailbox, not the step, is off limits)."""
        try:
            await self.read_message()
        except AccessDenied:
            return False
        return True

    # ------------------------------------------------------------------ steps
    async def steps(self, current_categories: list[str], colors: dict[str, str] | None) -> None:
        plan = self.plan
        if plan.add_categories:
            if colors and "master_category" not in self.done:
                await self.decorate(colors)
            if "label" not in self.done:
                await self.label(current_categories)
        if plan.folder and not {"folder", "move"} <= self.done:
            folder_id = await self.ensure_folder(plan.folder)
            if "folder" not in self.done:
                # Where the message is now must be in the row before the move (what Undo
                # moves it back to). The label's record carried it on the common path; else
                # it is written here. A folder step alone rides on the move's record.
                source = self.source_to_record(folder_id)
                if source is not None:
                    self.record("folder", source_folder_id=source)
                else:
                    self.record("folder", defer=True)
            if "move" not in self.done:
                await self.move(plan.folder, folder_id)
        if plan.forward is not None and plan.forward.to and "forward_sent" not in self.done:
            await self.forward()

    async def decorate(self, colors: dict[str, str]) -> None:
        """Give the labels their colours; a lasting refusal never blocks the label and the
        move (only a transient error or a token failure propagates)."""
        try:
            await self.ensure_master_categories(colors)
        except (TransientError, AuthFailed):
            raise
        except GraphError as exc:
            self.colors_refused = _error_code(exc)
            log.warning(
                "ledger %s: colours cannot be managed in this mailbox (%s); labelling without",
                self.entry_id,
                self.colors_refused,
            )

    async def ensure_master_categories(self, colors: dict[str, str]) -> None:
        lowered = {k.lower(): v for k, v in colors.items()}
        wanted = [
            (name, colors.get(name) or lowered[name.lower()])
            for name in self.plan.add_categories
            if name in colors or name.lower() in lowered
        ]
        if not wanted:
            return
        known = self.cache.master_categories(self.mailbox)
        if known is None:
            known = await self.list_master_categories()
        for name, color in wanted:
            if name.lower() in known:
                continue
            try:
                made = await self.graph.create_master_category(self.mailbox, name, color)
                _remember_created(self.database, self.entry_id, name, str(made.get("id") or ""))
            except (Conflict, PermanentError):
                # Duplicate names: 409 in the emulator; Microsoft's answer is not documented
                # (graph.md 3.7), so any refusal is checked against a fresh list.
                known = await self.list_master_categories()
                if name.lower() not in known:
                    raise
            self.cache.add_master_category(self.mailbox, name)
            known = self.cache.master_categories(self.mailbox) or known
        self.record("master_category", defer=True)  # written with the label

    async def list_master_categories(self) -> set[str]:
        names = {
            str(c.get("displayName", "")) for c in await self.graph.master_categories(self.mailbox)
        }
        self.cache.set_master_categories(self.mailbox, names)
        return self.cache.master_categories(self.mailbox) or set()

    async def label(self, current_categories: list[str]) -> None:
        """Write the union of the message's categories and the plan's, naming the change key
        those categories were read with: Graph replaces the whole array, so a write from a
        stale copy could drop a category a person just added. A refusal costs one read."""
        wanted = list(self.plan.add_categories)
        existing, tag = list(current_categories), self.seen_etag
        for _ in range(LABEL_ATTEMPTS):
            if tag is None:
                message = await self.read_message()
                existing = [str(c) for c in message.get("categories") or []]
                tag = _etag(message)
            missing = _missing(existing, wanted)
            if not missing:
                break
            try:
                self.snapshot = await self.on_message(
                    self.graph.set_categories(
                        self.mailbox, self.message_id, existing + missing, if_match=tag
                    )
                )
                break
            except StaleChangeKey:
                if tag is None:
                    raise  # no key was named: not a refusal a fresh read can cure
                log.info("ledger %s: message changed since it was read; reading", self.entry_id)
                tag = None
        else:
            # Changed between every read and write: leave the row claimed; the job retries.
            raise TransientError("the message kept changing", code="ErrorIrresolvableConflict")
        # a move follows: where the message is now rides on this record when the target's
        # id is known (cached); else the folder step, which resolves it, writes it
        path = self.plan.folder
        target = self.cache.get(self.mailbox, path) if path and "move" not in self.done else None
        source = self.source_to_record(target)
        if source is not None:
            self.record("label", source_folder_id=source)
        else:
            self.record("label")

    def source_to_record(self, target: str | None) -> str | None:
        """Where the message is now, when it still has to go into the row before the move to
        ``target`` (what Undo moves it back to): not yet recorded, and not the target itself."""
        if self.source_recorded or target is None:
            return None
        source = (self.snapshot or {}).get("parentFolderId")
        return source if isinstance(source, str) and source and source != target else None

    async def ensure_folder(self, path: str) -> str:
        segments = folder_paths.segments(path)
        if not segments:
            raise PermanentError(f"empty folder path {path!r}", code="InvalidFolderPath")
        if folder_paths.protected_folder(segments) is not None:
            raise DeletionRefused(
                "a plan may not file mail into Deleted Items or Recoverable Items"
            )
        cached = self.cache.get(self.mailbox, path)
        if cached is not None:
            return cached
        if len(segments) == 1 and segments[0].lower() in WELL_KNOWN_TARGETS:
            folder = await self.graph.folder(self.mailbox, segments[0].lower())
            folder_id = str(folder["id"])
            self.cache.put(self.mailbox, path, folder_id)
            return folder_id
        parent: str | None = None  # None: msgfolderroot (/mailFolders)
        for depth, name in enumerate(segments, start=1):
            prefix = "/".join(segments[:depth])
            known = self.cache.get(self.mailbox, prefix)
            if known is None:
                known = await self.find_child(parent, name)
                if known is None:
                    known = await self.create_child(parent, name)
                elif known in await self.graph.protected_folder_ids(self.mailbox):
                    # Deleted Items under another display name (a localized mailbox).
                    raise DeletionRefused(
                        "a plan may not file mail into Deleted Items or Recoverable Items"
                    )
                self.cache.put(self.mailbox, prefix, known)
            parent = known
        assert parent is not None
        return parent

    async def find_child(self, parent: str | None, name: str) -> str | None:
        wanted = folder_paths.segment_key(name)
        for folder in await self.graph.child_folders(self.mailbox, parent):
            if folder_paths.segment_key(str(folder.get("displayName", ""))) == wanted:
                return str(folder["id"])
        return None

    async def create_child(self, parent: str | None, name: str) -> str:
        try:
            created = await self.graph.create_folder(self.mailbox, name, parent)
        except Conflict:
            # ErrorFolderExists: someone created it since we listed. Use theirs.
            found = await self.find_child(parent, name)
            if found is None:
                raise  # a hidden folder holds the name: nothing we may file into
            return found
        return str(created["id"])

    async def move(self, path: str, folder_id: str) -> None:
        message = self.snapshot or await self.read_message()
        if message.get("parentFolderId") == folder_id:
            # already there: a resumed move, or the user filed it
            self.record("move", defer=True, filed_folder_id=folder_id)
            return
        if not self.source_recorded:
            self.remember_source(message.get("parentFolderId"))
        try:
            moved = await self.graph.move(self.mailbox, self.message_id, folder_id)
        except NotFound:
            # The message, or the (cached) folder, vanished. Tell which before deciding.
            await self.read_message()
            self.cache.forget(self.mailbox, path)
            folder_id = await self.ensure_folder(path)
            moved = await self.on_message(self.graph.move(self.mailbox, self.message_id, folder_id))
        except DeletionRefused:
            # The guard found the (cached) folder inside Deleted Items: a person deleted it.
            # Never file there; resolve the path once more from the root (which makes the
            # folder again, as for a folder that vanished), else the row fails.
            refused = folder_id
            log.warning("ledger %s: folder of %r lies in Deleted Items now", self.entry_id, path)
            top = folder_paths.segments(path)[0]
            self.cache.forget(self.mailbox, top)  # the deleted folder may be any ancestor
            folder_id = await self.ensure_folder(path)
            if folder_id == refused:
                raise
            moved = await self.on_message(self.graph.move(self.mailbox, self.message_id, folder_id))
        if moved.get("id") not in (None, self.message_id):
            log.warning("ledger %s: move changed the message id (not immutable?)", self.entry_id)
        self.snapshot = moved
        # written with the final state (or before a forward's send): a resumed run finds the
        # message in its folder and records the move without moving it again
        self.record("move", defer=True, filed_folder_id=folder_id)

    def remember_source(self, folder_id: Any) -> None:
        """Record where the message is before it is moved (what Undo moves it back to), once:
        a resumed run finds the message already moved, and keeps the first source."""
        if not isinstance(folder_id, str) or not folder_id:
            return
        self.pending.append(("", {"source_folder_id": folder_id}))  # columns only, no step
        self.source_recorded = True
        self.flush()

    # ------------------------------------------------------------------ forward
    async def forward(self) -> None:
        """The plan's forward, exactly once (:class:`~.forwarding.Forwarder`); the draft id
        is kept in ``forward_draft_id``, the steps in ``actions_done``."""
        forward = self.plan.forward
        assert forward is not None
        sender = Forwarder(
            graph=self.graph,
            mailbox=self.mailbox,
            message_id=self.message_id,
            to=tuple(forward.to),
            comment=forward.comment,
            done=self.done,
            draft_id=self.draft_id,
            keep_draft=self.keep_draft,
            record=self.record,
            on_message=self.on_message,
            label=f"ledger {self.entry_id}",
        )
        await sender.run()
        self.draft_id = sender.draft_id
        self.warning = sender.warning or self.warning

    def keep_draft(self, ours: str, vanished: str | None) -> str:
        def change(row: LedgerEntry) -> str:
            if vanished is None:
                if row.forward_draft_id is None:
                    row.forward_draft_id = ours
                _append(row, "forward_draft")
            elif row.forward_draft_id == vanished:
                row.forward_draft_id = ours
            return row.forward_draft_id or ours

        recorded = self._write(change)
        if vanished is None:
            self.done.add("forward_draft")
            self.performed.append("forward_draft")
        return recorded


def _etag(message: dict[str, Any] | None) -> str | None:
    """A message's change key as Graph showed it (``@odata.etag``), for ``If-Match``."""
    message = message or {}
    tag = message.get("@odata.etag")
    if isinstance(tag, str) and tag:
        return tag
    key = message.get("changeKey")
    return f'W/"{key}"' if isinstance(key, str) and key else None


def _missing(existing: list[str], wanted: list[str]) -> list[str]:
    have = {c.lower() for c in existing}
    out: list[str] = []
    for name in wanted:
        if name.lower() not in have:
            have.add(name.lower())
            out.append(name)
    return out


_ORDER = (
    "master_category",
    "label",
    "folder",
    "move",
    "forward_draft",
    SEND_ATTEMPTED,
    "forward_sent",
)


def _action_order(action: str) -> int:
    return _ORDER.index(action) if action in _ORDER else len(_ORDER)
