"""Accounts: sign up, sign in, workspaces, memberships and invitations. Keyword-only, one
session each.

Nobody learns from Postroom whether an address has an account: sign-up always answers "we sent
a link" (a new address gets the link that creates the account, an existing one a note that
someone tried), and an invitation is mailed the same way whoever owns the address. Nobody is
added to a workspace without their consent: an invitation becomes a membership only when a
person signed in as the invited address accepts it. Links carry 256-bit single-use tokens of
which only the SHA-256 is stored, and they expire.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from postroom.accounts.models import (
    MANAGING_ROLES,
    ROLES,
    Invitation,
    Membership,
    PendingSignup,
    User,
    Workspace,
    utcnow,
)
from postroom.accounts.passwords import (
    MIN_PASSWORD as MIN_PASSWORD,  # the policy's minimum, for callers of this module
)
from postroom.accounts.passwords import (
    WeakPassword,
    check_password_policy,
    hash_password,
    verify_password,
)

EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,}$")


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


# Bidirectional controls (LRE, RLE, PDF, LRO, RLO, LRI, RLI, FSI, PDI, LRM, RLM, ALM) turn a
# name around on screen ("Acme\u202eniamod" shows as "Acmedomain"): never part of a name.
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")


def clean_name(value: str) -> str:
    """A person's or workspace's name as shown: bidi controls removed, outer spaces trimmed."""
    return BIDI_CONTROLS.sub("", value).strip()


# Scripts that are written together in one word (Japanese mixes kanji and kana; Korean may mix
# hanja and hangul): a label in one of these sets is not a mixed-script look-alike.
_SCRIPT_FAMILIES = ({"CJK", "HIRAGANA", "KATAKANA"}, {"CJK", "HANGUL"})


def _script(char: str) -> str | None:
    """The script of a letter (the first word of its Unicode name: LATIN, CYRILLIC, GREEK...);
    None for digits, punctuation and symbols, which every script shares."""
    if not unicodedata.category(char).startswith("L"):
        return None
    return unicodedata.name(char, "UNKNOWN").split(" ", 1)[0]


def _mixes_scripts(label: str) -> bool:
    scripts = {s for s in map(_script, label) if s is not None}
    return len(scripts) > 1 and not any(scripts <= family for family in _SCRIPT_FAMILIES)


def check_email(email: str) -> str:
    """The normalized address, or :class:`AccountError` when it is not a plausible address or
    looks like another one: invisible or control characters, a form that Unicode normalization
    changes (full-width letters), or a local part or domain label that mixes scripts (a
    Cyrillic "а" among Latin letters)."""
    address = normalize_email(email)
    if not EMAIL_RE.match(address):
        raise AccountError("Enter a valid email address.")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Zs", "Zl", "Zp", "Co", "Cn") for c in address):
        raise AccountError("Enter a valid email address (it contains invisible characters).")
    if unicodedata.normalize("NFKC", address) != address:
        raise AccountError("Enter the email address in plain characters (no full-width letters).")
    local, _, domain = address.rpartition("@")
    labels = [local, *domain.split(".")]
    for label in labels:
        if label.startswith("xn--"):
            try:
                label = label.encode("ascii").decode("idna")
            except UnicodeError:
                raise AccountError("Enter a valid email address.") from None
        if _mixes_scripts(label):
            raise AccountError(
                "This email address mixes letters of different alphabets (for example a "
                "Cyrillic or Greek letter among Latin ones), so it can pass for another "
                "address. Check it and type it again."
            )
    return address


def validate_name(name: str, *, what: str) -> str:
    cleaned = clean_name(name)
    if not cleaned or len(cleaned) > 200 or not cleaned.isprintable():
        raise AccountError(f"Enter {what} (at most 200 characters, no control characters).")
    return cleaned


def validate_signup(*, email: str, name: str, password: str, workspace_name: str) -> None:
    check_email(email)
    validate_name(name, what="your name")
    validate_password(password=password, email=email)
    validate_name(workspace_name, what="your organization's name")


def validate_password(*, password: str, email: str) -> None:
    """The password policy (:func:`passwords.check_password_policy`) as an :class:`AccountError`,
    for every place a person chooses a password: sign-up, invitations, password change."""
    try:
        check_password_policy(password, email=email)
    except WeakPassword as exc:
        raise AccountError(str(exc)) from None


def _account_exists(db: Session, address: str) -> bool:
    return bool(db.scalar(select(func.count()).select_from(User).where(User.email == address)))


def _create_account(
    db: Session, *, address: str, name: str, password_hash: str, workspace_name: str
) -> tuple[User, Workspace]:
    user = User(email=address, name=name, password_hash=password_hash)
    workspace = Workspace(name=workspace_name)
    db.add_all([user, workspace])
    db.flush()
    db.add(
        Membership(workspace_id=workspace.id, user_id=user.id, role="owner", last_used_at=utcnow())
    )
    db.flush()
    return user, workspace


def sign_up(
    *, db: Session, email: str, name: str, password: str, workspace_name: str
) -> tuple[User, Workspace]:
    """Create an account and its workspace at once, for an operator who vouches for the
    address (the web sign-up goes through :func:`request_signup` and a mailed link)."""
    validate_signup(email=email, name=name, password=password, workspace_name=workspace_name)
    address = normalize_email(email)
    if _account_exists(db, address):
        raise AccountError("An account with this email address already exists.")
    return _create_account(
        db,
        address=address,
        name=clean_name(name),
        password_hash=hash_password(password),
        workspace_name=clean_name(workspace_name),
    )


# -- links: single-use tokens of which only the hash is stored ---------------------------------

LinkState = Literal["unknown", "used", "expired", "revoked"]


class LinkError(AccountError):
    """A sign-up or invitation link that cannot be used (any more); ``state`` says why."""

    MESSAGES: dict[str, str] = {
        "unknown": "This link is not valid. Check that you opened the whole link from the email.",
        "used": "This link has already been used. Each link works once.",
        "expired": "This link has expired.",
        "revoked": "This invitation was withdrawn by the workspace.",
    }

    def __init__(self, state: LinkState, advice: str = "") -> None:
        super().__init__(" ".join(filter(None, (self.MESSAGES[state], advice))))
        self.state = state


def new_token() -> tuple[str, str]:
    """A fresh link token (256 random bits, URL-safe) and the hash to store for it."""
    token = secrets.token_urlsafe(32)
    return token, token_hash(token)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


# -- sign-up by mailed link -----------------------------------------------------------------------


@dataclass(frozen=True)
class SignupRequest:
    """What to mail after a sign-up form: ``token`` for a new address (the link that creates
    the account), None for an address that already has an account (a "someone tried" note)."""

    address: str
    token: str | None


def request_signup(
    *,
    db: Session,
    email: str,
    name: str,
    password: str,
    workspace_name: str,
    lifetime: timedelta,
) -> SignupRequest:
    """Check the form and remember a pending sign-up; the caller mails the answer. Both
    branches hash the password, so neither the answer nor its timing tells whether the address
    already has an account; an existing account is not touched."""
    validate_signup(email=email, name=name, password=password, workspace_name=workspace_name)
    address = normalize_email(email)
    password_hash = hash_password(password)
    now = utcnow()
    db.execute(delete(PendingSignup).where(PendingSignup.expires_at < now - timedelta(days=1)))
    if _account_exists(db, address):
        return SignupRequest(address=address, token=None)
    token, hashed = new_token()
    db.add(
        PendingSignup(
            email=address,
            name=clean_name(name),
            workspace_name=clean_name(workspace_name),
            password_hash=password_hash,
            token_hash=hashed,
            expires_at=now + lifetime,
        )
    )
    db.flush()
    return SignupRequest(address=address, token=token)


def pending_signup(*, db: Session, token: str) -> PendingSignup:
    """The pending sign-up a link names, or :class:`LinkError`."""
    pending = db.scalar(select(PendingSignup).where(PendingSignup.token_hash == token_hash(token)))
    if pending is None:
        raise LinkError("unknown")
    if pending.used_at is not None:
        raise LinkError("used", "If you finished signing up, sign in.")
    if pending.expires_at <= utcnow():
        raise LinkError("expired", "Sign up again to get a new link.")
    return pending


def complete_signup(*, db: Session, token: str) -> tuple[User, Workspace]:
    """Spend a sign-up link: create the user and their workspace (its owner)."""
    pending = pending_signup(db=db, token=token)
    password_hash, pending.password_hash = pending.password_hash, ""  # no copy lingers
    pending.used_at = utcnow()
    if _account_exists(db, pending.email):
        db.flush()
        raise LinkError("used", "An account for this address exists now: sign in.")
    return _create_account(
        db,
        address=pending.email,
        name=pending.name,
        password_hash=password_hash,
        workspace_name=pending.workspace_name,
    )


def authenticate(*, db: Session, email: str, password: str) -> User | None:
    address = normalize_email(email)
    # no account has a control character (PostgreSQL refuses NUL in a query outright)
    user = None if "\x00" in address else db.scalar(select(User).where(User.email == address))
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
        .order_by(Membership.last_used_at.desc().nulls_last(), Workspace.name, Workspace.id)
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


def switch_workspace(*, db: Session, user_id: str, workspace_id: str) -> MembershipView | None:
    """Make ``workspace_id`` the user's current (most recently used) workspace; None when they
    are not a member of it."""
    row = db.scalar(
        select(Membership).where(
            Membership.workspace_id == workspace_id, Membership.user_id == user_id
        )
    )
    if row is None:
        return None
    row.last_used_at = utcnow()
    db.flush()
    return membership(db=db, user_id=user_id, workspace_id=workspace_id)


# -- invitations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvitationView:
    invitation: Invitation
    workspace_name: str
    invited_by_name: str | None


def invite(
    *,
    db: Session,
    workspace_id: str,
    inviter_id: str,
    inviter_role: str,
    email: str,
    role: str,
    lifetime: timedelta,
) -> tuple[Invitation, str]:
    """Create (or renew, with a new token) the pending invitation of ``email``; return it and
    the token for the link to mail. Whether the address has a Postroom account plays no part."""
    if role not in ROLES:
        raise AccountError("Choose a role: owner, admin or member.")
    if inviter_role not in MANAGING_ROLES:
        raise AccountError("Only owners and admins can invite people.")
    if role == "owner" and inviter_role != "owner":
        raise AccountError("Only an owner can invite an owner.")
    address = check_email(email)
    already = db.scalar(
        select(func.count())
        .select_from(Membership)
        .join(User, User.id == Membership.user_id)
        .where(Membership.workspace_id == workspace_id, User.email == address)
    )
    if already:
        raise AccountError(f"{address} is already a member of this workspace.")
    token, hashed = new_token()
    now = utcnow()
    invitation = db.scalar(
        select(Invitation).where(
            Invitation.workspace_id == workspace_id,
            Invitation.email == address,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.expires_at > now,
        )
    )
    if invitation is None:
        invitation = Invitation(workspace_id=workspace_id, email=address)
        db.add(invitation)
    invitation.role = role
    invitation.token_hash = hashed
    invitation.invited_by = inviter_id
    invitation.created_at = now
    invitation.expires_at = now + lifetime
    db.flush()
    return invitation, token


def renew_invitation(
    *, db: Session, workspace_id: str, invitation_id: str, inviter_id: str, lifetime: timedelta
) -> tuple[Invitation, str] | None:
    """A new token (the old link stops working) and expiry for a pending invitation of this
    workspace, to mail again; None when there is no such pending invitation."""
    invitation = _pending_invitation(db, workspace_id, invitation_id)
    if invitation is None:
        return None
    token, hashed = new_token()
    now = utcnow()
    invitation.token_hash = hashed
    invitation.invited_by = inviter_id
    invitation.created_at = now
    invitation.expires_at = now + lifetime
    db.flush()
    return invitation, token


def revoke_invitation(*, db: Session, workspace_id: str, invitation_id: str) -> bool:
    invitation = _pending_invitation(db, workspace_id, invitation_id)
    if invitation is None:
        return False
    invitation.revoked_at = utcnow()
    db.flush()
    return True


def _pending_invitation(db: Session, workspace_id: str, invitation_id: str) -> Invitation | None:
    return db.scalar(
        select(Invitation).where(
            Invitation.id == invitation_id,
            Invitation.workspace_id == workspace_id,
            Invitation.accepted_at.is_(None),
            Invitation.revoked_at.is_(None),
            Invitation.expires_at > utcnow(),
        )
    )


def pending_invitations(*, db: Session, workspace_id: str) -> list[Invitation]:
    return list(
        db.scalars(
            select(Invitation)
            .where(
                Invitation.workspace_id == workspace_id,
                Invitation.accepted_at.is_(None),
                Invitation.revoked_at.is_(None),
                Invitation.expires_at > utcnow(),
            )
            .order_by(Invitation.created_at.desc())
        )
    )


def invitation_for(*, db: Session, token: str) -> InvitationView:
    """The usable invitation a link names, with its workspace's name; :class:`LinkError`
    when the link is unknown, used, revoked or expired."""
    row = db.execute(
        select(Invitation, Workspace.name, User.name)
        .join(Workspace, Workspace.id == Invitation.workspace_id)
        .outerjoin(User, User.id == Invitation.invited_by)
        .where(Invitation.token_hash == token_hash(token))
    ).first()
    if row is None:
        raise LinkError("unknown")
    invitation = row[0]
    if invitation.accepted_at is not None:
        raise LinkError("used", "If you accepted it, sign in to open the workspace.")
    if invitation.revoked_at is not None:
        raise LinkError("revoked")
    if invitation.expires_at <= utcnow():
        raise LinkError("expired", "Ask the person who invited you for a new invitation.")
    return InvitationView(invitation=invitation, workspace_name=row[1], invited_by_name=row[2])


class WrongAccount(AccountError):
    """The invitation is for another address than the signed-in account's."""


def accept_invitation(*, db: Session, token: str, user_id: str) -> MembershipView:
    """Spend an invitation for the signed-in user, who must own the invited address; the
    membership is created now (an existing membership keeps its role)."""
    view = invitation_for(db=db, token=token)
    invitation = view.invitation
    user = db.get(User, user_id)
    if user is None or normalize_email(user.email) != invitation.email:
        raise WrongAccount(
            f"This invitation is for {invitation.email}. Sign out, then open the link again "
            f"and sign in (or create an account) as {invitation.email}."
        )
    invitation.accepted_at = utcnow()
    existing = db.scalar(
        select(Membership).where(
            Membership.workspace_id == invitation.workspace_id, Membership.user_id == user.id
        )
    )
    if existing is None:
        db.add(
            Membership(
                workspace_id=invitation.workspace_id,
                user_id=user.id,
                role=invitation.role,
                last_used_at=utcnow(),
            )
        )
    else:
        existing.last_used_at = utcnow()
    db.flush()
    joined = membership(db=db, user_id=user.id, workspace_id=invitation.workspace_id)
    assert joined is not None
    return joined


def sign_up_by_invitation(
    *, db: Session, token: str, name: str, password: str
) -> tuple[User, MembershipView]:
    """Create the account of an invited address and accept the invitation in one step: the
    link, mailed to that address, proves the address as a sign-up link would."""
    view = invitation_for(db=db, token=token)
    address = view.invitation.email
    validate_name(name, what="your name")
    validate_password(password=password, email=address)
    if _account_exists(db, address):
        raise AccountError(
            f"There is already a Postroom account for {address}: sign in to accept the invitation."
        )
    user = User(email=address, name=clean_name(name), password_hash=hash_password(password))
    db.add(user)
    db.flush()
    return user, accept_invitation(db=db, token=token, user_id=user.id)


def expires_in_words(moment: datetime) -> str:
    left = moment - utcnow()
    if left >= timedelta(days=2):
        return f"in {left.days} days"
    hours = max(1, round(left.total_seconds() / 3600))
    return f"in {hours} hour{'s' if hours != 1 else ''}"


# -- roles: a workspace always keeps an owner; only owners touch owners ---------------------------


class RoleRefused(AccountError):
    """The caller's role may not make this change (the view answers 403)."""


class NotAMember(AccountError):
    """No such member in this workspace (the view answers 404)."""


def _members_locked(*, db: Session, workspace_id: str) -> dict[str, Membership]:
    """The workspace's memberships, its row locked until commit: concurrent role changes in one
    workspace take turns, so two owners demoting each other cannot leave it without one."""
    db.execute(select(Workspace.id).where(Workspace.id == workspace_id).with_for_update())
    rows = db.scalars(select(Membership).where(Membership.workspace_id == workspace_id)).all()
    return {m.user_id: m for m in rows}


def _check_owner_rules(
    *, people: dict[str, Membership], actor_id: str, target: Membership, new_role: str | None
) -> None:
    """``new_role`` None means removal. Owners and admins change members; only an owner makes
    an owner or changes or removes one; the last owner stays an owner."""
    actor = people.get(actor_id)
    if actor is None or actor.role not in MANAGING_ROLES:
        raise RoleRefused("Only owners and admins can change members.")
    if (target.role == "owner" or new_role == "owner") and actor.role != "owner":
        raise RoleRefused("Only an owner can make someone an owner or change an owner.")
    owners = sum(1 for m in people.values() if m.role == "owner")
    if target.role == "owner" and new_role != "owner" and owners <= 1:
        raise AccountError(
            "A workspace needs at least one owner: make someone else an owner first."
        )


def change_role(*, db: Session, workspace_id: str, actor_id: str, user_id: str, role: str) -> None:
    """Give the member ``user_id`` a new role, as ``actor_id`` (:func:`_check_owner_rules`)."""
    if role not in ROLES:
        raise AccountError("Choose a role: owner, admin or member.")
    people = _members_locked(db=db, workspace_id=workspace_id)
    target = people.get(user_id)
    if target is None:
        raise NotAMember("This person is not a member of this workspace.")
    _check_owner_rules(people=people, actor_id=actor_id, target=target, new_role=role)
    target.role = role
    db.flush()


def remove_member(*, db: Session, workspace_id: str, actor_id: str, user_id: str) -> None:
    """Take ``user_id`` out of the workspace, as ``actor_id`` (themselves: they leave)."""
    people = _members_locked(db=db, workspace_id=workspace_id)
    target = people.get(user_id)
    if target is None:
        raise NotAMember("This person is not a member of this workspace.")
    _check_owner_rules(people=people, actor_id=actor_id, target=target, new_role=None)
    db.delete(target)
    db.flush()


def change_password(*, db: Session, user_id: str, password: str) -> None:
    """Set a new password, after the policy (the caller ends the person's other sessions)."""
    user = db.get(User, user_id)
    if user is None:
        raise NotAMember("There is no such account.")
    validate_password(password=password, email=user.email)
    user.password_hash = hash_password(password)
    db.flush()
