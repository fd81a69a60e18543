"""The Alerts page of a workspace: who is told, and the workspace's own chat webhook.

Owners and admins only (a member gets 403): the webhook URL is a secret, so the page shows its
host and last four characters, never the whole URL. Set (checked against the SSRF rules of
:mod:`postroom.alerts.webhook`, its host resolved, then stored encrypted), Remove, and Send a
test message (says whether the webhook accepted it, or why not). Every form carries the CSRF
token; every query is the caller's workspace's.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from postroom.accounts import service as accounts
from postroom.accounts.models import MANAGING_ROLES
from postroom.alerts import service, webhook
from postroom.crypto import SecretBox
from postroom.settings import Settings
from postroom.web.deps import DbSession, current_caller, render
from postroom.web.security import Caller, Forbidden, check_csrf

router = APIRouter()

# the URL's own limit (webhook.MAX_LENGTH) is checked with a clear message; this one only
# bounds what is read
UrlField = Annotated[str, Form(max_length=8000)]
CsrfField = Annotated[str, Form(max_length=2000)]

NOTICES = {
    "saved": "The webhook is saved. Send a test message to see it arrive.",
    "removed": "The webhook is removed: alerts go by email only.",
}


def _manager(caller: Caller) -> Caller:
    if not caller.can_manage:
        raise Forbidden("Only owners and admins can see and change the workspace's alerts.")
    return caller


def _page(
    request: Request,
    db: DbSession,
    caller: Caller,
    status_code: int = 200,
    *,
    notice: str | None = None,
    error: str | None = None,
    entered: str = "",
) -> Response:
    box: SecretBox = request.app.state.box
    settings: Settings = request.app.state.settings
    told = [
        person
        for person, role in accounts.members(db=db, workspace_id=caller.workspace_id)
        if role in MANAGING_ROLES
    ]
    return render(
        request,
        "alerts/workspace.html",
        status_code,
        nav="alerts",
        told=told,
        hook=service.workspace_webhook_view(db=db, box=box, workspace_id=caller.workspace_id),
        operator_hook=settings.alert_webhook_url is not None,
        allow_private=settings.alert_webhook_allow_private,
        max_length=webhook.MAX_LENGTH,
        notice=notice,
        error=error,
        entered=entered,
    )


@router.get("/workspace/alerts")
def alerts_page(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    done: str | None = None,
) -> Response:
    return _page(request, db, _manager(caller), notice=NOTICES.get(done or ""))


@router.post("/workspace/alerts/webhook")
def set_webhook(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    url: UrlField = "",
    csrf_token: CsrfField = "",
) -> Response:
    check_csrf(request, csrf_token)
    _manager(caller)
    settings: Settings = request.app.state.settings
    try:
        service.set_workspace_webhook(
            db=db,
            box=request.app.state.box,
            workspace_id=caller.workspace_id,
            url=url,
            allow_private=settings.alert_webhook_allow_private,
        )
    except webhook.Refused as exc:
        db.rollback()
        return _page(
            request,
            db,
            caller,
            400,
            error=f"{exc} Nothing was saved.",
            entered=url[: webhook.MAX_LENGTH],
        )
    return RedirectResponse("/workspace/alerts?done=saved", status_code=303)


@router.post("/workspace/alerts/webhook/remove")
def remove_webhook(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    csrf_token: CsrfField = "",
) -> Response:
    check_csrf(request, csrf_token)
    _manager(caller)
    service.remove_workspace_webhook(db=db, workspace_id=caller.workspace_id)
    return RedirectResponse("/workspace/alerts?done=removed", status_code=303)


@router.post("/workspace/alerts/webhook/test")
def send_test(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    csrf_token: CsrfField = "",
) -> Response:
    """Post the test message (its own short sessions: none is held across the post). A
    webhook that did not accept it is an upstream failure (502) with the reason on the page;
    one that may not be posted to (or none set) is 400."""
    check_csrf(request, csrf_token)
    _manager(caller)
    delivery = service.send_test_message(
        request.app.state.db,
        request.app.state.settings,
        request.app.state.box,
        workspace_id=caller.workspace_id,
        workspace_name=caller.workspace_name,
    )
    if delivery.delivered:
        return _page(request, db, caller, notice="The webhook accepted the test message.")
    return _page(
        request,
        db,
        caller,
        502 if delivery.upstream else 400,
        error=f"The test message was not delivered. {delivery.error}",
    )
