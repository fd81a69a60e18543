"""Calling Graph on behalf of an integration from a web request.

:class:`IntegrationTokens` is the :class:`~postroom.graph.TokenSource` for one integration: the
personal connection's saved sign-in (MSAL silent refresh from the encrypted cache) or the
organization's client-credentials token. A refusal from the identity platform raises
:class:`TokenFailure` with the reason — the caller turns it into a status; nothing retries.
A rotated refresh token is collected in ``new_cache`` for the caller to save.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from postroom.graph import GraphClient
from postroom.integrations.oauth import GRAPH, MicrosoftIdentity
from postroom.integrations.statuses import Reason, from_identity_error
from postroom.settings import Settings

T = TypeVar("T")


class TokenFailure(Exception):
    def __init__(self, reason: Reason, error: dict[str, Any]) -> None:
        super().__init__(reason.code)
        self.reason = reason
        self.error = error

    @property
    def description(self) -> str:
        return str(self.error.get("error_description") or self.error.get("error") or "")


@dataclass
class Connection:
    """What is needed to get a token for an integration (read from its row first)."""

    kind: str
    tenant_id: str
    account_oid: str | None
    cache: str | None
    scopes: list[str]


class IntegrationTokens:
    def __init__(
        self, identity: MicrosoftIdentity, connection: Connection, *, verify: bool = False
    ) -> None:
        self.identity = identity
        self.connection = connection
        self.new_cache: str | None = None
        # verify: redeem the refresh token even when a cached access token is still valid,
        # to learn now whether the saved sign-in still works.
        self._force_next = verify

    async def __call__(self, *, force_refresh: bool = False) -> str:
        conn = self.connection
        force_refresh = force_refresh or self._force_next
        self._force_next = False
        if conn.kind == "organization":
            result = await asyncio.to_thread(self.identity.app_token, conn.tenant_id)
        else:
            if conn.cache is None or conn.account_oid is None:
                raise TokenFailure(from_identity_error({}), {"error": "no_account"})
            scopes = [s for s in conn.scopes if s.startswith(GRAPH + "/")] or [f"{GRAPH}/User.Read"]
            result = await asyncio.to_thread(
                lambda: self.identity.acquire_silent(
                    cache_blob=self.new_cache or conn.cache or "",
                    tenant_id=conn.tenant_id,
                    account_oid=conn.account_oid or "",
                    scopes=scopes,
                    force_refresh=force_refresh,
                )
            )
            if result.cache:
                self.new_cache = result.cache
        if not result.ok:
            raise TokenFailure(
                from_identity_error(result.error, organization=conn.kind == "organization"),
                result.error,
            )
        return str(result.data["access_token"])


def run_graph(
    settings: Settings,
    identity: MicrosoftIdentity,
    connection: Connection,
    work: Callable[[GraphClient], Awaitable[T]],
    *,
    verify_sign_in: bool = False,
) -> tuple[T, str | None]:
    """Run ``work`` with a Graph client for this connection (from a worker thread).

    Returns the result and the rotated token cache to save, if any.
    """
    tokens = IntegrationTokens(identity, connection, verify=verify_sign_in)

    async def main() -> T:
        async with GraphClient(
            base_url=settings.graph_base_url,
            token=tokens,
            app_id=settings.ms_client_id,
            verify=ssl.create_default_context(cafile=str(settings.ca_bundle))
            if settings.ca_bundle
            else True,
            max_attempts=3,
        ) as client:
            return await work(client)

    return asyncio.run(main()), tokens.new_cache
