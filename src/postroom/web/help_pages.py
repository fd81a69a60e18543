"""Help pages: troubleshooting per status, restricting an organization-wide connection, and
registering Postroom in a real Entra ID tenant. Readable without signing in."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response

from postroom.integrations.statuses import LABELS, REASONS
from postroom.web.deps import render

router = APIRouter()


@router.get("/help")
def help_index(request: Request) -> Response:
    return render(request, "help/index.html", nav="help", labels=LABELS)


@router.get("/help/status/{status}")
def status_help(request: Request, status: str) -> Response:
    if status not in LABELS:
        raise HTTPException(404)
    reasons = [r for r in REASONS.values() if r.status == status]
    return render(
        request,
        "help/status.html",
        nav="help",
        status=status,
        label=LABELS[status],
        reasons=reasons,
    )


@router.get("/help/restrict-mailboxes")
def restrict_help(request: Request) -> Response:
    settings = request.app.state.settings
    return render(
        request,
        "help/restrict.html",
        nav="help",
        client_id=settings.ms_client_id or "<Postroom client id>",
    )


@router.get("/help/register-app")
def register_help(request: Request) -> Response:
    return render(request, "help/register.html", nav="help", settings=request.app.state.settings)
