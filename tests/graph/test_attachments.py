"""Attachments over HTTPS: from delivered RFC 822 mail (file and item attachments), list, get,
``$value``, and small attachments added to drafts (issue 16, item 6)."""

from __future__ import annotations

import base64

import httpx
import pytest

from m365sim.mime import parse_rfc822
from tests.graph.mailtools import auth, error_of
from tests.helpers import Org

MIME = b"""From: Sanne Visser <sanne@visser.test>
To: alice@example.test
Subject: Order with files
Message-ID: <order-1@visser.test>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: text/plain; charset=utf-8

See the attachments.
--outer
Content-Type: application/pdf; name="order.pdf"
Content-Disposition: attachment; filename="order.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQgb3JkZXI=
--outer
Content-Type: message/rfc822

From: Supplier <supplier@acme.test>
Subject: Original quote
Message-ID: <quote-7@acme.test>

The quote text.
--outer--
"""


def _deliver(http: httpx.Client, org: Org) -> str:
    response = http.post(
        f"/_emulator/mailboxes/{org.alice.id}/deliver",
        content=MIME.replace(b"\n", b"\r\n"),
        headers={"Content-Type": "message/rfc822"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["restId"])


def test_list_get_and_value_of_delivered_attachments(http: httpx.Client, org: Org) -> None:
    message_id = _deliver(http, org)
    token = org.token(org.alice)
    listing = http.get(f"/v1.0/me/messages/{message_id}/attachments", headers=auth(token))
    assert listing.status_code == 200, listing.text
    body = listing.json()
    assert body["@odata.context"].endswith(f"/messages('{message_id}')/attachments")
    file, item = body["value"]
    assert file["@odata.type"] == "#microsoft.graph.fileAttachment"
    assert file["name"] == "order.pdf" and file["contentType"] == "application/pdf"
    assert file["size"] == len(b"%PDF-1.4 order") and file["isInline"] is False
    assert base64.b64decode(file["contentBytes"]) == b"%PDF-1.4 order"
    assert item["@odata.type"] == "#microsoft.graph.itemAttachment"
    assert item["name"] == "Original quote" and item["contentType"] is None
    assert "contentBytes" not in item

    one = http.get(f"/v1.0/me/messages/{message_id}/attachments/{file['id']}", headers=auth(token))
    assert one.status_code == 200
    assert one.json()["@odata.context"].endswith("/attachments/$entity")
    raw = http.get(
        f"/v1.0/me/messages/{message_id}/attachments/{file['id']}/$value", headers=auth(token)
    )
    assert raw.status_code == 200 and raw.content == b"%PDF-1.4 order"
    assert raw.headers["Content-Type"] == "application/pdf"
    inner = http.get(
        f"/v1.0/me/messages/{message_id}/attachments/{item['id']}/$value", headers=auth(token)
    )
    assert inner.status_code == 200
    parsed = parse_rfc822(inner.content, max_bytes=10**6, max_header_bytes=10**5)
    assert parsed.subject == "Original quote" and parsed.body.strip() == "The quote text."


def test_unknown_and_malformed_attachment_ids(http: httpx.Client, org: Org) -> None:
    message_id = _deliver(http, org)
    token = org.token(org.alice)
    unknown = http.get(
        f"/v1.0/me/messages/{message_id}/attachments/AAMkAD{'x' * 40}=", headers=auth(token)
    )
    assert unknown.status_code == 404
    assert error_of(unknown)["code"] == "ErrorItemNotFound"
    malformed = http.get(f"/v1.0/me/messages/{message_id}/attachments/nope", headers=auth(token))
    assert malformed.status_code == 400


def test_add_a_small_attachment_to_a_draft_and_send_it(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    draft = http.post(
        "/v1.0/me/messages",
        json={
            "subject": "Report",
            "toRecipients": [{"emailAddress": {"address": org.bob.user_principal_name}}],
        },
        headers=auth(token),
    ).json()
    before = draft["changeKey"]
    added = http.post(
        f"/v1.0/me/messages/{draft['id']}/attachments",
        json={
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": "report.csv",
            "contentType": "text/csv",
            "contentBytes": base64.b64encode(b"a,b\n1,2\n").decode(),
        },
        headers=auth(token),
    )
    assert added.status_code == 201, added.text
    assert added.json()["name"] == "report.csv" and added.json()["size"] == 8
    item = http.post(
        f"/v1.0/me/messages/{draft['id']}/attachments",
        json={
            "@odata.type": "#microsoft.graph.itemAttachment",
            "name": "Background",
            "item": {"@odata.type": "#microsoft.graph.message", "subject": "Background"},
        },
        headers=auth(token),
    )
    assert item.status_code == 201, item.text
    current = http.get(f"/v1.0/me/messages/{draft['id']}", headers=auth(token)).json()
    assert current["hasAttachments"] is True and current["changeKey"] != before
    assert (
        http.post(f"/v1.0/me/messages/{draft['id']}/send", headers=auth(token)).status_code == 202
    )
    delivered = next(iter(org.bob.mailbox.messages.values()))
    assert [a.name for a in delivered.attachments] == ["report.csv", "Background.eml"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "x", "contentBytes": "eA=="}, 400, "ErrorInvalidRequest"),
        (
            {"@odata.type": "#microsoft.graph.fileAttachment", "contentBytes": "eA=="},
            400,
            "ErrorInvalidRequest",
        ),
        (
            {
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": "x",
                "contentBytes": "not base64!",
            },
            400,
            "RequestBodyRead",
        ),
        (
            {"@odata.type": "#microsoft.graph.fileAttachment", "name": "x"},
            400,
            "ErrorInvalidRequest",
        ),
        (
            {
                "@odata.type": "#microsoft.graph.fileAttachment",
                "name": "x",
                "contentBytes": "eA==",
                "size": 1,
                "bogus": 1,
            },
            400,
            "RequestBodyRead",
        ),
        (
            {"@odata.type": "#microsoft.graph.referenceAttachment", "name": "x"},
            400,
            "ErrorInvalidRequest",
        ),
        ({"@odata.type": "#microsoft.graph.user", "name": "x"}, 400, "RequestBodyRead"),
        (
            {"@odata.type": "#microsoft.graph.itemAttachment", "name": "x", "item": 3},
            400,
            "ErrorInvalidRequest",
        ),
    ],
)
def test_add_attachment_errors(
    http: httpx.Client, org: Org, body: object, status: int, code: str
) -> None:
    token = org.token(org.alice)
    draft = http.post("/v1.0/me/messages", json={"subject": "x"}, headers=auth(token)).json()
    response = http.post(
        f"/v1.0/me/messages/{draft['id']}/attachments", json=body, headers=auth(token)
    )
    assert response.status_code == status, response.text
    assert error_of(response)["code"] == code
    assert not next(iter(org.alice.mailbox.messages.values())).attachments


def test_attachment_size_limit_is_a_setting(http: httpx.Client, org: Org) -> None:
    org.state.config.attachment_max_bytes = 10
    token = org.token(org.alice)
    draft = http.post("/v1.0/me/messages", json={"subject": "x"}, headers=auth(token)).json()
    response = http.post(
        f"/v1.0/me/messages/{draft['id']}/attachments",
        json={
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": "big.bin",
            "contentBytes": base64.b64encode(b"x" * 11).decode(),
        },
        headers=auth(token),
    )
    assert response.status_code == 413
    assert error_of(response)["code"] == "ErrorAttachmentSizeLimitExceeded"


def test_delete_an_attachment(http: httpx.Client, org: Org) -> None:
    message_id = _deliver(http, org)
    token = org.token(org.alice)
    first = http.get(f"/v1.0/me/messages/{message_id}/attachments", headers=auth(token)).json()
    attachment_id = first["value"][0]["id"]
    deleted = http.delete(
        f"/v1.0/me/messages/{message_id}/attachments/{attachment_id}", headers=auth(token)
    )
    assert deleted.status_code == 204
    after = http.get(f"/v1.0/me/messages/{message_id}/attachments", headers=auth(token)).json()
    assert [a["name"] for a in after["value"]] == ["Original quote"]


def test_attachments_need_read_and_write_permissions(http: httpx.Client, org: Org) -> None:
    message_id = _deliver(http, org)
    denied = http.get(
        f"/v1.0/me/messages/{message_id}/attachments",
        headers=auth(org.token(org.alice, ["User.Read"])),
    )
    assert denied.status_code == 403
    read_only = http.post(
        f"/v1.0/me/messages/{message_id}/attachments",
        json={
            "@odata.type": "#microsoft.graph.fileAttachment",
            "name": "x",
            "contentBytes": "eA==",
        },
        headers=auth(org.token(org.alice, ["Mail.Read"])),
    )
    assert read_only.status_code == 403
