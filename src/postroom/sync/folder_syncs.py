"""The folder syncs of an integration: created at setup, changed when people edit mailboxes and
folders after go-live (deactivated, never deleted: the ledger keeps their history), and the
subscriptions of the ones turned off dropped at Microsoft.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from postroom.graph import (
    GraphError,
)
from postroom.integrations import service as integrations
from postroom.integrations.graph_access import IntegrationTokens, TokenFailure
from postroom.integrations.models import Integration, Mailbox
from postroom.sync.engine import _connection, _graph, _save, _store_cache
from postroom.sync.models import FolderSync
from postroom.sync.runtime import Runtime

log = logging.getLogger("postroom.sync")


# ---------------------------------------------------------------------- setup
def create_folder_syncs(runtime: Runtime, integration_id: str) -> list[str]:
    """The folder syncs of a finished setup (see :func:`apply_folder_syncs`)."""
    with runtime.database.session() as db:
        return apply_folder_syncs(db, integration_id)


def apply_folder_syncs(db: Session, integration_id: str) -> list[str]:
    """Make the folder syncs follow the mailboxes' chosen folders; returns the ids of those in
    use (not watch folders).

    One folder sync per (mailbox in use, chosen folder): a new one starts with mail arriving
    from now on; one no longer chosen (or whose mailbox was removed) is deactivated, never
    deleted, and one chosen again is reactivated from now (its delta starts afresh; the gap is
    what "Apply to existing mail" is for). Watch folders follow their mailbox. Nothing here
    starts a backfill. Subscriptions are made (and dropped) by the setup job."""
    now = datetime.now(UTC)
    ids: list[str] = []
    mailboxes = list(db.scalars(select(Mailbox).where(Mailbox.integration_id == integration_id)))
    for mailbox in mailboxes:
        in_use = mailbox.status != integrations.REMOVED
        wanted = [str(f.get("key") or "inbox") for f in (mailbox.folders or [{"key": "inbox"}])]
        wanted = list(dict.fromkeys(wanted)) if in_use else []
        existing = {
            fs.folder_key: fs
            for fs in db.scalars(select(FolderSync).where(FolderSync.mailbox_id == mailbox.id))
        }
        for key, fs in existing.items():
            keep = in_use if fs.watch else key in wanted
            if keep and not fs.active:
                fs.active = True
                fs.baseline_at = now
                fs.delta_link = None
            elif not keep and fs.active:
                fs.active = False
        for key in wanted:
            row = existing.get(key)
            if row is None:
                row = FolderSync(
                    integration_id=integration_id, mailbox_id=mailbox.id, folder_key=key
                )
                db.add(row)
                db.flush()
            ids.append(row.id)
    db.flush()
    return ids


def subscriptions_to_drop(db: Session, integration_id: str) -> list[str]:
    """Folder syncs taken out of use that still hold a subscription."""
    return list(
        db.scalars(
            select(FolderSync.id).where(
                FolderSync.integration_id == integration_id,
                FolderSync.active.is_(False),
                FolderSync.subscription_id.is_not(None),
            )
        )
    )


async def drop_subscription(runtime: Runtime, sync_id: str) -> None:
    """Delete the subscription of a folder no longer in use (best effort: one Graph has
    already forgotten, or that cannot be reached now, expires by itself within two days;
    notifications for an inactive folder are ignored meanwhile)."""
    with runtime.database.session() as db:
        fs = db.get(FolderSync, sync_id)
        integration = db.get(Integration, fs.integration_id) if fs else None
        if fs is None or integration is None or fs.active or fs.subscription_id is None:
            return
        subscription_id = fs.subscription_id
        tokens = IntegrationTokens(runtime.identity, _connection(runtime, integration))
    try:
        async with _graph(runtime, tokens) as graph:
            await graph.delete_subscription(subscription_id)
    except (GraphError, TokenFailure) as exc:
        log.info("folder sync %s: subscription not deleted now (%s)", sync_id, type(exc).__name__)
    finally:
        if tokens.new_cache:
            _store_cache(runtime, integration.id, tokens.new_cache)
    _save(runtime, sync_id, subscription_id=None, client_state_hash=None, subscription_expires=None)
