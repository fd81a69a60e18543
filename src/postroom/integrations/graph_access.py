"""Calling Graph on behalf of an integration from a web request.

:class:`IntegrationTokens` is the :class:`~postroom.graph.TokenSource` for one integration: the
personal connection's saved sign-in (MSAL silent refresh from the encrypted cache) or the
organization's client-credentials token. A refusal from the identity platform raises
:class:`TokenFailure` with the reason — the caller turns it into a status; nothing retries.
A rotated refresh token is collected in ``new_cache`` for the caller to save.

Access tokens are reused for their lifetime within the process (:class:`AccessTokenMemo` on
the :class:`MicrosoftIdentity`): without it every Graph request built a new MSAL application,
which fetched the authority's discovery document and, for an organization, asked the token
endpoint for a new token — one extra round trip to the identity platform per Graph request.
A 401 from Graph (``force_refresh``) drops the entry and asks MSAL again.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from postroom import metrics
from postroom.graph import GraphClient
from postroom.integrations.oauth import GRAPH, MicrosoftIdentity
from postroom.integrations.statuses import Reason, from_identity_error
from postroom.settings import Settings

T = TypeVar("T")


class AccessTokenMemo:
    """Access tokens by connection, until shortly before they expire (process memory only:
    what MSAL's own in-memory cache would hold)."""

    MARGIN = 300.0  # seconds before expiry a token is no longer handed out

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, ...]) -> str | None:
        with self._lock:
            found = self._tokens.get(key)
        if found is None or found[1] - self.MARGIN <= self._clock():
            return None
        return found[0]

    def put(self, key: tuple[str, ...], token: str, expires_in: Any) -> None:
        try:
            seconds = float(expires_in)
        except (TypeError, ValueError):
            return
        with self._lock:
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            self._tokens[key] = (token, self._clock() + seconds)

    def drop(self, key: tuple[str, ...]) -> None:
        with self._lock:
            self._tokens.pop(key, None)


_MEMOS: weakref.WeakKeyDictionary[MicrosoftIdentity, AccessTokenMemo] = weakref.WeakKeyDictionary()
_MEMOS_LOCK = threading.Lock()


def _memo(identity: MicrosoftIdentity) -> AccessTokenMemo:
    """One memo per identity (a process builds one per runtime)."""
    with _MEMOS_LOCK:
        memo = _MEMOS.get(identity)
        if memo is None:
            memo = _MEMOS[identity] = AccessTokenMemo()
        return memo


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


def _memo_key(conn: Connection) -> tuple[str, ...]:
    return (conn.kind, conn.tenant_id, conn.account_oid or "", *sorted(conn.scopes))


def forget_token(identity: MicrosoftIdentity, connection: Connection) -> None:
    """Drop this process's remembered access token of a connection (a disconnect)."""
    _memo(identity).drop(_memo_key(connection))


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
        memo = _memo(self.identity)
        key = _memo_key(conn)
        if force_refresh:
            memo.drop(key)
        else:
            known = memo.get(key)
            if known is not None:
                return known
        if conn.kind == "organization":
            result = await asyncio.to_thread(self.identity.app_token, conn.tenant_id)
        else:
            if conn.cache is None or conn.account_oid is None:
                metrics.token_refused("no_account")
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
            reason = from_identity_error(result.error, organization=conn.kind == "organization")
            metrics.token_refused(reason.code)
            raise TokenFailure(reason, result.error)
        token = str(result.data["access_token"])
        memo.put(key, token, result.data.get("expires_in"))
        return token


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
