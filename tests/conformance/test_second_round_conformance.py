"""What issue 16 added conforms to Graph's v1.0 CSDL too: attachments (file and item), the
reply actions' parameter names, and folder delta items."""

from __future__ import annotations

import httpx
import pytest

from m365sim.store import Attachment
from tests.conformance.schema import operation, problems
from tests.graph.mailtools import auth
from tests.helpers import Org


def test_attachments_conform(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    msg.attachments = [
        Attachment("AAMkADfile0000000000000001=", "a.pdf", "application/pdf", b"%PDF"),
        Attachment(
            "AAMkADitem0000000000000001=",
            "Quote.eml",
            "message/rfc822",
            b"Subject: Quote\r\n\r\nx\r\n",
        ),
    ]
    token = org.token(org.alice)
    listed = http.get(f"/v1.0/me/messages/{msg.rest_id}/attachments", headers=auth(token))
    assert listed.status_code == 200
    for item in listed.json()["value"]:
        kind = item["@odata.type"].removeprefix("#microsoft.graph.")
        assert kind in ("fileAttachment", "itemAttachment")
        found = problems(item, kind)
        assert not found, "\n".join(found)


@pytest.mark.parametrize("action", ["reply", "replyAll", "createReply", "createReplyAll"])
def test_reply_actions_accept_the_csdl_parameters(
    http: httpx.Client, org: Org, action: str
) -> None:
    declared = operation(action, "graph.message")
    names = [p["name"] for p in declared["parameters"]]
    assert sorted(names) == ["Comment", "Message"]
    msg = org.deliver(org.alice)
    values = {
        "Comment": "Thanks",
        "Message": {"ccRecipients": [{"emailAddress": {"address": "cc@fabrikam.test"}}]},
    }
    response = http.post(
        f"/v1.0/me/messages/{msg.rest_id}/{action}",
        json={name: values[name] for name in names},
        headers=auth(org.token(org.alice)),
    )
    assert response.status_code == (201 if action.startswith("create") else 202), response.text
    if declared["returnType"]:
        found = problems(response.json(), declared["returnType"])
        assert not found, "\n".join(found)


def test_folder_delta_items_conform(http: httpx.Client, org: Org) -> None:
    response = http.get(
        "/v1.0/me/mailFolders/delta",
        headers=auth(org.token(org.alice), Prefer="odata.maxpagesize=50"),
    )
    assert response.status_code == 200
    found = problems(response.json()["value"], "Collection(graph.mailFolder)")
    assert not found, "\n".join(found)
