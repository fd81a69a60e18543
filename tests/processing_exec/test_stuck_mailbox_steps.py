"""No email stays "in progress" for good (issue 19, item 1), at the executor, against m365sim.

* a step that only decorates (the colour on the master category list) never blocks the label
  and the move: refused, the row still ends ``done`` and the result says ``colors_refused``;
* a step Microsoft refuses for good (403 while the message itself can be read) ends the row
  ``failed`` with its code instead of leaving it claimed and stopping the mailbox;
* a refused mailbox (the message cannot be read either) leaves the row claimed and raises, so
  the sync stops that mailbox with its status and the row resumes once access is back;
* a transient failure is retried, but only :data:`MAX_ATTEMPTS` times; throttling never counts.
"""

from __future__ import annotations

import pytest

from postroom.graph import AccessDenied, GraphClient, Throttled, TransientError
from postroom.processing.executor import MAX_ATTEMPTS, settle
from tests.processing_exec.test_executor import Env, env, never_deletes  # noqa: F401

MAIL_ONLY = ["Mail.ReadWrite", "Mail.Send"]  # no MailboxSettings: the master list is refused


def test_a_refused_master_list_does_not_block_label_and_move(env: Env) -> None:  # noqa: F811
    msg = env.deliver()
    token = env.org.token(env.user, MAIL_ONLY)
    entry_id, result = env.process(msg, env.plan(forward=False), token=token)

    assert result.state == "done"
    assert result.colors_refused == "ErrorAccessDenied"
    row = env.entry(entry_id)
    assert row.state == "done" and row.last_error is None and row.done_at is not None
    assert row.actions_done == ["label", "folder", "move"]  # no colour recorded
    assert env.user.mailbox.messages[msg.immutable_id].categories == ["Invoices"]
    assert env.folder_path(msg) == "Finance/Invoices"
    assert list(env.user.mailbox.categories.values()) == []


def test_a_step_refused_for_good_ends_the_row_failed(env: Env) -> None:  # noqa: F811
    msg = env.deliver()
    read_only = env.org.token(env.user, ["Mail.Read"])  # reads work, every write is refused
    entry = env.claim(msg)
    assert entry is not None

    result = env.execute(entry.id, env.plan(forward=False), manage_colors=False, token=read_only)

    assert result.state == "failed" and result.last_error == "ErrorAccessDenied"
    row = env.entry(entry.id)
    assert row.state == "failed" and row.done_at is not None and row.attempts == 1
    assert env.claim(msg) is None  # final: never picked up again
    assert env.user.mailbox.messages[msg.immutable_id].categories == []


def test_a_refused_mailbox_leaves_the_row_claimed_for_the_status(env: Env) -> None:  # noqa: F811
    msg = env.deliver()
    nothing = env.org.token(env.user, ["User.Read"])  # the mailbox itself is refused
    entry = env.claim(msg)
    assert entry is not None

    with pytest.raises(AccessDenied):
        env.execute(entry.id, env.plan(forward=False), manage_colors=False, token=nothing)

    row = env.entry(entry.id)
    assert row.state == "claimed" and row.last_error == "ErrorAccessDenied"
    # access is back: the same row resumes and finishes
    result = env.execute(entry.id, env.plan(forward=False), manage_colors=False)
    assert result.state == "done"
    assert env.folder_path(msg) == "Finance/Invoices"


def test_transient_failures_are_retried_then_the_row_fails(env: Env) -> None:  # noqa: F811
    env.sim.faults.add(
        {"path": r"/messages/[^/]+$", "method": "PATCH", "status": 500, "count": 1000}
    )
    msg = env.deliver()
    entry = env.claim(msg)
    assert entry is not None
    for attempt in range(1, MAX_ATTEMPTS):
        with pytest.raises(TransientError):
            env.execute(entry.id, env.plan(forward=False), manage_colors=False)
        row = env.entry(entry.id)
        assert row.state == "claimed" and row.attempts == attempt

    result = env.execute(entry.id, env.plan(forward=False), manage_colors=False)

    assert result.state == "failed" and result.last_error == "generalException"
    row = env.entry(entry.id)
    assert row.state == "failed" and row.attempts == MAX_ATTEMPTS
    assert env.claim(msg) is None


def test_throttling_never_counts_toward_giving_up(env: Env) -> None:  # noqa: F811
    class AlwaysThrottled(GraphClient):
        async def set_categories(self, *args: object, **kwargs: object) -> dict[str, object]:
            raise Throttled("slow down", retry_after=1, status=429, code="TooManyRequests")

    msg = env.deliver()
    entry = env.claim(msg)
    assert entry is not None
    for _ in range(MAX_ATTEMPTS + 2):
        with pytest.raises(Throttled):
            env.execute(
                entry.id, env.plan(forward=False), manage_colors=False, client=AlwaysThrottled
            )
    row = env.entry(entry.id)
    assert row.state == "claimed" and row.attempts == 0 and row.last_error == "TooManyRequests"


def test_settle_ends_only_a_claimed_row(env: Env) -> None:  # noqa: F811
    msg = env.deliver()
    entry = env.claim(msg)
    assert entry is not None
    settle(env.database, entry.id, "failed", "ErrorInvalidRequest")
    row = env.entry(entry.id)
    assert row.state == "failed" and row.last_error == "ErrorInvalidRequest"
    settle(env.database, entry.id, "skipped", None)  # a final row is left alone
    assert env.entry(entry.id).state == "failed"
