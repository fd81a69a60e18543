"""Export of decisions as CSV (issue 18): ids, names and numbers only — never a subject,
sender or body — with the activity page's filters, safe to open in a spreadsheet."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import httpx

from m365sim.state import EmulatorState
from tests.postroom.conftest import Postroom
from tests.postroom.test_activity import INVOICE_PLAN, add_entry
from tests.postroom.test_editor import finished


def test_decisions_export_as_csv_without_content(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    org, base = finished(web, postroom, sim)
    invoice = org.deliver(org.alice, subject="Invoice 4711 secret", sender="ap@vendor.test")
    lunch = org.deliver(org.alice, subject="Lunch on Friday?")
    add_entry(
        postroom,
        invoice.immutable_id,
        plan={**INVOICE_PLAN, "category": '=HYPERLINK("http://evil")', "confidence": 0.87},
        actions=["label", "folder", "move"],
        age=timedelta(minutes=1),
    )
    add_entry(postroom, lunch.immutable_id, state="skipped", age=timedelta(minutes=2))
    assert "Download as CSV" in web.get(f"{base}/activity").text

    answer = web.get(f"{base}/activity.csv")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [r["message_id"] for r in rows] == [invoice.immutable_id, lunch.immutable_id]
    first = rows[0]
    assert first["category"] == '\'=HYPERLINK("http://evil")'  # shown as text, not run
    assert (first["decided_by"], first["confidence"], first["actions"]) == (
        "rule",
        "0.870",
        "label move",
    )
    assert "@" in first["mailbox"]  # the mailbox address: configuration, not content
    for secret in ("Invoice 4711", "secret", "vendor.test", "Lunch"):
        assert secret not in answer.text
    # the page's filters apply; bad ones are a clear 400; another workspace gets nothing
    skipped = web.get(f"{base}/activity.csv", params={"state": "skipped", "category": "*"})
    assert [r["message_id"] for r in csv.DictReader(io.StringIO(skipped.text))] == [
        lunch.immutable_id
    ]
    assert web.get(f"{base}/activity.csv", params={"state": "exploded"}).status_code == 400
    with httpx.Client(base_url=postroom.url, trust_env=False) as stranger:
        signed_out = stranger.get(f"{base}/activity.csv", follow_redirects=False)
        assert signed_out.status_code in (303, 401) and "message_id" not in signed_out.text
