"""Accounts: sign up, sign in, workspaces and memberships. Keyword-only, one session each."""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from postroom.accounts.models import MANAGING_ROLES, ROLES, Membership, User, Workspace
from postroom.accounts.passwords import hash_password, verify_password

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,}$")
MIN_PASSWORD = 10


class AccountError(ValueError):
    """A user-facing problem with the submitted account data."""


@dataclass(frozen=True)
class MembershipView:
    workspace_id: str
    workspace_name: str
    role: str

    @property
    def can_manage(self) -> bool:
        return self.role in MANAGING_ROLES


def normalize_email(email: str) -> str:
    return email.strip().lower()


def validate_signup(*, email: str, name: str, password: str, workspace_name: str) -> None:
    if not EMAIL_RE.match(normalize_email(email)):
        raise AccountError("Enter a valid email address.")
    if not name.strip() or len(name) > 200:
        raise AccountError("Enter your name (at most 200 characters).")
    if len(password) < MIN_PASSWORD or len(password) > 1000:
        raise AccountError(f"Choose a password of at least {MIN_PASSWORD} characters.")
    if not workspace_name.strip() or len(workspace_name) > 200:
        raise AccountError("Enter your organization's name (at most 200 characters).")


def sign_up(
    *, db: Session, email: str, name: str, password: str, workspace_name: str
) -> tuple[User, Workspace]:
    validate_signup(email=email, name=name, password=password, workspace_name=workspace_name)
    address = normalize_email(email)
    if db.scalar(select(func.count()).select_from(User).where(User.email == address)):
        raise AccountError("An account with this email address already exists. Sign in instead.")
    user = User(email=address, name=name.strip(), password_hash=hash_password(password))
    workspace = Workspace(name=workspace_name.strip())
    db.add_all([user, workspace])
    db.flush()
    db.add(Membership(workspace_id=workspace.id, user_id=user.id, role="owner"))
    db.flush()
    return user, workspace


def authenticate(*, db: Session, email: str, password: str) -> User | None:
    user = db.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        # Spend the same time as a real check so response times don't reveal accounts.
        verify_password(_DUMMY_HASH, password)
        return None
    return user if verify_password(user.password_hash, password) else None


_DUMMY_HASH = hash_password("postroom-dummy-password")


def get_user(*, db: Session, user_id: str) -> User | None:
    return db.get(User, user_id)


def memberships(*, db: Session, user_id: str) -> list[MembershipView]:
    rows = db.execute(
        select(Membership.workspace_id, Workspace.name, Membership.role)
        .join(Workspace, Workspace.id == Membership.workspace_id)
        .where(Membership.user_id == user_id)
        .order_by(Workspace.name)
    ).all()
    return [MembershipView(r[0], r[1], r[2]) for r in rows]


def membership(*, db: Session, user_id: str, workspace_id: str) -> MembershipView | None:
    for item in memberships(db=db, user_id=user_id):
        if item.workspace_id == workspace_id:
            return item
    return None


def members(*, db: Session, workspace_id: str) -> list[tuple[User, str]]:
    rows = db.execute(
        select(User, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.workspace_id == workspace_id)
        .order_by(User.email)
    ).all()
    return [(r[0], r[1]) for r in rows]


def add_member(*, db: Session, workspace_id: str, email: str, role: str) -> User:
    if role not in ROLES:
        raise AccountError("Choose a role: owner, admin or member.")
    user = db.scalar(select(User).where(User.email == normalize_email(email)))
    if user is None:
        raise AccountError("No Postroom account uses this email address; ask them to sign up.")
    existing = db.scalar(
        select(Membership).where(
            Membership.workspace_id == workspace_id, Membership.user_id == user.id
        )
    )
    if existing is not None:
        existing.role = role
    else:
        db.add(Membership(workspace_id=workspace_id, user_id=user.id, role=role))
    db.flush()
    return user
