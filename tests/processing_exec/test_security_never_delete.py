"""Issue 12, "a folder name slips mail past the never-delete guard": decided by folder identity.

The executor with a category folder that names Deleted Items or Recoverable Items in any
spelling (trailing space, no-break or em space, zero-width space, full-width letters), a
Deleted Items that carries another display name (a localized or renamed mailbox), a cached
category folder that a person has since deleted (moved into Deleted Items), and a folder a
person made beneath Deleted Items. In every case no mail reaches those folders, the emulator's
deletion audit (which now counts any move into their subtrees) stays empty, and the ledger row
ends in a final state.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from m365sim.store import Folder
from postroom.graph import GraphClient
from postroom.graph.ancestry import FolderAncestry
from tests.processing_exec import test_executor
from tests.processing_exec.test_executor import Env

# The executor tests' fixtures: a fresh mailbox per test, and no deletion in any of them.
env = test_executor.env
never_deletes = test_executor.never_deletes

SPELLINGS = [
    "Deleted Items /Purge",
    "Deleted\u00a0Items/Purge",
    "Recoverable Items /x",
    "deleted\u2003items/x",
    "Deleted\u200bItems/Purge",
    "\ufeffDeleted Items/Purge",
    "\uff24\uff45\uff4c\uff45\uff54\uff45\uff44 Items/Purge",  # full-width "Deleted"
    "Deleted Items",
    "RecoverableItemsDeletions",
]


class StrictClient(GraphClient):
    """A client whose folder knowledge is never trusted twice (ttl 0): every destination's
    ancestry is read again, as after the cache's ttl in production."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(folders=FolderAncestry(ttl=0), **kwargs)


def _deleted(env: Env) -> Folder:
    folder = env.user.mailbox.folder("deleteditems")
    assert folder is not None
    return folder


def _subtree_messages(env: Env, root: Folder) -> list[str]:
    mailbox = env.user.mailbox
    return [m for f in mailbox.subtree(root.id) for m in f.messages]


@pytest.mark.parametrize("path", SPELLINGS)
def test_a_protected_folder_in_any_spelling_is_refused_before_any_request(
    env: Env, path: str
) -> None:
    inbox = env.user.mailbox.folder("inbox")
    assert inbox is not None
    msg = env.deliver()
    entry = env.claim(msg)
    assert entry is not None

    result = env.execute(entry.id, env.plan(folder=path, forward=False))

    assert result.state == "failed" and result.last_error == "DeletionRefused"
    row = env.entry(entry.id)
    assert row.state == "failed" and row.done_at is not None and "move" not in row.actions_done
    assert msg.folder_id == inbox.id
    assert env.requests("POST", r"/move$") == 0
    assert env.requests("POST", r"/(mailFolders|childFolders)$") == 0
    assert [f.display_name for f in env.children(_deleted(env).id)] == []
    assert env.sim.store.deletions == [] or all(
        d.mailbox_id != env.mailbox for d in env.sim.store.deletions
    )


def test_deleted_items_under_another_display_name_is_refused_by_its_id(env: Env) -> None:
    # A localized or renamed mailbox: the executor finds "Old stuff" by name at the root,
    # and it is Deleted Items.
    deleted = _deleted(env)
    deleted.display_name = "Old stuff"
    msg = env.deliver()
    entry = env.claim(msg)
    assert entry is not None

    result = env.execute(entry.id, env.plan(folder="Old stuff/Purge", forward=False))

    assert result.state == "failed" and result.last_error == "DeletionRefused"
    assert env.entry(entry.id).state == "failed"
    assert env.children(deleted.id) == []  # no "Purge" made beneath it
    assert _subtree_messages(env, deleted) == []
    assert env.requests("POST", r"/move$") == 0


def test_a_category_folder_the_person_deleted_is_never_filed_into_again(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="postroom.processing")
    first = env.deliver()
    _, done = env.process(first, env.plan(folder="Projects/2024", forward=False))
    assert done.state == "done" and env.folder_path(first) == "Projects/2024"
    mailbox = env.user.mailbox
    projects = next(f for f in env.children(env.root_id()) if f.display_name == "Projects")
    # The person deletes "Projects" in Outlook: the folder, with its subfolder, moves into
    # Deleted Items (ids unchanged; the executor still has them cached).
    assert env.sim.store.move_folder(mailbox, projects, _deleted(env)) is None

    second = env.deliver()
    _, result = env.process(
        second, env.plan(folder="Projects/2024", forward=False), client=StrictClient
    )

    # The guard refused the cached folder by its ancestry; the path was resolved again from
    # the root, so the mail went to a new Projects/2024, never into Deleted Items.
    assert result.state == "done"
    assert env.folder_path(second) == "Projects/2024"
    assert mailbox.deletion_folder(mailbox.messages[second.immutable_id].folder_id) is None
    assert second.immutable_id not in _subtree_messages(env, projects)
    assert "lies in Deleted Items now" in caplog.text
    assert env.requests("POST", r"/move$") == 2  # one per message: the refused one never left


def test_a_cached_path_to_a_folder_beneath_deleted_items_is_refused_by_the_guard(
    env: Env,
) -> None:
    mailbox = env.user.mailbox
    hidden = env.sim.store.create_folder(mailbox, "Purge", _deleted(env).id)
    assert hidden is not None
    env.cache.put(env.mailbox, "Receipts", hidden.id)  # e.g. configured or cached by id
    msg = env.deliver()

    _, result = env.process(msg, env.plan(folder="Receipts", forward=False))

    assert result.state == "done"
    assert env.folder_path(msg) == "Receipts"  # a new folder at the root
    assert hidden.messages == {}


def test_a_refused_folder_that_resolves_to_deleted_items_again_fails_the_row(env: Env) -> None:
    # The cached folder lies in Deleted Items, and resolving the path again from the root
    # finds Deleted Items itself (renamed): the row fails, nothing moves.
    deleted = _deleted(env)
    deleted.display_name = "Receipts"
    env.cache.put(env.mailbox, "Receipts", deleted.id)
    msg = env.deliver()
    inbox_id = msg.folder_id

    _, result = env.process(msg, env.plan(folder="Receipts", forward=False))

    assert result.state == "failed" and result.last_error == "DeletionRefused"
    assert msg.folder_id == inbox_id
    assert env.requests("POST", r"/move$") == 0
