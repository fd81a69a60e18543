"""What a worker or web process needs to run sync work, built once per process.

The job queue is procrastinate on the same PostgreSQL: per-mailbox ``lock`` (one sync per
mailbox at a time, across machines) and per-folder ``queueing_lock`` (a burst of notifications
becomes one pending job). Tasks are defined in :mod:`postroom.sync.jobs` on a blueprint and
find this runtime through :func:`current` (set by whoever starts the worker); the queue and the
runtime are put together in :mod:`postroom.sync.queue`, so this module imports no task.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import http.cookiejar
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import procrastinate

from postroom.crypto import SecretBox
from postroom.db import Database
from postroom.graph.client import DEFAULT_TIMEOUT as GRAPH_TIMEOUT
from postroom.integrations.oauth import MicrosoftIdentity
from postroom.processing.executor import FolderCache
from postroom.settings import Settings


class _NoCookies(http.cookiejar.CookieJar):
    """A cookie jar that keeps nothing: Graph needs no cookie, and one client is shared."""

    def extract_cookies(self, response: Any, request: Any) -> None:
        return None

    def set_cookie(self, cookie: Any) -> None:
        return None


def conninfo(sqlalchemy_url: str) -> str:
    """libpq connection string from the SQLAlchemy URL (drop the ``+psycopg`` driver)."""
    return sqlalchemy_url.replace("postgresql+psycopg://", "postgresql://", 1)


@dataclass
class Runtime:
    settings: Settings
    database: Database
    box: SecretBox
    identity: MicrosoftIdentity
    queue: procrastinate.App
    folder_cache: FolderCache = field(default_factory=FolderCache)
    hmac_key: bytes = b""
    # A worker's shared HTTP client for Graph, by event loop (shared_graph_http)
    _http: dict[int, httpx.AsyncClient] = field(default_factory=dict, repr=False)
    _verify: Any = field(default=None, repr=False)

    def graph_verify(self) -> Any:
        """TLS verification for Graph: the configured CA bundle's context (loaded once)."""
        if self._verify is None:
            cafile = self.settings.ca_bundle
            self._verify = ssl.create_default_context(cafile=str(cafile)) if cafile else True
        return self._verify

    def graph_http(self) -> httpx.AsyncClient | None:
        """The shared HTTP client of the running event loop, if one is open
        (:meth:`shared_graph_http`), else None (each Graph client then opens its own)."""
        return self._http.get(id(asyncio.get_running_loop()))

    @contextlib.asynccontextmanager
    async def shared_graph_http(self) -> AsyncIterator[httpx.AsyncClient]:
        """For a worker's lifetime: one HTTP client - one pool of kept-alive TLS connections to
        Graph - shared by every sync and job on this event loop, instead of a new client and
        TLS handshake per sync."""
        key = id(asyncio.get_running_loop())
        client = httpx.AsyncClient(
            timeout=GRAPH_TIMEOUT,
            verify=self.graph_verify(),
            trust_env=False,
            cookies=_NoCookies(),  # shared by every tenant's syncs: remember no cookie
        )
        self._http[key] = client
        try:
            yield client
        finally:
            self._http.pop(key, None)
            await client.aclose()

    @property
    def conversation_secret(self) -> bytes:
        """HMAC key of the conversation memory's hashes (derived from the secret key)."""
        return self.box.derive(b"conversation-memory")

    @property
    def message_key_secret(self) -> bytes:
        """HMAC key of stored internetMessageId hashes (postroom.processing.message_keys)."""
        return self.box.derive(b"message-key")

    def client_state_hash(self, client_state: str) -> str:
        return hmac.new(self.hmac_key, client_state.encode(), hashlib.sha256).hexdigest()

    def client_state_matches(self, client_state: Any, expected_hash: str | None) -> bool:
        if not isinstance(client_state, str) or not expected_hash or len(client_state) > 255:
            return False
        return hmac.compare_digest(self.client_state_hash(client_state), expected_hash)


_current: Runtime | None = None


def install(runtime: Runtime) -> None:
    global _current
    _current = runtime


def current() -> Runtime:
    if _current is None:
        raise RuntimeError("the sync runtime is not installed in this process")
    return _current
