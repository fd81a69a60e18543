"""Who is calling Graph, and may they touch this mailbox?

:func:`authenticate` turns the ``Authorization`` header into a :class:`Caller` (401
``InvalidAuthenticationToken`` otherwise). :func:`authorize_mailbox` applies Microsoft's rules
for one operation on one mailbox:

* delegated, own mailbox: the ``scp`` claim must hold a permission for the operation;
* delegated, another mailbox (shared, delegate): the ``.Shared`` permission **and** an
  Exchange FullAccess grant for the signed-in user, else 403 ``ErrorAccessDenied``; mailbox
  settings (the master category list) have no ``.Shared`` permission, so they are always
  refused there (403 ``ErrorAccessDenied``, as Graph answers a personal connection that tries
  to manage a shared mailbox's category colours);
* app-only: the ``roles`` claim must hold the permission, and the tenant's application access
  policies must include the mailbox, else 403 ``ErrorAccessDenied`` "Access to OData is
  disabled." (Exchange's answer for a mailbox outside the policy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import jwt

from m365sim.errors import GraphError, access_denied, policy_denied, unauthenticated
from m365sim.store import Tenant, User
from m365sim.tokens import GRAPH_APP_ID, GRAPH_RESOURCE, AccessClaims

Operation = Literal["read", "write", "send", "settings_read", "settings_write"]

# permission names that allow an operation, delegated on one's own mailbox
_DELEGATED_OWN: dict[Operation, set[str]] = {
    "read": {"Mail.ReadBasic", "Mail.Read", "Mail.ReadWrite"},
    "write": {"Mail.ReadWrite"},
    "send": {"Mail.Send"},
    "settings_read": {"MailboxSettings.Read", "MailboxSettings.ReadWrite"},
    "settings_write": {"MailboxSettings.ReadWrite"},
}
_DELEGATED_SHARED: dict[Operation, set[str]] = {
    "read": {"Mail.ReadBasic.Shared", "Mail.Read.Shared", "Mail.ReadWrite.Shared"},
    "write": {"Mail.ReadWrite.Shared"},
    "send": {"Mail.Send.Shared"},
    # there are no .Shared mailbox-settings permissions
    "settings_read": set(),
    "settings_write": set(),
}
_APPLICATION: dict[Operation, set[str]] = {
    "read": {"Mail.ReadBasic", "Mail.ReadBasic.All", "Mail.Read", "Mail.ReadWrite"},
    "write": {"Mail.ReadWrite"},
    "send": {"Mail.Send"},
    "settings_read": {"MailboxSettings.Read", "MailboxSettings.ReadWrite"},
    "settings_write": {"MailboxSettings.ReadWrite"},
}


@dataclass(frozen=True)
class Caller:
    claims: AccessClaims
    tenant: Tenant
    user: User | None  # the signed-in user; None for app-only

    @property
    def client_id(self) -> str:
        return self.claims.client_id

    @property
    def app_only(self) -> bool:
        return self.user is None

    def has_scope(self, *names: str) -> bool:
        granted = self.claims.roles if self.app_only else self.claims.scopes
        return any(n in granted for n in names)


def authenticate(state: object, authorization: str | None) -> Caller:
    """Validate a bearer token issued by this emulator."""
    from m365sim.state import EmulatorState

    assert isinstance(state, EmulatorState)
    if not authorization or not authorization.strip():
        raise unauthenticated("Access token is empty.")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise unauthenticated("Access token is empty.")
    token = token.strip()
    claims = state.cached_claims(token)
    if claims is None:
        try:
            raw = state.signing_key.verify(token)
        except jwt.PyJWTError as exc:
            raise unauthenticated("CompactToken parsing failed with error code: 80049217") from exc
        if raw.get("aud") not in (GRAPH_RESOURCE, GRAPH_APP_ID, GRAPH_RESOURCE + "/"):
            raise unauthenticated("Invalid audience.")
        scp = str(raw.get("scp") or "")
        claims = AccessClaims(
            tenant_id=str(raw.get("tid")),
            client_id=str(raw.get("appid")),
            user_id=None if raw.get("idtyp") == "app" else str(raw.get("oid")),
            scopes=frozenset(scp.split()) if scp else frozenset(),
            roles=frozenset(raw.get("roles") or ()),
            expires=float(raw.get("exp", 0)),
        )
        state.cache_claims(token, claims)
    if claims.expires <= state.clock.time():
        raise unauthenticated("Lifetime validation failed, the token is expired.")
    tenant = state.store.tenants.get(claims.tenant_id)
    if tenant is None:
        raise unauthenticated("Invalid tenant.")
    user = None
    if claims.user_id is not None:
        user = tenant.users.get(claims.user_id)
        if user is None:
            raise unauthenticated("The user of this token no longer exists.")
    return Caller(claims=claims, tenant=tenant, user=user)


def resolve_user(caller: Caller, key: str) -> User:
    """``/me`` or ``/users/{id | userPrincipalName}`` within the caller's tenant."""
    if key == "me":
        if caller.user is None:
            raise GraphError(
                400, "BadRequest", "/me request is only valid with delegated authentication flow."
            )
        return caller.user
    user = caller.tenant.user(key)
    if user is None:
        raise GraphError(404, "ErrorInvalidUser", f"The requested user '{key}' is invalid.")
    return user


def authorize_mailbox(state: object, caller: Caller, mailbox_user: User, op: Operation) -> None:
    from m365sim.state import EmulatorState

    assert isinstance(state, EmulatorState)
    if caller.app_only:
        if not caller.has_scope(*_APPLICATION[op]):
            raise access_denied()
        if not state.store.mailbox_allowed_by_policy(
            caller.tenant, caller.client_id, mailbox_user.id
        ):
            raise policy_denied()
        return
    assert caller.user is not None
    if mailbox_user.id == caller.user.id:
        if not caller.has_scope(*_DELEGATED_OWN[op]):
            raise access_denied()
        return
    if not caller.has_scope(*_DELEGATED_SHARED[op]):
        raise access_denied()
    if caller.user.id not in mailbox_user.full_access:
        raise access_denied()
