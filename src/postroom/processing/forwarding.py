"""One forward, sent exactly once: the executor's ``forward`` action (a category's forward) and
Fix's forward (the chosen category's, after the person confirmed it) both go through here.

A forward is the one action that cannot be undone or repeated harmlessly, so it is split in
two: ``createForward`` makes a draft whose immutable id is recorded (step ``forward_draft``)
*before* anything is sent; then that one draft is sent. Graph sends a draft at most once (after
``send`` the id names the sent item, ``isDraft`` false, and a second ``send`` is refused), so
the recorded draft id is the idempotency key of the forward. Where the id and the steps are
recorded is the caller's: the executor keeps them in ``ledger.forward_draft_id`` and
``actions_done``, Fix in ``plan.fix.forward.draft_id`` and ``undo_done``.

Crash windows, and what a resumed run does:

* **createForward acted, its id never recorded** (crash, or a 5xx/timeout after Graph made
  the draft): the resumed run creates a second draft. The first stays an unsent draft in
  Drafts (Postroom never deletes anything); only a recorded draft is ever sent. When two
  runs race, the first recorded draft id wins and the other adopts it.
* **draft recorded, send not confirmed** (503 before Graph acted, timeout after it acted,
  crash after the 202): the resumed run GETs the draft by its immutable id. ``isDraft``
  false → it was sent: record ``forward_sent``, send nothing. ``isDraft`` true → send it
  (still at most once: Graph refuses to send a non-draft; that refusal is read the same way).
* **the draft is gone (404)**: it was purged — by the user, before or after it was sent; Graph
  cannot tell us which. Before every send the run records :data:`SEND_ATTEMPTED`. Without
  that marker Postroom provably never asked Graph to send this draft, so a new draft is made
  and sent. With it, the draft may have gone out; at most once beats at least once: no new
  forward, and the run ends with the warning :data:`FORWARD_UNCONFIRMED`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from postroom.graph.client import GraphClient
from postroom.graph.errors import Conflict, NotFound, PermanentError

log = logging.getLogger("postroom.processing")

DRAFT_SELECT = "id,isDraft,parentFolderId"
SEND_ATTEMPTED = "forward_send_attempted"  # marker: a send of the recorded draft was requested
FORWARD_UNCONFIRMED = "forward_unconfirmed"
FORWARD_STEPS = ("forward_draft", SEND_ATTEMPTED, "forward_sent")

KeepDraft = Callable[[str, str | None], str]
"""``keep(draft_id, vanished)``: record a new draft's id, in one short transaction, and return
the id now recorded. With ``vanished`` None it is the first draft: recorded unless another run
recorded one first (then that one is returned), and the step ``forward_draft`` with it. With
``vanished`` it replaces that draft, found purged before any send was asked."""


async def _as_is(call: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    return await call


@dataclass
class Forwarder:
    """Forward message ``message_id`` of ``mailbox`` to ``to`` once. ``done`` holds the steps
    recorded so far (shared with the caller; ``record`` adds to it)."""

    graph: GraphClient
    mailbox: str
    message_id: str
    to: tuple[str, ...]
    comment: str
    done: set[str]
    draft_id: str | None
    keep_draft: KeepDraft
    record: Callable[[str], None]
    on_message: Callable[[Awaitable[dict[str, Any]]], Awaitable[dict[str, Any]]] = _as_is
    """Awaits a request addressed to the forwarded message (the caller maps its 404)."""
    label: str = "forward"  # for the log: whose forward this is (ids only)
    warning: str | None = None

    async def run(self) -> None:
        if "forward_sent" in self.done:
            return
        attempted_before = SEND_ATTEMPTED in self.done
        if self.draft_id is not None:
            state = await self.draft_state(self.draft_id)
            if state == "sent":
                self.record("forward_sent")
                return
            if state == "gone":
                if attempted_before:
                    # A send was requested and the draft is gone: it may have gone out.
                    log.warning("%s: forward draft gone after a send", self.label)
                    self.warning = FORWARD_UNCONFIRMED
                    return
                # Proof it was never sent by Postroom: no send was ever requested for it.
                await self.replace_draft(self.draft_id)
        else:
            await self.create_draft()
        await self.send()

    async def draft_state(self, draft_id: str) -> str:
        """ "draft", "sent" or "gone", from Graph's view of the recorded draft id."""
        try:
            draft = await self.graph.message(self.mailbox, draft_id, select=DRAFT_SELECT)
        except NotFound:
            return "gone"
        return "draft" if draft.get("isDraft") else "sent"

    async def new_draft(self) -> str:
        draft = await self.on_message(
            self.graph.create_forward(
                self.mailbox, self.message_id, to=list(self.to), comment=self.comment or None
            )
        )
        return str(draft["id"])

    async def create_draft(self) -> None:
        ours = await self.new_draft()
        self.draft_id = self.keep_draft(ours, None)
        self.done.add("forward_draft")
        if self.draft_id != ours:
            # Another run recorded its draft first; ours stays an unsent draft.
            log.warning("%s: adopted a concurrently recorded forward draft", self.label)
        log.info("%s: forward_draft recorded (%s)", self.label, self.draft_id)

    async def replace_draft(self, vanished: str) -> None:
        ours = await self.new_draft()
        self.draft_id = self.keep_draft(ours, vanished)
        log.info("%s: forward draft vanished unsent; new draft recorded", self.label)

    async def send(self) -> None:
        assert self.draft_id is not None
        draft_id = self.draft_id
        attempted_before = SEND_ATTEMPTED in self.done
        if not attempted_before:
            self.record(SEND_ATTEMPTED)
        try:
            await self.graph.send_draft(self.mailbox, draft_id)
        except NotFound:
            if attempted_before:
                self.warning = FORWARD_UNCONFIRMED
                return
            raise  # never sent by us; the draft vanished just now: failed, visibly
        except (Conflict, PermanentError):
            # Graph refuses to send a non-draft: if it is sent, someone (an earlier attempt
            # whose answer was lost, or a concurrent run) already sent this one draft.
            if await self.draft_state(draft_id) != "sent":
                raise
        self.record("forward_sent")
