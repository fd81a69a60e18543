"""The header's workspace switcher: which workspaces the signed-in person can switch to.

Called from ``base.html`` (a template global) only on pages rendered for a signed-in person,
so the per-request sign-in check stays one query; switching itself is a CSRF-checked POST to
``/workspace/switch`` that verifies the membership again.
"""

from __future__ import annotations

from fastapi import Request

from postroom.accounts import service
from postroom.db import Database


def workspace_choices(request: Request) -> list[service.MembershipView]:
    """The signed-in person's workspaces by name (empty when no one is signed in)."""
    caller = getattr(request.state, "caller", None)
    if caller is None:
        return []
    database: Database = request.app.state.db
    with database.session() as db:
        spaces = service.memberships(db=db, user_id=caller.user_id)
    return sorted(spaces, key=lambda m: (m.workspace_name.casefold(), m.workspace_id))
