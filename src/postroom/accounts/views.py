"""Sign up, sign in, sign out, the account page (password, sessions), and workspace members."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from postroom import mail
from postroom.accounts import emails, service, sessions, throttle
from postroom.accounts.models import Invitation
from postroom.db import Database
from postroom.settings import Settings
from postroom.web.deps import DbSession, current_caller, render
from postroom.web.security import (
    Caller,
    Forbidden,
    NotSignedIn,
    check_csrf,
    client_address,
    session_lifetimes,
    sign_in,
    sign_out,
)

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
    """The same answer whether or not the address has an account: "we sent a link". A new
    address gets the link that creates the account; an existing one a note that someone tried
    (its account is not touched)."""
    check_csrf(request, csrf_token)
    values = {"email": email, "name": name, "workspace": workspace}
    settings: Settings = request.app.state.settings
    try:
        ask = service.request_signup(
            db=db,
            email=email,
            name=name,
            password=password,
            workspace_name=workspace,
            lifetime=timedelta(hours=settings.signup_link_hours),
        )
    except service.AccountError as exc:
        db.rollback()
        return render(request, "accounts/signup.html", 400, values=values, error=str(exc))
    db.commit()  # before the mail leaves: never hold the transaction across the SMTP call
    base = settings.public_base_url
    if ask.token is not None:
        subject, text = emails.signup_link(
            link=f"{base}/signup/confirm?token={quote(ask.token)}",
            hours=settings.signup_link_hours,
        )
    else:
        subject, text = emails.signup_existing(signin=f"{base}/signin")
    if not _send(request, to=ask.address, subject=subject, text=text):
        return _mail_failed(request)
    return render(request, "accounts/signup_sent.html", address=ask.address)


@router.get("/signup/confirm")
def signup_confirm_page(request: Request, db: DbSession, token: str = "") -> Response:
    try:
        pending = service.pending_signup(db=db, token=token)
    except service.LinkError as exc:
        return _link_error(request, exc)
    return render(request, "accounts/signup_confirm.html", pending=pending, token=token)


@router.post("/signup/confirm")
def signup_confirm(
    request: Request, db: DbSession, token: OptionalText = "", csrf_token: OptionalText = ""
) -> Response:
    """The link's page posts here (a mail scanner that only fetches the link creates nothing):
    create the user and their workspace, and sign in."""
    check_csrf(request, csrf_token)
    try:
        user, workspace = service.complete_signup(db=db, token=token)
    except service.LinkError as exc:
        db.commit()  # a link spent on an address that has an account meanwhile stays spent
        return _link_error(request, exc)
    sign_in(request, db=db, user_id=user.id, workspace_id=workspace.id)
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
    wait, user = _throttled(
        request,
        email=email,
        check=lambda: service.authenticate(db=db, email=email, password=password),
    )
    if wait:
        response = render(
            request,
            "accounts/signin.html",
            429,
            next=_safe_next(next),
            error=_too_many(wait),
            email=email,
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
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
    sign_in(request, db=db, user_id=user.id, workspace_id=workspaces[0].workspace_id)
    return RedirectResponse(_safe_next(next), status_code=303)


@router.post("/signout")
def signout(request: Request, db: DbSession, csrf_token: OptionalText = "") -> Response:
    check_csrf(request, csrf_token)
    sign_out(request, db=db)
    return RedirectResponse("/signin", status_code=303)


@router.get("/workspace/members")
def members_page(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
) -> Response:
    return _members(request, db, caller)


def _members(
    request: Request,
    db: DbSession,
    caller: Caller,
    status_code: int = 200,
    *,
    notice: str | None = None,
    error: str | None = None,
) -> Response:
    people = service.members(db=db, workspace_id=caller.workspace_id)
    invitations = (
        service.pending_invitations(db=db, workspace_id=caller.workspace_id)
        if caller.can_manage
        else []
    )
    return render(
        request,
        "accounts/members.html",
        status_code,
        people=people,
        invitations=invitations,
        expires_in=service.expires_in_words,
        notice=notice,
        error=error,
    )


@router.post("/workspace/invitations")
def invite(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    email: Text = "",
    role: Text = "member",
    csrf_token: OptionalText = "",
) -> Response:
    """Mail an invitation link. The answer is the same whether or not the address has a
    Postroom account; nobody joins until they accept."""
    check_csrf(request, csrf_token)
    caller.require_manager()
    settings: Settings = request.app.state.settings
    try:
        invitation, token = service.invite(
            db=db,
            workspace_id=caller.workspace_id,
            inviter_id=caller.user_id,
            inviter_role=caller.role,
            email=email,
            role=role,
            lifetime=timedelta(days=settings.invitation_days),
        )
    except service.AccountError as exc:
        db.rollback()
        status = 403 if role == "owner" and caller.role != "owner" else 400
        return _members(request, db, caller, status, error=str(exc))
    address = invitation.email
    return _mail_invitation(request, db, caller, invitation, token, notice=address)


def _mail_invitation(
    request: Request,
    db: DbSession,
    caller: Caller,
    invitation: Invitation,
    token: str,
    *,
    notice: str,
) -> Response:
    settings: Settings = request.app.state.settings
    address, role, expires_at = invitation.email, invitation.role, invitation.expires_at
    db.commit()  # before the mail leaves: never hold the transaction across the SMTP call
    subject, text = emails.invitation(
        inviter=caller.user_name,
        workspace=caller.workspace_name,
        role=role,
        address=address,
        link=f"{settings.public_base_url}/invitations/accept?token={quote(token)}",
        expires_at=expires_at,
    )
    if not _send(request, to=address, subject=subject, text=text):
        return _members(
            request,
            db,
            caller,
            503,
            error=f"The invitation to {address} is saved, but the email could not be sent just "
            "now. Try Resend in a few minutes, or ask the operator to check the mail settings.",
        )
    return _members(request, db, caller, notice=f"Invitation sent to {notice}.")


@router.post("/workspace/invitations/{invitation_id}/resend")
def resend_invitation(
    request: Request,
    invitation_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    csrf_token: OptionalText = "",
) -> Response:
    """A new link (the previous one stops working) and a new expiry, mailed again."""
    check_csrf(request, csrf_token)
    caller.require_manager()
    pending = {
        i.id: i for i in service.pending_invitations(db=db, workspace_id=caller.workspace_id)
    }
    found = pending.get(invitation_id)
    if found is None:
        raise HTTPException(404)
    if found.role == "owner" and caller.role != "owner":
        raise Forbidden("Only an owner can invite an owner.")
    settings: Settings = request.app.state.settings
    renewed = service.renew_invitation(
        db=db,
        workspace_id=caller.workspace_id,
        invitation_id=invitation_id,
        inviter_id=caller.user_id,
        lifetime=timedelta(days=settings.invitation_days),
    )
    assert renewed is not None
    invitation, token = renewed
    return _mail_invitation(request, db, caller, invitation, token, notice=invitation.email)


@router.post("/workspace/invitations/{invitation_id}/revoke")
def revoke_invitation(
    request: Request,
    invitation_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    csrf_token: OptionalText = "",
) -> Response:
    check_csrf(request, csrf_token)
    caller.require_manager()
    if not service.revoke_invitation(
        db=db, workspace_id=caller.workspace_id, invitation_id=invitation_id
    ):
        raise HTTPException(404)
    return RedirectResponse("/workspace/members", status_code=303)


def _signed_in(request: Request) -> Caller | None:
    """The caller when someone is signed in; None for a visitor (whose session, holding the
    CSRF token of the form they are on, is left alone)."""
    if "uid" not in request.session:
        return None
    try:
        return current_caller(request)
    except NotSignedIn:
        return None


def _invitation_page(
    request: Request,
    view: service.InvitationView,
    token: str,
    caller: Caller | None,
    status_code: int = 200,
    *,
    error: str | None = None,
    name: str = "",
) -> Response:
    here = f"/invitations/accept?token={quote(token)}"
    return render(
        request,
        "accounts/invitation.html",
        status_code,
        view=view,
        token=token,
        signed_in=caller,
        wrong_account=caller is not None
        and service.normalize_email(caller.user_email) != view.invitation.email,
        signin_url=f"/signin?next={quote(here, safe='')}",
        error=error,
        entered_name=name,
    )


@router.get("/invitations/accept")
def invitation_page(request: Request, db: DbSession, token: str = "") -> Response:
    try:
        view = service.invitation_for(db=db, token=token)
    except service.LinkError as exc:
        return _link_error(request, exc)
    caller = _signed_in(request)
    wrong = (
        caller is not None and service.normalize_email(caller.user_email) != view.invitation.email
    )
    return _invitation_page(request, view, token, caller, 403 if wrong else 200)


@router.post("/invitations/accept")
def accept_invitation(
    request: Request, db: DbSession, token: OptionalText = "", csrf_token: OptionalText = ""
) -> Response:
    check_csrf(request, csrf_token)
    caller = _signed_in(request)
    if caller is None:
        return RedirectResponse(f"/invitations/accept?token={quote(token)}", status_code=303)
    try:
        joined = service.accept_invitation(db=db, token=token, user_id=caller.user_id)
    except service.WrongAccount:
        db.rollback()
        return _invitation_page(
            request, service.invitation_for(db=db, token=token), token, caller, 403
        )
    except service.LinkError as exc:
        db.rollback()
        return _link_error(request, exc)
    request.session["wid"] = joined.workspace_id
    return RedirectResponse("/integrations", status_code=303)


@router.post("/invitations/signup")
def invitation_signup(
    request: Request,
    db: DbSession,
    token: OptionalText = "",
    name: Text = "",
    password: Text = "",
    csrf_token: OptionalText = "",
) -> Response:
    """Create the invited address's account and join: the link, mailed to that address,
    proves it as a sign-up link would."""
    check_csrf(request, csrf_token)
    try:
        user, joined = service.sign_up_by_invitation(
            db=db, token=token, name=name, password=password
        )
    except service.LinkError as exc:
        db.rollback()
        return _link_error(request, exc)
    except service.AccountError as exc:
        db.rollback()
        view = service.invitation_for(db=db, token=token)
        return _invitation_page(
            request, view, token, _signed_in(request), 400, error=str(exc), name=name
        )
    sign_in(request, db=db, user_id=user.id, workspace_id=joined.workspace_id)
    return RedirectResponse("/integrations", status_code=303)


@router.post("/workspace/switch")
def switch_workspace(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    workspace_id: Annotated[str, Form(max_length=64)] = "",
    csrf_token: OptionalText = "",
) -> Response:
    """Make another of the caller's workspaces the current one (only their own)."""
    check_csrf(request, csrf_token)
    chosen = service.switch_workspace(db=db, user_id=caller.user_id, workspace_id=workspace_id)
    if chosen is None:
        raise HTTPException(404)
    request.session["wid"] = chosen.workspace_id
    return RedirectResponse("/integrations", status_code=303)


def _send(request: Request, *, to: str, subject: str, text: str) -> bool:
    try:
        mail.mailer(request.app.state.settings).send(to=to, subject=subject, text=text)
    except mail.MailError:
        return False
    return True


def _mail_failed(request: Request) -> Response:
    return render(
        request,
        "error.html",
        503,
        title="The email could not be sent",
        message="Postroom could not send the email just now. Try again in a few minutes; if it "
        "keeps happening, ask the operator to check Postroom's mail settings.",
    )


def _link_error(request: Request, exc: service.LinkError) -> Response:
    return render(
        request,
        "error.html",
        404 if exc.state == "unknown" else 410,
        title="This link cannot be used",
        message=str(exc),
    )


# --- sign-in throttling (postroom.accounts.throttle) ------------------------------------------

T = TypeVar("T")


def _limits(settings: Settings) -> throttle.Limits:
    return throttle.Limits(
        account_failures=settings.signin_account_failures,
        address_failures=settings.signin_address_failures,
        window=timedelta(seconds=settings.signin_window_seconds),
        max_window=timedelta(seconds=settings.signin_lockout_max_seconds),
    )


def _throttled(
    request: Request, *, email: str, check: Callable[[], T | None]
) -> tuple[float, T | None]:
    """Run the password ``check`` unless the account of ``email`` or the client's address has
    failed too often: returns (seconds to wait, None) without checking, or (0, the result);
    a None result counts as a failure. The attempt is committed before it is counted, in
    transactions of its own, so parallel guesses see each other (see throttle's docstring)."""
    database: Database = request.app.state.db
    limits = _limits(request.app.state.settings)
    with database.session() as tx:
        attempt = throttle.begin(db=tx, account=email, address=client_address(request))
    with database.session() as tx:
        wait = throttle.check(db=tx, attempt=attempt, limits=limits)
        if wait > 0:
            throttle.refused(db=tx, attempt=attempt)
            return wait, None
    result = check()
    with database.session() as tx:
        if result is None:
            throttle.failed(db=tx, attempt=attempt, limits=limits)
        else:
            throttle.succeeded(db=tx, attempt=attempt)
    return 0.0, result


def _too_many(wait: float) -> str:
    return f"Too many attempts: try again in {throttle.describe_wait(wait)}."


# --- the account page: password and sessions ---------------------------------------------------


def _account_page(
    request: Request,
    db: DbSession,
    caller: Caller,
    status_code: int = 200,
    *,
    error: str | None = None,
    notice: str | None = None,
) -> Response:
    listed = sessions.list_for(
        db=db,
        user_id=caller.user_id,
        current_session_id=caller.session_id,
        lifetimes=session_lifetimes(request.app.state.settings),
    )
    return render(
        request,
        "accounts/account.html",
        status_code,
        nav="account",
        sessions=listed,
        others=[s for s in listed if not s.current],
        error=error,
        notice=notice,
    )


NOTICES = {
    "password": "Your password was changed. Every other session was signed out.",
    "ended": "That session was signed out.",
    "others": "Every other session was signed out.",
}


@router.get("/account")
def account_page(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    done: str | None = None,
) -> Response:
    return _account_page(request, db, caller, notice=NOTICES.get(done or ""))


@router.post("/account/password")
def change_password(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    current_password: Text = "",
    new_password: Text = "",
    csrf_token: OptionalText = "",
) -> Response:
    check_csrf(request, csrf_token)
    wait, user = _throttled(
        request,
        email=caller.user_email,
        check=lambda: service.authenticate(
            db=db, email=caller.user_email, password=current_password
        ),
    )
    if wait:
        response = _account_page(request, db, caller, 429, error=_too_many(wait))
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    if user is None or user.id != caller.user_id:
        return _account_page(
            request, db, caller, 400, error="Your current password is not right. Nothing changed."
        )
    try:
        service.change_password(db=db, user_id=caller.user_id, password=new_password)
    except service.AccountError as exc:
        db.rollback()
        return _account_page(request, db, caller, 400, error=str(exc))
    # every session of this person ends (a thief's too); this browser gets a fresh one
    sessions.end_all(db=db, user_id=caller.user_id)
    sign_in(request, db=db, user_id=caller.user_id, workspace_id=caller.workspace_id)
    return RedirectResponse("/account?done=password", status_code=303)


@router.post("/account/sessions/others/end")
def end_other_sessions(
    request: Request,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    csrf_token: OptionalText = "",
) -> Response:
    check_csrf(request, csrf_token)
    sessions.end_all(db=db, user_id=caller.user_id, except_session_id=caller.session_id)
    return RedirectResponse("/account?done=others", status_code=303)


@router.post("/account/sessions/{session_id}/end")
def end_session(
    request: Request,
    session_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    csrf_token: OptionalText = "",
) -> Response:
    check_csrf(request, csrf_token)
    if session_id == caller.session_id:
        sign_out(request, db=db)
        return RedirectResponse("/signin", status_code=303)
    if not sessions.end_one(db=db, user_id=caller.user_id, session_id=session_id):
        return _account_page(
            request, db, caller, 404, error="There is no such session; it may have ended already."
        )
    return RedirectResponse("/account?done=ended", status_code=303)


# --- members: roles and removal (a workspace always keeps an owner) ------------------------------


def _membership_refused(request: Request, exc: service.AccountError) -> Response:
    status = 403 if isinstance(exc, service.RoleRefused) else 400
    if isinstance(exc, service.NotAMember):
        status = 404
    return render(
        request,
        "error.html",
        status,
        title="Not changed" if status == 400 else "Not allowed" if status == 403 else "Not found",
        message=f"{exc} Nothing was changed.",
    )


@router.post("/workspace/members/{user_id}/role")
def change_member_role(
    request: Request,
    user_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    role: Text = "",
    csrf_token: OptionalText = "",
) -> Response:
    check_csrf(request, csrf_token)
    caller.require_manager()
    try:
        service.change_role(
            db=db,
            workspace_id=caller.workspace_id,
            actor_id=caller.user_id,
            user_id=user_id,
            role=role,
        )
    except service.AccountError as exc:
        db.rollback()
        return _membership_refused(request, exc)
    return RedirectResponse("/workspace/members", status_code=303)


@router.post("/workspace/members/{user_id}/remove")
def remove_member(
    request: Request,
    user_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    csrf_token: OptionalText = "",
) -> Response:
    check_csrf(request, csrf_token)
    caller.require_manager()
    try:
        service.remove_member(
            db=db, workspace_id=caller.workspace_id, actor_id=caller.user_id, user_id=user_id
        )
    except service.AccountError as exc:
        db.rollback()
        return _membership_refused(request, exc)
    if user_id == caller.user_id:  # they left this workspace
        sign_out(request, db=db)
        return RedirectResponse("/signin", status_code=303)
    return RedirectResponse("/workspace/members", status_code=303)
