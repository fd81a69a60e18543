"""``GraphClient``: every request Postroom sends to Microsoft Graph goes through here.

What every request gets, in one place:

* ``Prefer: IdType="ImmutableId"`` (ids survive moves), a timeout, and a bearer token from a
  :class:`TokenSource` (refreshed once on a 401, never in a loop: a second 401 is
  :class:`~postroom.graph.errors.AuthFailed` for the caller to turn into a status);
* a slot in the (application, mailbox) budget (:mod:`postroom.graph.budget`);
* the never-delete guard (:mod:`postroom.graph.guard`) before any I/O;
* retries only where they are safe: 429 (and 503 with ``Retry-After``) means Graph did not act,
  so any request is retried after ``Retry-After`` with jitter, and the whole mailbox pauses;
  other 5xx, timeouts and connection failures are retried only for idempotent requests (GET,
  PATCH, DELETE-free by construction). A non-idempotent POST (createForward, send, folder
  create) that fails transiently is reported, not repeated: the ledger decides.

The never-delete guard is decided by folder identity: before a request that moves mail or a
folder, or creates a folder, leaves, the destination's ancestry is resolved by id up to
``msgfolderroot`` and refused if it passes Deleted Items or Recoverable Items (whatever the
folders are called; :mod:`postroom.graph.guard`). The ids it needs are cached per process in a
:class:`~postroom.graph.ancestry.FolderAncestry`: the root and protected ids once per mailbox
(one ``$batch``), each folder's parent for a short while, learned for free from listings,
folder reads and the folders Postroom creates. That cache is the only state the client keeps
about mailboxes. It is the only code that knows Graph URLs and JSON shapes.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from postroom import metrics
from postroom.graph import guard
from postroom.graph.ancestry import DEFAULT_ANCESTRY, FolderAncestry, MailboxAnchors
from postroom.graph.budget import DEFAULT_BUDGET, MailboxBudget
from postroom.graph.errors import (
    AccessDenied,
    AuthFailed,
    DeletionRefused,
    GraphError,
    NotFound,
    Throttled,
    TransientError,
    from_response,
)

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)
PREFER_IMMUTABLE = 'IdType="ImmutableId"'
PREFER_TEXT_BODY = 'outlook.body-content-type="text"'
FOLDER_SELECT = "id,parentFolderId"
# Resolved once per mailbox for the guard: the root its ancestry walks end at, and the folders
# whose subtrees are refused (Recoverable Items lies outside the root, so any folder there
# fails to reach it and is refused as well).
ANCHOR_NAMES = ("msgfolderroot", "deleteditems", "recoverableitemsdeletions")
MESSAGE_SELECT = (
    "id,internetMessageId,conversationId,parentFolderId,receivedDateTime,categories,"
    "isRead,hasAttachments,importance"
)


class TokenSource(Protocol):
    """Gives a bearer token for Graph; ``force_refresh`` after a 401."""

    async def __call__(self, *, force_refresh: bool = False) -> str: ...


@dataclass
class DeltaPage:
    """One page of a folder delta: changed messages, removed ids, and where to go next."""

    messages: list[dict[str, Any]]
    removed: list[str]
    next_link: str | None
    delta_link: str | None


@dataclass
class BatchResult:
    id: str
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class GraphClient:
    def __init__(
        self,
        *,
        base_url: str,
        token: TokenSource,
        app_id: str,
        http: httpx.AsyncClient | None = None,
        verify: Any = True,
        budget: MailboxBudget = DEFAULT_BUDGET,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
        max_attempts: int = 5,
        max_backoff: float = 60.0,
        folders: FolderAncestry = DEFAULT_ANCESTRY,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.app_id = app_id
        self._own_http = http is None
        self._http = http or httpx.AsyncClient(timeout=timeout, verify=verify, trust_env=False)
        self._timeout = timeout
        self._budget = budget
        self._max_attempts = max_attempts
        self._max_backoff = max_backoff
        self._folders = folders
        # "me" names a different mailbox per token: never share what it learned.
        self._own_folders = FolderAncestry(ttl=folders.ttl)

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> GraphClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ core
    @staticmethod
    def mailbox_path(mailbox: str) -> str:
        return "/me" if mailbox == "me" else f"/users/{quote(mailbox, safe='@')}"

    async def request(
        self,
        method: str,
        path_or_url: str,
        *,
        mailbox: str | None,
        json: Any = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        idempotent: bool | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        """Send one request; return (status, parsed body, headers) or raise a GraphError."""
        method = method.upper()
        path = path_or_url
        if path_or_url.startswith(self.base_url):
            path = path_or_url[len(self.base_url) :]
        await self._guard(method, path, json, mailbox)
        if idempotent is None:
            idempotent = method in ("GET", "PATCH", "PUT")
        url = path_or_url if path_or_url.startswith("https://") else self.base_url + path
        key = (self.app_id, (mailbox or "-").lower())
        family = metrics.endpoint_family(path)
        force_refresh = False
        refreshed = False
        attempt = 0
        while True:
            attempt += 1
            token = await self._token(force_refresh=force_refresh)
            request_headers = {
                "Authorization": f"Bearer {token}",
                "Prefer": PREFER_IMMUTABLE,
                "Accept": "application/json",
            }
            if headers:
                request_headers.update(headers)
                if "Prefer" in headers and PREFER_IMMUTABLE not in headers["Prefer"]:
                    request_headers["Prefer"] = f"{PREFER_IMMUTABLE}, {headers['Prefer']}"
            try:
                async with self._budget.slot(key):
                    started = time.perf_counter()
                    response = await self._http.request(
                        method,
                        url,
                        json=json,
                        params=params,
                        headers=request_headers,
                        timeout=self._timeout,
                    )
                    metrics.graph_answered(
                        family, method, response.status_code, time.perf_counter() - started
                    )
            except httpx.HTTPError as exc:
                metrics.graph_answered(family, method, "network", None)
                error: GraphError = TransientError(f"{type(exc).__name__}: {exc}")
                if idempotent and attempt < self._max_attempts:
                    await asyncio.sleep(self._backoff(attempt))
                    continue
                raise error from exc
            body = _parse_body(response)
            response_headers = {k.lower(): v for k, v in response.headers.items()}
            if response.status_code < 400:
                return response.status_code, body, response_headers
            error = from_response(response.status_code, body, response_headers)
            if isinstance(error, AuthFailed) and not refreshed:
                refreshed = force_refresh = True
                continue
            force_refresh = False
            if isinstance(error, Throttled):
                # Graph did not act on a throttled request: safe to repeat any method.
                metrics.graph_throttled(family, error.retry_after)
                self._budget.pause(key, error.retry_after)
                if attempt < self._max_attempts:
                    await asyncio.sleep(error.retry_after + random.uniform(0, 0.25))
                    continue
            elif isinstance(error, TransientError) and idempotent:
                if attempt < self._max_attempts:
                    await asyncio.sleep(self._backoff(attempt))
                    continue
            raise error

    def _backoff(self, attempt: int) -> float:
        base: float = min(self._max_backoff, 0.5 * 2 ** (attempt - 1))
        return base * random.uniform(0.5, 1.0)

    async def _guard(self, method: str, path: str, body: Any, mailbox: str | None) -> None:
        # Names and methods first: refusing those needs no I/O at all.
        guard.check_request(method, path, body)
        for named, folder in guard.folder_destinations(method, path, body):
            box = named or mailbox
            if box is None:
                raise DeletionRefused(f"refused {path}: no mailbox to check the folder against")
            await self._check_destination(box, folder)

    def _ancestry(self, mailbox: str) -> FolderAncestry:
        return self._own_folders if mailbox.lower() == "me" else self._folders

    async def _check_destination(self, mailbox: str, folder: str) -> None:
        """Refuse unless ``folder`` lies under ``msgfolderroot`` and outside Deleted Items and
        Recoverable Items, decided by id: its parent chain, read from Graph where not known."""
        if folder.lower() in guard.SAFE_FOLDER_NAMES:
            return
        anchors = await self.mailbox_anchors(mailbox)
        chain: list[str] = []
        current = folder
        for _ in range(guard.MAX_FOLDER_DEPTH):
            chain.append(current)
            if current in anchors.protected or current == anchors.root:
                break
            parent = await self._parent(mailbox, current, is_destination=len(chain) == 1)
            if parent is None or parent in chain:
                chain = []
                break
            current = parent
        else:
            chain = []
        guard.check_ancestry(folder, chain, anchors.protected)
        if not chain or chain[-1] != anchors.root:
            raise DeletionRefused(
                f"refused to put mail into folder {folder!r}: it could not be shown to lie "
                "outside Deleted Items and Recoverable Items"
            )

    async def _parent(self, mailbox: str, folder_id: str, *, is_destination: bool) -> str | None:
        ancestry = self._ancestry(mailbox)
        known, parent = ancestry.parent(mailbox, folder_id)
        if known:
            return parent
        try:
            folder = await self.folder(mailbox, folder_id, select=FOLDER_SELECT)
        except (NotFound, AccessDenied):
            if is_destination:
                raise  # no such folder: the request would fail the same way
            return None  # an ancestor Graph will not show: not provably safe
        parent = folder.get("parentFolderId")
        return parent if isinstance(parent, str) else None

    async def mailbox_anchors(self, mailbox: str) -> MailboxAnchors:
        """The ids of ``msgfolderroot``, Deleted Items and Recoverable Items (Deletions) of a
        mailbox, resolved once per process in one ``$batch``."""
        ancestry = self._ancestry(mailbox)
        cached = ancestry.anchors(mailbox)
        if cached is not None:
            return cached
        base = self.mailbox_path(mailbox)
        found: dict[str, str] = {}
        pending = list(ANCHOR_NAMES)
        key = (self.app_id, mailbox.lower())
        attempt = 0
        while pending:
            attempt += 1
            results = await self.batch(
                [
                    {
                        "id": name,
                        "method": "GET",
                        "url": f"{base}/mailFolders/{name}?$select={FOLDER_SELECT}",
                    }
                    for name in pending
                ],
                mailbox=mailbox,
            )
            answered = {result.id: result for result in results}
            again: list[str] = []
            wait = 0.0
            for name in pending:
                result = answered.get(name)
                if result is None:
                    again.append(name)  # Graph left it out: ask again
                    continue
                if (
                    result.ok
                    and isinstance(result.body, dict)
                    and isinstance(result.body.get("id"), str)
                ):
                    found[name] = result.body["id"]
                    continue
                if result.status in (400, 404):
                    continue  # the mailbox has no such folder
                error = from_response(result.status, result.body, result.headers)
                if isinstance(error, Throttled) and attempt < self._max_attempts:
                    # Throttling is a delay: a $batch item is throttled on its own, and Graph
                    # did not act on it, so ask for it again after its Retry-After.
                    metrics.graph_throttled("folders", error.retry_after)
                    self._budget.pause(key, error.retry_after)
                    wait = max(wait, error.retry_after)
                    again.append(name)
                    continue
                # Transient, denied or throttled too often: decide nothing now, the caller retries.
                raise error
            pending = again
            if pending:
                await asyncio.sleep(wait + random.uniform(0, 0.25))
        anchors = MailboxAnchors(
            root=found.get("msgfolderroot"),
            protected=frozenset(v for k, v in found.items() if k != "msgfolderroot"),
        )
        ancestry.set_anchors(mailbox, anchors)
        return anchors

    async def protected_folder_ids(self, mailbox: str) -> frozenset[str]:
        """Ids of the folders whose subtrees Postroom never puts mail into."""
        return (await self.mailbox_anchors(mailbox)).protected

    async def _pages(
        self, path_or_url: str, *, mailbox: str | None, params: dict[str, str] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        url: str | None = path_or_url
        first = True
        while url:
            _, body, _ = await self.request(
                "GET", url, mailbox=mailbox, params=params if first else None
            )
            first = False
            for item in body.get("value", []):
                yield item
            url = body.get("@odata.nextLink")

    # ------------------------------------------------------------------ directory
    async def me(self) -> dict[str, Any]:
        _, body, _ = await self.request("GET", "/me", mailbox="me")
        return dict(body)

    async def user(self, key: str) -> dict[str, Any]:
        _, body, _ = await self.request("GET", f"/users/{quote(key, safe='@')}", mailbox=None)
        return dict(body)

    async def users(self, *, select: str = "id,displayName,userPrincipalName,mail") -> list[Any]:
        return [u async for u in self._pages("/users", mailbox=None, params={"$select": select})]

    # ------------------------------------------------------------------ folders
    async def folder(self, mailbox: str, key: str, *, select: str | None = None) -> dict[str, Any]:
        _, body, _ = await self.request(
            "GET",
            f"{self.mailbox_path(mailbox)}/mailFolders/{quote(key)}",
            mailbox=mailbox,
            params={"$select": select} if select else None,
        )
        self._ancestry(mailbox).learn_folder(mailbox, body)
        return dict(body)

    async def child_folders(self, mailbox: str, parent: str | None = None) -> list[Any]:
        base = self.mailbox_path(mailbox)
        path = (
            f"{base}/mailFolders/{quote(parent)}/childFolders" if parent else f"{base}/mailFolders"
        )
        found = [f async for f in self._pages(path, mailbox=mailbox, params={"$top": "100"})]
        for folder in found:
            self._ancestry(mailbox).learn_folder(mailbox, folder)
        return found

    async def create_folder(
        self, mailbox: str, display_name: str, parent: str | None = None
    ) -> dict[str, Any]:
        base = self.mailbox_path(mailbox)
        path = (
            f"{base}/mailFolders/{quote(parent)}/childFolders" if parent else f"{base}/mailFolders"
        )
        _, body, _ = await self.request(
            "POST", path, mailbox=mailbox, json={"displayName": display_name}, idempotent=False
        )
        self._ancestry(mailbox).learn_folder(mailbox, body)
        return dict(body)

    # ------------------------------------------------------------------ messages
    async def message(
        self, mailbox: str, message_id: str, *, select: str = MESSAGE_SELECT
    ) -> dict[str, Any]:
        _, body, _ = await self.request(
            "GET",
            f"{self.mailbox_path(mailbox)}/messages/{quote(message_id, safe='')}",
            mailbox=mailbox,
            params={"$select": select},
        )
        return dict(body)

    async def delta(
        self,
        mailbox: str,
        folder: str,
        *,
        link: str | None = None,
        select: str = MESSAGE_SELECT,
        page_size: int = 50,
        received_since: datetime | None = None,
    ) -> DeltaPage:
        """One delta page: from ``link`` (a stored next/delta link) or a fresh start, optionally
        limited to mail received since a moment (Graph bakes the filter into the links).

        Bodies come as plain text (``Prefer: outlook.body-content-type="text"``, sent with
        every page: Graph applies a preference per request, not per link) when ``body`` is in
        the ``$select`` baked into the link."""
        params = None
        url = link
        if url is None:
            url = f"{self.mailbox_path(mailbox)}/mailFolders/{quote(folder)}/messages/delta"
            params = {"$select": select}
            if received_since is not None:
                stamp = received_since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                params["$filter"] = f"receivedDateTime ge {stamp}"
        _, body, _ = await self.request(
            "GET",
            url,
            mailbox=mailbox,
            params=params,
            headers={"Prefer": f"odata.maxpagesize={page_size}, {PREFER_TEXT_BODY}"},
        )
        messages: list[dict[str, Any]] = []
        removed: list[str] = []
        for item in body.get("value", []):
            if "@removed" in item:
                removed.append(item["id"])
            else:
                messages.append(item)
        return DeltaPage(
            messages, removed, body.get("@odata.nextLink"), body.get("@odata.deltaLink")
        )

    async def set_categories(
        self,
        mailbox: str,
        message_id: str,
        categories: list[str],
        *,
        if_match: str | None = None,
    ) -> dict[str, Any]:
        """Replace the message's categories (callers merge with the user's own first).

        ``if_match`` names the change key the caller's copy of the message has (its
        ``@odata.etag``, ``W/"<changeKey>"``): Graph then writes only if nobody changed the
        message since, and answers :class:`~postroom.graph.errors.StaleChangeKey`
        (``ErrorIrresolvableConflict``) otherwise, so a merge made without a fresh read
        cannot drop a category a person added meanwhile."""
        _, body, _ = await self.request(
            "PATCH",
            f"{self.mailbox_path(mailbox)}/messages/{quote(message_id, safe='')}",
            mailbox=mailbox,
            json={"categories": categories},
            headers={"If-Match": if_match} if if_match else None,
        )
        return dict(body)

    async def move(self, mailbox: str, message_id: str, destination: str) -> dict[str, Any]:
        # Idempotent with immutable ids: moving again into the same folder changes nothing.
        _, body, _ = await self.request(
            "POST",
            f"{self.mailbox_path(mailbox)}/messages/{quote(message_id, safe='')}/move",
            mailbox=mailbox,
            json={"destinationId": destination},
            idempotent=True,
        )
        return dict(body)

    async def create_forward(
        self, mailbox: str, message_id: str, *, to: list[str], comment: str | None = None
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "toRecipients": [{"emailAddress": {"address": a}} for a in to],
        }
        if comment:
            payload["comment"] = comment
        _, body, _ = await self.request(
            "POST",
            f"{self.mailbox_path(mailbox)}/messages/{quote(message_id, safe='')}/createForward",
            mailbox=mailbox,
            json=payload,
            idempotent=False,
        )
        return dict(body)

    async def send_draft(self, mailbox: str, draft_id: str) -> None:
        await self.request(
            "POST",
            f"{self.mailbox_path(mailbox)}/messages/{quote(draft_id, safe='')}/send",
            mailbox=mailbox,
            idempotent=False,
        )

    # ------------------------------------------------------------------ categories
    async def master_categories(self, mailbox: str) -> list[Any]:
        path = f"{self.mailbox_path(mailbox)}/outlook/masterCategories"
        return [c async for c in self._pages(path, mailbox=mailbox)]

    async def create_master_category(
        self, mailbox: str, display_name: str, color: str
    ) -> dict[str, Any]:
        _, body, _ = await self.request(
            "POST",
            f"{self.mailbox_path(mailbox)}/outlook/masterCategories",
            mailbox=mailbox,
            json={"displayName": display_name, "color": color},
            idempotent=False,
        )
        return dict(body)

    # ------------------------------------------------------------------ subscriptions
    async def create_subscription(
        self,
        *,
        mailbox: str,
        folder_id: str,
        notification_url: str,
        lifecycle_url: str,
        client_state: str,
        expires: datetime,
    ) -> dict[str, Any]:
        body = {
            "changeType": "created,updated",
            "notificationUrl": notification_url,
            "lifecycleNotificationUrl": lifecycle_url,
            "resource": f"users/{mailbox}/mailFolders('{folder_id}')/messages",
            "expirationDateTime": expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z"),
            "clientState": client_state,
            "latestSupportedTlsVersion": "v1_2",
        }
        _, created, _ = await self.request(
            "POST", "/subscriptions", mailbox=mailbox, json=body, idempotent=False
        )
        return dict(created)

    async def renew_subscription(self, subscription_id: str, expires: datetime) -> dict[str, Any]:
        stamp = expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
        _, body, _ = await self.request(
            "PATCH",
            f"/subscriptions/{quote(subscription_id)}",
            mailbox=None,
            json={"expirationDateTime": stamp},
        )
        return dict(body)

    async def reauthorize_subscription(self, subscription_id: str) -> None:
        await self.request(
            "POST", f"/subscriptions/{quote(subscription_id)}/reauthorize", mailbox=None
        )

    async def delete_subscription(self, subscription_id: str) -> None:
        await self.request(
            "DELETE", f"/subscriptions/{quote(subscription_id)}", mailbox=None, idempotent=True
        )

    # ------------------------------------------------------------------ batch
    async def batch(self, requests: list[dict[str, Any]], *, mailbox: str) -> list[BatchResult]:
        """Send up to 20 requests in one ``$batch``; per-item results, ids as given."""
        if not 1 <= len(requests) <= 20:
            raise ValueError("a $batch holds 1 to 20 requests")
        items = []
        for item in requests:
            item = dict(item)
            item.setdefault("headers", {})
            item["headers"] = {**item["headers"], "Prefer": PREFER_IMMUTABLE}
            if "body" in item:
                item["headers"].setdefault("Content-Type", "application/json")
            items.append(item)
        _, body, _ = await self.request(
            "POST", "/$batch", mailbox=mailbox, json={"requests": items}, idempotent=False
        )
        return [
            BatchResult(
                id=str(r.get("id")),
                status=int(r.get("status", 0)),
                body=r.get("body"),
                headers={k.lower(): v for k, v in (r.get("headers") or {}).items()},
            )
            for r in body.get("responses", [])
        ]


def _parse_body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    content_type = response.headers.get("content-type", "")
    if "json" in content_type:
        try:
            return response.json()
        except ValueError:
            return None
    return response.text
