"""Request plumbing every page shares: templates and :func:`render`, the database session
dependency (:data:`DbSession`) and the signed-in :func:`current_caller`.

Views import from here (and CSRF helpers from :mod:`postroom.web.security`); this module
imports no view and not the app, so the web layer has no import circle: :mod:`postroom.web.app`
only builds the app and includes the views' routers (decision 0011).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from postroom import __version__
from postroom.accounts import sessions
from postroom.accounts.switcher import workspace_choices
from postroom.db import Database
from postroom.web.security import Caller, NotSignedIn, csrf_token, session_lifetimes

HERE = Path(__file__).parent


def templates() -> Jinja2Templates:
    env_templates = Jinja2Templates(directory=str(HERE / "templates"))
    env_templates.env.globals["version"] = __version__
    env_templates.env.globals["workspace_choices"] = workspace_choices
    return env_templates


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    tpl: Jinja2Templates = request.app.state.templates
    context.setdefault("caller", getattr(request.state, "caller", None))
    context["csrf_token"] = csrf_token(request)
    return tpl.TemplateResponse(request, name, context, status_code=status_code)


def db_session(request: Request) -> Iterator[Session]:
    database: Database = request.app.state.db
    with database.session() as session:
        yield session


# "function" scope: commit before the response leaves, so the next request sees the writes.
DbSession = Annotated[Session, Depends(db_session, scope="function")]


def current_caller(request: Request) -> Caller:
    """The signed-in user and their current workspace, or :class:`NotSignedIn`: the cookie's
    session token must name a live server-side session (not signed out, revoked or expired)
    of a member of the cookie's workspace. One indexed query."""
    token = request.session.get("sid")
    user_id = request.session.get("uid")
    workspace_id = request.session.get("wid")
    if not (isinstance(token, str) and isinstance(user_id, str) and isinstance(workspace_id, str)):
        request.session.clear()  # e.g. a cookie from before server-side sessions
        raise NotSignedIn()
    database: Database = request.app.state.db
    with database.session() as session:
        who = sessions.find_signed_in(
            db=session,
            token=token,
            workspace_id=workspace_id,
            lifetimes=session_lifetimes(request.app.state.settings),
        )
    if who is None or who.user_id != user_id or who.workspace_id is None:
        request.session.clear()
        raise NotSignedIn()
    caller = Caller(
        user_id=who.user_id,
        user_name=who.user_name,
        user_email=who.user_email,
        workspace_id=who.workspace_id,
        workspace_name=who.workspace_name or "",
        role=who.role or "member",
        session_id=who.session_id,
    )
    request.state.caller = caller
    return caller
