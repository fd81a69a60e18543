"""Sessions, CSRF and who-is-calling for the web pages.

Sessions are Starlette's signed cookie (itsdangerous; HttpOnly, SameSite=Lax, Secure behind
https) holding only the user id, the current workspace id and the CSRF token. Every POST form
carries ``csrf_token``; :func:`check_csrf` compares it in constant time. Views receive a
:class:`Caller` and pass ``caller.workspace_id`` to every service call, so no query can leave
the caller's workspace.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from fastapi import Request

from postroom.accounts.models import MANAGING_ROLES


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


def sign_in(request: Request, *, user_id: str, workspace_id: str) -> None:
    request.session.clear()  # a new session id on sign-in: no fixation
    request.session["uid"] = user_id
    request.session["wid"] = workspace_id
    request.session["csrf"] = secrets.token_urlsafe(32)


def sign_out(request: Request) -> None:
    request.session.clear()
