"""Entra ID directory roles: template ids, who may grant tenant-wide admin consent, ``wids``.

A user holds directory roles (:attr:`m365sim.store.User.directory_roles`, a set of role
*template* ids, the ids Entra writes into the ``wids`` claim). Every member user also holds
the built-in "User" role implicitly; Entra lists it in ``wids`` and so does the emulator.

Who may grant tenant-wide admin consent (learn.microsoft.com, "Grant tenant-wide admin consent
to an application", prerequisites):

* Global Administrator and Privileged Role Administrator: any permission of any API;
* Application Administrator and Cloud Application Administrator: any permission of any API
  *except Microsoft Graph app roles* (application permissions).

The emulator hosts only Microsoft Graph, so "application permissions" below are always Graph's.
Custom roles with ``microsoft.directory/servicePrincipals/managePermissionGrantsForAll.*`` are
not emulated.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

GLOBAL_ADMINISTRATOR = "62e90394-69f5-4237-9190-012177145e10"
PRIVILEGED_ROLE_ADMINISTRATOR = "e8611ab8-c189-46e8-94e1-60213ab1f814"
APPLICATION_ADMINISTRATOR = "9b895d92-2cd3-44c7-9d02-a6ac2d5ea5c3"
CLOUD_APPLICATION_ADMINISTRATOR = "158c047a-c907-4556-b7ef-446551a6b5f7"
EXCHANGE_ADMINISTRATOR = "29232cdf-9323-42fd-ade2-1d097af3e4de"
USER = "b79fbf4d-3ef9-4689-8143-76b194e85509"  # every member user, implicitly

# template id -> display name, for the roles the emulator names (any other GUID is accepted)
KNOWN_ROLES: dict[str, str] = {
    GLOBAL_ADMINISTRATOR: "Global Administrator",
    PRIVILEGED_ROLE_ADMINISTRATOR: "Privileged Role Administrator",
    APPLICATION_ADMINISTRATOR: "Application Administrator",
    CLOUD_APPLICATION_ADMINISTRATOR: "Cloud Application Administrator",
    EXCHANGE_ADMINISTRATOR: "Exchange Administrator",
    USER: "User",
}

# may grant tenant-wide consent to delegated permissions (and other APIs' app roles)
DELEGATED_CONSENT_ROLES = frozenset(
    {
        GLOBAL_ADMINISTRATOR,
        PRIVILEGED_ROLE_ADMINISTRATOR,
        APPLICATION_ADMINISTRATOR,
        CLOUD_APPLICATION_ADMINISTRATOR,
    }
)
# may also grant Microsoft Graph application permissions (app roles)
GRAPH_APP_ROLE_CONSENT_ROLES = frozenset({GLOBAL_ADMINISTRATOR, PRIVILEGED_ROLE_ADMINISTRATOR})

# values of an app registration's groupMembershipClaims (comma-separated in the manifest)
GROUP_MEMBERSHIP_CLAIMS = ("None", "SecurityGroup", "DirectoryRole", "ApplicationGroup", "All")

_BY_NAME = {name.lower(): tid for tid, name in KNOWN_ROLES.items()}


def role_template_id(value: str) -> str | None:
    """A role template id from a GUID (any) or a known role's display name; None otherwise."""
    text = value.strip()
    by_name = _BY_NAME.get(text.lower())
    if by_name is not None:
        return by_name
    try:
        return str(uuid.UUID(text))
    except ValueError:
        return None


def role_name(template_id: str) -> str:
    return KNOWN_ROLES.get(template_id, template_id)


def may_consent_delegated(roles: Iterable[str]) -> bool:
    """May grant tenant-wide admin consent to delegated permissions."""
    return not DELEGATED_CONSENT_ROLES.isdisjoint(roles)


def may_consent_graph_app_roles(roles: Iterable[str]) -> bool:
    """May grant Microsoft Graph application permissions tenant-wide."""
    return not GRAPH_APP_ROLE_CONSENT_ROLES.isdisjoint(roles)


def parse_group_membership_claims(value: str) -> frozenset[str] | None:
    """``"DirectoryRole"``, ``"SecurityGroup, DirectoryRole"``, ... -> the set of flags in
    Microsoft's casing; None when a part is not one of :data:`GROUP_MEMBERSHIP_CLAIMS`."""
    canonical = {v.lower(): v for v in GROUP_MEMBERSHIP_CLAIMS}
    flags: set[str] = set()
    for part in value.split(","):
        name = canonical.get(part.strip().lower())
        if name is None:
            return None
        flags.add(name)
    if "None" in flags and len(flags) > 1:
        return None
    return frozenset(flags)


def emits_wids(group_membership_claims: str, *, security_group_includes_roles: bool) -> bool:
    """Whether an app registration's ``groupMembershipClaims`` makes Entra emit ``wids``.

    The optional-claims reference: "Setting it to All or DirectoryRole is required."
    Graph's application resource describes ``SecurityGroup`` as "for security groups and
    Microsoft Entra roles", so whether ``SecurityGroup`` alone emits ``wids`` is unclear:
    that is ``EmulatorConfig.wids_with_security_group`` (off by default).
    """
    flags = parse_group_membership_claims(group_membership_claims) or frozenset()
    if "DirectoryRole" in flags or "All" in flags:
        return True
    return security_group_includes_roles and "SecurityGroup" in flags


def wids(assigned: Iterable[str]) -> list[str]:
    """The ``wids`` claim: the assigned role template ids, then the implicit User role."""
    return sorted(set(assigned) - {USER}) + [USER]
