"""Sign-in sessions, kept server-side so that they can end.

A sign-in creates a :class:`UserSession` row and gives the browser a random token (256 bits) in
the signed session cookie; the row stores only the token's SHA-256 (the token is random, so a
plain hash is enough: a copy of the database opens no session). The row is the authority: a
request is signed in only while its token names a row that has been used within the idle
lifetime and was created within the absolute lifetime (both settings). Signing out deletes the
row, so a copied cookie stops working; a password change deletes the person's other rows; a
person can list and end their own sessions.

Each request costs one indexed query (:func:`find_signed_in`, the token hash's unique index,
joined with the user and the membership of the current workspace); ``last_seen_at`` is written
at most once a minute (:data:`TOUCH_EVERY`). Expired rows are deleted when they are met and when
their user signs in again.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import DateTime, ForeignKey, String, and_, delete, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from postroom.accounts.models import Membership, User, Workspace, new_id, utcnow
from postroom.db import Base

TOUCH_EVERY = timedelta(minutes=1)
SESSION_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class UserSession(Base):
    __tablename__ = "user_sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # what the person sees in "Signed in elsewhere": a browser and system, and an address
    device: Mapped[str] = mapped_column(String(100), default="")
    address: Mapped[str] = mapped_column(String(45), default="")


@dataclass(frozen=True)
class Lifetimes:
    idle: timedelta
    absolute: timedelta

    def cutoffs(self, now: datetime) -> tuple[datetime, datetime]:
        """(last seen after, created after): a session older than either has ended."""
        return now - self.idle, now - self.absolute


@dataclass(frozen=True)
class SignedIn:
    """Who a session token belongs to, in the workspace the cookie names (None: not a member)."""

    session_id: str
    user_id: str
    user_name: str
    user_email: str
    workspace_id: str | None
    workspace_name: str | None
    role: str | None


@dataclass(frozen=True)
class SessionView:
    id: str
    created_at: datetime
    last_seen_at: datetime
    device: str
    address: str
    current: bool


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(
    *, db: Session, user_id: str, lifetimes: Lifetimes, user_agent: str = "", address: str = ""
) -> str:
    """A new session for ``user_id``; returns its token (for the cookie, never stored)."""
    now = utcnow()
    last_seen_after, created_after = lifetimes.cutoffs(now)
    db.execute(
        delete(UserSession).where(
            UserSession.user_id == user_id,
            or_(
                UserSession.last_seen_at < last_seen_after,
                UserSession.created_at < created_after,
            ),
        )
    )
    token = secrets.token_urlsafe(32)
    db.add(
        UserSession(
            token_hash=token_hash(token),
            user_id=user_id,
            created_at=now,
            last_seen_at=now,
            device=describe_device(user_agent),
            address=address[:45],
        )
    )
    db.flush()
    return token


def find_signed_in(
    *, db: Session, token: str, workspace_id: str, lifetimes: Lifetimes
) -> SignedIn | None:
    """The live session of ``token`` (one indexed query; ``last_seen_at`` moves at most once a
    minute), or None for an unknown, revoked or expired one (an expired row is deleted)."""
    now = utcnow()
    row = db.execute(
        select(
            UserSession.id,
            UserSession.created_at,
            UserSession.last_seen_at,
            User.id,
            User.name,
            User.email,
            Membership.workspace_id,
            Workspace.name,
            Membership.role,
        )
        .join(User, User.id == UserSession.user_id)
        .outerjoin(
            Membership,
            and_(Membership.user_id == User.id, Membership.workspace_id == workspace_id),
        )
        .outerjoin(Workspace, Workspace.id == Membership.workspace_id)
        .where(UserSession.token_hash == token_hash(token))
    ).one_or_none()
    if row is None:
        return None
    session_id, created_at, last_seen_at = row[0], row[1], row[2]
    last_seen_after, created_after = lifetimes.cutoffs(now)
    if last_seen_at < last_seen_after or created_at < created_after:
        db.execute(delete(UserSession).where(UserSession.id == session_id))
        return None
    if now - last_seen_at >= TOUCH_EVERY:
        db.execute(update(UserSession).where(UserSession.id == session_id).values(last_seen_at=now))
    return SignedIn(
        session_id=session_id,
        user_id=row[3],
        user_name=row[4],
        user_email=row[5],
        workspace_id=row[6],
        workspace_name=row[7],
        role=row[8],
    )


def end(*, db: Session, token: str) -> None:
    """Sign-out: the session of ``token`` ends here and everywhere its cookie was copied."""
    db.execute(delete(UserSession).where(UserSession.token_hash == token_hash(token)))


def end_one(*, db: Session, user_id: str, session_id: str) -> bool:
    """End one of ``user_id``'s own sessions; False when they have no such session."""
    if not SESSION_ID.fullmatch(session_id):
        return False
    result = db.execute(
        delete(UserSession).where(UserSession.id == session_id, UserSession.user_id == user_id)
    )
    return bool(getattr(result, "rowcount", 0))


def end_all(*, db: Session, user_id: str, except_session_id: str | None = None) -> int:
    """End every session of ``user_id`` (but ``except_session_id``); returns how many ended."""
    query = delete(UserSession).where(UserSession.user_id == user_id)
    if except_session_id is not None:
        query = query.where(UserSession.id != except_session_id)
    return int(getattr(db.execute(query), "rowcount", 0))


def list_for(
    *, db: Session, user_id: str, current_session_id: str, lifetimes: Lifetimes
) -> list[SessionView]:
    """The person's live sessions, this one first, then the most recently used."""
    last_seen_after, created_after = lifetimes.cutoffs(utcnow())
    rows = db.scalars(
        select(UserSession)
        .where(
            UserSession.user_id == user_id,
            UserSession.last_seen_at >= last_seen_after,
            UserSession.created_at >= created_after,
        )
        .order_by(UserSession.last_seen_at.desc())
    ).all()
    views = [
        SessionView(
            id=r.id,
            created_at=r.created_at,
            last_seen_at=r.last_seen_at,
            device=r.device or "Unknown browser",
            address=r.address,
            current=r.id == current_session_id,
        )
        for r in rows
    ]
    return sorted(views, key=lambda v: not v.current)


_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("Chrome/", "Chrome"),
    ("Chromium/", "Chromium"),
    ("Safari/", "Safari"),
)
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def describe_device(user_agent: str) -> str:
    """A short, recognisable summary of a User-Agent ("Firefox on Windows"); never the raw
    header, which is long and may carry whatever a client puts there."""
    browser = next((name for mark, name in _BROWSERS if mark in user_agent), None)
    system = next((name for mark, name in _SYSTEMS if mark in user_agent), None)
    if browser is None:
        match = re.match(r"([A-Za-z][A-Za-z0-9._-]{0,30})/", user_agent)
        browser = match.group(1) if match else "Unknown browser"
    return f"{browser} on {system}" if system else browser
