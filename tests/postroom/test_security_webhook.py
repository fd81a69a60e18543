"""The webhook is reachable by anyone: whatever the body, it answers quickly, logs little and
safely, loses no valid notification and keeps PostgreSQL's own log bounded.

Folder syncs with a known subscription and ``clientState`` are written straight into the
database (the sync jobs never run here); the burst is sent by a separate process, as Graph
or an attacker would, and measured there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import event, text

from postroom.accounts.models import Workspace
from postroom.integrations.models import Integration, Mailbox
from postroom.sync.models import FolderSync
from postroom.sync.runtime import Runtime
from tests.postroom.conftest import Postroom

CLIENT_STATE = "the-secret-client-state"


@dataclass
class Subscribed:
    sync_ids: list[str]
    subscription_ids: list[str]


@pytest.fixture
def subscribed(postroom: Postroom) -> Subscribed:
    """Two folders of one mailbox with webhook subscriptions whose clientState we know."""
    runtime: Runtime = postroom.app.state.runtime
    with postroom.database.session() as db:
        workspace = Workspace(name="Acme")
        db.add(workspace)
        db.flush()
        integration = Integration(workspace_id=workspace.id, kind="personal", status="connected")
        db.add(integration)
        db.flush()
        mailbox = Mailbox(
            integration_id=integration.id, graph_user_id="u1", address="a@x.test", kind="own"
        )
        db.add(mailbox)
        db.flush()
        syncs = [
            FolderSync(
                integration_id=integration.id,
                mailbox_id=mailbox.id,
                folder_key=key,
                subscription_id=f"sub-{key}",
                client_state_hash=runtime.client_state_hash(CLIENT_STATE),
            )
            for key in ("inbox", "archive")
        ]
        db.add_all(syncs)
        db.flush()
        return Subscribed([s.id for s in syncs], [f"sub-{s.folder_key}" for s in syncs])


def _queued(postroom: Postroom) -> list[tuple[str, str]]:
    with postroom.database.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT task_name, queueing_lock FROM procrastinate_jobs WHERE status = 'todo'")
        ).all()
    return sorted((r[0], r[1]) for r in rows)


@pytest.fixture
def webhook_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.INFO, logger="postroom.webhooks")
    yield caplog


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "postroom.webhooks"]


# ---------------------------------------------------------------------- validation handshake
def test_validation_token_is_plain_text_with_nosniff_and_bounded(web: httpx.Client) -> None:
    token = "Validation: Testing client application reachability for subscription Request-Id: 1"
    echo = web.post("/webhooks/graph", params={"validationToken": token})
    assert echo.status_code == 200 and echo.text == token
    assert echo.headers["content-type"] == "text/plain; charset=utf-8"
    assert echo.headers["x-content-type-options"] == "nosniff"
    lifecycle = web.post("/webhooks/graph/lifecycle", params={"validationToken": token})
    assert lifecycle.status_code == 200 and lifecycle.text == token

    for bad in ("x" * 1025, "ok\r\nSet-Cookie: a=b", "nul\x00", "<html>\x1b[31m", ""):
        refused = web.post("/webhooks/graph", params={"validationToken": bad})
        assert refused.status_code == 400, repr(bad)
        assert refused.text != bad


# ---------------------------------------------------------------------- bodies that are not
def test_deeply_nested_json_is_a_400_not_a_500(web: httpx.Client, postroom: Postroom) -> None:
    for body in (b"[" * 100_000, b'{"value": ' * 50_000, b'{"value": [' + b"[" * 100_000):
        response = web.post(
            "/webhooks/graph", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 400
    for content_type in ("application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        response = web.post(
            "/webhooks/graph", content=b"value=%00", headers={"content-type": content_type}
        )
        assert response.status_code == 400
    assert _queued(postroom) == []


def test_untrusted_values_cannot_forge_log_lines_and_each_request_logs_one_line(
    web: httpx.Client,
    postroom: Postroom,
    subscribed: Subscribed,
    webhook_log: pytest.LogCaptureFixture,
) -> None:
    forged = "x\n2026-01-01 00:00:00 INFO postroom.web admin signed in\r"
    items = [{"subscriptionId": forged, "clientState": "nope"}]
    items += [{"subscriptionId": f"unknown-{i}", "clientState": "nope"} for i in range(500)]
    items += [{"subscriptionId": subscribed.subscription_ids[0], "clientState": "guess"}] * 300
    items += [{"subscriptionId": subscribed.subscription_ids[1], "clientState": CLIENT_STATE}] * 3
    response = web.post("/webhooks/graph", json={"value": items})
    assert response.status_code == 202
    lines = _lines(webhook_log)
    assert len(lines) == 1, lines[:5]
    assert "\n" not in lines[0] and "\r" not in lines[0]
    assert "admin signed in" not in lines[0]  # no untrusted value in the line at all
    assert "3 valid" in lines[0] and "501 unknown" in lines[0] and "300 wrong" in lines[0]
    assert _queued(postroom) == [("postroom:sync_folder", f"sync:{subscribed.sync_ids[1]}")]


def test_valid_notifications_are_never_lost_and_coalesce(
    web: httpx.Client, postroom: Postroom, subscribed: Subscribed
) -> None:
    for sub in subscribed.subscription_ids:
        one = {"subscriptionId": sub, "clientState": CLIENT_STATE, "changeType": "created"}
        assert web.post("/webhooks/graph", json={"value": [one]}).status_code == 202
        assert web.post("/webhooks/graph", json={"value": [one, one]}).status_code == 202
    expected = sorted(("postroom:sync_folder", f"sync:{s}") for s in subscribed.sync_ids)
    assert _queued(postroom) == expected
    # a job that has started no longer covers new mail: the next notification queues another
    started = f"sync:{subscribed.sync_ids[0]}"
    with postroom.database.engine.begin() as conn:
        conn.execute(
            text("UPDATE procrastinate_jobs SET status = 'doing' WHERE queueing_lock = :lock"),
            {"lock": started},
        )
    one = {"subscriptionId": subscribed.subscription_ids[0], "clientState": CLIENT_STATE}
    assert web.post("/webhooks/graph", json={"value": [one]}).status_code == 202
    assert _queued(postroom) == expected


def test_the_folders_of_one_request_are_queued_together_and_a_race_doubles_none(
    web: httpx.Client,
    postroom: Postroom,
    subscribed: Subscribed,
    webhook_log: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    both = [
        {"subscriptionId": sub, "clientState": CLIENT_STATE, "changeType": "created"}
        for sub in subscribed.subscription_ids
    ]
    expected = sorted(("postroom:sync_folder", f"sync:{s}") for s in subscribed.sync_ids)
    assert web.post("/webhooks/graph", json={"value": both}).status_code == 202
    assert _queued(postroom) == expected  # one INSERT for both folders
    assert _lines(webhook_log)[-1].endswith("2 sync(s) queued")
    # Another web process queued the first folder's sync after this one looked: the batch is
    # refused as a whole, each folder is asked for on its own, and none is queued twice.
    with postroom.database.engine.begin() as conn:
        conn.execute(
            text("DELETE FROM procrastinate_jobs WHERE queueing_lock = :lock"),
            {"lock": f"sync:{subscribed.sync_ids[1]}"},
        )
    monkeypatch.setattr("postroom.sync.webhooks._waiting_locks", lambda runtime, locks: set())
    assert web.post("/webhooks/graph", json={"value": both}).status_code == 202
    assert _queued(postroom) == expected
    assert _lines(webhook_log)[-1].endswith("1 sync(s) queued")


# ---------------------------------------------------------------------- bursts
BURST = textwrap.dedent(
    """
    import asyncio, json, sys, time
    from urllib.parse import urlsplit

    async def one(host, port, path, body):
        started = time.monotonic()
        reader, writer = await asyncio.open_connection(host, port)
        head = (f"POST {path} HTTP/1.1\\r\\nHost: {host}:{port}\\r\\n"
                "Content-Type: application/json\\r\\n"
                f"Content-Length: {len(body)}\\r\\nConnection: close\\r\\n\\r\\n")
        writer.write(head.encode() + body)
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        elapsed = time.monotonic() - started
        writer.close()
        return status, elapsed

    async def main(url, bodies):
        parts = urlsplit(url)
        path = parts.path + ("?" + parts.query if parts.query else "")
        results = await asyncio.gather(
            *(one(parts.hostname, parts.port, path, b.encode()) for b in bodies)
        )
        print(json.dumps({"statuses": sorted({s for s, _ in results}),
                          "max": max(t for _, t in results)}))

    asyncio.run(main(sys.argv[1], json.load(sys.stdin)))
    """
)


def _burst(url: str, bodies: list[str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", BURST, url],
        input=json.dumps(bodies),
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


@contextlib.contextmanager
def _statements(postroom: Postroom) -> Iterator[list[str]]:
    """The SQL statements Postroom's engine runs meanwhile (the lookups of the webhook)."""
    seen: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        seen.append(statement)

    event.listen(postroom.database.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(postroom.database.engine, "before_cursor_execute", record)


def test_a_burst_of_spoofed_notifications_is_acknowledged_quickly_and_cheaply(
    postroom: Postroom, subscribed: Subscribed
) -> None:
    bodies = []
    for i in range(1000):
        sub = subscribed.subscription_ids[0] if i % 2 else f"spoofed-{i}"
        bodies.append(json.dumps({"value": [{"subscriptionId": sub, "clientState": "guess"}]}))
    floor = _burst(f"{postroom.url}/webhooks/graph?validationToken=t", bodies[:1])
    with _statements(postroom) as statements:
        result = _burst(f"{postroom.url}/webhooks/graph", bodies)
    print(
        f"1,000 spoofed notifications: slowest answer {result['max']:.2f} s "
        f"({len(statements)} SQL statements; one echo {floor['max']:.3f} s)"
    )
    assert result["statuses"] == [202]
    # The requests waiting at one moment share one lookup: a handful of queries, not one (and
    # a pool pre-ping) per request. Latency itself depends on the machine (h11 parses every
    # request in Python; 2 shared cores): before, the slowest answer took 5-8 s here, now 2-4 s,
    # about 1 s above answering the bare handshake. Graph allows 3 s.
    assert len(statements) < 100
    assert float(str(result["max"])) < 15
    assert _queued(postroom) == []


def test_valid_bursts_keep_the_postgres_log_bounded(
    postroom: Postroom, subscribed: Subscribed
) -> None:
    embedded = postroom.database.embedded
    if embedded is None:
        pytest.skip("PostgreSQL's log is only readable for the embedded server")
    log = Path(embedded.pgdata) / "log"
    before = log.stat().st_size
    one = {"subscriptionId": subscribed.subscription_ids[0], "clientState": CLIENT_STATE}
    bodies = [json.dumps({"value": [one]})] * 1000
    result = _burst(f"{postroom.url}/webhooks/graph", bodies)
    assert result["statuses"] == [202]
    growth = log.stat().st_size - before
    print(f"1,000 valid notifications: PostgreSQL's log grew by {growth} bytes")
    assert growth < 20_000
    assert _queued(postroom) == [("postroom:sync_folder", f"sync:{subscribed.sync_ids[0]}")]
