"""The executor against m365sim over HTTPS and the real PostgreSQL: each action exactly once.

Every test asserts on what Graph received (``sim.request_log``), what left the mailbox
(``sim.store.outbound``), the mailbox's state, and the ledger rows — including the crash
windows of a forward, the never-delete invariant and that no message content is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import ssl
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select, text

from m365sim.state import EmulatorState
from m365sim.store import Category, Message, User
from postroom.accounts.models import Workspace
from postroom.db import Database
from postroom.graph import (
    AuthFailed,
    Conflict,
    GraphClient,
    TransientError,
)
from postroom.graph.budget import MailboxBudget
from postroom.integrations.models import Integration, Mailbox
from postroom.processing.executor import (
    FORWARD_UNCONFIRMED,
    SEND_ATTEMPTED,
    ExecutionResult,
    FolderCache,
    claim,
    execute,
)
from postroom.processing.message_keys import message_key
from postroom.processing.models import LedgerEntry
from postroom.processing.plan import Forward, Plan
from tests.helpers import Org

SUBJECT = "Invoice 2024-117 from Fabrikam"
BODY = "Please pay EUR 1,234.56 to IBAN NL00TEST0123456789"
SENDER = "billing@fabrikam.test"
COLORS = {"Invoices": "preset7"}
KEY_SECRET = b"message-key-secret-for-the-tests"

# every mailbox the tests touched: none may ever see a deletion (invariant 1)
_TOUCHED: set[str] = set()


class StaticToken:
    def __init__(self, token: str) -> None:
        self.token = token

    async def __call__(self, *, force_refresh: bool = False) -> str:
        return self.token


@dataclass
class Env:
    sim: EmulatorState
    org: Org
    database: Database
    graph_url: str
    ssl_context: ssl.SSLContext
    integration_id: str
    mailbox_row_id: str
    cache: FolderCache = field(default_factory=FolderCache)

    @property
    def user(self) -> User:
        return self.org.alice

    @property
    def mailbox(self) -> str:
        return self.org.alice.id

    def deliver(self, *, categories: list[str] | None = None) -> Message:
        return self.org.deliver(
            self.user, subject=SUBJECT, body=BODY, sender=SENDER, categories=categories
        )

    def plan(self, *, folder: str | None = "Finance/Invoices", forward: bool = True) -> Plan:
        return Plan(
            category="Invoices",
            add_categories=("Invoices",),
            folder=folder,
            forward=Forward((self.org.bob.user_principal_name,), "For the books")
            if forward
            else None,
            decided_by="rule",
        )

    def claim(self, msg: Message) -> LedgerEntry | None:
        with self.database.session() as db:
            return claim(
                db,
                integration_id=self.integration_id,
                mailbox_id=self.mailbox_row_id,
                message_id=msg.immutable_id,
                internet_message_id=msg.internet_message_id,
                historical=False,
                key_secret=KEY_SECRET,
            )

    def run(
        self,
        body: Callable[[GraphClient], Awaitable[Any]],
        *,
        client: type[GraphClient] = GraphClient,
        token: str | None = None,
    ) -> Any:
        async def main() -> Any:
            async with client(
                base_url=self.graph_url,
                token=StaticToken(token or self.org.app_token()),
                app_id=self.org.app.client_id,
                verify=self.ssl_context,
                budget=MailboxBudget(),
                max_backoff=0.05,
            ) as graph:
                return await body(graph)

        return asyncio.run(main())

    def execute(
        self,
        entry_id: str,
        plan: Plan,
        *,
        current: list[str] | None = None,
        manage_colors: bool = True,
        client: type[GraphClient] = GraphClient,
        token: str | None = None,
    ) -> ExecutionResult:
        result: ExecutionResult = self.run(
            lambda graph: execute(
                graph=graph,
                database=self.database,
                entry_id=entry_id,
                mailbox=self.mailbox,
                plan=plan,
                current_categories=current or [],
                colors=COLORS,
                manage_colors=manage_colors,
                folder_cache=self.cache,
            ),
            client=client,
            token=token,
        )
        return result

    def process(self, msg: Message, plan: Plan, **kwargs: Any) -> tuple[str, ExecutionResult]:
        entry = self.claim(msg)
        assert entry is not None
        return entry.id, self.execute(entry.id, plan, current=list(msg.categories), **kwargs)

    def entry(self, entry_id: str) -> LedgerEntry:
        with self.database.session() as db:
            row = db.get(LedgerEntry, entry_id)
            assert row is not None
            return row

    def requests(self, method: str, pattern: str) -> int:
        """Requests Graph received for this mailbox whose path matches ``pattern``."""
        regex = re.compile(pattern)
        return sum(
            1
            for r in list(self.sim.request_log)
            if r.mailbox_id == self.mailbox and r.method == method and regex.search(r.path)
        )

    def mailbox_requests(self) -> int:
        return sum(1 for r in list(self.sim.request_log) if r.mailbox_id == self.mailbox)

    def forwards(self, msg: Message) -> list[Any]:
        return [o for o in self.sim.store.outbound if o.source_message_id == msg.immutable_id]

    def folder_path(self, msg: Message) -> str:
        mailbox = self.user.mailbox
        folder = mailbox.folders[mailbox.messages[msg.immutable_id].folder_id]
        names = [f.display_name for f in self.sim.store.folder_path(mailbox, folder)]
        return "/".join(names)

    def children(self, parent_id: str) -> list[Any]:
        return self.user.mailbox.children(parent_id, include_hidden=True)

    def root_id(self) -> str:
        root = self.user.mailbox.folder("msgfolderroot")
        assert root is not None
        return root.id

    def drafts(self) -> list[Message]:
        mailbox = self.user.mailbox
        drafts = mailbox.folder("drafts")
        assert drafts is not None
        return [mailbox.messages[i] for i in drafts.messages]

    def purge(self, message_id: str) -> None:
        """The user hard-deletes a message (Shift+Delete, then purged): Graph answers 404."""
        mailbox = self.user.mailbox
        msg = mailbox.messages[message_id]
        self.sim.store.remove_message(self.org.tenant, mailbox, msg)


@pytest.fixture(scope="module", autouse=True)
def never_deletes(sim_server: Any) -> Iterator[None]:
    yield
    touched = {d for d in sim_server.state.store.deletions if d.mailbox_id in _TOUCHED}
    assert not touched, f"mail was deleted: {touched}"


@pytest.fixture
def env(
    clean_db: Database,
    sim: EmulatorState,
    org: Org,
    graph_url: str,
    ssl_context: ssl.SSLContext,
) -> Iterator[Env]:
    with clean_db.session() as db:
        workspace = Workspace(name="Acme")
        db.add(workspace)
        db.flush()
        integration = Integration(
            workspace_id=workspace.id,
            kind="organization",
            status="connected",
            tenant_id=org.tenant.id,
        )
        db.add(integration)
        db.flush()
        mailbox = Mailbox(
            integration_id=integration.id,
            graph_user_id=org.alice.id,
            address=org.alice.user_principal_name,
            kind="tenant",
        )
        db.add(mailbox)
        db.flush()
        ids = integration.id, mailbox.id
    _TOUCHED.update({org.alice.id, org.bob.id})
    yield Env(sim, org, clean_db, graph_url, ssl_context, *ids)
    deletions = [d for d in sim.store.deletions if d.mailbox_id in _TOUCHED]
    assert deletions == []


# ---------------------------------------------------------------------- the happy path
def test_labels_files_and_forwards_once_keeping_the_users_categories(env: Env) -> None:
    msg = env.deliver(categories=["Personal"])
    original_id = msg.immutable_id
    entry_id, result = env.process(msg, env.plan())

    assert result.state == "done"
    assert result.performed == (
        "master_category",
        "label",
        "folder",
        "move",
        "forward_draft",
        "forward_sent",
    )
    # the user's own category stays; ours is added, with its colour on the master list
    assert msg.categories == ["Personal", "Invoices"]
    masters = {c.display_name: c.color for c in env.user.mailbox.categories.values()}
    assert masters == {"Invoices": "preset7"}
    # filed under msgfolderroot/Finance/Invoices, same immutable id
    assert env.folder_path(msg) == "Finance/Invoices"
    assert original_id in env.user.mailbox.messages
    assert env.requests("POST", r"/mailFolders$") == 1
    assert env.requests("POST", r"/childFolders$") == 1
    # forwarded exactly once, to Bob's inbox
    assert len(env.forwards(msg)) == 1
    bob_inbox = env.org.bob.mailbox.folder("inbox")
    assert bob_inbox is not None and len(bob_inbox.messages) == 1
    assert env.drafts() == []
    # the ledger
    row = env.entry(entry_id)
    assert row.state == "done" and row.done_at is not None and row.last_error is None
    assert row.message_id == original_id
    plain = hashlib.sha256(msg.internet_message_id.encode()).hexdigest()
    assert row.message_key == message_key(msg.internet_message_id, KEY_SECRET) != plain
    assert not row.legacy_key
    assert row.forward_draft_id is not None
    sent = env.user.mailbox.messages[row.forward_draft_id]
    assert not sent.is_draft
    assert env.user.mailbox.folders[sent.folder_id].well_known == "sentitems"
    assert set(row.actions_done) >= {"label", "move", "forward_draft", "forward_sent"}
    assert row.plan is not None and row.plan["folder"] == "Finance/Invoices"


def test_executing_the_same_plan_twice_does_nothing_the_second_time(env: Env) -> None:
    msg = env.deliver()
    entry_id, first = env.process(msg, env.plan())
    assert first.state == "done"
    before = env.mailbox_requests()

    again = env.execute(entry_id, env.plan())

    assert again.state == "done" and again.performed == ()
    assert env.mailbox_requests() == before  # not one request
    assert env.claim(msg) is None  # a later sync does not even get the row
    assert len(env.forwards(msg)) == 1
    assert msg.categories == ["Invoices"]


@contextlib.contextmanager
def _writes(env: Env) -> Iterator[list[str]]:
    """Each write the database gets, as one entry: a transaction's commit, or a statement that
    changes rows outside a transaction (autocommit, a transaction of its own)."""
    from sqlalchemy import event

    seen: list[str] = []

    def committed(conn: Any) -> None:
        seen.append("commit")

    def executed(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper()
        autocommit = conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"
        if autocommit and verb in ("INSERT", "UPDATE", "DELETE"):
            seen.append(" ".join(statement.split()[:3]))

    event.listen(env.database.engine, "commit", committed)
    event.listen(env.database.engine, "after_cursor_execute", executed)
    try:
        yield seen
    finally:
        event.remove(env.database.engine, "commit", committed)
        event.remove(env.database.engine, "after_cursor_execute", executed)


def test_a_label_and_a_move_cost_three_writes_and_keep_every_record(env: Env) -> None:
    # The first email warms the folder cache and the master list; the second is the common
    # path: the plan (with the row read), the label (with the colour step and where the email
    # was: what Undo moves it back to, in the row before the move), and the final state (with
    # the folder and the move).
    env.process(env.deliver(), env.plan(forward=False))
    msg = env.deliver()
    entry = env.claim(msg)
    assert entry is not None
    inbox = env.user.mailbox.folder("inbox")
    assert inbox is not None
    with _writes(env) as seen:
        result = env.execute(entry.id, env.plan(forward=False))
    assert result.state == "done"
    assert result.performed == ("master_category", "label", "folder", "move")
    assert seen == ["UPDATE ledger SET"] * 3  # each one statement, no transaction around it
    row = env.entry(entry.id)
    assert row.state == "done" and row.done_at is not None
    assert row.actions_done == ["master_category", "label", "folder", "move"]
    assert row.source_folder_id == inbox.id
    assert row.filed_folder_id == env.user.mailbox.messages[msg.immutable_id].folder_id
    assert env.folder_path(msg) == "Finance/Invoices"


def test_a_crash_after_the_move_before_its_record_resumes_without_moving_again(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    from postroom.processing import executor

    env.process(env.deliver(), env.plan(forward=False))  # warm caches: the common path
    msg = env.deliver()
    entry = env.claim(msg)
    assert entry is not None
    inbox = env.user.mailbox.folder("inbox")
    assert inbox is not None
    real_finish = executor._Run.finish

    def crash(self: Any, state: str, last_error: str | None) -> Any:
        raise RuntimeError("the worker died before the move was written")

    monkeypatch.setattr(executor._Run, "finish", crash)
    with pytest.raises(RuntimeError):
        env.execute(entry.id, env.plan(forward=False))
    row = env.entry(entry.id)
    assert row.state == "claimed" and "move" not in row.actions_done
    assert row.source_folder_id == inbox.id  # written before the move, with the label
    assert env.folder_path(msg) == "Finance/Invoices"
    moves = env.requests("POST", r"/move$")

    monkeypatch.setattr(executor._Run, "finish", real_finish)
    again = env.execute(entry.id, env.plan(forward=False))
    assert again.state == "done"
    assert env.requests("POST", r"/move$") == moves  # found in its folder: not moved again
    row = env.entry(entry.id)
    assert {"label", "folder", "move"} <= set(row.actions_done)
    assert row.source_folder_id == inbox.id  # the first source, not the folder it is in now
    assert msg.categories == ["Invoices"]


def test_labels_already_present_are_not_written_again(env: Env) -> None:
    msg = env.deliver(categories=["invoices"])
    _, result = env.process(msg, env.plan(folder=None, forward=False), manage_colors=False)
    assert result.state == "done" and result.actions_done == ("label",)
    assert env.requests("PATCH", r"/messages/") == 0
    assert msg.categories == ["invoices"]


def test_a_category_added_by_the_user_meanwhile_survives_the_label(env: Env) -> None:
    # The delta said "no categories"; the user added one since. Read-modify-write keeps it.
    msg = env.deliver()
    msg.categories = ["Follow up"]
    entry = env.claim(msg)
    assert entry is not None
    env.execute(entry.id, env.plan(folder=None, forward=False), current=[])
    assert msg.categories == ["Follow up", "Invoices"]


def test_an_existing_master_category_is_kept_and_a_stale_cache_tolerated(env: Env) -> None:
    mailbox = env.user.mailbox
    existing = Category(str(uuid.uuid4()), "invoices", "preset3")
    mailbox.categories[existing.id] = existing
    env.cache.set_master_categories(env.mailbox, set())  # stale: says the list is empty

    msg = env.deliver()
    _, result = env.process(msg, env.plan(folder=None, forward=False))

    assert result.state == "done"
    assert [(c.display_name, c.color) for c in mailbox.categories.values()] == [
        ("invoices", "preset3")  # the user's colour is not overwritten
    ]
    assert env.requests("POST", r"/outlook/masterCategories$") == 1  # 409, then re-listed
    assert env.cache.master_categories(env.mailbox) == {"invoices"}


# ---------------------------------------------------------------------- folders
def test_a_folder_the_user_created_in_another_case_is_reused(env: Env) -> None:
    store, mailbox = env.sim.store, env.user.mailbox
    finance = store.create_folder(mailbox, "FINANCE", env.root_id())
    assert finance is not None
    invoices = store.create_folder(mailbox, "invoices", finance.id)
    assert invoices is not None

    msg = env.deliver()
    _, result = env.process(msg, env.plan(forward=False))

    assert result.state == "done"
    assert mailbox.messages[msg.immutable_id].folder_id == invoices.id
    assert env.requests("POST", r"/mailFolders($|/[^/]+/childFolders$)") == 0
    assert [f.display_name for f in env.children(env.root_id())].count("FINANCE") == 1


@pytest.mark.parametrize("status", [409, 400])
def test_error_folder_exists_race_is_resolved_by_relisting(env: Env, status: int) -> None:
    env.sim.config.folder_exists_status = status  # reported as 409 by some, 400 by others
    store, sim_mailbox, root = env.sim.store, env.user.mailbox, env.root_id()
    created: list[str] = []

    class RacedClient(GraphClient):
        """Another worker creates the folder between our listing and our POST."""

        async def create_folder(
            self, mailbox: str, display_name: str, parent: str | None = None
        ) -> dict[str, Any]:
            other = store.create_folder(sim_mailbox, display_name.upper(), parent or root)
            assert other is not None
            created.append(other.id)
            try:
                return await super().create_folder(mailbox, display_name, parent)
            except Conflict:
                conflicts.append(display_name)
                raise

    conflicts: list[str] = []
    msg = env.deliver()
    _, result = env.process(msg, env.plan(forward=False), client=RacedClient)

    assert result.state == "done"
    assert conflicts == ["Finance", "Invoices"]
    assert len(created) == 2  # Finance, then Invoices inside it
    assert sim_mailbox.messages[msg.immutable_id].folder_id == created[1]
    assert [f.display_name.lower() for f in env.children(root)].count("finance") == 1


def test_a_well_known_folder_is_used_by_name(env: Env) -> None:
    msg = env.deliver()
    _, result = env.process(msg, env.plan(folder="Archive", forward=False))
    archive = env.user.mailbox.folder("archive")
    assert result.state == "done" and archive is not None
    assert env.user.mailbox.messages[msg.immutable_id].folder_id == archive.id
    assert env.requests("POST", r"/mailFolders") == 0


def test_a_cached_folder_that_vanished_is_resolved_again(env: Env) -> None:
    bob_inbox = env.org.bob.mailbox.folder("inbox")
    assert bob_inbox is not None
    env.cache.put(env.mailbox, "Finance/Invoices", bob_inbox.id)  # unknown in Alice's mailbox

    msg = env.deliver()
    _, result = env.process(msg, env.plan(forward=False))

    assert result.state == "done"
    assert env.folder_path(msg) == "Finance/Invoices"
    assert env.cache.get(env.mailbox, "finance/invoices") != bob_inbox.id


def test_a_move_into_a_deletion_folder_is_refused_and_marked_failed(env: Env) -> None:
    inbox = env.user.mailbox.folder("inbox")
    assert inbox is not None
    for path in ("deleteditems", "Deleted Items"):
        msg = env.deliver()
        entry = env.claim(msg)
        assert entry is not None
        result = env.execute(entry.id, env.plan(folder=path, forward=False))
        assert result.state == "failed" and result.last_error == "DeletionRefused"
        assert env.entry(entry.id).state == "failed"
        assert msg.folder_id == inbox.id
    assert env.requests("POST", r"/move$") == 0


# ---------------------------------------------------------------------- forward crash windows
def test_send_fails_then_resume_sends_the_same_draft_once(env: Env) -> None:
    env.sim.faults.add(
        {"path": r"/messages/[^/]+/send$", "method": "POST", "status": 503, "count": 1}
    )
    msg = env.deliver()
    entry = env.claim(msg)
    assert entry is not None

    with pytest.raises(TransientError):
        env.execute(entry.id, env.plan())

    row = env.entry(entry.id)
    assert row.state == "claimed" and row.attempts == 1
    assert row.last_error == "serviceNotAvailable"
    assert row.forward_draft_id is not None
    assert {"label", "move", "forward_draft", SEND_ATTEMPTED} <= set(row.actions_done)
    assert "forward_sent" not in row.actions_done
    assert env.forwards(msg) == []
    draft_id = row.forward_draft_id

    # the job retries: claim hands the unfinished row back, and execution resumes
    resumed = env.claim(msg)
    assert resumed is not None and resumed.id == entry.id
    result = env.execute(entry.id, env.plan())

    assert result.state == "done" and result.performed == ("forward_sent",)
    assert len(env.forwards(msg)) == 1
    assert env.requests("POST", r"/createForward$") == 1  # no second draft
    assert env.requests("POST", r"/send$") == 2  # the refused one, then the real one
    assert env.requests("PATCH", r"/messages/") == 1  # finished actions are not repeated
    assert env.requests("POST", r"/move$") == 1
    row = env.entry(entry.id)
    assert row.forward_draft_id == draft_id and row.last_error is None
    assert env.drafts() == []


def test_send_acted_but_the_answer_was_lost_is_not_sent_again(env: Env) -> None:
    class LostAnswer(GraphClient):
        """Graph sends the draft; the 202 never reaches us (timeout, dropped connection)."""

        async def send_draft(self, mailbox: str, draft_id: str) -> None:
            await super().send_draft(mailbox, draft_id)
            raise TransientError("ReadTimeout: the answer was lost")

    msg = env.deliver()
    entry = env.claim(msg)
    assert entry is not None
    with pytest.raises(TransientError):
        env.execute(entry.id, env.plan(), client=LostAnswer)
    assert len(env.forwards(msg)) == 1
    assert "forward_sent" not in env.entry(entry.id).actions_done

    result = env.execute(entry.id, env.plan())

    assert result.state == "done" and result.performed == ("forward_sent",)
    assert len(env.forwards(msg)) == 1
    assert env.requests("POST", r"/send$") == 1


def test_crash_after_send_before_recording_does_not_send_again(env: Env) -> None:
    msg = env.deliver()
    entry = env.claim(msg)
    assert entry is not None
    to = [env.org.bob.user_principal_name]

    async def send_by_hand(graph: GraphClient) -> str:
        draft = await graph.create_forward(env.mailbox, msg.immutable_id, to=to)
        await graph.send_draft(env.mailbox, draft["id"])
        return str(draft["id"])

    draft_id = env.run(send_by_hand)
    with env.database.session() as db:
        row = db.get(LedgerEntry, entry.id)
        assert row is not None
        row.plan = env.plan(folder=None).to_json()
        row.actions_done = ["master_category", "label", "forward_draft"]
        row.forward_draft_id = draft_id
    msg.categories = ["Invoices"]
    assert len(env.forwards(msg)) == 1

    result = env.execute(entry.id, env.plan(folder=None))

    assert result.state == "done" and result.performed == ("forward_sent",)
    assert len(env.forwards(msg)) == 1
    assert env.requests("POST", r"/send$") == 1
    assert env.requests("POST", r"/createForward$") == 1


def test_a_draft_that_vanished_before_any_send_is_replaced_and_sent(env: Env) -> None:
    env.sim.faults.add(
        {"path": r"/messages/[^/]+/createForward$", "method": "POST", "status": 503, "count": 1}
    )
    msg = env.deliver()
    entry = env.claim(msg)
    assert entry is not None
    with pytest.raises(TransientError):
        env.execute(entry.id, env.plan(folder=None))
    assert env.entry(entry.id).forward_draft_id is None

    # Next attempt: the draft is made and recorded, then the worker dies before sending.
    class DiesBeforeSending(GraphClient):
        async def send_draft(self, mailbox: str, draft_id: str) -> None:
            raise TransientError("worker stopped")

    with pytest.raises(TransientError):
        env.execute(entry.id, env.plan(folder=None), client=DiesBeforeSending)
    row = env.entry(entry.id)
    assert row.forward_draft_id is not None
    # what the marker would say: the send was requested. Undo it: this crash came before.
    with env.database.session() as db:
        stored = db.get(LedgerEntry, entry.id)
        assert stored is not None
        stored.actions_done = [a for a in stored.actions_done if a != SEND_ATTEMPTED]
    env.purge(row.forward_draft_id)  # the user hard-deleted the draft

    result = env.execute(entry.id, env.plan(folder=None))

    assert result.state == "done" and result.last_error is None
    assert len(env.forwards(msg)) == 1
    assert env.entry(entry.id).forward_draft_id != row.forward_draft_id


def test_a_draft_gone_after_a_send_request_is_not_resent(env: Env) -> None:
    class LostAnswer(GraphClient):
        async def send_draft(self, mailbox: str, draft_id: str) -> None:
            await super().send_draft(mailbox, draft_id)
            raise TransientError("ReadTimeout")

    msg = env.deliver()
    entry = env.claim(msg)
    assert entry is not None
    with pytest.raises(TransientError):
        env.execute(entry.id, env.plan(folder=None), client=LostAnswer)
    row = env.entry(entry.id)
    assert row.forward_draft_id is not None and SEND_ATTEMPTED in row.actions_done
    env.purge(row.forward_draft_id)  # the user purged the sent item: Graph answers 404

    result = env.execute(entry.id, env.plan(folder=None))

    # at most once wins: no second forward, and the UI can say it is unconfirmed
    assert result.state == "done" and result.last_error == FORWARD_UNCONFIRMED
    assert env.entry(entry.id).last_error == FORWARD_UNCONFIRMED
    assert len(env.forwards(msg)) == 1
    assert env.requests("POST", r"/createForward$") == 1


def test_two_workers_resuming_one_row_at_once_forward_once(env: Env) -> None:
    msg = env.deliver()
    entry = env.claim(msg)
    assert entry is not None
    plan = env.plan()

    async def both(graph: GraphClient) -> list[ExecutionResult]:
        async with GraphClient(
            base_url=env.graph_url,
            token=StaticToken(env.org.app_token()),
            app_id=env.org.app.client_id,
            verify=env.ssl_context,
            budget=MailboxBudget(),
        ) as other:
            runs = [
                execute(
                    graph=g,
                    database=env.database,
                    entry_id=entry.id,
                    mailbox=env.mailbox,
                    plan=plan,
                    current_categories=[],
                    colors=COLORS,
                    manage_colors=True,
                    folder_cache=FolderCache(),
                )
                for g in (graph, other)
            ]
            return list(await asyncio.gather(*runs))

    results = env.run(both)

    assert [r.state for r in results] == ["done", "done"]
    assert len(env.forwards(msg)) == 1
    assert msg.categories == ["Invoices"]
    assert env.folder_path(msg) == "Finance/Invoices"
    assert len([f for f in env.children(env.root_id()) if f.display_name == "Finance"]) == 1
    # at most one extra, never-sent draft may remain from the loser of the race
    assert all(d.is_draft for d in env.drafts()) and len(env.drafts()) <= 1


# ---------------------------------------------------------------------- errors
def test_a_message_deleted_meanwhile_is_skipped(env: Env) -> None:
    msg = env.deliver()
    entry = env.claim(msg)
    assert entry is not None
    env.purge(msg.immutable_id)

    result = env.execute(entry.id, env.plan())

    assert result.state == "skipped"
    row = env.entry(entry.id)
    assert row.state == "skipped"
    assert row.actions_done == ["master_category"]  # mailbox-wide; nothing on the message
    assert env.forwards(msg) == []
    assert env.claim(msg) is None
    assert env.children(env.root_id())  # sanity: the mailbox is still there


def test_a_transient_folder_create_failure_is_retried_by_the_job(env: Env) -> None:
    env.sim.faults.add({"path": r"/childFolders$", "method": "POST", "status": 503, "count": 1})
    msg = env.deliver()
    entry = env.claim(msg)
    assert entry is not None
    with pytest.raises(TransientError):
        env.execute(entry.id, env.plan(forward=False))
    assert env.entry(entry.id).state == "claimed"

    result = env.execute(entry.id, env.plan(forward=False))

    assert result.state == "done"
    assert env.folder_path(msg) == "Finance/Invoices"
    assert env.requests("POST", r"/mailFolders$") == 1  # Finance was found, not made again


def test_a_token_failure_is_raised_and_leaves_the_row_claimed(env: Env) -> None:
    msg = env.deliver()
    entry = env.claim(msg)
    assert entry is not None
    with pytest.raises(AuthFailed):
        env.execute(entry.id, env.plan(), token="not-a-token")
    row = env.entry(entry.id)
    assert row.state == "claimed" and row.attempts == 1 and row.last_error
    assert env.forwards(msg) == []


# ---------------------------------------------------------------------- claim
def test_claim_resumes_an_unfinished_row_and_refuses_a_finished_one(env: Env) -> None:
    msg = env.deliver()
    first = env.claim(msg)
    assert first is not None and first.state == "claimed" and first.actions_done == []
    again = env.claim(msg)
    assert again is not None and again.id == first.id

    env.execute(first.id, env.plan(forward=False))

    assert env.claim(msg) is None
    with env.database.session() as db:
        assert len(list(db.scalars(select(LedgerEntry)))) == 1


def test_concurrent_claims_make_exactly_one_row(env: Env) -> None:
    msg = env.deliver()
    workers = 8
    barrier = threading.Barrier(workers)
    ids: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        with env.database.session() as db:
            barrier.wait()
            entry = claim(
                db,
                integration_id=env.integration_id,
                mailbox_id=env.mailbox_row_id,
                message_id=msg.immutable_id,
                internet_message_id=msg.internet_message_id,
                historical=False,
                key_secret=KEY_SECRET,
            )
            assert entry is not None
            with lock:
                ids.append(entry.id)

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert len(ids) == workers and len(set(ids)) == 1
    with env.database.session() as db:
        rows = list(db.scalars(select(LedgerEntry)))
    assert [r.id for r in rows] == ids[:1]

    # once done, concurrent claims all get None
    env.execute(ids[0], env.plan(forward=False))
    refused: list[LedgerEntry | None] = []

    def late() -> None:
        refused.append(env.claim(msg))

    threads = [threading.Thread(target=late) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert refused == [None] * 4


# ---------------------------------------------------------------------- invariant 2
def test_no_message_content_in_the_ledger_or_the_logs(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="postroom")
    msg = env.deliver(categories=["Personal"])
    env.process(msg, env.plan())

    with env.database.engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM ledger")).mappings().all()
    assert rows
    content = (
        SUBJECT,
        "Invoice 2024-117",
        BODY,
        "NL00TEST",
        SENDER,
        "Fabrikam",
        env.user.user_principal_name,  # the message's recipient
    )
    for row in rows:
        for column, value in row.items():
            for needle in content:
                assert needle.lower() not in str(value).lower(), column
    for needle in content:
        assert needle.lower() not in caplog.text.lower()
