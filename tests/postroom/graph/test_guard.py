"""The never-delete guard refuses every request that could delete mail, and nothing else."""

from __future__ import annotations

import pytest

from postroom.graph.errors import DeletionRefused
from postroom.graph.guard import check_request

REFUSED = [
    ("DELETE", "/users/u1/messages/AAMk1", None),
    ("DELETE", "/me/messages/AAMk1", None),
    ("delete", "/me/mailFolders/inbox/messages/AAMk1", None),
    ("DELETE", "/me/mailFolders/AAMkFolder", None),
    ("DELETE", "/me/mailFolders('inbox')/childFolders/x", None),
    ("POST", "/me/messages/AAMk1/permanentDelete", None),
    ("POST", "/me/mailFolders/x/permanentDelete", None),
    ("POST", "/me/messages/AAMk1/move", {"destinationId": "deleteditems"}),
    ("POST", "/me/messages/AAMk1/move", {"DestinationId": "DeletedItems"}),
    ("POST", "/me/messages/AAMk1/move", {"destinationId": "recoverableitemsdeletions"}),
    ("POST", "/me/messages/AAMk1/move", {"destinationId": "RecoverableItemsPurges"}),
    ("POST", "/me/messages/AAMk1/move", {"destinationId": "DELETED-ID"}),
    ("POST", "/me/messages/AAMk1/move", {}),
    ("POST", "/me/mailFolders/f1/move", {"destinationId": "deleteditems"}),
    (
        "POST",
        "/$batch",
        {
            "requests": [
                {"id": "1", "method": "GET", "url": "/me"},
                {"id": "2", "method": "DELETE", "url": "/me/messages/x"},
            ]
        },
    ),
    (
        "POST",
        "/$batch",
        {
            "requests": [
                {
                    "id": "1",
                    "method": "POST",
                    "url": "/me/messages/x/move",
                    "body": {"destinationId": "deleteditems"},
                }
            ]
        },
    ),
]

ALLOWED = [
    ("GET", "/me/messages/AAMk1", None),
    ("PATCH", "/me/messages/AAMk1", {"categories": ["Invoices"]}),
    ("POST", "/me/messages/AAMk1/move", {"destinationId": "archive"}),
    ("POST", "/me/messages/AAMk1/move", {"destinationId": "AAMkInvoicesFolder"}),
    ("POST", "/me/messages/AAMk1/createForward", {"toRecipients": []}),
    ("DELETE", "/subscriptions/abc", None),
    ("DELETE", "/me/outlook/masterCategories/abc", None),
    ("POST", "/$batch", {"requests": [{"id": "1", "method": "GET", "url": "/me/messages"}]}),
]


@pytest.mark.parametrize(("method", "path", "body"), REFUSED)
def test_refuses_deleting_requests(method: str, path: str, body: object) -> None:
    with pytest.raises(DeletionRefused):
        check_request(method, path, body, deletion_folder_ids={"DELETED-ID"})


@pytest.mark.parametrize(("method", "path", "body"), ALLOWED)
def test_allows_everything_else(method: str, path: str, body: object) -> None:
    check_request(method, path, body, deletion_folder_ids={"DELETED-ID"})
