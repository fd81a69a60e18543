"""The chaos soak, 300 emails (issue 15; ``make soak`` runs 2,000 into 20 mailboxes).

300 emails into 20 mailboxes through the real webhook path while m365sim answers 10 % of Graph
requests with 429/503/504, drops, duplicates, delays and reorders change notifications, a
worker is SIGKILLed every ~20 s and restarted, PostgreSQL restarts once and the access token
expires once (:mod:`benchmarks.soak`). Asserted exactly: every email carries its category once
and sits in its folder, every forward was sent exactly once, nothing was labelled or moved
twice, nothing deleted, no ledger row left unfinished.
"""

from __future__ import annotations

from typing import Any

import pytest
from benchmarks.soak import run

pytestmark = pytest.mark.slow

EMAILS = 300
MAILBOXES = 20


def test_three_hundred_emails_survive_the_chaos_exactly_once() -> None:
    details: dict[str, Any] = {}
    figures = run(EMAILS, MAILBOXES, rate=5.0, seed=15, settle_timeout=150, details=details)
    problems = {k: v for k, v in details.items() if v and k != "worker_log_tail"}

    assert figures["soak.emails"] == EMAILS
    assert figures["soak.lost"] == 0, problems
    assert figures["soak.duplicate_actions"] == 0, problems
    assert figures["soak.deletions"] == 0
    assert figures["soak.stuck"] == 0, problems
    # each email labelled once and moved once (counted in m365sim's request log), each forward
    # sent once (its outbound log): the counts the duplicate check rests on are real
    assert figures["soak.label_writes"] == EMAILS
    assert figures["soak.moves"] == EMAILS
    assert figures["soak.forwards_sent"] == figures["soak.forwards_expected"] == EMAILS // 10
    # the chaos happened
    assert figures["soak.worker_kills"] >= 1  # every 10-30 s of the 60 s stream: 2 or more
    assert figures["soak.graph_faults"] > 0
    assert figures["soak.notifications_dropped"] > 0
    assert figures["soak.token_401"] >= 1  # the expired token was refused, then renewed
    assert figures["soak.chaos_errors"] == 0, details.get("chaos_errors")
    assert details["integration_status"] == "connected"  # throttling and a 401 are no status
    if details.get("embedded_postgres", True):
        assert figures["soak.pg_restarts"] == 1
