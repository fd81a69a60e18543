"""Subscriptions as the emulator keeps them, and the JSON Microsoft Graph sends about them.

A :class:`Subscription` is one row of Graph's subscription store (graph.md 4.1): who created it
(application, and the signed-in user for delegated subscriptions), which mailbox and folder it
watches, where to deliver, until when, and the bookkeeping the lifecycle rules need (when the
creator's access token expires, which challenges were already sent). The
:class:`SubscriptionRegistry` indexes them by id and by mailbox, so the store listener that turns
message changes into notifications costs one dictionary lookup for mailboxes nobody watches.

The registry is guarded by the store's lock (:attr:`m365sim.store.Store.lock`): Graph handlers,
the store listener and the lifecycle tick all hold it while they read or change subscriptions,
and nobody holds it across network I/O.

Payload builders are plain functions of plain data (:func:`subscription_json`,
:func:`change_notification`, :func:`lifecycle_notification`); the shapes follow graph.md 4.1
and 4.3 and the CSDL types ``subscription`` and ``changeNotification``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from m365sim import ids
from m365sim.clock import iso7
from m365sim.state import EmulatorState
from m365sim.store import Store

LifecycleEvent = Literal["reauthorizationRequired", "subscriptionRemoved", "missed"]
LIFECYCLE_EVENTS: tuple[LifecycleEvent, ...] = (
    "reauthorizationRequired",
    "subscriptionRemoved",
    "missed",
)
CHANGE_TYPES = ("created", "updated", "deleted")

# Permissions that let an app (roles) or a user (delegated scopes) keep a message subscription
# (graph.md 2.1: read scopes; tokens holding Mail.ReadWrite work too).
APP_READ_ROLES = frozenset({"Mail.ReadBasic", "Mail.ReadBasic.All", "Mail.Read", "Mail.ReadWrite"})
DELEGATED_READ_SCOPES = frozenset({"Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite"})


@dataclass
class Subscription:
    id: str
    tenant_id: str
    client_id: str
    creator_id: str  # the signed-in user's id, or the app's service principal id (app-only)
    app_only: bool
    mailbox_id: str
    folder_id: str | None  # None: the whole mailbox (``/users/{id}/messages``)
    resource: str  # as the client wrote it
    change_type: str  # as the client wrote it, e.g. "created,updated"
    change_types: frozenset[str]
    notification_url: str
    lifecycle_url: str | None
    client_state: str | None
    expiration: datetime
    latest_tls: str
    immutable_ids: bool  # created with Prefer: IdType="ImmutableId"
    token_expires: float  # the creator's access token, renewed by reauthorize / PATCH
    created: float
    # lifecycle bookkeeping (emulator-clock seconds)
    expiry_challenge_for: float | None = None  # expiry a reauthorizationRequired was sent for
    token_challenge_for: float | None = None  # token expiry a challenge was sent for
    reauth_required_since: float | None = None  # set while a token challenge is unanswered

    @property
    def expires(self) -> float:
        return self.expiration.timestamp()

    def expired(self, now: float) -> bool:
        return now >= self.expires

    def paused(self, now: float, grace_seconds: float) -> bool:
        """Delivery pauses when a token challenge stays unanswered past the grace period."""
        since = self.reauth_required_since
        return since is not None and now >= since + grace_seconds

    def reauthorized(self, token_expires: float) -> None:
        self.token_expires = token_expires
        self.token_challenge_for = None
        self.reauth_required_since = None

    def to_dict(self) -> dict[str, Any]:
        """The control API's view: Graph's JSON plus the emulator's bookkeeping."""
        data = subscription_json(self)
        data.update(
            {
                "tenantId": self.tenant_id,
                "mailboxId": self.mailbox_id,
                "folderId": self.folder_id,
                "immutableIds": self.immutable_ids,
                "tokenExpiresDateTime": iso7(datetime.fromtimestamp(self.token_expires, UTC)),
                "reauthorizationRequired": self.reauth_required_since is not None,
            }
        )
        return data


class SubscriptionRegistry:
    """All subscriptions, by id and by mailbox. Callers hold the store's lock."""

    def __init__(self) -> None:
        self.by_id: dict[str, Subscription] = {}
        self.by_mailbox: dict[str, dict[str, Subscription]] = {}

    def add(self, sub: Subscription) -> None:
        self.by_id[sub.id] = sub
        self.by_mailbox.setdefault(sub.mailbox_id, {})[sub.id] = sub

    def remove(self, sub_id: str) -> Subscription | None:
        sub = self.by_id.pop(sub_id, None)
        if sub is not None:
            watchers = self.by_mailbox.get(sub.mailbox_id)
            if watchers is not None:
                watchers.pop(sub_id, None)
                if not watchers:
                    del self.by_mailbox[sub.mailbox_id]
        return sub

    def get(self, sub_id: str) -> Subscription | None:
        return self.by_id.get(sub_id)

    def reset(self) -> None:
        """Forget every subscription (``POST /_emulator/reset``): no lifecycle events."""
        self.by_id.clear()
        self.by_mailbox.clear()

    def all(self) -> list[Subscription]:
        return list(self.by_id.values())

    def active_for_mailbox(self, mailbox_id: str, now: float) -> int:
        watchers = self.by_mailbox.get(mailbox_id, {})
        return sum(1 for sub in watchers.values() if not sub.expired(now))


def registry(state: EmulatorState) -> SubscriptionRegistry:
    """The state's subscription registry (created on first use)."""
    found = state.extensions.get("subscriptions")
    if isinstance(found, SubscriptionRegistry):
        return found
    made = state.extensions.setdefault("subscriptions", SubscriptionRegistry())
    assert isinstance(made, SubscriptionRegistry)
    return made


def still_authorized(store: Store, sub: Subscription) -> bool:
    """Whether the subscription's creator may still read the mailbox (consent, policy, account).

    This checks the tenant's consent records, not a token: revoking consent, removing the
    application role, an application access policy that now excludes the mailbox, disabling
    the app or the delegated user all end the subscription (``subscriptionRemoved``).
    """
    tenant = store.tenants.get(sub.tenant_id)
    if tenant is None or sub.mailbox_id not in tenant.users:
        return False
    app = store.apps.get(sub.client_id)
    if app is None or not app.enabled:
        return False
    if sub.app_only:
        roles = tenant.app_role_grants.get(sub.client_id, set())
        if not roles & APP_READ_ROLES:
            return False
        return store.mailbox_allowed_by_policy(tenant, sub.client_id, sub.mailbox_id)
    creator = tenant.users.get(sub.creator_id)
    if creator is None or not creator.account_enabled:
        return False
    scopes = store.delegated_scopes(tenant, sub.client_id, sub.creator_id)
    return bool(scopes & DELEGATED_READ_SCOPES)


def subscription_json(sub: Subscription) -> dict[str, Any]:
    """Graph's ``subscription`` entity, properties in the order Graph writes them."""
    return {
        "id": sub.id,
        "resource": sub.resource,
        "applicationId": sub.client_id,
        "changeType": sub.change_type,
        "clientState": sub.client_state,
        "notificationUrl": sub.notification_url,
        "notificationQueryOptions": None,
        "lifecycleNotificationUrl": sub.lifecycle_url,
        "expirationDateTime": iso7(sub.expiration),
        "creatorId": sub.creator_id,
        "includeResourceData": False,
        "latestSupportedTlsVersion": sub.latest_tls,
        "encryptionCertificate": None,
        "encryptionCertificateId": None,
        "notificationUrlAppId": None,
        "notificationContentType": "application/json",
    }


def change_notification(
    sub: Subscription, *, message_id: str, change_key: str, change_type: str
) -> dict[str, Any]:
    """One ``changeNotification`` without resource data (graph.md 4.3)."""
    resource = f"Users/{sub.mailbox_id}/Messages/{message_id}"
    return {
        "id": ids.opaque(9),
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": iso7(sub.expiration),
        "clientState": sub.client_state,
        "changeType": change_type,
        "resource": resource,
        "tenantId": sub.tenant_id,
        "resourceData": {
            "@odata.type": "#Microsoft.Graph.Message",
            "@odata.id": resource,
            "@odata.etag": f'W/"{change_key}"',
            "id": message_id,
        },
    }


def lifecycle_notification(sub: Subscription, event: LifecycleEvent) -> dict[str, Any]:
    """One lifecycle notification (``changeNotification`` with ``lifecycleEvent``)."""
    return {
        "subscriptionId": sub.id,
        "subscriptionExpirationDateTime": iso7(sub.expiration),
        "tenantId": sub.tenant_id,
        "clientState": sub.client_state,
        "lifecycleEvent": event,
    }
