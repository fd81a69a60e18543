"""The never-delete guard (invariant 1): a pure check run before any request leaves.

Refused, for messages and for folders (deleting a folder deletes its mail):

* ``DELETE`` on anything under ``messages`` or ``mailFolders`` / ``childFolders``;
* ``POST .../permanentDelete``;
* ``POST .../move`` whose destination is Deleted Items or any Recoverable Items folder, by
  well-known name or by the folder id the caller resolved for them;
* the same requests inside a JSON ``$batch``.

Deleting a subscription or a master category deletes no mail and is allowed.

That check needs no I/O. The rule itself is decided by folder *identity*:
:func:`folder_destinations` names every folder a request would put mail or a folder into (a
move's ``destinationId``, the parent of ``POST .../childFolders``), and the client
(:meth:`postroom.graph.client.GraphClient._guard`) refuses the request unless that folder's
ancestry, by id, reaches ``msgfolderroot`` without passing Deleted Items or Recoverable Items
(:func:`check_ancestry`). A folder named anything at all that lies beneath Deleted Items is
refused the same as Deleted Items itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote

from postroom.graph.errors import DeletionRefused

DELETION_FOLDER_NAMES = frozenset(
    {
        "deleteditems",
        "recoverableitemsdeletions",
        "recoverableitemspurges",
        "recoverableitemsroot",
        "recoverableitemsversions",
    }
)
_MAIL_SEGMENTS = frozenset({"messages", "mailfolders", "childfolders"})
# Well-known folders outside the deletion subtrees: a destination given by one of these names
# needs no ancestry check (Graph resolves them per mailbox; none lies in Deleted Items).
SAFE_FOLDER_NAMES = frozenset(
    {
        "archive",
        "clutter",
        "conflicts",
        "conversationhistory",
        "drafts",
        "inbox",
        "junkemail",
        "localfailures",
        "msgfolderroot",
        "outbox",
        "scheduled",
        "searchfolders",
        "sentitems",
        "serverfailures",
        "syncissues",
    }
)
MAX_FOLDER_DEPTH = 64


def _segments(path: str) -> list[str]:
    path = path.split("?", 1)[0]
    out: list[str] = []
    for raw in path.strip("/").split("/"):
        # OData key syntax: mailFolders('inbox') -> mailfolders, inbox
        name, _, key = raw.partition("(")
        out.append(name.lower())
        if key:
            out.append(key.rstrip(")").strip("'\"").lower())
    return out


def check_request(
    method: str,
    path: str,
    body: Any = None,
    *,
    deletion_folder_ids: Iterable[str] = (),
) -> None:
    """Raise :class:`DeletionRefused` if this request could delete mail."""
    method = method.upper()
    segments = _segments(path)
    if not segments:
        return
    if segments[-1] == "$batch" and isinstance(body, dict):
        for item in body.get("requests") or []:
            if isinstance(item, dict):
                check_request(
                    str(item.get("method", "GET")),
                    str(item.get("url", "")),
                    item.get("body"),
                    deletion_folder_ids=deletion_folder_ids,
                )
        return
    touches_mail = any(s in _MAIL_SEGMENTS for s in segments)
    if method == "DELETE" and touches_mail:
        raise DeletionRefused(f"refused to send DELETE {path}: Postroom never deletes mail")
    if method == "POST" and segments[-1] == "permanentdelete":
        raise DeletionRefused(f"refused to send {path}: Postroom never deletes mail")
    if method == "POST" and segments[-1] == "move" and touches_mail:
        destination = _destination(body)
        forbidden = {i.lower() for i in deletion_folder_ids} | DELETION_FOLDER_NAMES
        if destination is None or destination.lower() in forbidden:
            raise DeletionRefused(
                f"refused to move into {destination!r}: Postroom never deletes mail"
            )


def folder_destinations(method: str, path: str, body: Any = None) -> list[tuple[str | None, str]]:
    """Every folder this request would put mail or a folder into, as (mailbox named in the
    path or None, folder id or well-known name), case kept (ids are case-sensitive).

    A message or folder ``move`` names its ``destinationId``; ``POST .../childFolders``
    creates a folder inside its parent. Requests inside a ``$batch`` are included. A move
    without a destination is refused by :func:`check_request` already."""
    method = method.upper()
    raw = _raw_segments(path)
    lowered = [s.lower() for s in raw]
    if not raw or method != "POST":
        return []
    if lowered[-1] == "$batch" and isinstance(body, dict):
        found: list[tuple[str | None, str]] = []
        for item in body.get("requests") or []:
            if isinstance(item, dict):
                found.extend(
                    folder_destinations(
                        str(item.get("method", "GET")), str(item.get("url", "")), item.get("body")
                    )
                )
        return found
    mailbox = _path_mailbox(raw)
    if lowered[-1] == "move" and any(s in _MAIL_SEGMENTS for s in lowered):
        destination = _destination(body)
        return [(mailbox, destination)] if destination else []
    if lowered[-1] == "childfolders" and len(raw) >= 2:
        return [(mailbox, raw[-2])]
    return []


def check_ancestry(destination: str, chain: list[str], protected: Iterable[str]) -> None:
    """Refuse unless ``chain`` — the destination folder's id, then its parent's, up to and
    including ``msgfolderroot`` — passes no protected folder (Deleted Items, Recoverable
    Items). A chain that did not reach the root is the caller's to refuse."""
    forbidden = set(protected)
    for folder_id in chain:
        if folder_id in forbidden:
            raise DeletionRefused(
                f"refused to put mail into folder {destination!r}: it lies in Deleted Items or "
                "Recoverable Items, and Postroom never deletes mail"
            )


def _raw_segments(path: str) -> list[str]:
    path = path.split("?", 1)[0]
    if "://" in path:
        path = path.split("://", 1)[1].partition("/")[2]
    out: list[str] = []
    for raw in path.strip("/").split("/"):
        name, _, key = unquote(raw).partition("(")
        out.append(name)
        if key:
            out.append(key.rstrip(")").strip("'\""))
    return out


def _path_mailbox(raw: list[str]) -> str | None:
    lowered = [s.lower() for s in raw]
    if "me" in lowered:
        return "me"
    if "users" in lowered:
        index = lowered.index("users")
        if index + 1 < len(raw):
            return raw[index + 1]
    return None


def _destination(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    for key, value in body.items():
        if key.lower() == "destinationid" and isinstance(value, str):
            return value
    return None
