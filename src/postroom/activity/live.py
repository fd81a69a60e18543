"""The subjects of the activity view, fetched live from Graph in ``$batch`` requests for the page
being rendered: they reach only the template, never the database (invariant 2).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from postroom.graph import GraphClient

BATCH_SIZE = 20  # Graph's limit for one $batch
PARALLEL_PER_MAILBOX = 4  # Exchange's concurrency limit per (application, mailbox)


@dataclass(frozen=True)
class LiveMessage:
    subject: str | None  # None: not available (see ``note``)
    sender: str = ""
    note: str = ""


async def fetch_subjects(
    client: GraphClient, wanted: list[tuple[str, str]]
) -> dict[tuple[str, str], LiveMessage]:
    """Subject and sender of (mailbox, message id) pairs, through ``$batch`` (≤20 each).

    Exchange runs at most four requests per mailbox at once and answers the rest of a batch
    429, so each batch is four ``dependsOn`` chains. An item that fails (404: the message is
    gone) fails the rest of its chain with 424; those, and throttled items, are asked again in
    the next round. Rounds go on while they make progress (twice more when they do not).
    """
    found: dict[tuple[str, str], LiveMessage] = {}
    by_mailbox: dict[str, list[str]] = {}
    for mailbox, message_id in wanted:
        ids = by_mailbox.setdefault(mailbox, [])
        if message_id not in ids:
            ids.append(message_id)
    for mailbox, pending in by_mailbox.items():
        stalls = 0
        while pending and stalls < 3:
            again: list[str] = []
            wait = 0.0
            for start in range(0, len(pending), BATCH_SIZE):
                chunk = pending[start : start + BATCH_SIZE]
                answered, retry, pause = await _subject_batch(client, mailbox, chunk)
                found.update(((mailbox, k), v) for k, v in answered.items())
                again += retry
                wait = max(wait, pause)
            stalls = stalls + 1 if len(again) == len(pending) else 0
            pending = again
            if pending and wait:
                await asyncio.sleep(wait)
        for message_id in pending:
            found[(mailbox, message_id)] = LiveMessage(None, note="(not available right now)")
    return found


async def _subject_batch(
    client: GraphClient, mailbox: str, message_ids: list[str]
) -> tuple[dict[str, LiveMessage], list[str], float]:
    """One ``$batch`` of GETs: the answers, the ids to ask again, and how long to wait first."""
    base = client.mailbox_path(mailbox)
    requests = []
    for i, message_id in enumerate(message_ids):
        item: dict[str, Any] = {
            "id": str(i),
            "method": "GET",
            "url": f"{base}/messages/{quote(message_id, safe='')}?$select=subject,from",
        }
        if i >= PARALLEL_PER_MAILBOX:
            item["dependsOn"] = [str(i - PARALLEL_PER_MAILBOX)]
        requests.append(item)
    results = {r.id: r for r in await client.batch(requests, mailbox=mailbox)}
    answered: dict[str, LiveMessage] = {}
    retry: list[str] = []
    wait = 0.0
    for i, message_id in enumerate(message_ids):
        result = results.get(str(i))
        if result is not None and result.ok and isinstance(result.body, dict):
            sender = (result.body.get("from") or {}).get("emailAddress") or {}
            answered[message_id] = LiveMessage(
                str(result.body.get("subject") or ""),
                str(sender.get("name") or sender.get("address") or ""),
            )
        elif result is not None and result.status == 404:
            answered[message_id] = LiveMessage(None, note="(no longer in the mailbox)")
        elif result is None or result.status in (424, 429) or result.status >= 500:
            retry.append(message_id)
            if result is not None and result.status == 429:
                try:
                    pause = float(result.headers.get("retry-after", "1"))
                except ValueError:
                    pause = 1.0
                wait = max(wait, min(pause, 2.0))
        else:
            answered[message_id] = LiveMessage(None, note="(not available)")
    return answered, retry, wait
