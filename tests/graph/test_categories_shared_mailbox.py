"""A delegated token may not manage a shared mailbox's master category list (issue 19, item 1).

Graph has no ``MailboxSettings.*.Shared`` permission: a personal connection with FullAccess to a
shared mailbox reads and writes its mail, but its ``outlook/masterCategories`` answers 403
``ErrorAccessDenied``. An app-only token (an organization-wide connection) may.
"""

from __future__ import annotations

import httpx

from tests.graph.mailtools import auth, error_of
from tests.helpers import Org


def test_delegated_master_categories_of_a_shared_mailbox_are_refused(
    http: httpx.Client, org: Org
) -> None:
    token = org.token(org.alice)  # every delegated scope, MailboxSettings.ReadWrite included
    assert org.alice.id in org.shared.full_access
    base = f"/v1.0/users/{org.shared.id}"
    # the mail itself is reachable: FullAccess plus Mail.ReadWrite.Shared
    assert http.get(f"{base}/mailFolders/inbox/messages", headers=auth(token)).status_code == 200
    listed = http.get(f"{base}/outlook/masterCategories", headers=auth(token))
    assert listed.status_code == 403
    assert error_of(listed)["code"] == "ErrorAccessDenied"
    created = http.post(
        f"{base}/outlook/masterCategories",
        json={"displayName": "Invoices", "color": "preset7"},
        headers=auth(token),
    )
    assert created.status_code == 403
    assert error_of(created)["code"] == "ErrorAccessDenied"
    assert list(org.shared.mailbox.categories.values()) == []
    # the signed-in user's own list stays theirs to manage
    own = http.get("/v1.0/me/outlook/masterCategories", headers=auth(token))
    assert own.status_code == 200
    # an organization-wide (app-only) connection may manage the shared mailbox's colours
    app = http.post(
        f"{base}/outlook/masterCategories",
        json={"displayName": "Invoices", "color": "preset7"},
        headers=auth(org.app_token()),
    )
    assert app.status_code == 201
