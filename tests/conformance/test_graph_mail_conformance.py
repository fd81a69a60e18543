"""Everything the emulator's mail endpoints return conforms to Graph's v1.0 CSDL.

Each response is fetched over HTTPS and checked property by property against the checked-in
extract: names exist on the type (with base types), values have the declared JSON shape, enum
values are members. Action parameter names come from the CSDL too, so a renamed parameter in
the emulator (or in Graph) fails here.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from m365sim.store import Attachment
from tests.conformance.schema import operation, problems
from tests.graph.mailtools import IMMUTABLE, auth
from tests.helpers import Org


def _assert_conforms(value: Any, type_name: str) -> None:
    found = problems(value, type_name)
    assert not found, "\n".join(found)


@pytest.fixture
def rich_message(http: httpx.Client, org: Org) -> str:
    """A message using every property the emulator writes; returns its REST id."""
    msg = org.deliver(org.alice, subject="Invoice", body="<p>Pay <b>now</b></p>")
    msg.body_type = "html"
    msg.cc = list(msg.to)
    msg.reply_to = list(msg.to)
    msg.headers = [("Received", "from mx"), ("X-Priority", "1")]
    msg.attachments = [Attachment("a1", "invoice.pdf", "application/pdf", b"%PDF")]
    response = http.patch(
        f"/v1.0/me/messages/{msg.rest_id}",
        json={
            "categories": ["Invoices"],
            "importance": "high",
            "flag": {
                "flagStatus": "flagged",
                "startDateTime": {"dateTime": "2024-06-01T08:00:00", "timeZone": "UTC"},
                "dueDateTime": {"dateTime": "2024-06-02T08:00:00", "timeZone": "UTC"},
            },
        },
        headers=auth(org.token(org.alice)),
    )
    assert response.status_code == 200
    return msg.rest_id


def test_message_with_every_property(http: httpx.Client, org: Org, rich_message: str) -> None:
    from m365sim.graph.serialize import MESSAGE_SELECTABLE

    select = ",".join(MESSAGE_SELECTABLE)
    body = http.get(
        f"/v1.0/me/messages/{rich_message}?$select={select}", headers=auth(org.token(org.alice))
    ).json()
    assert set(MESSAGE_SELECTABLE) <= set(body)
    _assert_conforms(body, "message")


def test_message_lists_delta_and_action_results(
    http: httpx.Client, org: Org, rich_message: str
) -> None:
    token = org.token(org.alice)
    listed = http.get("/v1.0/me/messages", headers=auth(token)).json()["value"]
    _assert_conforms(listed, "Collection(graph.message)")
    delta = http.get("/v1.0/me/mailFolders/inbox/messages/delta", headers=auth(token)).json()
    _assert_conforms(delta["value"], "Collection(graph.message)")
    draft = http.post(
        f"/v1.0/me/messages/{rich_message}/createForward",
        json={"ToRecipients": [{"emailAddress": {"address": "ap@fabrikam.test"}}]},
        headers=auth(token),
    ).json()
    _assert_conforms(draft, "message")
    moved = http.post(
        f"/v1.0/me/messages/{rich_message}/move",
        json={"DestinationId": "archive"},
        headers=auth(token, **IMMUTABLE),
    ).json()
    _assert_conforms(moved, "message")
    removed = http.get(delta["@odata.deltaLink"], headers=auth(token)).json()["value"]
    assert removed and all(set(r) == {"@odata.type", "id", "@removed"} for r in removed)
    _assert_conforms(removed, "Collection(graph.message)")


def test_mail_folders(http: httpx.Client, org: Org) -> None:
    org.deliver(org.alice)
    token = org.token(org.alice)
    created = http.post(
        "/v1.0/me/mailFolders", json={"displayName": "Invoices"}, headers=auth(token)
    ).json()
    _assert_conforms(created, "mailFolder")
    listed = http.get("/v1.0/me/mailFolders?includeHiddenFolders=true", headers=auth(token))
    _assert_conforms(listed.json()["value"], "Collection(graph.mailFolder)")
    root = http.get("/v1.0/me/mailFolders/msgfolderroot", headers=auth(token)).json()
    _assert_conforms(root, "mailFolder")


def test_master_categories(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    created = http.post(
        "/v1.0/me/outlook/masterCategories",
        json={"displayName": "Urgent", "color": "preset0"},
        headers=auth(token),
    ).json()
    _assert_conforms(created, "outlookCategory")
    listed = http.get("/v1.0/me/outlook/masterCategories", headers=auth(token)).json()
    _assert_conforms(listed["value"], "Collection(graph.outlookCategory)")


def _parameter_names(name: str) -> list[str]:
    return [p["name"] for p in operation(name, "graph.message")["parameters"]]


@pytest.mark.parametrize("action", ["move", "copy"])
def test_destination_actions_accept_the_csdl_parameter(
    http: httpx.Client, org: Org, action: str
) -> None:
    assert _parameter_names(action) == ["DestinationId"]
    msg = org.deliver(org.alice)
    token = org.token(org.alice)
    for name in ("DestinationId", "destinationId"):
        response = http.post(
            f"/v1.0/me/messages/{msg.immutable_id}/{action}",
            json={name: "archive"},
            headers=auth(token),
        )
        assert response.status_code == 201, response.text
        _assert_conforms(response.json(), operation(action, "graph.message")["returnType"])


@pytest.mark.parametrize("action", ["forward", "createForward"])
def test_forward_actions_accept_the_csdl_parameters(
    http: httpx.Client, org: Org, action: str
) -> None:
    names = _parameter_names(action)
    assert sorted(names) == ["Comment", "Message", "ToRecipients"]
    msg = org.deliver(org.alice)
    values = {
        "ToRecipients": [{"emailAddress": {"address": "ap@fabrikam.test"}}],
        "Comment": "see below",
        "Message": {"ccRecipients": [{"emailAddress": {"address": "cc@fabrikam.test"}}]},
    }
    response = http.post(
        f"/v1.0/me/messages/{msg.rest_id}/{action}",
        json={name: values[name] for name in names},
        headers=auth(org.token(org.alice)),
    )
    assert response.status_code == (202 if action == "forward" else 201), response.text
    not_declared = http.post(
        f"/v1.0/me/messages/{msg.rest_id}/{action}",
        json={"ToRecipients": values["ToRecipients"], "Recipients": []},
        headers=auth(org.token(org.alice)),
    )
    assert not_declared.status_code == 400


def test_parameterless_actions(http: httpx.Client, org: Org) -> None:
    assert _parameter_names("send") == [] and _parameter_names("permanentDelete") == []
    msg = org.deliver(org.alice)
    response = http.post(
        f"/v1.0/me/messages/{msg.rest_id}/permanentDelete", headers=auth(org.token(org.alice))
    )
    assert response.status_code == 204
