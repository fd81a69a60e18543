"""What every integration page needs: the caller's integration (:func:`load_integration`,
404 for another workspace's id), Graph calls with its tokens (:func:`graph_call`: a token
failure becomes the integration's status), and the resume after a reconnect (:func:`resume`).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, Request
from sqlalchemy.orm import Session

from postroom.crypto import DecryptionFailed, SecretBox
from postroom.integrations import service
from postroom.integrations.graph_access import Connection, TokenFailure, run_graph
from postroom.integrations.models import Integration
from postroom.integrations.oauth import (
    MicrosoftIdentity,
)
from postroom.integrations.statuses import DISCONNECTED, DISCONNECTING
from postroom.settings import Settings
from postroom.web.security import Caller

router = APIRouter()
log = logging.getLogger("postroom.integrations")

Field = Annotated[str, Form(max_length=5000)]
FieldList = Annotated[list[str], Form(max_length=5000)]
HIDDEN_FOLDERS = {
    "deleteditems",
    "recoverableitemsdeletions",
    "drafts",
    "outbox",
    "sentitems",
    "conversationhistory",
}


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _identity(request: Request) -> MicrosoftIdentity:
    identity = getattr(request.app.state, "identity", None)
    if identity is None:
        identity = request.app.state.identity = MicrosoftIdentity(_settings(request))
    return identity


def _box(request: Request) -> SecretBox:
    box: SecretBox = request.app.state.box
    return box


def load_integration(
    db: Session, caller: Caller, integration_id: str, *, lock: bool = False
) -> Integration:
    """The caller's workspace's integration (404 for any other); ``lock``: its row locked
    until the request's transaction ends (two changes at once never lose one)."""
    integration = service.get_integration(
        db=db, workspace_id=caller.workspace_id, integration_id=integration_id
    )
    if integration is None:
        raise HTTPException(404)
    if lock:
        db.refresh(integration, with_for_update=True)
    return integration


def _connection(request: Request, integration: Integration) -> Connection:
    cache = None
    if integration.kind == "personal":
        try:
            cache = service.token_cache(box=_box(request), integration=integration)
        except DecryptionFailed:
            cache = None
    return Connection(
        kind=integration.kind,
        tenant_id=integration.tenant_id or "organizations",
        account_oid=integration.account_oid,
        cache=cache,
        scopes=list(integration.granted_scopes or []),
    )


def graph_call(
    request: Request, db: Session, integration: Integration, work: Any, *, verify: bool = False
) -> Any:
    """Call Graph for this integration; a token failure becomes the integration's status.

    The session's transaction ends first (STYLE rule 6): nothing is held in PostgreSQL while
    Microsoft answers, which may take seconds (throttling, retries). Callers read before they
    call and write after; the objects they loaded stay usable (``expire_on_commit=False``)."""
    db.commit()
    try:
        result, new_cache = run_graph(
            _settings(request),
            _identity(request),
            _connection(request, integration),
            work,
            verify_sign_in=verify,
        )
    except TokenFailure as failure:
        service.mark_failed(
            db=db, integration=integration, reason=failure.reason, detail=failure.description
        )
        db.commit()
        raise
    if new_cache:
        service.store_token_cache(box=_box(request), integration=integration, cache=new_cache)
        db.flush()
    return result


def restart_after_disconnect(db: Session, integration: Integration) -> None:
    """Before a disconnected integration is restored: its folders are in use again, each from
    now (a fresh delta: mail that arrived while it was disconnected is not processed, and mail
    processed before never again - the ledger remembers it)."""
    if integration.status == DISCONNECTING:
        raise HTTPException(
            409,
            "This integration is still disconnecting. Reconnect once the page says Disconnected.",
        )
    if integration.status != DISCONNECTED:
        return
    from postroom.sync.folder_syncs import apply_folder_syncs

    apply_folder_syncs(db, integration.id)
    integration.disconnect = None


def resume(request: Request, db: Session, integration: Integration) -> bool:
    """After a reconnect or a repair: renew every subscription and catch up now, instead of
    waiting for the reconcile sweep. Commits first: the job reads the new token cache."""
    if integration.finished_at is None:
        return False
    db.commit()
    from anyio import from_thread

    from postroom.sync.jobs import defer_resume

    try:
        from_thread.run(defer_resume, request.app.state.runtime, integration.id)
    except Exception:  # saved anyway: the reconcile sweep catches up within minutes
        log.warning("integration %s: could not queue the resume now", integration.id)
        return False
    return True


def _flag(value: str | None) -> bool:
    return value in ("on", "true", "1", "yes")
