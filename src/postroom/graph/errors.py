"""Graph failures, translated once into a small tree callers decide on.

::

    GraphError                  status, code, message, request_id; .permanent
    ├── TransientError          5xx, timeouts, connection failures: retry with backoff
    │   └── Throttled           429 (and 503 with Retry-After): .retry_after seconds; a delay,
    │                           never a disconnect
    ├── AuthFailed              401: the token is bad or expired; get a new one, never loop
    ├── AccessDenied            403: missing permission, or .by_policy when an Exchange
    │                           application access policy excludes the mailbox
    ├── NotFound                404
    ├── Conflict                409, and ErrorFolderExists whatever its status
    │   └── StaleChangeKey      ErrorIrresolvableConflict (412, or 409): an update named a
    │                           change key the item no longer has; read it again, retry
    ├── SyncStateExpired        410 SyncStateNotFound: start a fresh delta
    ├── PermanentError          other 4xx: a bug or bad input; do not retry
    └── DeletionRefused         raised before any I/O: the request would delete mail

No httpx exception escapes :mod:`postroom.graph`; each is wrapped in one of these with
``raise ... from``.
"""

from __future__ import annotations

from typing import Any


class GraphError(Exception):
    """Base of every failure the Graph client reports."""

    permanent = True

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.request_id = request_id

    def __str__(self) -> str:
        parts = [str(self.status) if self.status else None, self.code, self.message]
        return " ".join(p for p in parts if p)


class TransientError(GraphError):
    permanent = False


class Throttled(TransientError):
    def __init__(self, message: str, *, retry_after: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class AuthFailed(GraphError):
    pass


class AccessDenied(GraphError):
    @property
    def by_policy(self) -> bool:
        """True when an application access policy (or RBAC for Applications) excluded the
        mailbox: Exchange says "Access to OData is disabled." in that case."""
        return "odata is disabled" in self.message.lower()


class NotFound(GraphError):
    pass


class Conflict(GraphError):
    pass


class StaleChangeKey(Conflict):
    """An update with ``If-Match`` naming a stale change key: a person (or another client)
    changed the item since it was read. Nothing was written."""


class SyncStateExpired(GraphError):
    pass


class PermanentError(GraphError):
    pass


class DeletionRefused(GraphError):
    """The client refused to send a request that would delete mail (invariant 1)."""


def parse_retry_after(value: str | None, default: float) -> float:
    if value is None:
        return default
    try:
        seconds = float(value)
    except ValueError:
        return default
    return seconds if seconds >= 0 else default


def from_response(
    status: int, body: Any, headers: dict[str, str], *, default_retry_after: float = 5.0
) -> GraphError:
    """Translate a Graph error response into the tree."""
    code: str | None = None
    message = f"Graph answered {status}"
    request_id = headers.get("request-id")
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = body["error"]
        code = error.get("code") if isinstance(error.get("code"), str) else None
        if isinstance(error.get("message"), str):
            message = error["message"]
        inner = error.get("innerError")
        if isinstance(inner, dict) and isinstance(inner.get("request-id"), str):
            request_id = inner["request-id"]
    kwargs: dict[str, Any] = {"status": status, "code": code, "request_id": request_id}
    retry_after = headers.get("retry-after")
    if status == 429 or (status == 503 and retry_after is not None):
        return Throttled(
            message, retry_after=parse_retry_after(retry_after, default_retry_after), **kwargs
        )
    if status >= 500 or status == 408:
        return TransientError(message, **kwargs)
    if code == "ErrorIrresolvableConflict" or status == 412:
        return StaleChangeKey(message, **kwargs)
    if code == "ErrorFolderExists" or status == 409:
        return Conflict(message, **kwargs)
    if status == 401:
        return AuthFailed(message, **kwargs)
    if status == 403:
        return AccessDenied(message, **kwargs)
    if status == 404:
        return NotFound(message, **kwargs)
    if status == 410 or code in ("SyncStateNotFound", "syncStateNotFound", "resyncRequired"):
        return SyncStateExpired(message, **kwargs)
    return PermanentError(message, **kwargs)
