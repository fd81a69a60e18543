"""The never-delete guard (invariant 1): a pure check run before any request leaves.

Refused, for messages and for folders (deleting a folder deletes its mail):

* ``DELETE`` on anything under ``messages`` or ``mailFolders`` / ``childFolders``;
* ``POST .../permanentDelete``;
* ``POST .../move`` whose destination is Deleted Items or any Recoverable Items folder, by
  well-known name or by the folder id the caller resolved for them;
* the same requests inside a JSON ``$batch``.

Deleting a subscription or a master category deletes no mail and is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

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


def _destination(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    for key, value in body.items():
        if key.lower() == "destinationid" and isinstance(value, str):
            return value
    return None
