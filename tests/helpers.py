"""Building blocks for tests: an organization in the emulator, tokens, simple deliveries.

Scenario objects are created in-process in the running emulator's store (the same objects the
control API creates); every test gets its own tenant and app, so tests never share mailboxes or
throttling budgets.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime

from m365sim import roles
from m365sim.state import EmulatorState
from m365sim.store import App, Message, Recipient, Tenant, User
from m365sim.tokens import issue_access_token

_counter = itertools.count(1)

DELEGATED_ALL = [
    "User.Read",
    "MailboxSettings.ReadWrite",
    "Mail.ReadWrite",
    "Mail.Send",
    "Mail.ReadWrite.Shared",
    "Mail.Send.Shared",
]
APPLICATION_ALL = ["Mail.ReadWrite", "Mail.Send", "MailboxSettings.ReadWrite", "User.Read.All"]
REDIRECT_URI = "https://postroom.test/auth/callback"
SECRET = "s3cret~value-for-tests"


@dataclass
class Org:
    state: EmulatorState
    tenant: Tenant
    app: App
    admin: User
    alice: User
    bob: User
    shared: User
    users: dict[str, User] = field(default_factory=dict)

    @property
    def secret(self) -> str:
        return SECRET

    def token(self, user: User, scopes: list[str] | None = None) -> str:
        state = self.state
        return issue_access_token(
            state.signing_key,
            now=state.clock.time(),
            lifetime=3600,
            tenant_id=self.tenant.id,
            client_id=self.app.client_id,
            user_id=user.id,
            scopes=DELEGATED_ALL if scopes is None else scopes,
            name=user.display_name,
            upn=user.user_principal_name,
        )

    def app_token(self, roles: list[str] | None = None) -> str:
        state = self.state
        return issue_access_token(
            state.signing_key,
            now=state.clock.time(),
            lifetime=3600,
            tenant_id=self.tenant.id,
            client_id=self.app.client_id,
            user_id=None,
            roles=APPLICATION_ALL if roles is None else roles,
        )

    def deliver(
        self,
        user: User,
        *,
        subject: str = "Hello",
        body: str = "Body text",
        sender: str = "customer@fabrikam.test",
        folder: str = "inbox",
        received: datetime | None = None,
        categories: list[str] | None = None,
        is_read: bool = False,
        conversation_id: str | None = None,
    ) -> Message:
        store = self.state.store
        mailbox = user.mailbox
        target = mailbox.folder(folder)
        assert target is not None
        msg = store.new_message(
            mailbox,
            target,
            subject=subject,
            body=body,
            sender=Recipient(sender.split("@")[0].title(), sender),
            to=[Recipient(user.display_name, user.user_principal_name)],
            received=received,
            conversation_id=conversation_id,
        )
        msg.categories = list(categories or [])
        msg.is_read = is_read
        return store.insert_message(self.tenant, mailbox, msg)


def make_org(state: EmulatorState, *, consent: bool = True) -> Org:
    """A tenant with an administrator (Global Administrator), two users, a shared mailbox and
    the Postroom app (``groupMembershipClaims`` "DirectoryRole")."""
    n = next(_counter)
    store = state.store
    domain = f"contoso{n}.test"
    tenant = store.add_tenant(display_name=f"Contoso {n}", domain=domain)
    admin = store.add_user(
        tenant,
        user_principal_name=f"admin@{domain}",
        display_name="Adele Admin",
        password="admin-pass",
    )
    alice = store.add_user(
        tenant,
        user_principal_name=f"alice@{domain}",
        display_name="Alice Jansen",
        password="alice-pass",
    )
    bob = store.add_user(
        tenant,
        user_principal_name=f"bob@{domain}",
        display_name="Bob de Vries",
        password="bob-pass",
    )
    shared = store.add_user(
        tenant, user_principal_name=f"orders@{domain}", display_name="Orders", shared=True
    )
    admin.directory_roles.add(roles.GLOBAL_ADMINISTRATOR)
    shared.full_access.add(alice.id)
    app = store.add_app(
        display_name="Postroom",
        home_tenant_id=tenant.id,
        redirect_uris=[REDIRECT_URI],
        secret=SECRET,
        delegated_permissions=DELEGATED_ALL,
        application_permissions=APPLICATION_ALL,
        group_membership_claims="DirectoryRole",  # wids in id tokens, as Postroom asks
    )
    if consent:
        store.grant_admin_consent(tenant, app)
    return Org(
        state,
        tenant,
        app,
        admin,
        alice,
        bob,
        shared,
        {"admin": admin, "alice": alice, "bob": bob, "shared": shared},
    )
