"""Fix with a forward, only after an explicit confirmation (issue 18): fixing an email to a
category that forwards asks first ("Payables also forwards to …. Forward this email too?");
only "Fix and forward" records the forward (the category's addresses and comment at that
moment), and the undo job then sends it exactly once, crash-safe like the executor's forward
(the same code: a draft recorded before the send, ``forward_send_attempted``, ``forward_sent``
in ``undo_done``). Without the confirmation no forward goes out. Forged answers are refused
with a 4xx and record nothing. Nothing is ever deleted.

Everything is real: m365sim over HTTPS (its outbound log and request log are what is counted),
Postroom's web app, the job queue on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from m365sim.state import EmulatorState
from m365sim.store import OutboundMail
from postroom.graph import GraphClient, TransientError
from postroom.integrations.models import Category, Integration
from postroom.processing.models import LedgerEntry
from tests.helpers import Org
from tests.postroom.conftest import Postroom
from tests.postroom.test_requests_per_email import _drain_all, _warm
from tests.postroom.test_sync import folder_of, setup_personal
from tests.postroom.webtools import csrf

PAYABLES_TO = ["accounts@fabrikam.test", "ap@fabrikam.test"]
COMMENT = "Please book this one (Postroom)."


def _row(postroom: Postroom, message_id: str) -> LedgerEntry:
    with postroom.database.session() as db:
        row = db.scalar(select(LedgerEntry).where(LedgerEntry.message_id == message_id))
        assert row is not None
        db.expunge(row)
        return row


def _forwards(sim: EmulatorState, message_id: str) -> list[OutboundMail]:
    return [o for o in sim.store.outbound if o.source_message_id == message_id]


def _sends(sim: EmulatorState, org: Org) -> list[str]:
    """Graph's answers to every send of a draft in Alice's mailbox (the forward's one write
    that mails)."""
    return [
        f"{r.method} {r.status}"
        for r in list(sim.request_log)
        if r.method == "POST" and r.path.endswith("/send") and r.mailbox_id == org.alice.id
    ]


def _no_deletions(sim: EmulatorState, org: Org) -> None:
    assert [d for d in sim.store.deletions if d.mailbox_id == org.alice.id] == []


def _setup(web: httpx.Client, postroom: Postroom, sim: EmulatorState) -> tuple[Org, str]:
    """Alice's Invoices rule files mail; Payables forwards (with a comment), Receipts does not."""
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    integration_id = base.rsplit("/", 1)[-1]
    with postroom.database.session() as db:
        db.add_all(
            [
                Category(
                    integration_id=integration_id,
                    name="Payables",
                    color="preset3",
                    folder="Finance/Payables",
                    forward_to=list(PAYABLES_TO),
                    forward_comment=COMMENT,
                    position=1,
                ),
                Category(
                    integration_id=integration_id,
                    name="Receipts",
                    color="preset4",
                    folder="Receipts",
                    position=2,
                ),
            ]
        )
    postroom.drain()
    _warm(postroom, org)
    return org, base


def _filed(postroom: Postroom, org: Org, subject: str) -> str:
    msg = org.deliver(org.alice, subject=subject)
    _drain_all(postroom)
    assert folder_of(org.alice, msg.immutable_id) == "Invoices"
    return msg.immutable_id


def _ask_fix(web: httpx.Client, base: str, entry_id: str, category: str) -> httpx.Response:
    """The person picks ``category`` in the activity view and clicks Fix."""
    token = csrf(web.get(f"{base}/activity").text)
    return web.post(
        f"{base}/activity/{entry_id}/fix", data={"csrf_token": token, "category": category}
    )


def _answer(web: httpx.Client, page: str, answer: str) -> httpx.Response:
    """Click one of the confirmation page's two buttons: its form as the browser sends it."""
    form = re.search(r'<form method="post" action="([^"]+/fix)"[^>]*>(.*?)</form>', page, re.S)
    assert form is not None
    hidden = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(2))
    return web.post(form.group(1), data={**dict(hidden), "forward": answer})


def _run_undo(postroom: Postroom, entry_id: str) -> Any:
    from postroom.sync.queue import make_runtime
    from postroom.sync.undo import run_undo

    runtime = make_runtime(postroom.settings, postroom.database, postroom.app.state.box)
    return asyncio.run(run_undo(runtime, entry_id))


def _finish(postroom: Postroom, message_id: str) -> None:
    """Drain; when the job's retry is scheduled later (back-off), run what it (or the
    reconcile) runs."""
    _drain_all(postroom)
    for _ in range(3):
        row = _row(postroom, message_id)
        if row.undo_state != "requested":
            return
        try:
            _run_undo(postroom, row.id)
        except TransientError:
            continue
    _drain_all(postroom)


def test_fix_to_a_forwarding_category_asks_first_and_without_confirmation_forwards_nothing(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org, base = _setup(web, postroom, sim)
    message_id = _filed(postroom, org, "Invoice 4711")
    row = _row(postroom, message_id)

    asked = _ask_fix(web, base, row.id, "Payables")
    assert asked.status_code == 200  # the second step, nothing recorded yet
    assert "Payables also forwards to accounts@fabrikam.test, ap@fabrikam.test" in asked.text
    assert ">Fix and forward<" in asked.text and ">Fix without forwarding<" in asked.text
    assert COMMENT in asked.text
    waiting = _row(postroom, message_id)
    assert waiting.undo_state is None and "fix" not in (waiting.plan or {})

    fixed = _answer(web, asked.text, "no")
    assert fixed.status_code == 303 and fixed.headers["location"].endswith("?undo=fix")
    assert "forward" not in (_row(postroom, message_id).plan or {})["fix"]
    _finish(postroom, message_id)

    done = _row(postroom, message_id)
    assert done.undo_state == "done"
    assert done.undo_done == ["learned", "unlabel", "fix_label", "move_back"]
    assert org.alice.mailbox.messages[message_id].categories == ["Payables"]
    assert folder_of(org.alice, message_id) == "Payables"
    assert _forwards(sim, message_id) == [] and _sends(sim, org) == []
    page = web.get(f"{base}/activity").text
    assert "fixed: Payables" in page and "forwarded to" not in page

    # A category without forward addresses asks nothing: fixed at once, as before.
    other = _filed(postroom, org, "Invoice 4712")
    plain = _ask_fix(web, base, _row(postroom, other).id, "Receipts")
    assert plain.status_code == 303 and plain.headers["location"].endswith("?undo=fix")
    _finish(postroom, other)
    assert folder_of(org.alice, other) == "Receipts" and _forwards(sim, other) == []
    _no_deletions(sim, org)


def test_fix_and_forward_sends_exactly_one_forward_with_the_comment(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org, base = _setup(web, postroom, sim)
    message_id = _filed(postroom, org, "Invoice 4711")
    row = _row(postroom, message_id)

    asked = _ask_fix(web, base, row.id, "Payables")
    confirmed = _answer(web, asked.text, "yes")
    assert confirmed.status_code == 303
    assert confirmed.headers["location"].endswith("?undo=fix_forward")
    fix = (_row(postroom, message_id).plan or {})["fix"]
    assert fix["forward"] == {"to": PAYABLES_TO, "comment": COMMENT}  # taken when asked
    assert "forwards it as you confirmed" in web.get(confirmed.headers["location"]).text
    _finish(postroom, message_id)

    done = _row(postroom, message_id)
    assert done.undo_state == "done" and done.undo_note is None
    assert done.undo_done == [
        "learned",
        "unlabel",
        "fix_label",
        "move_back",
        "forward_draft",
        "forward_send_attempted",
        "forward_sent",
    ]
    assert (done.plan or {})["fix"]["forward"]["draft_id"]  # recorded before the send
    assert org.alice.mailbox.messages[message_id].categories == ["Payables"]
    assert folder_of(org.alice, message_id) == "Payables"
    (sent,) = _forwards(sim, message_id)
    assert sent.kind == "forward" and sorted(sent.to) == sorted(PAYABLES_TO)
    assert sent.comment == COMMENT
    assert _sends(sim, org) == ["POST 202"]
    page = web.get(f"{base}/activity").text
    assert "fixed: Payables, forwarded to accounts@fabrikam.test, ap@fabrikam.test" in page
    assert "a forward cannot be recalled" in page

    # Once: the job run again (a duplicate, or the reconcile) sends nothing more.
    result = _run_undo(postroom, row.id)
    assert result is not None and result.state == "done"
    _drain_all(postroom)
    assert len(_forwards(sim, message_id)) == 1 and _sends(sim, org) == ["POST 202"]
    _no_deletions(sim, org)


def test_a_fault_on_the_send_is_retried_and_still_one_forward_goes_out(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, monkeypatch: pytest.MonkeyPatch
) -> None:
    org, base = _setup(web, postroom, sim)
    refused = _filed(postroom, org, "Invoice 1")  # Graph answers its send 503 (did not act)
    lost = _filed(postroom, org, "Invoice 2")  # Graph sends, the answer is lost

    faults = f"{postroom.settings.authority_host}/_emulator/faults"
    rule = web.post(faults, json={"path": "/send$", "method": "POST", "status": 503, "count": 1})
    assert rule.status_code == 201, rule.text
    try:
        entry = _row(postroom, refused).id
        assert _answer(web, _ask_fix(web, base, entry, "Payables").text, "yes").status_code == 303
        _drain_all(postroom)
        assert any(s == "POST 503" for s in _sends(sim, org))  # the first send was refused ...
        _finish(postroom, refused)  # ... and the retry sent it
    finally:
        web.delete(faults)
    done = _row(postroom, refused)
    assert done.undo_state == "done" and "forward_sent" in done.undo_done
    assert len(_forwards(sim, refused)) == 1
    assert _forwards(sim, refused)[0].comment == COMMENT
    assert _sends(sim, org) == ["POST 503", "POST 202"]

    original = GraphClient.send_draft
    failed: list[str] = []

    async def answer_lost_once(self: GraphClient, mailbox: str, draft_id: str) -> None:
        await original(self, mailbox, draft_id)
        if not failed:  # Graph sent it; the answer never arrived (or the worker died)
            failed.append(draft_id)
            raise TransientError("gateway timeout", code="gatewayTimeout")

    monkeypatch.setattr(GraphClient, "send_draft", answer_lost_once)
    entry = _row(postroom, lost).id
    assert _answer(web, _ask_fix(web, base, entry, "Payables").text, "yes").status_code == 303
    _drain_all(postroom)
    assert failed
    _finish(postroom, lost)
    done = _row(postroom, lost)
    assert done.undo_state == "done" and done.undo_note is None
    assert done.undo_done.count("forward_sent") == 1
    assert len(_forwards(sim, lost)) == 1  # the retry read the draft: sent, not sent again
    assert _sends(sim, org) == ["POST 503", "POST 202", "POST 202"]
    for message_id in (refused, lost):
        assert folder_of(org.alice, message_id) == "Payables"
        assert org.alice.mailbox.messages[message_id].categories == ["Payables"]
    _no_deletions(sim, org)


def test_forged_fix_answers_are_refused_and_record_nothing(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org, base = _setup(web, postroom, sim)
    message_id = _filed(postroom, org, "Invoice 4711")
    row = _row(postroom, message_id)
    with postroom.database.session() as db:  # another integration (of this workspace)
        mine = db.get(Integration, row.integration_id)
        assert mine is not None
        theirs = Integration(workspace_id=mine.workspace_id, kind="personal", status="connected")
        db.add(theirs)
        db.flush()
        travel = Category(
            integration_id=theirs.id,
            name="Travel",
            folder="Travel",
            forward_to=["mallory@evil.test"],
            forward_comment="yours",
        )
        db.add(travel)
        db.flush()
        travel_id = travel.id

    action = f"{base}/activity/{row.id}/fix"
    token = csrf(web.get(f"{base}/activity").text)
    shown = ", ".join(PAYABLES_TO)
    forged: list[tuple[dict[str, str], tuple[int, ...]]] = [
        # no CSRF token
        ({"category": "Payables", "forward": "yes", "forward_to": shown}, (400, 403)),
        # a confirmation for a category that forwards to no one
        ({"csrf_token": token, "category": "Receipts", "forward": "yes"}, (400,)),
        # another integration's category, by name and by id
        (
            {
                "csrf_token": token,
                "category": "Travel",
                "forward": "yes",
                "forward_to": "mallory@evil.test",
            },
            (400,),
        ),
        ({"csrf_token": token, "category": travel_id, "forward": "yes"}, (400,)),
        # a bad answer
        ({"csrf_token": token, "category": "Payables", "forward": "maybe"}, (400,)),
        ({"csrf_token": token, "category": "Payables", "forward": "y" * 500}, (400,)),
        ({"csrf_token": token, "category": "P" * 5000, "forward": "yes"}, (400,)),
        # addresses other than the category's: asked again, with the real ones
        (
            {
                "csrf_token": token,
                "category": "Payables",
                "forward": "yes",
                "forward_to": "mallory@evil.test",
            },
            (409,),
        ),
    ]
    for data, statuses in forged:
        answer = web.post(action, data=data)
        assert answer.status_code in statuses, (data, answer.status_code, answer.text[:300])
        assert "Traceback" not in answer.text
        current = _row(postroom, message_id)
        assert current.undo_state is None and "fix" not in (current.plan or {}), data
    again = web.post(
        action,
        data={
            "csrf_token": token,
            "category": "Payables",
            "forward": "yes",
            "forward_to": "mallory@evil.test",
        },
    )
    assert "changed since you were asked" in again.text and shown in again.text

    # another workspace cannot fix (nor forward) this one's email
    from tests.postroom.test_security_invitations import client
    from tests.postroom.webtools import sign_up

    with client(postroom) as stranger:
        sign_up(stranger, email="mallory@evil.test", workspace="Evil")
        theirs_token = csrf(stranger.get("/integrations").text)
        refused = stranger.post(
            action,
            data={
                "csrf_token": theirs_token,
                "category": "Payables",
                "forward": "yes",
                "forward_to": shown,
            },
        )
        assert refused.status_code == 404

    _drain_all(postroom)
    current = _row(postroom, message_id)
    assert current.undo_state is None and "fix" not in (current.plan or {})
    assert folder_of(org.alice, message_id) == "Invoices"
    assert [o for o in sim.store.outbound if o.from_mailbox == org.alice.id] == [] and _sends(
        sim, org
    ) == []
    _no_deletions(sim, org)


def test_a_member_fixes_without_a_forward_and_cannot_ask_for_one(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    """Sending mail out of the mailbox is for owners and admins: a member's Fix to a category
    that forwards files it without asking, and a forged "Fix and forward" is refused."""
    from tests.postroom.webtools import add_member, sign_up

    org, base = _setup(web, postroom, sim)
    first = _filed(postroom, org, "Invoice for a member to fix")
    second = _filed(postroom, org, "Another invoice for a member")
    with httpx.Client(base_url=postroom.url, trust_env=False, timeout=30) as member:
        sign_up(member, email="mia@acme.test", name="Mia Member", workspace="Mia's")
        add_member(web, member, "mia@acme.test", role="member")
        forged = member.post(
            f"{base}/activity/{_row(postroom, first).id}/fix",
            data={
                "csrf_token": csrf(member.get(f"{base}/activity").text),
                "category": "Payables",
                "forward": "yes",
                "forward_to": ", ".join(PAYABLES_TO),
                "forward_comment": COMMENT,
            },
        )
        assert forged.status_code == 403
        assert (_row(postroom, first).plan or {}).get("fix") is None  # nothing recorded
        asked = _ask_fix(member, base, _row(postroom, second).id, "Payables")
        assert asked.status_code == 303  # no confirmation page: fixed without a forward
    _finish(postroom, second)
    assert folder_of(org.alice, second) == "Payables"
    assert "forward" not in (_row(postroom, second).plan or {})["fix"]
    assert _forwards(sim, second) == [] and _forwards(sim, first) == []
    _no_deletions(sim, org)
