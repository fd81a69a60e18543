"""The directory side of the control API: tenants, users, shared mailboxes, groups, apps,
consents and application access policies.

Builders (``create_*``, ``grant_*``) take a plain JSON-like ``spec`` and the :class:`Store`,
check everything first and only then change the store, so a refused request changes nothing.
Scenario files (:mod:`m365sim.scenario`) use the same builders, so a scenario and a sequence of
control calls build the same thing.

Microsoft's rules kept here:

* a user principal name's domain belongs to one tenant (a verified domain cannot be shared);
* shared mailboxes are users with a disabled account (nobody signs in as them); access to them
  is an Exchange FullAccess grant, which Graph checks with the ``.Shared`` delegated
  permissions (graph.md 2.1, 2.2);
* application access policies scope an app's application permissions to the members of a
  mail-enabled security group, ``RestrictAccess`` or ``DenyAccess`` (graph.md 2.2); out-of-scope
  mailboxes then answer 403 ``ErrorAccessDenied`` "Access to OData is disabled.";
* admin consent without explicit scopes consents everything in the app registration's required
  permissions, delegated and application, as ``/.default`` does (graph.md 1.7);
* a user's directory roles are role *template* ids (``directoryRoles``, :mod:`m365sim.roles`),
  the ids Entra writes into ``wids``; the older ``isAdmin: true`` means Global Administrator.
  ``PATCH /_emulator/tenants/{tid}/users/{uid}`` changes them; an app registration's
  ``groupMembershipClaims`` (``PATCH /_emulator/apps/{client id}``) decides whether id tokens
  carry ``wids``.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from m365sim import ids, roles
from m365sim.control.common import (
    ControlError,
    JsonDict,
    bad,
    check_keys,
    conflict,
    endpoint,
    epoch_iso,
    find_mailbox,
    find_tenant,
    lookup_user,
    not_found,
    obj_list,
    ok,
    opt_bool,
    opt_str,
    parse_when,
    read_json,
    req_str,
    str_list,
    user_in,
)
from m365sim.state import EmulatorState
from m365sim.store import AccessPolicy, App, Group, Secret, Store, Tenant, User

_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$")
_PERMISSION = re.compile(r"^[A-Za-z][A-Za-z0-9.]*$")
ACCESS_RIGHTS = ("RestrictAccess", "DenyAccess")

USER_FIELDS = {
    "id",
    "userPrincipalName",
    "displayName",
    "password",
    "mfaRequired",
    "isAdmin",
    "directoryRoles",
    "givenName",
    "surname",
    "jobTitle",
    "accountEnabled",
}
SHARED_FIELDS = {"id", "userPrincipalName", "displayName", "fullAccess"}
APP_FIELDS = {
    "clientId",
    "displayName",
    "homeTenantId",
    "redirectUris",
    "secret",
    "secrets",
    "delegatedPermissions",
    "applicationPermissions",
    "publicClient",
    "singleTenant",
    "groupMembershipClaims",
}
USER_PATCH_FIELDS = {"directoryRoles", "isAdmin"}
APP_PATCH_FIELDS = {"groupMembershipClaims"}


# ----------------------------------------------------------------------------- views


def tenant_json(tenant: Tenant, *, detail: bool = False) -> JsonDict:
    body: JsonDict = {
        "id": tenant.id,
        "displayName": tenant.display_name,
        "domain": tenant.domain,
        "userCount": sum(1 for u in tenant.users.values() if not u.is_shared_mailbox),
        "sharedMailboxCount": sum(1 for u in tenant.users.values() if u.is_shared_mailbox),
    }
    if detail:
        body["users"] = [user_json(u) for u in tenant.users.values()]
        body["groups"] = [group_json(g) for g in tenant.groups.values()]
        body["accessPolicies"] = [policy_json(p) for p in tenant.access_policies.values()]
        body["consents"] = consents_json(tenant)
    return body


def user_json(user: User) -> JsonDict:
    return {
        "id": user.id,
        "tenantId": user.tenant_id,
        "userPrincipalName": user.user_principal_name,
        "displayName": user.display_name,
        "givenName": user.given_name or None,
        "surname": user.surname or None,
        "jobTitle": user.job_title,
        "isSharedMailbox": user.is_shared_mailbox,
        "accountEnabled": user.account_enabled,
        "mfaRequired": user.mfa_required,
        "isAdmin": user.is_admin,
        "directoryRoles": sorted(user.directory_roles),
        "fullAccess": sorted(user.full_access),
    }


def group_json(group: Group) -> JsonDict:
    return {
        "id": group.id,
        "displayName": group.display_name,
        "mail": group.mail,
        "members": sorted(group.members),
    }


def app_json(app: App, *, reveal: list[str] | None = None) -> JsonDict:
    secrets = []
    for secret in app.secrets:
        item: JsonDict = {"hint": secret.hint, "expiresAt": epoch_iso(secret.expires)}
        if reveal is not None and secret.value in reveal:
            item["value"] = secret.value  # shown once, at creation, as Entra does
        secrets.append(item)
    return {
        "clientId": app.client_id,
        "displayName": app.display_name,
        "homeTenantId": app.home_tenant_id,
        "redirectUris": list(app.redirect_uris),
        "publicClient": app.public_client,
        "singleTenant": app.single_tenant,
        "delegatedPermissions": list(app.delegated_permissions),
        "applicationPermissions": list(app.application_permissions),
        "groupMembershipClaims": app.group_membership_claims,
        "secrets": secrets,
    }


def policy_json(policy: AccessPolicy) -> JsonDict:
    return {
        "id": policy.id,
        "appId": policy.app_id,
        "groupId": policy.group_id,
        "accessRight": policy.access_right,
        "description": policy.description,
    }


def consents_json(tenant: Tenant, client_id: str | None = None) -> JsonDict:
    def keep(cid: str) -> bool:
        return client_id is None or cid == client_id

    return {
        "admin": [
            {"clientId": cid, "scopes": sorted(scopes)}
            for cid, scopes in tenant.admin_delegated_grants.items()
            if keep(cid)
        ],
        "appRoles": [
            {"clientId": cid, "roles": sorted(roles)}
            for cid, roles in tenant.app_role_grants.items()
            if keep(cid)
        ],
        "users": [
            {"clientId": cid, "userId": uid, "scopes": sorted(scopes)}
            for (cid, uid), scopes in tenant.user_grants.items()
            if keep(cid)
        ],
    }


# ----------------------------------------------------------------------------- builders
def _guid(value: str, where: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise bad(f"{where} must be a GUID such as 6f1b9f3e-5c2a-4d8e-9b7a-2c4d6e8f0a1b") from exc


def _permissions(data: JsonDict, name: str, ctx: str) -> list[str]:
    values = str_list(data, name, ctx)
    for value in values:
        if not _PERMISSION.match(value):
            raise bad(f"{ctx}.{name}: {value!r} is not a permission name such as 'Mail.ReadWrite'")
    return list(dict.fromkeys(values))


def directory_roles(spec: JsonDict, ctx: str) -> set[str]:
    """``directoryRoles``: role template ids (GUIDs) or known role names such as "Global
    Administrator"; the implicit "User" role may be named but is not stored."""
    result: set[str] = set()
    for i, value in enumerate(str_list(spec, "directoryRoles", ctx)):
        template_id = roles.role_template_id(value)
        if template_id is None:
            known = ", ".join(sorted(roles.KNOWN_ROLES.values()))
            raise bad(
                f"{ctx}.directoryRoles[{i}]: {value!r} is not a role template id (a GUID) "
                f"or one of: {known}"
            )
        if template_id != roles.USER:
            result.add(template_id)
    return result


def user_roles(spec: JsonDict, ctx: str, current: set[str] | None = None) -> set[str]:
    """The directory roles a create or patch asks for, with the older ``isAdmin`` flag:
    ``true`` adds Global Administrator unless a role that may consent is named."""
    chosen = directory_roles(spec, ctx) if "directoryRoles" in spec else set(current or ())
    if "isAdmin" in spec:
        admin = opt_bool(spec, "isAdmin", ctx)
        may_consent = roles.may_consent_delegated(chosen)
        if admin and not may_consent:
            chosen.add(roles.GLOBAL_ADMINISTRATOR)
        elif not admin and may_consent:
            if "directoryRoles" in spec:
                raise bad(
                    f"{ctx}: isAdmin false contradicts directoryRoles, which name a role that "
                    "may grant admin consent"
                )
            chosen -= roles.DELEGATED_CONSENT_ROLES
    return chosen


def group_membership_claims(spec: JsonDict, ctx: str, default: str = "None") -> str:
    value = opt_str(spec, "groupMembershipClaims", ctx, default)
    value = default if value is None else value
    flags = roles.parse_group_membership_claims(value)
    if flags is None:
        raise bad(
            f"{ctx}.groupMembershipClaims: {value!r} is not one of "
            f"{', '.join(roles.GROUP_MEMBERSHIP_CLAIMS)} (or a comma-separated combination)"
        )
    return ", ".join(f for f in roles.GROUP_MEMBERSHIP_CLAIMS if f in flags)


TENANT_FIELDS = {"id", "displayName", "domain", "userConsentAllowed"}


def create_tenant(store: Store, spec: JsonDict, ctx: str = "tenant") -> Tenant:
    check_keys(spec, TENANT_FIELDS, ctx)
    display_name = req_str(spec, "displayName", ctx)
    domain = req_str(spec, "domain", ctx).lower()
    if not _DOMAIN.match(domain):
        raise bad(f"{ctx}.domain: {domain!r} is not a domain name such as contoso.test")
    tenant_id = opt_str(spec, "id", ctx)
    if tenant_id is not None:
        tenant_id = _guid(tenant_id, f"{ctx}.id")
    with store.lock:
        if tenant_id is not None and tenant_id in store.tenants:
            raise conflict(f"a tenant with id {tenant_id} already exists")
        if store.tenant(domain) is not None:
            raise conflict(f"the domain {domain} already belongs to a tenant")
        tenant = store.add_tenant(display_name=display_name, domain=domain, tenant_id=tenant_id)
        if "userConsentAllowed" in spec:
            tenant.user_consent_allowed = opt_bool(spec, "userConsentAllowed", ctx, True)
        return tenant


def normalize_upn(tenant: Tenant, value: str, where: str) -> str:
    upn = value.strip()
    if "@" not in upn:
        upn = f"{upn}@{tenant.domain}"  # a bare alias gets the tenant's domain
    local, _, domain = upn.rpartition("@")
    if not local or not _DOMAIN.match(domain.lower()) or " " in local:
        raise bad(f"{where}: {value!r} is not a user principal name such as alice@contoso.test")
    return f"{local}@{domain.lower()}"


def create_user(
    store: Store, tenant: Tenant, spec: JsonDict, ctx: str = "user", *, shared: bool = False
) -> User:
    check_keys(spec, SHARED_FIELDS if shared else USER_FIELDS, ctx)
    upn = normalize_upn(tenant, req_str(spec, "userPrincipalName", ctx), f"{ctx}.userPrincipalName")
    display_name = req_str(spec, "displayName", ctx)
    user_id = opt_str(spec, "id", ctx)
    if user_id is not None:
        user_id = _guid(user_id, f"{ctx}.id")
    password = ""
    extra: dict[str, Any] = {}
    assigned: set[str] = set()
    if not shared:
        password = req_str(spec, "password", ctx)
        extra["mfa_required"] = opt_bool(spec, "mfaRequired", ctx)
        extra["given_name"] = opt_str(spec, "givenName", ctx, "") or ""
        extra["surname"] = opt_str(spec, "surname", ctx, "") or ""
        extra["job_title"] = opt_str(spec, "jobTitle", ctx)
        extra["account_enabled"] = opt_bool(spec, "accountEnabled", ctx, True)
        assigned = user_roles(spec, ctx)
    full_access_keys = str_list(spec, "fullAccess", ctx) if shared else []
    with store.lock:
        domain = upn.rpartition("@")[2]
        owner = store.tenant(domain)
        if owner is not None and owner.id != tenant.id:
            raise conflict(f"{ctx}: the domain {domain} belongs to another tenant")
        if store.find_user(upn) is not None or tenant.user(upn) is not None:
            raise conflict(f"{ctx}: a user or mailbox {upn} already exists")
        if user_id is not None and store.user_by_id(user_id) is not None:
            raise conflict(f"{ctx}: a user with id {user_id} already exists")
        grantees = [
            user_in(tenant, key, f"{ctx}.fullAccess[{i}]") for i, key in enumerate(full_access_keys)
        ]
        user = store.add_user(
            tenant,
            user_principal_name=upn,
            display_name=display_name,
            password=password,
            shared=shared,
            user_id=user_id,
            **extra,
        )
        user.directory_roles = assigned
        user.full_access.update(g.id for g in grantees)
        return user


def create_group(store: Store, tenant: Tenant, spec: JsonDict, ctx: str = "group") -> Group:
    check_keys(spec, {"displayName", "mail", "members"}, ctx)
    display_name = req_str(spec, "displayName", ctx)
    mail = req_str(spec, "mail", ctx).lower()
    if "@" not in mail:
        mail = f"{mail}@{tenant.domain}"
    with store.lock:
        if any(g.mail.lower() == mail for g in tenant.groups.values()):
            raise conflict(f"{ctx}: a group with mail {mail} already exists")
        members = [
            user_in(tenant, key, f"{ctx}.members[{i}]")
            for i, key in enumerate(str_list(spec, "members", ctx))
        ]
        return store.add_group(
            tenant, display_name=display_name, mail=mail, members={m.id for m in members}
        )


def find_group(tenant: Tenant, key: str) -> Group | None:
    group = tenant.groups.get(key)
    if group is not None:
        return group
    low = key.lower()
    if "@" not in low:
        low = f"{low}@{tenant.domain}"  # a bare alias
    return next((g for g in tenant.groups.values() if g.mail.lower() == low), None)


def _secrets(spec: JsonDict, store: Store, ctx: str) -> list[Secret]:
    out: list[Secret] = []
    single = opt_str(spec, "secret", ctx)
    if single is not None:
        if not single:
            raise bad(f"{ctx}.secret must not be empty")
        out.append(Secret(value=single, hint=single[:3]))
    for i, item in enumerate(obj_list(spec, "secrets", ctx)):
        where = f"{ctx}.secrets[{i}]"
        check_keys(item, {"value", "expiresAt"}, where)
        value = req_str(item, "value", where)
        expires = None
        if item.get("expiresAt") is not None:
            expires = parse_when(item["expiresAt"], store.clock, f"{where}.expiresAt").timestamp()
        out.append(Secret(value=value, expires=expires, hint=value[:3]))
    return out


def create_app(store: Store, spec: JsonDict, ctx: str = "app") -> tuple[App, list[str]]:
    """Register an app; returns it and the secret values to show once."""
    check_keys(spec, APP_FIELDS, ctx)
    display_name = req_str(spec, "displayName", ctx)
    home = find_tenant_in_body(store, req_str(spec, "homeTenantId", ctx), f"{ctx}.homeTenantId")
    client_id = opt_str(spec, "clientId", ctx)
    if client_id is not None:
        client_id = _guid(client_id, f"{ctx}.clientId")
    redirect_uris = str_list(spec, "redirectUris", ctx)
    for uri in redirect_uris:
        if not re.match(r"^(https?://[^\s]+|[a-z][a-z0-9+.-]*://[^\s]*)$", uri):
            raise bad(f"{ctx}.redirectUris: {uri!r} is not an absolute URI")
    secrets = _secrets(spec, store, ctx)
    delegated = _permissions(spec, "delegatedPermissions", ctx)
    application = _permissions(spec, "applicationPermissions", ctx)
    public_client = opt_bool(spec, "publicClient", ctx)
    single_tenant = opt_bool(spec, "singleTenant", ctx)
    claims = group_membership_claims(spec, ctx)
    with store.lock:
        if client_id is not None and client_id in store.apps:
            raise conflict(f"{ctx}: an app with client id {client_id} already exists")
        app = store.add_app(
            display_name=display_name,
            home_tenant_id=home.id,
            redirect_uris=redirect_uris,
            client_id=client_id,
            delegated_permissions=delegated,
            application_permissions=application,
            public_client=public_client,
            group_membership_claims=claims,
        )
        app.single_tenant = single_tenant
        app.secrets.extend(secrets)
        return app, [s.value for s in secrets]


def find_tenant_in_body(store: Store, key: str, where: str) -> Tenant:
    tenant = store.tenant(key)
    if tenant is None:
        raise bad(f"{where}: no tenant {key!r}")
    return tenant


def _app_in_body(store: Store, key: str, where: str) -> App:
    app = store.apps.get(key) or store.apps.get(key.lower())
    if app is None:
        raise bad(f"{where}: no app registration with client id {key!r}")
    return app


def grant_consent(store: Store, tenant: Tenant, spec: JsonDict, ctx: str = "consent") -> JsonDict:
    check_keys(spec, {"clientId", "userId", "scopes", "roles", "admin"}, ctx)
    app = _app_in_body(store, req_str(spec, "clientId", ctx), f"{ctx}.clientId")
    admin = opt_bool(spec, "admin", ctx)
    scopes = _permissions(spec, "scopes", ctx) if "scopes" in spec else None
    roles = _permissions(spec, "roles", ctx) if "roles" in spec else None
    user_key = opt_str(spec, "userId", ctx)
    with store.lock:
        if admin:
            if user_key is not None:
                raise bad(f"{ctx}: admin consent is for all users; leave out userId")
            if scopes is None and roles is None:
                store.grant_admin_consent(tenant, app)
            else:
                if scopes is not None:
                    tenant.admin_delegated_grants.setdefault(app.client_id, set()).update(scopes)
                if roles is not None:
                    tenant.app_role_grants.setdefault(app.client_id, set()).update(roles)
        else:
            if user_key is None:
                raise bad(f"{ctx}: userId is required for a user's consent (or set admin: true)")
            if roles is not None:
                raise bad(f"{ctx}: application permissions (roles) need admin: true")
            user = user_in(tenant, user_key, f"{ctx}.userId")
            granted = tenant.user_grants.setdefault((app.client_id, user.id), set())
            granted.update(scopes if scopes is not None else app.delegated_permissions)
        return consents_json(tenant, app.client_id)


def create_policy(
    store: Store, tenant: Tenant, spec: JsonDict, ctx: str = "accessPolicy"
) -> AccessPolicy:
    check_keys(spec, {"appId", "groupId", "groupMail", "accessRight", "description"}, ctx)
    app = _app_in_body(store, req_str(spec, "appId", ctx), f"{ctx}.appId")
    group_key = opt_str(spec, "groupId", ctx) or opt_str(spec, "groupMail", ctx)
    if not group_key:
        raise bad(f"{ctx}: groupId or groupMail is required (a mail-enabled security group)")
    group = find_group(tenant, group_key)
    if group is None:
        raise bad(f"{ctx}: no group {group_key!r} in tenant {tenant.domain}")
    right = req_str(spec, "accessRight", ctx)
    if right not in ACCESS_RIGHTS:
        raise bad(f"{ctx}.accessRight must be RestrictAccess or DenyAccess, not {right!r}")
    with store.lock:
        policy = AccessPolicy(
            id=ids.guid(),
            app_id=app.client_id,
            group_id=group.id,
            access_right="RestrictAccess" if right == "RestrictAccess" else "DenyAccess",
            description=opt_str(spec, "description", ctx, "") or "",
        )
        tenant.access_policies[policy.id] = policy
        return policy


def grant_full_access(store: Store, mailbox: User, keys: list[str], ctx: str) -> None:
    tenant = store.tenants[mailbox.tenant_id]
    with store.lock:
        users = [user_in(tenant, key, f"{ctx}[{i}]") for i, key in enumerate(keys)]
        for user in users:
            if user.id == mailbox.id:
                raise bad(f"{ctx}: a mailbox owner already has full access to their own mailbox")
        mailbox.full_access.update(u.id for u in users)


# ----------------------------------------------------------------------------- routes
def build_routes(state: EmulatorState) -> list[BaseRoute]:
    store = state.store

    @endpoint
    async def tenants(request: Request) -> Response:
        if request.method == "POST":
            tenant = create_tenant(store, await read_json(request))
            return ok(tenant_json(tenant), 201)
        with store.lock:
            return ok({"value": [tenant_json(t) for t in store.tenants.values()]})

    @endpoint
    async def tenant_detail(request: Request) -> Response:
        with store.lock:
            tenant = find_tenant(store, request.path_params["tid"])
            return ok(tenant_json(tenant, detail=True))

    @endpoint
    async def users(request: Request) -> Response:
        tenant = find_tenant(store, request.path_params["tid"])
        if request.method == "POST":
            return ok(user_json(create_user(store, tenant, await read_json(request))), 201)
        with store.lock:
            return ok({"value": [user_json(u) for u in tenant.users.values()]})

    @endpoint
    async def user_detail(request: Request) -> Response:
        spec = await read_json(request) if request.method == "PATCH" else {}
        with store.lock:
            tenant = find_tenant(store, request.path_params["tid"])
            user = lookup_user(tenant, request.path_params["uid"])
            if user is None:
                raise not_found(f"user {request.path_params['uid']!r} not found")
            if request.method == "PATCH":
                check_keys(spec, USER_PATCH_FIELDS, "user")
                if user.is_shared_mailbox:
                    raise bad("a shared mailbox has a disabled account and holds no roles")
                user.directory_roles = user_roles(spec, "user", user.directory_roles)
            return ok(user_json(user))

    @endpoint
    async def role_templates(request: Request) -> Response:
        return ok(
            {
                "value": [
                    {"id": tid, "displayName": name, "implicit": tid == roles.USER}
                    for tid, name in roles.KNOWN_ROLES.items()
                ]
            }
        )

    @endpoint
    async def shared_mailboxes(request: Request) -> Response:
        tenant = find_tenant(store, request.path_params["tid"])
        if request.method == "POST":
            spec = await read_json(request)
            return ok(user_json(create_user(store, tenant, spec, "mailbox", shared=True)), 201)
        with store.lock:
            return ok(
                {"value": [user_json(u) for u in tenant.users.values() if u.is_shared_mailbox]}
            )

    @endpoint
    async def full_access(request: Request) -> Response:
        _, mailbox = find_mailbox(store, request.path_params["key"])
        if request.method == "POST":
            spec = await read_json(request)
            check_keys(spec, {"users"}, "fullAccess")
            keys = str_list(spec, "users", "fullAccess")
            if not keys:
                raise bad("users is required: the users (id or userPrincipalName) to grant")
            grant_full_access(store, mailbox, keys, "users")
        with store.lock:
            return ok({"mailboxId": mailbox.id, "fullAccess": sorted(mailbox.full_access)})

    @endpoint
    async def full_access_remove(request: Request) -> Response:
        tenant, mailbox = find_mailbox(store, request.path_params["key"])
        with store.lock:
            user = lookup_user(tenant, request.path_params["user"])
            if user is None or user.id not in mailbox.full_access:
                raise not_found(f"{request.path_params['user']!r} has no full access grant here")
            mailbox.full_access.discard(user.id)
        return Response(status_code=204)

    @endpoint
    async def groups(request: Request) -> Response:
        tenant = find_tenant(store, request.path_params["tid"])
        if request.method == "POST":
            return ok(group_json(create_group(store, tenant, await read_json(request))), 201)
        with store.lock:
            return ok({"value": [group_json(g) for g in tenant.groups.values()]})

    def _group(tenant: Tenant, key: str) -> Group:
        group = find_group(tenant, key)
        if group is None:
            raise not_found(f"group {key!r} not found in tenant {tenant.domain}")
        return group

    @endpoint
    async def group_members(request: Request) -> Response:
        tenant = find_tenant(store, request.path_params["tid"])
        group = _group(tenant, request.path_params["gid"])
        if request.method == "POST":
            spec = await read_json(request)
            check_keys(spec, {"members"}, "group")
            keys = str_list(spec, "members", "group")
            if not keys:
                raise bad("members is required: the users (id or userPrincipalName) to add")
            with store.lock:
                users = [user_in(tenant, k, f"members[{i}]") for i, k in enumerate(keys)]
                group.members.update(u.id for u in users)
        with store.lock:
            return ok(group_json(group))

    @endpoint
    async def group_member_remove(request: Request) -> Response:
        tenant = find_tenant(store, request.path_params["tid"])
        group = _group(tenant, request.path_params["gid"])
        with store.lock:
            user = lookup_user(tenant, request.path_params["member"])
            if user is None or user.id not in group.members:
                raise not_found(f"{request.path_params['member']!r} is not a member")
            group.members.discard(user.id)
        return Response(status_code=204)

    @endpoint
    async def consents(request: Request) -> Response:
        tenant = find_tenant(store, request.path_params["tid"])
        if request.method == "POST":
            return ok(grant_consent(store, tenant, await read_json(request)), 201)
        if request.method == "DELETE":
            spec = await read_json(request, optional=True)
            for name in ("clientId", "userId"):
                if name in request.query_params:
                    spec.setdefault(name, request.query_params[name])
            check_keys(spec, {"clientId", "userId"}, "consent")
            client_id = req_str(spec, "clientId", "consent")
            user_key = opt_str(spec, "userId", "consent")
            with store.lock:
                user_id = user_in(tenant, user_key, "userId").id if user_key else None
                store.revoke_consent(tenant, client_id, user_id)
                return ok(consents_json(tenant, client_id))
        with store.lock:
            return ok(consents_json(tenant, request.query_params.get("clientId")))

    @endpoint
    async def policies(request: Request) -> Response:
        tenant = find_tenant(store, request.path_params["tid"])
        if request.method == "POST":
            return ok(policy_json(create_policy(store, tenant, await read_json(request))), 201)
        with store.lock:
            return ok({"value": [policy_json(p) for p in tenant.access_policies.values()]})

    @endpoint
    async def policy_remove(request: Request) -> Response:
        tenant = find_tenant(store, request.path_params["tid"])
        with store.lock:
            if tenant.access_policies.pop(request.path_params["pid"], None) is None:
                raise not_found(f"access policy {request.path_params['pid']!r} not found")
        return Response(status_code=204)

    @endpoint
    async def apps(request: Request) -> Response:
        if request.method == "POST":
            app, secrets = create_app(store, await read_json(request))
            return ok(app_json(app, reveal=secrets), 201)
        with store.lock:
            return ok({"value": [app_json(a) for a in store.apps.values()]})

    def _app(client_id: str) -> App:
        app = store.apps.get(client_id) or store.apps.get(client_id.lower())
        if app is None:
            raise not_found(f"app registration {client_id!r} not found")
        return app

    @endpoint
    async def app_detail(request: Request) -> Response:
        spec = await read_json(request) if request.method == "PATCH" else {}
        with store.lock:
            app = _app(request.path_params["cid"])
            if request.method == "PATCH":
                check_keys(spec, APP_PATCH_FIELDS, "app")
                app.group_membership_claims = group_membership_claims(
                    spec, "app", app.group_membership_claims
                )
            return ok(app_json(app))

    @endpoint
    async def app_secrets(request: Request) -> Response:
        app = _app(request.path_params["cid"])
        spec = await read_json(request)
        check_keys(spec, {"value", "expiresAt"}, "secret")
        added = _secrets({"secrets": [spec]}, store, "")
        with store.lock:
            app.secrets.extend(added)
            return ok(app_json(app, reveal=[s.value for s in added]), 201)

    prefix = "/_emulator"
    return [
        Route(f"{prefix}/tenants", tenants, methods=["GET", "POST"]),
        Route(f"{prefix}/tenants/{{tid}}", tenant_detail, methods=["GET"]),
        Route(f"{prefix}/tenants/{{tid}}/users", users, methods=["GET", "POST"]),
        Route(f"{prefix}/tenants/{{tid}}/users/{{uid}}", user_detail, methods=["GET", "PATCH"]),
        Route(f"{prefix}/directoryRoles", role_templates, methods=["GET"]),
        Route(
            f"{prefix}/tenants/{{tid}}/sharedMailboxes", shared_mailboxes, methods=["GET", "POST"]
        ),
        Route(f"{prefix}/tenants/{{tid}}/groups", groups, methods=["GET", "POST"]),
        Route(
            f"{prefix}/tenants/{{tid}}/groups/{{gid}}/members",
            group_members,
            methods=["GET", "POST"],
        ),
        Route(
            f"{prefix}/tenants/{{tid}}/groups/{{gid}}/members/{{member}}",
            group_member_remove,
            methods=["DELETE"],
        ),
        Route(f"{prefix}/tenants/{{tid}}/consents", consents, methods=["GET", "POST", "DELETE"]),
        Route(f"{prefix}/tenants/{{tid}}/accessPolicies", policies, methods=["GET", "POST"]),
        Route(
            f"{prefix}/tenants/{{tid}}/accessPolicies/{{pid}}", policy_remove, methods=["DELETE"]
        ),
        Route(f"{prefix}/apps", apps, methods=["GET", "POST"]),
        Route(f"{prefix}/apps/{{cid}}", app_detail, methods=["GET", "PATCH"]),
        Route(f"{prefix}/apps/{{cid}}/secrets", app_secrets, methods=["POST"]),
        Route(f"{prefix}/mailboxes/{{key}}/fullAccess", full_access, methods=["GET", "POST"]),
        Route(
            f"{prefix}/mailboxes/{{key}}/fullAccess/{{user}}",
            full_access_remove,
            methods=["DELETE"],
        ),
    ]


__all__ = [
    "ControlError",
    "build_routes",
    "create_app",
    "create_group",
    "create_policy",
    "create_tenant",
    "create_user",
    "grant_consent",
    "grant_full_access",
]
