"""Sign up, sign in, sign out, and workspace members."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from postroom.accounts import service
from postroom.web.app import DbSession, current_caller, render
from postroom.web.security import Caller, check_csrf, sign_in, sign_out

router = APIRouter()

Text = Annotated[str, Form(max_length=2000)]
OptionalText = Annotated[str, Form(max_length=2000)]


def _safe_next(target: str | None) -> str:
    """Only same-site relative paths: never an open redirect."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/integrations"


@router.get("/signup")
def signup_form(request: Request) -> Response:
    return render(request, "accounts/signup.html", values={}, error=None)


@router.post("/signup")
def signup(
    request: Request,
    db: DbSession,
    email: Text = "",
    name: Text = "",
    password: Text = "",
    workspace: Text = "",
    csrf_token: OptionalText = "",
) -> Response:
    check_csrf(request, csrf_token)
    values = {"email": email, "name": name, "workspace": workspace}
    try:
        user, ws = service.sign_up(
            db=db, email=email, name=name, password=password, workspace_name=workspace
        )
    except service.AccountError as exc:
        db.rollback()
        return render(request, "accounts/signup.html", 400, values=values, error=str(exc))
    sign_in(request, user_id=user.id, workspace_id=ws.id)
    return RedirectResponse("/integrations", status_code=303)


@router.get("/signin")
def signin_form(request: Request, next: str | None = None) -> Response:
    return render(request, "accounts/signin.html", next=_safe_next(next), error=None, email="")


@router.post("/signin")
def signin(
    request: Request,
    db: DbSession,
    email: Text = "",
    password: Text = "",
    next: OptionalText = "",
    csrf_token: OptionalText = "",
) -> Response:
    check_csrf(request, csrf_token)
    user = service.authenticate(db=db, email=email, password=password)
    if user is None:
        return render(
            request,
            "accounts/signin.html",
            400,
            next=_safe_next(next),
            error="The email address or password is not right.",
            email=email,
        )
    workspaces = service.memberships(db=db, user_id=user.id)
    if not workspaces:
        return render(
            request,
            "accounts/signin.html",
            400,
            next=_safe_next(next),
            error="Your account is not a member of any workspace.",
            email=email,
        )
    sign_in(request, user_id=user.id, workspace_id=workspaces[0].workspace_id)
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/signout")
def signout(request: Request, csrf_token: OptionalText = "") -> Response:
    check_csrf(request, csrf_token)
    sign_out(request)
    return RedirectResponse("/signin", status_code=303)


@router.get("/workspace/members")
def members_page(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
) -> Response:
    people = service.members(db=db, workspace_id=caller.workspace_id)
    return render(request, "accounts/members.html", people=people, error=None)


@router.post("/workspace/members")
def add_member(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    email: Text = "",
    role: Text = "member",
    csrf_token: OptionalText = "",
) -> Response:
    check_csrf(request, csrf_token)
    caller.require_manager()
    if role == "owner" and caller.role != "owner":
        return render(
            request,
            "accounts/members.html",
            403,
            people=service.members(db=db, workspace_id=caller.workspace_id),
            error="Only an owner can make someone an owner.",
        )
    try:
        service.add_member(db=db, workspace_id=caller.workspace_id, email=email, role=role)
    except service.AccountError as exc:
        db.rollback()
        return render(
            request,
            "accounts/members.html",
            400,
            people=service.members(db=db, workspace_id=caller.workspace_id),
            error=str(exc),
        )
    return RedirectResponse("/workspace/members", status_code=303)
