"""The in-memory Microsoft 365: directory, consents, mailboxes and what happened to them.

Everything the emulator knows lives in one :class:`Store`. Handlers in ``identity/``, ``graph/``
and ``notifications/`` read and change it; the control API builds scenarios in it. It is
guarded by one lock (:attr:`Store.lock`); handlers are short and never do I/O while holding it.

Directory
  :class:`Tenant` holds :class:`User` objects (people and shared mailboxes; each user has a
  :class:`Mailbox`), :class:`Group` objects (for application access policies), consent records
  and :class:`AccessPolicy` rows. :class:`App` registrations are global (multi-tenant apps are
  registered once and consented per tenant).

Mail
  A :class:`Mailbox` owns :class:`Folder` and :class:`Message` objects. A message has an
  immutable id (stable across moves) and a REST id (renewed on every move, as Exchange does for
  callers that did not send ``Prefer: IdType="ImmutableId"``). Every change to a folder's
  contents is appended to that folder's change log (:class:`FolderLog`); delta queries replay
  the log from a position, so a delta page costs O(page), never O(folder).

Observers
  :meth:`Store.add_listener` registers a callback for message changes (the notification
  dispatcher uses it). Callbacks run under the lock and must only enqueue.

Audits (read by tests through the control API)
  ``deletions`` — every delete, permanentDelete and move into Deleted Items or Recoverable
  Items, with who did it. "Into" is decided by folder identity (:meth:`Mailbox.deletion_folder`):
  a move into any folder beneath them counts, whatever it is called, and so does moving a
  folder there (each message it holds is deleted, as Outlook deletes a folder);
  ``outbound`` — mail sent to recipients outside the emulator's tenants; ``sent`` — every
  message sent or forwarded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from m365sim import ids, roles
from m365sim.clock import Clock

WELL_KNOWN_FOLDERS: dict[str, str] = {
    # well-known name -> display name (English locale)
    "msgfolderroot": "Top of Information Store",
    "inbox": "Inbox",
    "drafts": "Drafts",
    "sentitems": "Sent Items",
    "deleteditems": "Deleted Items",
    "junkemail": "Junk Email",
    "archive": "Archive",
    "outbox": "Outbox",
    "conversationhistory": "Conversation History",
    "recoverableitemsdeletions": "Deletions",
}
# Folders under the root that listings show. recoverableitemsdeletions lives in the
# Recoverable Items tree, outside msgfolderroot, so it never appears in /mailFolders.
VISIBLE_TOP_LEVEL = (
    "inbox",
    "drafts",
    "sentitems",
    "deleteditems",
    "junkemail",
    "archive",
    "outbox",
    "conversationhistory",
)
DELETION_FOLDERS = ("deleteditems", "recoverableitemsdeletions")

CATEGORY_COLORS = ("none",) + tuple(f"preset{i}" for i in range(25))

ChangeKind = Literal["created", "updated", "deleted"]


@dataclass
class Recipient:
    name: str
    address: str

    def to_graph(self) -> dict[str, Any]:
        return {"emailAddress": {"name": self.name, "address": self.address}}


@dataclass
class Attachment:
    id: str
    name: str
    content_type: str
    content: bytes
    is_inline: bool = False
    content_id: str | None = None


@dataclass
class Message:
    immutable_id: str
    rest_id: str
    folder_id: str
    internet_message_id: str
    conversation_id: str
    subject: str
    body_content: str
    body_type: Literal["text", "html"]
    sender: Recipient | None
    from_: Recipient | None
    to: list[Recipient]
    cc: list[Recipient]
    bcc: list[Recipient]
    reply_to: list[Recipient]
    received: datetime
    sent: datetime
    created: datetime
    last_modified: datetime
    change_key: str
    categories: list[str] = field(default_factory=list)
    importance: str = "normal"
    is_read: bool = False
    is_draft: bool = False
    inference_classification: str = "focused"
    headers: list[tuple[str, str]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    flag_status: str = "notFlagged"
    # For drafts made by createForward: the message being forwarded and the comment.
    forward_of: str | None = None
    forward_comment: str | None = None
    # For replies (createReply, createReplyAll, reply, replyAll): the message answered.
    reply_of: str | None = None
    # followupFlag dates as Graph writes them: {"dueDateTime": {"dateTime", "timeZone"}, ...}
    flag_dates: dict[str, dict[str, str]] = field(default_factory=dict)
    is_read_receipt_requested: bool = False
    is_delivery_receipt_requested: bool | None = None

    @property
    def has_attachments(self) -> bool:
        return any(not a.is_inline for a in self.attachments)

    def touch(self, now: datetime) -> None:
        self.last_modified = now
        self.change_key = ids.change_key()


@dataclass
class Folder:
    id: str
    display_name: str
    parent_id: str | None
    well_known: str | None = None
    is_hidden: bool = False
    # message immutable ids in arrival order (dict as an ordered set)
    messages: dict[str, None] = field(default_factory=dict)


@dataclass
class LogEntry:
    seq: int
    message_id: str  # immutable id
    kind: Literal["upsert", "removed"]
    # the REST id the message had when the entry was written (delta reports removals with it)
    rest_id: str = ""


@dataclass
class FolderLog:
    """Append-only record of a folder's content changes, the basis of delta queries.

    ``latest`` maps a message to the seq of its newest entry, so replaying from a position can
    skip superseded entries without scanning the folder.
    """

    entries: list[LogEntry] = field(default_factory=list)
    latest: dict[str, int] = field(default_factory=dict)
    # index in ``entries`` of each seq: seq numbers are per-mailbox, entries per folder
    base_seq: int = 0

    def append(
        self, seq: int, message_id: str, kind: Literal["upsert", "removed"], rest_id: str = ""
    ) -> None:
        self.entries.append(LogEntry(seq, message_id, kind, rest_id))
        self.latest[message_id] = seq


@dataclass
class Category:
    id: str
    display_name: str
    color: str


@dataclass
class Mailbox:
    user_id: str
    folders: dict[str, Folder] = field(default_factory=dict)
    well_known: dict[str, str] = field(default_factory=dict)  # name -> folder id
    messages: dict[str, Message] = field(default_factory=dict)  # immutable id -> message
    rest_index: dict[str, str] = field(default_factory=dict)  # rest id -> immutable id
    logs: dict[str, FolderLog] = field(default_factory=dict)  # folder id -> log
    categories: dict[str, Category] = field(default_factory=dict)
    seq: int = 0
    # Delta tokens issued before this epoch answer 410 SyncStateNotFound.
    sync_state_epoch: int = 0
    # The folder hierarchy's change log (folder ids: created, renamed, moved, deleted), the
    # basis of GET /mailFolders/delta; numbered by the same ``seq`` as the folder logs.
    folder_log: FolderLog = field(default_factory=FolderLog)

    def folder(self, key: str) -> Folder | None:
        """A folder by id or well-known name (case-insensitive, as Graph accepts them)."""
        folder = self.folders.get(key)
        if folder is not None:
            return folder
        wk = self.well_known.get(key.lower())
        return self.folders.get(wk) if wk else None

    def message(self, key: str) -> Message | None:
        """A message by immutable id or current REST id."""
        msg = self.messages.get(key)
        if msg is not None:
            return msg
        immutable = self.rest_index.get(key)
        return self.messages.get(immutable) if immutable else None

    def children(self, parent_id: str, *, include_hidden: bool = False) -> list[Folder]:
        return [
            f
            for f in self.folders.values()
            if f.parent_id == parent_id and (include_hidden or not f.is_hidden)
        ]

    def root_id(self) -> str:
        return self.well_known["msgfolderroot"]

    def deletion_folder(self, folder_id: str) -> str | None:
        """The well-known name of the deletion folder (Deleted Items, Recoverable Items) that
        is ``folder_id`` or one of its ancestors, by id; None outside them."""
        seen: set[str] = set()
        current = self.folders.get(folder_id)
        while current is not None and current.id not in seen:
            if current.well_known in DELETION_FOLDERS:
                return current.well_known
            seen.add(current.id)
            current = self.folders.get(current.parent_id) if current.parent_id else None
        return None

    def subtree(self, folder_id: str) -> list[Folder]:
        """The folder and every folder beneath it."""
        out: dict[str, Folder] = {}
        pending = [folder_id]
        while pending:
            folder = self.folders.get(pending.pop())
            if folder is not None and folder.id not in out:
                out[folder.id] = folder
                pending.extend(f.id for f in self.children(folder.id, include_hidden=True))
        return list(out.values())


@dataclass
class User:
    id: str
    tenant_id: str
    user_principal_name: str
    display_name: str
    password: str
    mailbox: Mailbox
    given_name: str = ""
    surname: str = ""
    job_title: str | None = None
    is_shared_mailbox: bool = False
    account_enabled: bool = True
    mfa_required: bool = False
    mfa_code: str = "123456"
    # tokens (refresh tokens, sessions) issued before this time are revoked
    tokens_valid_from: float = 0.0
    # refresh tokens issued without MFA before this time need MFA (AADSTS50076)
    mfa_required_from: float = 0.0
    password_expired: bool = False
    # users holding FullAccess on this mailbox (shared mailboxes, delegates)
    full_access: set[str] = field(default_factory=set)
    # configurable suberror per security event kind (Entra's pairing varies; graph.md 1.5)
    suberror_overrides: dict[str, str | None] = field(default_factory=dict)
    # configurable ``error`` per security event kind (``invalid_grant`` or
    # ``interaction_required``; Entra's choice varies, graph.md 1.5)
    error_overrides: dict[str, str] = field(default_factory=dict)
    # directory role template ids assigned to the user (m365sim.roles); the implicit "User"
    # role of every member is not stored here
    directory_roles: set[str] = field(default_factory=set)

    @property
    def mail(self) -> str:
        return self.user_principal_name

    @property
    def is_admin(self) -> bool:
        """May grant tenant-wide admin consent (at least to delegated permissions): Global,
        Privileged Role, Application or Cloud Application Administrator."""
        return roles.may_consent_delegated(self.directory_roles)

    @is_admin.setter
    def is_admin(self, value: bool) -> None:
        # The flag of older scenarios and tests: True = Global Administrator (unless the user
        # already holds a role that may consent); False = none of the consent roles.
        if value:
            if not self.is_admin:
                self.directory_roles.add(roles.GLOBAL_ADMINISTRATOR)
        else:
            self.directory_roles -= roles.DELEGATED_CONSENT_ROLES

    @property
    def may_consent_graph_app_roles(self) -> bool:
        """May grant Microsoft Graph application permissions (Global or Privileged Role
        Administrator only)."""
        return roles.may_consent_graph_app_roles(self.directory_roles)


@dataclass
class Group:
    id: str
    display_name: str
    mail: str
    members: set[str] = field(default_factory=set)  # user ids
    mail_enabled: bool = True
    security_enabled: bool = True


@dataclass
class AccessPolicy:
    """Exchange application access policy (``New-ApplicationAccessPolicy``)."""

    id: str
    app_id: str
    group_id: str
    access_right: Literal["RestrictAccess", "DenyAccess"]
    description: str = ""


@dataclass
class Secret:
    value: str
    expires: float | None = None  # epoch seconds; None = never
    hint: str = ""


@dataclass
class App:
    """An app registration (multi-tenant unless ``single_tenant``)."""

    client_id: str
    display_name: str
    home_tenant_id: str
    redirect_uris: list[str]
    secrets: list[Secret] = field(default_factory=list)
    public_client: bool = False
    # "required resource access" of the registration: what /.default consents to
    delegated_permissions: list[str] = field(default_factory=list)
    application_permissions: list[str] = field(default_factory=list)
    single_tenant: bool = False
    enabled: bool = True
    # the manifest's groupMembershipClaims: "None", "SecurityGroup", "DirectoryRole",
    # "ApplicationGroup", "All" or a comma-separated combination; "DirectoryRole" or "All"
    # puts ``wids`` into the user's id tokens (m365sim.roles.emits_wids)
    group_membership_claims: str = "None"


@dataclass
class Tenant:
    id: str
    display_name: str
    domain: str
    users: dict[str, User] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    # delegated consent: (client_id, user_id) -> scopes the user consented to
    user_grants: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    # admin consent on behalf of all users (delegated) and application roles, per client id
    admin_delegated_grants: dict[str, set[str]] = field(default_factory=dict)
    app_role_grants: dict[str, set[str]] = field(default_factory=dict)
    access_policies: dict[str, AccessPolicy] = field(default_factory=dict)
    user_consent_allowed: bool = True
    # delegated permissions that need an administrator's consent in this tenant
    admin_only_scopes: set[str] = field(
        default_factory=lambda: {"User.Read.All", "Mail.Read.All", "Directory.Read.All"}
    )

    def user(self, key: str) -> User | None:
        """A user by object id or user principal name (case-insensitive)."""
        user = self.users.get(key)
        if user is not None:
            return user
        low = key.lower()
        for candidate in self.users.values():
            if candidate.user_principal_name.lower() == low:
                return candidate
        return None


@dataclass
class Deletion:
    time: datetime
    tenant_id: str
    mailbox_id: str
    message_id: str
    action: str  # "delete" | "permanentDelete" | "move:deleteditems" | ...
    client_id: str | None


@dataclass
class OutboundMail:
    time: datetime
    tenant_id: str
    from_mailbox: str
    kind: str  # "forward" | "send" | "reply"
    to: list[str]
    subject: str
    comment: str | None
    source_message_id: str | None
    internal: bool


@dataclass
class AuthCode:
    """An authorization code: single use, about ten minutes."""

    code: str
    client_id: str
    tenant_id: str
    user_id: str
    redirect_uri: str
    scopes: list[str]
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str
    issued: float
    mfa_done: bool
    redeemed: bool = False


@dataclass
class RefreshToken:
    """A refresh token record. Rotation issues a new one; the old stays valid (Entra)."""

    token: str
    client_id: str
    tenant_id: str
    user_id: str
    scopes: list[str]
    issued: float
    last_used: float
    mfa_done: bool
    confidential: bool
    family: str
    # why this one token was revoked (e.g. "password_changed" for public clients); None = live
    revoked: str | None = None


MessageListener = Callable[["Tenant", "Mailbox", "Message", str, ChangeKind], None]


class Store:
    """The whole emulated Microsoft 365 in memory."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.lock = threading.RLock()
        self.tenants: dict[str, Tenant] = {}
        self.apps: dict[str, App] = {}
        self.deletions: list[Deletion] = []
        self.outbound: list[OutboundMail] = []
        self._listeners: list[MessageListener] = []
        self.auth_codes: dict[str, AuthCode] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        # user id -> (tenant, user) for O(1) lookups by object id
        self._users: dict[str, tuple[Tenant, User]] = {}
        # domain/upn -> tenant
        self._domains: dict[str, str] = {}

    def clear(self) -> None:
        """Forget everything (``POST /_emulator/reset``); listeners stay registered."""
        with self.lock:
            self.tenants.clear()
            self.apps.clear()
            self.deletions.clear()
            self.outbound.clear()
            self.auth_codes.clear()
            self.refresh_tokens.clear()
            self._users.clear()
            self._domains.clear()

    def reindex(self) -> None:
        """Rebuild the lookup indexes from ``tenants`` (after a state file was loaded)."""
        with self.lock:
            self._users.clear()
            self._domains.clear()
            for tenant in self.tenants.values():
                self._domains[tenant.domain] = tenant.id
            for tenant in self.tenants.values():
                for user in tenant.users.values():
                    self._users[user.id] = (tenant, user)
                    domain = user.user_principal_name.split("@")[-1].lower()
                    self._domains.setdefault(domain, tenant.id)

    # ----------------------------------------------------------------- listeners
    def add_listener(self, listener: MessageListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: MessageListener) -> None:
        self._listeners.remove(listener)

    def _emit(
        self, tenant: Tenant, mailbox: Mailbox, msg: Message, folder_id: str, kind: ChangeKind
    ) -> None:
        for listener in self._listeners:
            listener(tenant, mailbox, msg, folder_id, kind)

    # ----------------------------------------------------------------- directory
    def add_tenant(
        self,
        *,
        display_name: str,
        domain: str,
        tenant_id: str | None = None,
    ) -> Tenant:
        with self.lock:
            tenant = Tenant(
                id=tenant_id or ids.guid(), display_name=display_name, domain=domain.lower()
            )
            self.tenants[tenant.id] = tenant
            self._domains[tenant.domain] = tenant.id
            return tenant

    def tenant(self, key: str) -> Tenant | None:
        """A tenant by GUID or verified domain."""
        tenant = self.tenants.get(key.lower()) or self.tenants.get(key)
        if tenant is not None:
            return tenant
        tid = self._domains.get(key.lower())
        return self.tenants.get(tid) if tid else None

    def add_user(
        self,
        tenant: Tenant,
        *,
        user_principal_name: str,
        display_name: str,
        password: str = "",
        shared: bool = False,
        user_id: str | None = None,
        **extra: Any,
    ) -> User:
        with self.lock:
            uid = user_id or ids.guid()
            mailbox = Mailbox(user_id=uid)
            user = User(
                id=uid,
                tenant_id=tenant.id,
                user_principal_name=user_principal_name,
                display_name=display_name,
                password=password,
                mailbox=mailbox,
                is_shared_mailbox=shared,
                **extra,
            )
            if shared:
                # Shared mailboxes have a disabled account: nobody signs in as them.
                user.account_enabled = False
            self._create_default_folders(mailbox)
            tenant.users[uid] = user
            self._users[uid] = (tenant, user)
            self._domains.setdefault(user_principal_name.split("@")[-1].lower(), tenant.id)
            return user

    def user_by_id(self, user_id: str) -> tuple[Tenant, User] | None:
        return self._users.get(user_id)

    def find_user(self, key: str) -> tuple[Tenant, User] | None:
        """A user anywhere by object id or UPN / mail address."""
        found = self._users.get(key)
        if found:
            return found
        if "@" in key:
            tid = self._domains.get(key.split("@")[-1].lower())
            tenant = self.tenants.get(tid) if tid else None
            if tenant:
                user = tenant.user(key)
                if user:
                    return tenant, user
        return None

    def add_group(
        self, tenant: Tenant, *, display_name: str, mail: str, members: set[str] | None = None
    ) -> Group:
        with self.lock:
            group = Group(
                id=ids.guid(), display_name=display_name, mail=mail, members=set(members or ())
            )
            tenant.groups[group.id] = group
            return group

    def add_app(
        self,
        *,
        display_name: str,
        home_tenant_id: str,
        redirect_uris: list[str],
        secret: str | None = None,
        client_id: str | None = None,
        delegated_permissions: list[str] | None = None,
        application_permissions: list[str] | None = None,
        public_client: bool = False,
        group_membership_claims: str = "None",
    ) -> App:
        with self.lock:
            app = App(
                client_id=client_id or ids.guid(),
                display_name=display_name,
                home_tenant_id=home_tenant_id,
                redirect_uris=list(redirect_uris),
                public_client=public_client,
                delegated_permissions=list(delegated_permissions or []),
                application_permissions=list(application_permissions or []),
                group_membership_claims=group_membership_claims,
            )
            if secret:
                app.secrets.append(Secret(value=secret, hint=secret[:3]))
            self.apps[app.client_id] = app
            return app

    # ----------------------------------------------------------------- consent
    def delegated_scopes(self, tenant: Tenant, client_id: str, user_id: str) -> set[str]:
        """Scopes the user may use with the app: own consent plus tenant-wide admin consent."""
        return set(tenant.user_grants.get((client_id, user_id), set())) | set(
            tenant.admin_delegated_grants.get(client_id, set())
        )

    def grant_admin_consent(self, tenant: Tenant, app: App) -> None:
        with self.lock:
            tenant.admin_delegated_grants[app.client_id] = set(app.delegated_permissions)
            tenant.app_role_grants[app.client_id] = set(app.application_permissions)

    def revoke_consent(self, tenant: Tenant, client_id: str, user_id: str | None = None) -> None:
        """Revoke a user's delegated consent, or (no user) every consent of the app."""
        with self.lock:
            if user_id is None:
                tenant.admin_delegated_grants.pop(client_id, None)
                tenant.app_role_grants.pop(client_id, None)
                for key in [k for k in tenant.user_grants if k[0] == client_id]:
                    del tenant.user_grants[key]
            else:
                tenant.user_grants.pop((client_id, user_id), None)

    def mailbox_allowed_by_policy(self, tenant: Tenant, client_id: str, mailbox_id: str) -> bool:
        """Application access policies, as Exchange evaluates them for app-only calls."""
        policies = [p for p in tenant.access_policies.values() if p.app_id == client_id]
        if not policies:
            return True
        for policy in policies:
            group = tenant.groups.get(policy.group_id)
            member = group is not None and mailbox_id in group.members
            if policy.access_right == "DenyAccess" and member:
                return False
        restrict = [p for p in policies if p.access_right == "RestrictAccess"]
        if not restrict:
            return True
        return any(
            (g := tenant.groups.get(p.group_id)) is not None and mailbox_id in g.members
            for p in restrict
        )

    # ----------------------------------------------------------------- folders
    def _create_default_folders(self, mailbox: Mailbox) -> None:
        root = Folder(
            id=ids.folder_id(),
            display_name=WELL_KNOWN_FOLDERS["msgfolderroot"],
            parent_id=None,
            well_known="msgfolderroot",
        )
        mailbox.folders[root.id] = root
        mailbox.well_known["msgfolderroot"] = root.id
        mailbox.logs[root.id] = FolderLog()
        for name in VISIBLE_TOP_LEVEL:
            self._new_folder(mailbox, WELL_KNOWN_FOLDERS[name], root.id, well_known=name)
        # Recoverable Items lives outside the visible tree.
        self._new_folder(
            mailbox,
            WELL_KNOWN_FOLDERS["recoverableitemsdeletions"],
            None,
            well_known="recoverableitemsdeletions",
        )

    def _new_folder(
        self,
        mailbox: Mailbox,
        display_name: str,
        parent_id: str | None,
        *,
        well_known: str | None = None,
        hidden: bool = False,
    ) -> Folder:
        folder = Folder(
            id=ids.folder_id(),
            display_name=display_name,
            parent_id=parent_id,
            well_known=well_known,
            is_hidden=hidden,
        )
        mailbox.folders[folder.id] = folder
        mailbox.logs[folder.id] = FolderLog()
        if well_known:
            mailbox.well_known[well_known] = folder.id
        self.log_folder(mailbox, folder.id, "upsert")
        return folder

    def log_folder(
        self, mailbox: Mailbox, folder_id: str, kind: Literal["upsert", "removed"]
    ) -> None:
        """Record a change to the folder hierarchy (for folder delta)."""
        mailbox.seq += 1
        mailbox.folder_log.append(mailbox.seq, folder_id, kind)

    def create_folder(
        self, mailbox: Mailbox, display_name: str, parent_id: str, *, hidden: bool = False
    ) -> Folder | None:
        """Create a child folder; ``None`` when a sibling (hidden or not) has the name."""
        with self.lock:
            low = display_name.lower()
            for sibling in mailbox.children(parent_id, include_hidden=True):
                if sibling.display_name.lower() == low:
                    return None
            return self._new_folder(mailbox, display_name, parent_id, hidden=hidden)

    def move_folder(self, mailbox: Mailbox, folder: Folder, destination: Folder) -> str | None:
        """Move a folder (and everything in it) under ``destination``. Returns a refusal:
        ``"exists"`` (a sibling has the name), ``"invalid"`` (a well-known folder, or into
        itself or its own subtree), or None when moved."""
        with self.lock:
            if folder.well_known or destination.id in {f.id for f in mailbox.subtree(folder.id)}:
                return "invalid"
            low = folder.display_name.lower()
            for sibling in mailbox.children(destination.id, include_hidden=True):
                if sibling.id != folder.id and sibling.display_name.lower() == low:
                    return "exists"
            folder.parent_id = destination.id
            self.log_folder(mailbox, folder.id, "upsert")
            return None

    def rename_folder(self, mailbox: Mailbox, folder: Folder, display_name: str) -> bool:
        """Rename a folder; False when a sibling (hidden or not) already has the name."""
        with self.lock:
            low = display_name.lower()
            if folder.parent_id is not None:
                for sibling in mailbox.children(folder.parent_id, include_hidden=True):
                    if sibling.id != folder.id and sibling.display_name.lower() == low:
                        return False
            folder.display_name = display_name
            self.log_folder(mailbox, folder.id, "upsert")
            return True

    def free_name(self, mailbox: Mailbox, parent_id: str, display_name: str) -> str:
        """``display_name``, or ``display_name (2)``, ``(3)``... when a child of
        ``parent_id`` has it (a deleted folder whose name Deleted Items already holds)."""
        taken = {f.display_name.lower() for f in mailbox.children(parent_id, include_hidden=True)}
        name, n = display_name, 1
        while name.lower() in taken:
            n += 1
            name = f"{display_name} ({n})"
        return name

    def folder_path(self, mailbox: Mailbox, folder: Folder) -> list[Folder]:
        path = [folder]
        while path[-1].parent_id and path[-1].parent_id in mailbox.folders:
            parent = mailbox.folders[path[-1].parent_id]
            if parent.well_known == "msgfolderroot":
                break
            path.append(parent)
        return list(reversed(path))

    # ----------------------------------------------------------------- messages
    def _log(
        self,
        mailbox: Mailbox,
        folder_id: str,
        message_id: str,
        kind: Literal["upsert", "removed"],
        rest_id: str = "",
    ) -> None:
        mailbox.seq += 1
        mailbox.logs[folder_id].append(mailbox.seq, message_id, kind, rest_id)

    def insert_message(self, tenant: Tenant, mailbox: Mailbox, msg: Message) -> Message:
        """Put a new message into its folder (delivery, draft, sent copy)."""
        with self.lock:
            mailbox.messages[msg.immutable_id] = msg
            mailbox.rest_index[msg.rest_id] = msg.immutable_id
            mailbox.folders[msg.folder_id].messages[msg.immutable_id] = None
            self._log(mailbox, msg.folder_id, msg.immutable_id, "upsert")
            self._emit(tenant, mailbox, msg, msg.folder_id, "created")
            return msg

    def update_message(self, tenant: Tenant, mailbox: Mailbox, msg: Message) -> None:
        """Record that a message's properties changed (categories, read state, ...)."""
        with self.lock:
            msg.touch(self.clock.now())
            self._log(mailbox, msg.folder_id, msg.immutable_id, "upsert")
            self._emit(tenant, mailbox, msg, msg.folder_id, "updated")

    def move_message(
        self, tenant: Tenant, mailbox: Mailbox, msg: Message, destination: Folder
    ) -> Message:
        """Move within the mailbox: the immutable id stays, the REST id is renewed."""
        with self.lock:
            source_id = msg.folder_id
            mailbox.folders[source_id].messages.pop(msg.immutable_id, None)
            self._log(mailbox, source_id, msg.immutable_id, "removed", msg.rest_id)
            self._emit(tenant, mailbox, msg, source_id, "deleted")
            mailbox.rest_index.pop(msg.rest_id, None)
            msg.rest_id = ids.rest_message_id()
            mailbox.rest_index[msg.rest_id] = msg.immutable_id
            msg.folder_id = destination.id
            msg.touch(self.clock.now())
            destination.messages[msg.immutable_id] = None
            self._log(mailbox, destination.id, msg.immutable_id, "upsert")
            self._emit(tenant, mailbox, msg, destination.id, "created")
            return msg

    def remove_message(self, tenant: Tenant, mailbox: Mailbox, msg: Message) -> None:
        """Remove a message from the store entirely (permanent deletion)."""
        with self.lock:
            folder_id = msg.folder_id
            mailbox.folders[folder_id].messages.pop(msg.immutable_id, None)
            mailbox.messages.pop(msg.immutable_id, None)
            mailbox.rest_index.pop(msg.rest_id, None)
            self._log(mailbox, folder_id, msg.immutable_id, "removed", msg.rest_id)
            self._emit(tenant, mailbox, msg, folder_id, "deleted")

    def record_deletion(
        self, tenant: Tenant, mailbox: Mailbox, message_id: str, action: str, client_id: str | None
    ) -> None:
        with self.lock:
            self.deletions.append(
                Deletion(
                    time=self.clock.now(),
                    tenant_id=tenant.id,
                    mailbox_id=mailbox.user_id,
                    message_id=message_id,
                    action=action,
                    client_id=client_id,
                )
            )

    def new_message(
        self,
        mailbox: Mailbox,
        folder: Folder,
        *,
        subject: str,
        body: str,
        body_type: Literal["text", "html"] = "text",
        sender: Recipient | None = None,
        to: list[Recipient] | None = None,
        cc: list[Recipient] | None = None,
        bcc: list[Recipient] | None = None,
        reply_to: list[Recipient] | None = None,
        received: datetime | None = None,
        sent: datetime | None = None,
        internet_message_id: str | None = None,
        conversation_id: str | None = None,
        **extra: Any,
    ) -> Message:
        """Build (but do not insert) a message for ``folder``."""
        now = self.clock.now()
        return Message(
            immutable_id=ids.immutable_message_id(),
            rest_id=ids.rest_message_id(),
            folder_id=folder.id,
            internet_message_id=internet_message_id or f"<{ids.opaque(12)}@m365sim.local>",
            conversation_id=conversation_id or ids.rest_message_id(),
            subject=subject,
            body_content=body,
            body_type=body_type,
            sender=sender,
            from_=sender,
            to=list(to or []),
            cc=list(cc or []),
            bcc=list(bcc or []),
            reply_to=list(reply_to or []),
            received=received or now,
            sent=sent or received or now,
            created=received or now,
            last_modified=received or now,
            change_key=ids.change_key(),
            **extra,
        )

    def iter_mailboxes(self) -> Iterator[tuple[Tenant, User]]:
        for tenant in list(self.tenants.values()):
            for user in list(tenant.users.values()):
                yield tenant, user
