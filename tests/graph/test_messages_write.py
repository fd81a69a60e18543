"""Updating, moving, copying and deleting messages over HTTPS (graph.md 3.5, 3.7)."""

from __future__ import annotations

import httpx
import pytest

from tests.graph.mailtools import IMMUTABLE, auth, error_of
from tests.helpers import Org


def _patch(http: httpx.Client, org: Org, message_id: str, body: object) -> httpx.Response:
    return http.patch(
        f"/v1.0/me/messages/{message_id}", json=body, headers=auth(org.token(org.alice))
    )


def test_patch_categories_replaces_the_whole_array(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice, categories=["Old", "Keep"])
    old_key = msg.change_key
    response = _patch(http, org, msg.rest_id, {"categories": ["Invoices", "Urgent"]})
    assert response.status_code == 200
    body = response.json()
    assert body["categories"] == ["Invoices", "Urgent"]
    assert body["changeKey"] != old_key
    assert body["@odata.etag"] == f'W/"{body["changeKey"]}"'
    assert msg.categories == ["Invoices", "Urgent"]
    # the change was logged for delta/notifications
    log = org.alice.mailbox.logs[msg.folder_id]
    assert log.latest[msg.immutable_id] == log.entries[-1].seq
    assert len(log.entries) == 2


def test_patch_read_flag_importance_and_inference(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    due = {"dateTime": "2024-06-01T10:00:00.0000000", "timeZone": "UTC"}
    start = {"dateTime": "2024-05-31T10:00:00.0000000", "timeZone": "UTC"}
    body = {
        "@odata.type": "#microsoft.graph.message",
        "isRead": True,
        "importance": "HIGH",
        "inferenceClassification": "other",
        "flag": {"flagStatus": "flagged", "startDateTime": start, "dueDateTime": due},
        "id": msg.rest_id,
    }
    response = _patch(http, org, msg.rest_id, body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["isRead"] is True and data["importance"] == "high"
    assert data["inferenceClassification"] == "other"
    assert data["flag"] == {"flagStatus": "flagged", "dueDateTime": due, "startDateTime": start}
    cleared = _patch(http, org, msg.rest_id, {"flag": {"flagStatus": "notFlagged"}}).json()
    assert cleared["flag"] == {"flagStatus": "notFlagged"}


@pytest.mark.parametrize(
    ("body", "code", "fragment"),
    [
        ({"isJunk": True}, "RequestBodyRead", "The property 'isJunk' does not exist on type"),
        ({"isRead": "yes"}, "RequestBodyRead", "to the expected type 'Edm.Boolean'"),
        ({"categories": "Invoices"}, "RequestBodyRead", "A 'StartArray' node was expected"),
        ({"categories": [1]}, "RequestBodyRead", "Cannot convert the literal '1'"),
        ({"categories": None}, "RequestBodyRead", "A null value was found"),
        ({"importance": "urgent"}, "RequestBodyRead", "Requested value 'urgent' was not found."),
        ({"flag": {"flagStatus": "maybe"}}, "RequestBodyRead", "Requested value 'maybe'"),
        ({"receivedDateTime": "2024-01-01T00:00:00Z"}, "ErrorInvalidPropertySet", "Set action"),
        ({"id": "AAMkADsomethingelse000000000000="}, "ErrorInvalidPropertySet", "Set action"),
        ({"toRecipients": []}, "ErrorInvalidPropertySet", "Message is not draft."),
        ({"body": {"contentType": "text", "content": "x"}}, "ErrorInvalidPropertySet", "draft"),
        ({"@odata.type": "#microsoft.graph.event"}, "RequestBodyRead", "could not be resolved"),
    ],
)
def test_patch_rejects_what_graph_rejects(
    http: httpx.Client, org: Org, body: dict[str, object], code: str, fragment: str
) -> None:
    msg = org.deliver(org.alice, categories=["Keep"])
    response = _patch(http, org, msg.rest_id, body)
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == code
    assert fragment in error["message"]
    assert msg.categories == ["Keep"] and msg.importance == "normal"


def test_patch_malformed_and_empty_json(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    headers = auth(org.token(org.alice), **{"Content-Type": "application/json"})
    for payload in (b"{not json", b"", b"[1, 2]"):
        response = http.patch(f"/v1.0/me/messages/{msg.rest_id}", content=payload, headers=headers)
        assert response.status_code == 400
        assert error_of(response)["code"] == "BadRequest"


def test_patch_needs_mail_read_write(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    token = org.token(org.alice, ["Mail.Read"])
    response = http.patch(
        f"/v1.0/me/messages/{msg.rest_id}", json={"isRead": True}, headers=auth(token)
    )
    assert response.status_code == 403
    assert msg.is_read is False


def test_move_with_pascal_case_parameter_renews_rest_id(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    old_rest = msg.rest_id
    archive = org.alice.mailbox.folder("archive")
    assert archive is not None
    response = http.post(
        f"/v1.0/users/{org.alice.id}/messages/{old_rest}/move",
        json={"DestinationId": "archive"},
        headers=auth(org.app_token()),
    )
    assert response.status_code == 201
    body = response.json()
    assert body["parentFolderId"] == archive.id
    assert body["id"] == msg.rest_id != old_rest
    assert body["@odata.context"].endswith("/messages/$entity")
    token = org.token(org.alice)
    gone = http.get(f"/v1.0/me/messages/{old_rest}", headers=auth(token))
    assert gone.status_code == 404
    assert http.get(f"/v1.0/me/messages/{msg.immutable_id}", headers=auth(token)).status_code == 200


def test_move_keeps_immutable_id(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    folder = org.state.store.create_folder(
        org.alice.mailbox, "Invoices", org.alice.mailbox.root_id()
    )
    assert folder is not None
    response = http.post(
        f"/v1.0/me/messages/{msg.immutable_id}/move",
        json={"destinationId": folder.id},
        headers=auth(org.token(org.alice), **IMMUTABLE),
    )
    assert response.status_code == 201
    assert response.json()["id"] == msg.immutable_id
    assert msg.folder_id == folder.id


def test_move_errors(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    token = org.token(org.alice)
    url = f"/v1.0/me/messages/{msg.rest_id}/move"
    unknown = http.post(url, json={"DestinationId": f"AAMkAD{'q' * 40}="}, headers=auth(token))
    assert unknown.status_code == 404 and error_of(unknown)["code"] == "ErrorItemNotFound"
    missing = http.post(url, json={}, headers=auth(token))
    assert missing.status_code == 400 and error_of(missing)["code"] == "ErrorInvalidIdMalformed"
    extra = http.post(url, json={"DestinationId": "archive", "Foo": 1}, headers=auth(token))
    assert extra.status_code == 400 and error_of(extra)["code"] == "RequestBodyRead"
    assert msg.folder_id == org.alice.mailbox.folder("inbox").id  # type: ignore[union-attr]


def test_move_into_deleted_items_is_audited(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    response = http.post(
        f"/v1.0/me/messages/{msg.rest_id}/move",
        json={"destinationId": "DeletedItems"},
        headers=auth(org.token(org.alice)),
    )
    assert response.status_code == 201
    audit = [d for d in org.state.store.deletions if d.message_id == msg.immutable_id]
    assert [d.action for d in audit] == ["move:deleteditems"]
    assert audit[0].client_id == org.app.client_id and audit[0].mailbox_id == org.alice.id


def test_copy_creates_a_new_message(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice, categories=["A"])
    response = http.post(
        f"/v1.0/me/messages/{msg.rest_id}/copy",
        json={"DestinationId": "archive"},
        headers=auth(org.token(org.alice)),
    )
    assert response.status_code == 201
    copy = response.json()
    assert copy["id"] not in (msg.rest_id, msg.immutable_id)
    assert copy["categories"] == ["A"] and copy["subject"] == msg.subject
    assert msg.folder_id == org.alice.mailbox.folder("inbox").id  # type: ignore[union-attr]
    assert len(org.alice.mailbox.messages) == 2


def test_delete_moves_to_deleted_items_then_recoverable_items(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    mailbox = org.alice.mailbox
    token = org.token(org.alice)
    first = http.delete(f"/v1.0/me/messages/{msg.immutable_id}", headers=auth(token))
    assert first.status_code == 204 and first.content == b""
    assert msg.folder_id == mailbox.folder("deleteditems").id  # type: ignore[union-attr]
    second = http.delete(f"/v1.0/me/messages/{msg.immutable_id}", headers=auth(token))
    assert second.status_code == 204
    assert msg.folder_id == mailbox.folder("recoverableitemsdeletions").id  # type: ignore[union-attr]
    actions = [d.action for d in org.state.store.deletions if d.message_id == msg.immutable_id]
    assert actions == ["delete", "delete"]
    assert http.get(f"/v1.0/me/messages/{msg.immutable_id}", headers=auth(token)).status_code == 404


def test_permanent_delete(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    token = org.app_token()
    url = f"/v1.0/users/{org.alice.user_principal_name}/messages/{msg.rest_id}/permanentDelete"
    response = http.post(url, headers=auth(token))
    assert response.status_code == 204
    assert [d.action for d in org.state.store.deletions if d.message_id == msg.immutable_id] == [
        "permanentDelete"
    ]
    listed = http.get(f"/v1.0/users/{org.alice.id}/messages", headers=auth(token)).json()
    assert listed["value"] == []


def test_delete_needs_write_permission(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    denied = http.delete(
        f"/v1.0/users/{org.alice.id}/messages/{msg.rest_id}",
        headers=auth(org.app_token(["Mail.Read"])),
    )
    assert denied.status_code == 403
    assert all(d.message_id != msg.immutable_id for d in org.state.store.deletions)


def test_shared_mailbox_needs_full_access(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.shared)
    url = f"/v1.0/users/{org.shared.user_principal_name}/messages/{msg.rest_id}"
    ok = http.patch(url, json={"categories": ["Orders"]}, headers=auth(org.token(org.alice)))
    assert ok.status_code == 200
    denied = http.patch(url, json={"categories": ["x"]}, headers=auth(org.token(org.bob)))
    assert denied.status_code == 403
    assert msg.categories == ["Orders"]


def test_create_draft(http: httpx.Client, org: Org) -> None:
    response = http.post(
        "/v1.0/me/messages",
        json={
            "subject": "Draft",
            "body": {"contentType": "HTML", "content": "<p>hi</p>"},
            "toRecipients": [{"emailAddress": {"address": "x@fabrikam.test"}}],
        },
        headers=auth(org.token(org.alice)),
    )
    assert response.status_code == 201
    draft = response.json()
    assert draft["isDraft"] is True
    assert draft["body"]["contentType"] == "html"
    assert "<body>\r\n<p>hi</p>\r\n</body>" in draft["body"]["content"]
    assert draft["toRecipients"] == [
        {"emailAddress": {"name": "x@fabrikam.test", "address": "x@fabrikam.test"}}
    ]
    assert draft["parentFolderId"] == org.alice.mailbox.folder("drafts").id  # type: ignore[union-attr]
