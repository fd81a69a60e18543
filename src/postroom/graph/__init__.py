"""The one seam to Microsoft Graph.

Only this package speaks to Graph. :class:`~postroom.graph.client.GraphClient` sends every
request with ``Prefer: IdType="ImmutableId"``, a timeout and the mailbox's budget; translates
every failure once into the tree in :mod:`postroom.graph.errors`; and refuses, before any I/O,
every request that would delete mail (:mod:`postroom.graph.guard`).
"""

from postroom.graph.client import GraphClient, TokenSource
from postroom.graph.errors import (
    AccessDenied,
    AuthFailed,
    Conflict,
    DeletionRefused,
    GraphError,
    NotFound,
    PermanentError,
    StaleChangeKey,
    SyncStateExpired,
    Throttled,
    TransientError,
)

__all__ = [
    "AccessDenied",
    "AuthFailed",
    "Conflict",
    "DeletionRefused",
    "GraphClient",
    "GraphError",
    "NotFound",
    "PermanentError",
    "StaleChangeKey",
    "SyncStateExpired",
    "Throttled",
    "TokenSource",
    "TransientError",
]
