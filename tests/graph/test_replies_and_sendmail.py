"""createForward without a body, reply, replyAll, createReply, createReplyAll and sendMail
over HTTPS (issue 16, items 1 and 6)."""

from __future__ import annotations

import base64

import httpx
import pytest

from m365sim.store import Recipient
from tests.graph.mailtools import IMMUTABLE, auth, error_of
from tests.helpers import Org


def _recipient(address: str, name: str = "") -> dict[str, object]:
    return {"emailAddress": {"address": address, "name": name or address}}


def _subjects(org: Org, user_key: str, folder: str) -> list[str]:
    user = org.users[user_key]
    target = user.mailbox.folder(folder)
    assert target is not None
    return [user.mailbox.messages[i].subject for i in target.messages]


def _outbound(org: Org) -> list[tuple[tuple[str, ...], str, bool]]:
    return sorted(
        (tuple(o.to), o.kind, o.internal)
        for o in org.state.store.outbound
        if o.tenant_id == org.tenant.id
    )


# ------------------------------------------------------------------- createForward (item 1)


def test_create_forward_without_a_body_is_microsofts_first_example(
    http: httpx.Client, org: Org
) -> None:
    source = org.deliver(org.alice, subject="Invoice")
    token = org.token(org.alice)
    response = http.post(f"/v1.0/me/messages/{source.rest_id}/createForward", headers=auth(token))
    assert response.status_code == 201, response.text
    draft = response.json()
    assert draft["isDraft"] is True and draft["subject"] == "FW: Invoice"
    assert draft["toRecipients"] == []
    # the recipients come later, by PATCH, then the draft is sent
    patched = http.patch(
        f"/v1.0/me/messages/{draft['id']}",
        json={"toRecipients": [_recipient(org.bob.user_principal_name)]},
        headers=auth(token),
    )
    assert patched.status_code == 200
    sent = http.post(f"/v1.0/me/messages/{patched.json()['id']}/send", headers=auth(token))
    assert sent.status_code == 202
    assert _subjects(org, "bob", "inbox") == ["FW: Invoice"]


def test_create_forward_with_an_empty_object_and_only_a_comment(
    http: httpx.Client, org: Org
) -> None:
    source = org.deliver(org.alice)
    token = org.token(org.alice)
    for body in ({}, {"Comment": "see below"}):
        response = http.post(
            f"/v1.0/me/messages/{source.rest_id}/createForward", json=body, headers=auth(token)
        )
        assert response.status_code == 201, response.text


def test_strict_create_forward_is_a_setting(http: httpx.Client, org: Org) -> None:
    org.state.config.create_forward_requires_recipients = True
    source = org.deliver(org.alice)
    response = http.post(
        f"/v1.0/me/messages/{source.rest_id}/createForward", headers=auth(org.token(org.alice))
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "ErrorInvalidRecipients"
    assert _subjects(org, "alice", "drafts") == []


def test_forward_still_needs_recipients_and_a_body(http: httpx.Client, org: Org) -> None:
    source = org.deliver(org.alice)
    token = org.token(org.alice)
    empty = http.post(f"/v1.0/me/messages/{source.rest_id}/forward", headers=auth(token))
    assert empty.status_code == 400
    none = http.post(
        f"/v1.0/me/messages/{source.rest_id}/forward", json={"Comment": "x"}, headers=auth(token)
    )
    assert error_of(none)["code"] == "ErrorInvalidRecipients"


# ---------------------------------------------------------------------------- replies


def _question(org: Org) -> tuple[str, object]:
    """A message in Alice's Inbox from Carol, to Alice and Bob, cc Dave."""
    msg = org.deliver(org.alice, subject="Question", body="When?", sender="carol@fabrikam.test")
    msg.to = [
        Recipient("Alice", org.alice.user_principal_name),
        Recipient("Bob", org.bob.user_principal_name),
    ]
    msg.cc = [Recipient("Dave", "dave@fabrikam.test")]
    return msg.rest_id, msg


def test_reply_goes_to_the_sender_and_keeps_the_conversation(http: httpx.Client, org: Org) -> None:
    rest_id, msg = _question(org)
    response = http.post(
        f"/v1.0/me/messages/{rest_id}/reply",
        json={"comment": "Tomorrow."},
        headers=auth(org.token(org.alice)),
    )
    assert response.status_code == 202 and response.content == b""
    sent_folder = org.alice.mailbox.folder("sentitems")
    assert sent_folder is not None
    sent = org.alice.mailbox.messages[next(iter(sent_folder.messages))]
    assert sent.subject == "RE: Question"
    assert [r.address for r in sent.to] == ["carol@fabrikam.test"] and sent.cc == []
    assert sent.body_content.startswith("Tomorrow.") and sent.body_content.endswith("When?")
    assert sent.conversation_id == msg.conversation_id  # type: ignore[attr-defined]
    assert _outbound(org) == [(("carol@fabrikam.test",), "reply", False)]


def test_reply_all_leaves_out_the_mailbox_itself(http: httpx.Client, org: Org) -> None:
    rest_id, _ = _question(org)
    response = http.post(
        f"/v1.0/users/{org.alice.id}/messages/{rest_id}/replyAll",
        json={"Comment": "Tomorrow."},
        headers=auth(org.app_token()),
    )
    assert response.status_code == 202, response.text
    assert _subjects(org, "bob", "inbox") == ["RE: Question"]
    assert _outbound(org) == [
        ((org.bob.user_principal_name,), "reply", True),
        (("carol@fabrikam.test", "dave@fabrikam.test"), "reply", False),
    ]


def test_reply_to_header_wins(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice, sender="noreply@shop.test")
    msg.reply_to = [Recipient("Support", "support@shop.test")]
    response = http.post(
        f"/v1.0/me/messages/{msg.rest_id}/reply", headers=auth(org.token(org.alice))
    )
    assert response.status_code == 202, response.text
    assert _outbound(org) == [(("support@shop.test",), "reply", False)]


def test_create_reply_all_then_send(http: httpx.Client, org: Org) -> None:
    rest_id, _ = _question(org)
    token = org.token(org.alice)
    headers = auth(token, **IMMUTABLE)
    created = http.post(f"/v1.0/me/messages/{rest_id}/createReplyAll", headers=headers)
    assert created.status_code == 201, created.text
    draft = created.json()
    assert draft["isDraft"] is True and draft["subject"] == "RE: Question"
    assert [r["emailAddress"]["address"] for r in draft["toRecipients"]] == [
        "carol@fabrikam.test",
        org.bob.user_principal_name,
    ]
    assert [r["emailAddress"]["address"] for r in draft["ccRecipients"]] == ["dave@fabrikam.test"]
    sent = http.post(f"/v1.0/me/messages/{draft['id']}/send", headers=headers)
    assert sent.status_code == 202
    assert {kind for _, kind, _ in _outbound(org)} == {"reply"}
    assert _subjects(org, "alice", "drafts") == []


def test_create_reply_with_message_recipients(http: httpx.Client, org: Org) -> None:
    rest_id, _ = _question(org)
    created = http.post(
        f"/v1.0/me/messages/{rest_id}/createReply",
        json={"message": {"toRecipients": [_recipient("other@fabrikam.test")]}},
        headers=auth(org.token(org.alice)),
    )
    assert created.status_code == 201
    assert [r["emailAddress"]["address"] for r in created.json()["toRecipients"]] == [
        "other@fabrikam.test"
    ]


@pytest.mark.parametrize(
    ("action", "body", "status", "code"),
    [
        (
            "reply",
            {"Comment": "x", "Message": {"body": {"content": "y"}}},
            400,
            "ErrorInvalidRequest",
        ),
        ("replyAll", {"ToRecipients": []}, 400, "RequestBodyRead"),
        ("createReply", {"Message": "x"}, 400, "RequestBodyRead"),
        ("reply", {"Comment": 3}, 400, "RequestBodyRead"),
    ],
)
def test_reply_errors(
    http: httpx.Client, org: Org, action: str, body: object, status: int, code: str
) -> None:
    rest_id, _ = _question(org)
    response = http.post(
        f"/v1.0/me/messages/{rest_id}/{action}", json=body, headers=auth(org.token(org.alice))
    )
    assert response.status_code == status
    assert error_of(response)["code"] == code
    assert _outbound(org) == []


def test_reply_needs_mail_send(http: httpx.Client, org: Org) -> None:
    rest_id, _ = _question(org)
    response = http.post(
        f"/v1.0/users/{org.alice.id}/messages/{rest_id}/reply",
        headers=auth(org.app_token(["Mail.ReadWrite"])),
    )
    assert response.status_code == 403


# ---------------------------------------------------------------------------- sendMail


def test_send_mail_saves_to_sent_items_and_delivers(http: httpx.Client, org: Org) -> None:
    pdf = base64.b64encode(b"%PDF-1.4 invoice").decode()
    response = http.post(
        "/v1.0/me/sendMail",
        json={
            "message": {
                "subject": "Invoice 12",
                "body": {"contentType": "Text", "content": "Attached."},
                "toRecipients": [_recipient(org.bob.user_principal_name)],
                "ccRecipients": [_recipient("ap@fabrikam.test")],
                "attachments": [
                    {
                        "@odata.type": "#microsoft.graph.fileAttachment",
                        "name": "invoice.pdf",
                        "contentType": "application/pdf",
                        "contentBytes": pdf,
                    }
                ],
            },
            "saveToSentItems": True,
        },
        headers=auth(org.token(org.alice)),
    )
    assert response.status_code == 202, response.text
    assert _subjects(org, "alice", "sentitems") == ["Invoice 12"]
    delivered = next(iter(org.bob.mailbox.messages.values()))
    assert delivered.subject == "Invoice 12"
    assert [(a.name, a.content) for a in delivered.attachments] == [
        ("invoice.pdf", b"%PDF-1.4 invoice")
    ]
    assert _outbound(org) == [
        (("ap@fabrikam.test",), "send", False),
        ((org.bob.user_principal_name,), "send", True),
    ]


def test_send_mail_without_saving_a_copy(http: httpx.Client, org: Org) -> None:
    response = http.post(
        f"/v1.0/users/{org.alice.id}/sendMail",
        json={
            "Message": {"subject": "x", "toRecipients": [_recipient("a@fabrikam.test")]},
            "SaveToSentItems": False,
        },
        headers=auth(org.app_token()),
    )
    assert response.status_code == 202, response.text
    assert _subjects(org, "alice", "sentitems") == []
    assert _outbound(org) == [(("a@fabrikam.test",), "send", False)]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"message": {"subject": "no recipients"}}, "ErrorInvalidRecipients"),
        ({}, "ErrorInvalidRequest"),
        ({"message": "text"}, "RequestBodyRead"),
        (
            {"message": {"toRecipients": [_recipient("a@b.test")]}, "saveToSentItems": "no"},
            "RequestBodyRead",
        ),
        (
            {"message": {"toRecipients": [_recipient("a@b.test")], "isDraft": True}},
            "ErrorInvalidPropertySet",
        ),
        ({"message": {"toRecipients": [_recipient("a@b.test")]}, "extra": 1}, "RequestBodyRead"),
        (
            {
                "message": {
                    "toRecipients": [_recipient("a@b.test")],
                    "attachments": [
                        {
                            "@odata.type": "#microsoft.graph.fileAttachment",
                            "name": "x",
                            "contentBytes": "%%%",
                        }
                    ],
                }
            },
            "RequestBodyRead",
        ),
    ],
)
def test_send_mail_errors(http: httpx.Client, org: Org, body: object, code: str) -> None:
    response = http.post("/v1.0/me/sendMail", json=body, headers=auth(org.token(org.alice)))
    assert response.status_code == 400, response.text
    assert error_of(response)["code"] == code
    assert _outbound(org) == [] and _subjects(org, "alice", "sentitems") == []
