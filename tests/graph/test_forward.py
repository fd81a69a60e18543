"""forward, createForward and send over HTTPS (graph.md 3.6)."""

from __future__ import annotations

import httpx
import pytest

from m365sim.store import Message
from tests.graph.mailtools import IMMUTABLE, auth, error_of
from tests.helpers import Org


def _recipient(address: str, name: str = "") -> dict[str, object]:
    return {"emailAddress": {"address": address, "name": name or address}}


def _folder_subjects(org: Org, user_key: str, folder: str) -> list[str]:
    user = org.users[user_key]
    target = user.mailbox.folder(folder)
    assert target is not None
    return [user.mailbox.messages[i].subject for i in target.messages]


def test_forward_saves_sent_copy_delivers_internally_and_records_outbound(
    http: httpx.Client, org: Org
) -> None:
    source = org.deliver(org.alice, subject="Invoice 4711", body="Please pay")
    response = http.post(
        f"/v1.0/users/{org.alice.id}/messages/{source.rest_id}/forward",
        json={
            "Comment": "FYI, for accounts payable",
            "ToRecipients": [
                _recipient(org.bob.user_principal_name.upper(), "Bob"),
                _recipient("ap@fabrikam.test", "AP"),
            ],
        },
        headers=auth(org.app_token()),
    )
    assert response.status_code == 202
    assert response.content == b""
    assert _folder_subjects(org, "alice", "sentitems") == ["FW: Invoice 4711"]
    assert _folder_subjects(org, "bob", "inbox") == ["FW: Invoice 4711"]
    sent = next(
        org.alice.mailbox.messages[i]
        for i in org.alice.mailbox.folder("sentitems").messages  # type: ignore[union-attr]
    )
    assert sent.body_content.startswith("FYI, for accounts payable")
    assert "From: Customer <customer@fabrikam.test>" in sent.body_content
    assert sent.body_content.endswith("Please pay")
    assert sent.is_draft is False and sent.forward_of == source.immutable_id
    delivered = next(iter(org.bob.mailbox.messages.values()))
    assert delivered.from_ is not None and delivered.from_.address == org.alice.user_principal_name
    assert delivered.internet_message_id == sent.internet_message_id
    assert ("Subject", "FW: Invoice 4711") in delivered.headers
    records = [o for o in org.state.store.outbound if o.tenant_id == org.tenant.id]
    assert {(tuple(o.to), o.internal, o.kind) for o in records} == {
        ((org.bob.user_principal_name.upper(),), True, "forward"),
        (("ap@fabrikam.test",), False, "forward"),
    }
    assert all(o.source_message_id == source.immutable_id for o in records)
    assert all(o.comment == "FYI, for accounts payable" for o in records)
    # the source stays where it was
    assert _folder_subjects(org, "alice", "inbox") == ["Invoice 4711"]


def test_forward_with_message_parameter_html(http: httpx.Client, org: Org) -> None:
    source = org.deliver(
        org.alice, subject="Order", body="<html><body><p>Order 1</p></body></html>"
    )
    source.body_type = "html"
    response = http.post(
        f"/v1.0/me/messages/{source.rest_id}/forward",
        json={
            "message": {
                "toRecipients": [_recipient("sales@fabrikam.test")],
                "ccRecipients": [_recipient(org.bob.user_principal_name)],
                "body": {"contentType": "html", "content": "<p>See <i>below</i></p>"},
            }
        },
        headers=auth(org.token(org.alice)),
    )
    assert response.status_code == 202, response.text
    sent_folder = org.alice.mailbox.folder("sentitems")
    assert sent_folder is not None
    sent = org.alice.mailbox.messages[next(iter(sent_folder.messages))]
    assert sent.body_type == "html"
    assert "<p>See <i>below</i></p>" in sent.body_content and "<p>Order 1</p>" in sent.body_content
    assert [r.address for r in sent.cc] == [org.bob.user_principal_name]
    assert _folder_subjects(org, "bob", "inbox") == ["FW: Order"]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"Comment": "x"}, "ErrorInvalidRecipients"),
        (
            {
                "Comment": "x",
                "Message": {"body": {"content": "y"}},
                "ToRecipients": [_recipient("a@fabrikam.test")],
            },
            "ErrorInvalidRequest",
        ),
        (
            {
                "ToRecipients": [_recipient("a@fabrikam.test")],
                "Message": {"toRecipients": [_recipient("b@fabrikam.test")]},
            },
            "ErrorInvalidRequest",
        ),
        (
            {"ToRecipients": [{"emailAddress": {"address": "not-an-address"}}]},
            "ErrorInvalidRecipients",
        ),
        ({"ToRecipients": "a@fabrikam.test"}, "RequestBodyRead"),
        ({"To": [_recipient("a@fabrikam.test")]}, "RequestBodyRead"),
    ],
)
def test_forward_rules(http: httpx.Client, org: Org, body: dict[str, object], code: str) -> None:
    source = org.deliver(org.alice)
    response = http.post(
        f"/v1.0/me/messages/{source.rest_id}/forward", json=body, headers=auth(org.token(org.alice))
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == code
    assert _folder_subjects(org, "alice", "sentitems") == []
    assert not [o for o in org.state.store.outbound if o.tenant_id == org.tenant.id]


def test_forward_needs_mail_send(http: httpx.Client, org: Org) -> None:
    source = org.deliver(org.alice)
    response = http.post(
        f"/v1.0/users/{org.alice.id}/messages/{source.rest_id}/forward",
        json={"ToRecipients": [_recipient("a@fabrikam.test")]},
        headers=auth(org.app_token(["Mail.ReadWrite"])),
    )
    assert response.status_code == 403
    assert error_of(response)["code"] == "ErrorAccessDenied"


def _create_forward(http: httpx.Client, org: Org, source: Message) -> dict[str, object]:
    response = http.post(
        f"/v1.0/me/messages/{source.immutable_id}/createForward",
        json={"ToRecipients": [_recipient("ap@fabrikam.test")], "Comment": "see below"},
        headers=auth(org.token(org.alice), **IMMUTABLE),
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def test_create_forward_then_patch_and_send(http: httpx.Client, org: Org) -> None:
    source = org.deliver(org.alice, subject="Invoice")
    draft = _create_forward(http, org, source)
    assert draft["isDraft"] is True and draft["subject"] == "FW: Invoice"
    assert draft["parentFolderId"] == org.alice.mailbox.folder("drafts").id  # type: ignore[union-attr]
    token = org.token(org.alice)
    headers = auth(token, **IMMUTABLE)
    patched = http.patch(
        f"/v1.0/me/messages/{draft['id']}",
        json={
            "ccRecipients": [_recipient(org.bob.user_principal_name)],
            "subject": "FW: Invoice (urgent)",
        },
        headers=headers,
    )
    assert patched.status_code == 200, patched.text
    sent = http.post(f"/v1.0/me/messages/{draft['id']}/send", headers=headers)
    assert sent.status_code == 202 and sent.content == b""
    assert _folder_subjects(org, "alice", "drafts") == []
    assert _folder_subjects(org, "alice", "sentitems") == ["FW: Invoice (urgent)"]
    assert _folder_subjects(org, "bob", "inbox") == ["FW: Invoice (urgent)"]
    item = http.get(f"/v1.0/me/messages/{draft['id']}", headers=headers).json()
    assert item["isDraft"] is False
    records = [o for o in org.state.store.outbound if o.tenant_id == org.tenant.id]
    assert {(o.internal, o.kind) for o in records} == {(True, "forward"), (False, "forward")}
    again = http.post(f"/v1.0/me/messages/{draft['id']}/send", headers=headers)
    assert again.status_code == 400


def test_send_with_rest_id_twice_is_404(http: httpx.Client, org: Org) -> None:
    source = org.deliver(org.alice)
    token = org.token(org.alice)
    draft = http.post(
        f"/v1.0/me/messages/{source.rest_id}/createForward",
        json={"ToRecipients": [_recipient("ap@fabrikam.test")]},
        headers=auth(token),
    ).json()
    assert (
        http.post(f"/v1.0/me/messages/{draft['id']}/send", headers=auth(token)).status_code == 202
    )
    again = http.post(f"/v1.0/me/messages/{draft['id']}/send", headers=auth(token))
    assert again.status_code == 404
    assert error_of(again)["code"] == "ErrorItemNotFound"


def test_sending_a_received_message_is_refused(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    response = http.post(
        f"/v1.0/me/messages/{msg.rest_id}/send", headers=auth(org.token(org.alice))
    )
    assert response.status_code == 400
    assert _folder_subjects(org, "alice", "sentitems") == []


def test_send_draft_without_recipients(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    draft = http.post("/v1.0/me/messages", json={"subject": "x"}, headers=auth(token)).json()
    response = http.post(f"/v1.0/me/messages/{draft['id']}/send", headers=auth(token))
    assert response.status_code == 400
    assert error_of(response)["code"] == "ErrorInvalidRecipients"
