"""Sessions, CSRF and who-is-calling for the web pages.

The browser holds Starlette's signed cookie (itsdangerous; HttpOnly, SameSite=Lax, Secure
behind https) with a session token, the user id, the current workspace id and the CSRF token.
The authority is the server-side session the token names (:mod:`postroom.accounts.sessions`):
:func:`sign_in` creates it, :func:`sign_out` deletes it, and ``current_caller`` (web/app.py)
accepts a request only while it lives, so a copied cookie ends with the session. Every POST
form carries ``csrf_token``; :func:`check_csrf` compares it in constant time. Views receive a
:class:`Caller` and pass ``caller.workspace_id`` to every service call, so no query can leave
the caller's workspace.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from fastapi import Request
from sqlalchemy.orm import Session

from postroom.accounts import sessions
from postroom.accounts.models import MANAGING_ROLES
from postroom.settings import Settings


class NotSignedIn(Exception):
    """Raised by :func:`caller` when no one is signed in (the app redirects to /signin)."""


class Forbidden(Exception):
    """The signed-in user may not do this in this workspace."""


class BadCsrf(Exception):
    """The form's CSRF token is missing or wrong."""


@dataclass(frozen=True)
class Caller:
    user_id: str
    user_name: str
    user_email: str
    workspace_id: str
    workspace_name: str
    role: str
    session_id: str = ""  # the server-side session of this request (not its secret token)

    @property
    def can_manage(self) -> bool:
        return self.role in MANAGING_ROLES

    def require_manager(self) -> None:
        if not self.can_manage:
            raise Forbidden("Only owners and admins can change integrations.")


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, submitted: str | None) -> None:
    expected = request.session.get("csrf")
    if not isinstance(expected, str) or not submitted:
        raise BadCsrf()
    if not hmac.compare_digest(expected.encode(), submitted.encode()):
        raise BadCsrf()


def session_lifetimes(settings: Settings) -> sessions.Lifetimes:
    return sessions.Lifetimes(
        idle=timedelta(seconds=settings.session_idle_seconds),
        absolute=timedelta(seconds=settings.session_max_age),
    )


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def sign_in(request: Request, *, db: Session, user_id: str, workspace_id: str) -> None:
    """Start a server-side session for ``user_id`` in ``db`` (the caller's transaction, so a
    user created in it can sign in) and put its token in the cookie. A previous session of this
    browser ends; the new token and CSRF token are fresh (no fixation)."""
    previous = request.session.get("sid")
    if isinstance(previous, str):
        sessions.end(db=db, token=previous)
    request.session.clear()
    request.session["sid"] = sessions.start(
        db=db,
        user_id=user_id,
        lifetimes=session_lifetimes(request.app.state.settings),
        user_agent=request.headers.get("user-agent", ""),
        address=client_address(request),
    )
    request.session["uid"] = user_id
    request.session["wid"] = workspace_id
    request.session["csrf"] = secrets.token_urlsafe(32)


def sign_out(request: Request, *, db: Session) -> None:
    """End this browser's session server-side (a copy of its cookie stops working too)."""
    token = request.session.get("sid")
    if isinstance(token, str):
        sessions.end(db=db, token=token)
    request.session.clear()
