"""Microsoft Graph's delegated permissions as the consent screen names them, and scope parsing.

A ``scope`` parameter (graph.md 1.2) is a space-separated list that may mix OpenID Connect
scopes (``openid profile email offline_access``), Graph permissions written as full URIs
(``https://graph.microsoft.com/Mail.Read``), as resource-id URIs
(``00000003-0000-0000-c000-000000000000/Mail.Read``) or bare (``Mail.Read``: Entra reads a bare
name as a Graph permission), ``https://graph.microsoft.com/.default`` ("everything the app
registration lists") and scopes of other resources (``api://.../x``), which the emulator does not
host. :func:`parse_scopes` sorts a request into those parts once, so the authorize, consent and
token code never re-parse strings.

Permission names are matched case-insensitively and reported in Microsoft's casing, as Entra
does. A name Graph does not publish is refused at ``/authorize`` with AADSTS650053 (the scope
"doesn't exist on the resource"); :data:`DELEGATED` is the list of names the emulator knows,
with the wording of the consent screen (learn:graph/permissions-reference, "Display text").
"""

from __future__ import annotations

from dataclasses import dataclass

from m365sim.tokens import GRAPH_APP_ID, GRAPH_RESOURCE

OIDC_SCOPES = ("openid", "profile", "email", "offline_access")

# Delegated Graph permissions: name -> consent-screen text shown to the signed-in user.
DELEGATED: dict[str, str] = {
    "User.Read": "Sign you in and read your profile",
    "User.ReadWrite": "Read and update your profile",
    "User.ReadBasic.All": "Read all users' basic profiles",
    "User.Read.All": "Read all users' full profiles",
    "User.ReadWrite.All": "Read and write all users' full profiles",
    "Directory.Read.All": "Read directory data",
    "Directory.AccessAsUser.All": "Access the directory as you",
    "Group.Read.All": "Read all groups",
    "GroupMember.Read.All": "Read group memberships",
    "Mail.ReadBasic": "Read user basic mail",
    "Mail.Read": "Read your mail",
    "Mail.ReadWrite": "Read and write access to your mail",
    "Mail.Send": "Send mail as you",
    "Mail.ReadBasic.Shared": "Read user and shared basic mail",
    "Mail.Read.Shared": "Read mail you can access",
    "Mail.ReadWrite.Shared": "Read and write mail you can access",
    "Mail.Send.Shared": "Send mail on behalf of others or yourself",
    "Mail.Read.All": "Read all mail in the organization",
    "MailboxSettings.Read": "Read your mailbox settings",
    "MailboxSettings.ReadWrite": "Read and write to your mailbox settings",
    "Calendars.Read": "Read your calendars",
    "Calendars.ReadWrite": "Have full access to your calendars",
    "Contacts.Read": "Read your contacts",
    "Contacts.ReadWrite": "Have full access of your contacts",
    "Files.Read": "Read your files",
    "Files.ReadWrite": "Have full access to your files",
    "Files.Read.All": "Read all files that you have access to",
    "Files.ReadWrite.All": "Have full access to all files you have access to",
    "People.Read": "Read your relevant people list",
    "Presence.Read": "Read your presence information",
    "Tasks.Read": "Read your tasks and task lists",
    "Tasks.ReadWrite": "Create, read, update, and delete your tasks and task lists",
    "offline_access": "Maintain access to data you have given it access to",
    "openid": "Sign users in",
    "profile": "View your basic profile",
    "email": "View your email address",
}

# Application permissions the admin-consent screen may list: name -> display text.
APPLICATION: dict[str, str] = {
    "Mail.ReadBasic.All": "Read basic mail in all mailboxes",
    "Mail.ReadBasic": "Read basic mail in all mailboxes",
    "Mail.Read": "Read mail in all mailboxes",
    "Mail.ReadWrite": "Read and write mail in all mailboxes",
    "Mail.Send": "Send mail as any user",
    "MailboxSettings.Read": "Read all user mailbox settings",
    "MailboxSettings.ReadWrite": "Read and write all user mailbox settings",
    "User.Read.All": "Read all users' full profiles",
    "User.ReadWrite.All": "Read and write all users' full profiles",
    "Directory.Read.All": "Read directory data",
    "Group.Read.All": "Read all groups",
    "Calendars.Read": "Read calendars in all mailboxes",
    "Calendars.ReadWrite": "Read and write calendars in all mailboxes",
    "Contacts.Read": "Read contacts in all mailboxes",
}

_CANONICAL = {name.lower(): name for name in DELEGATED if name not in OIDC_SCOPES}


@dataclass(frozen=True)
class Scopes:
    """A parsed ``scope`` parameter."""

    raw: tuple[str, ...]
    oidc: frozenset[str]  # openid / profile / email / offline_access
    graph: frozenset[str]  # Graph permission names in Microsoft's casing
    graph_default: bool  # https://graph.microsoft.com/.default was asked for
    unknown_graph: tuple[str, ...]  # Graph permission names Graph does not publish
    other_resources: tuple[str, ...]  # resources other than Graph (api://..., https://x/...)

    @property
    def empty(self) -> bool:
        return not self.raw

    def graph_for(self, registered: list[str]) -> set[str]:
        """The Graph permissions asked for, with ``/.default`` expanded to ``registered``."""
        scopes = set(self.graph)
        if self.graph_default:
            scopes |= set(registered)
        return scopes


def canonical_permission(name: str) -> str | None:
    return _CANONICAL.get(name.lower())


def parse_scopes(value: str) -> Scopes:
    raw = tuple(value.split())
    oidc: set[str] = set()
    graph: set[str] = set()
    unknown: list[str] = []
    others: list[str] = []
    default = False
    for scope in raw:
        low = scope.lower()
        if low in OIDC_SCOPES:
            oidc.add(low)
            continue
        name = _graph_part(scope)
        if name is None:
            resource = scope.rsplit("/", 1)[0] if "/" in scope else scope
            if resource not in others:
                others.append(resource)
            continue
        if name.lower() == ".default":
            default = True
            continue
        canonical = canonical_permission(name)
        if canonical is None:
            unknown.append(name)
        else:
            graph.add(canonical)
    return Scopes(
        raw=raw,
        oidc=frozenset(oidc),
        graph=frozenset(graph),
        graph_default=default,
        unknown_graph=tuple(unknown),
        other_resources=tuple(others),
    )


def _graph_part(scope: str) -> str | None:
    """``https://graph.microsoft.com/Mail.Read`` / GUID form / bare ``Mail.Read`` -> name."""
    low = scope.lower()
    for prefix in (GRAPH_RESOURCE + "//", GRAPH_RESOURCE + "/", GRAPH_APP_ID + "/"):
        if low.startswith(prefix):
            return scope[len(prefix) :]
    if "/" in scope or ":" in scope:
        return None
    return scope


def graph_uri(name: str) -> str:
    return f"{GRAPH_RESOURCE}/{name}"


def response_scope(graph: set[str] | frozenset[str], oidc: set[str] | frozenset[str]) -> str:
    """The ``scope`` of a token response: Graph permissions as URIs, then OIDC scopes."""
    parts = [graph_uri(n) for n in sorted(graph)]
    parts += [s for s in OIDC_SCOPES if s in oidc]
    return " ".join(parts)
