"""Integrations, their mailboxes and categories, and pending OAuth flows.

What is stored, and what is not: ids (tenant, user object ids), the connected account's
address (configuration, shown to the people who connected it), the user's choices, statuses
and the encrypted MSAL token cache. Never a message's subject, body, sender or recipients.

Status values (:data:`STATUSES`) are what the integrations page shows; ``status_reason`` is a
machine code (see :mod:`postroom.integrations.statuses`) that picks the plain-words explanation
and the troubleshooting page.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from postroom.accounts.models import new_id, utcnow
from postroom.db import Base

STATUSES = (
    "setup",  # connected, wizard not finished
    "connected",
    "syncing",
    "backfilling",
    "needs_reconnect",
    "admin_consent_missing",
    "access_denied",
    "paused",
    "disconnecting",
    "disconnected",
)


class Integration(Base):
    __tablename__ = "integrations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), index=True
    )
    provider: Mapped[str] = mapped_column(String(20), default="outlook")
    kind: Mapped[str] = mapped_column(String(20))  # "personal" | "organization"
    name: Mapped[str] = mapped_column(String(200), default="Outlook")
    status: Mapped[str] = mapped_column(String(30), default="setup")
    status_reason: Mapped[str | None] = mapped_column(String(60), nullable=True)
    status_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    status_changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # the Microsoft side: tenant id always; the signed-in account for personal connections
    tenant_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    account_oid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    account_address: Mapped[str | None] = mapped_column(String(320), nullable=True)
    account_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    # options chosen when connecting: shared_access, minimal, manage_colours
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    granted_scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    consent: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    token_cache: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # encrypted
    wizard_step: Mapped[int] = mapped_column(Integer, default=1)
    wizard_data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    backfill_since: Mapped[date | None] = mapped_column(Date, nullable=True)
    created_by: Mapped[str | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # A disconnect asked for and what it did (postroom.integrations.disconnect): no secret, no
    # mail content - counts, category names Postroom created, reason codes.
    disconnect: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class Mailbox(Base):
    __tablename__ = "mailboxes"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    integration_id: Mapped[str] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), index=True
    )
    graph_user_id: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(320))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    kind: Mapped[str] = mapped_column(String(20))  # "own" | "shared" | "tenant"
    folders: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(30), default="connected")
    status_reason: Mapped[str | None] = mapped_column(String(60), nullable=True)
    # Lasting facts about the mailbox that are not a stop, by code (statuses.MAILBOX_NOTES)
    # -> ISO time recorded; e.g. "colors_refused": its master category list is off limits.
    notes: Mapped[dict[str, str]] = mapped_column(JSON, default=dict, server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Category(Base):
    __tablename__ = "categories"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    integration_id: Mapped[str] = mapped_column(
        ForeignKey("integrations.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(255))
    color: Mapped[str] = mapped_column(String(10), default="preset0")
    folder: Mapped[str | None] = mapped_column(String(400), nullable=True)
    forward_to: Mapped[list[str]] = mapped_column(JSON, default=list)
    forward_comment: Mapped[str] = mapped_column(Text, default="", server_default="")
    description: Mapped[str] = mapped_column(Text, default="")
    rules: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # a RuleGroup
    position: Mapped[int] = mapped_column(Integer, default=0)
    # Suggest only (shadow mode): decide and record, touch nothing in the mailbox
    suggest_only: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class OAuthFlow(Base):
    """A sign-in or admin-consent round trip in progress, keyed by its ``state``.

    The MSAL flow (PKCE verifier, nonce) is a credential for a few minutes: kept encrypted,
    single use, and bound to the Postroom user who started it.
    """

    __tablename__ = "oauth_flows"

    state: Mapped[str] = mapped_column(String(128), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(ForeignKey("workspaces.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # "personal" | "organization-admin" (the administrator's OpenID Connect sign-in) |
    # "organization" (admin consent, only ever for the tenant proven by that sign-in)
    purpose: Mapped[str] = mapped_column(String(20))
    integration_id: Mapped[str | None] = mapped_column(String(36), nullable=True)  # reconnect
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    flow: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)  # encrypted
    # organization flows: the tenant an administrator of it proved by signing in (id_token
    # ``tid`` with a consent-granting role in ``wids``); the consent callback accepts no other
    tenant_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
