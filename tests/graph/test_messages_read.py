"""Listing and reading messages over HTTPS: shapes, ids, paging, OData (graph.md 3.2-3.3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from m365sim.store import Message
from tests.graph.mailtools import IMMUTABLE, auth, error_of
from tests.helpers import Org

T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def _inbox(org: Org, count: int, **kwargs: object) -> list[Message]:
    return [
        org.deliver(org.alice, subject=f"Mail {i}", received=T0 + timedelta(hours=i), **kwargs)  # type: ignore[arg-type]
        for i in range(count)
    ]


def test_message_json_has_graphs_default_properties(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice, subject="Invoice 4711", body="<p>Please <b>pay</b></p>")
    msg.body_type = "html"
    response = http.get(f"/v1.0/me/messages/{msg.rest_id}", headers=auth(org.token(org.alice)))
    assert response.status_code == 200
    body = response.json()
    assert body["@odata.context"].endswith(f"$metadata#users('{org.alice.id}')/messages/$entity")
    assert body["@odata.etag"] == f'W/"{msg.change_key}"'
    assert response.headers["ETag"] == body["@odata.etag"]
    assert body["id"] == msg.rest_id
    assert body["parentFolderId"] == org.alice.mailbox.folder("inbox").id  # type: ignore[union-attr]
    assert body["subject"] == "Invoice 4711"
    assert body["bodyPreview"] == "Please pay"
    # Outlook stores (and returns) an HTML body as a whole document
    assert body["body"] == {
        "contentType": "html",
        "content": '<html><head>\r\n<meta http-equiv="Content-Type" content="text/html; '
        'charset=utf-8">\r\n</head>\r\n<body>\r\n<p>Please <b>pay</b></p>\r\n</body>\r\n'
        "</html>\r\n",
    }
    assert response.headers["OData-Version"] == "4.0"
    assert body["from"] == {
        "emailAddress": {"name": "Customer", "address": "customer@fabrikam.test"}
    }
    assert body["flag"] == {"flagStatus": "notFlagged"}
    assert body["receivedDateTime"].endswith("Z") and "." not in body["receivedDateTime"]
    assert "uniqueBody" not in body and "internetMessageHeaders" not in body
    expected = [
        "@odata.context", "@odata.etag", "id", "createdDateTime", "lastModifiedDateTime",
        "changeKey", "categories", "receivedDateTime", "sentDateTime", "hasAttachments",
        "internetMessageId", "subject", "bodyPreview", "importance", "parentFolderId",
        "conversationId", "conversationIndex", "isDeliveryReceiptRequested",
        "isReadReceiptRequested", "isRead", "isDraft", "webLink", "inferenceClassification",
        "body", "sender", "from", "toRecipients", "ccRecipients", "bccRecipients", "replyTo",
        "flag",
    ]  # fmt: skip
    assert list(body) == expected


def test_body_preview_is_255_characters_of_text(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice, body="word " * 200)
    body = http.get(f"/v1.0/me/messages/{msg.rest_id}", headers=auth(org.token(org.alice))).json()
    assert len(body["bodyPreview"]) == 255
    assert body["bodyPreview"].startswith("word word")


def test_prefer_text_body_converts_html(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(
        org.alice, body="<html><body><p>Hello</p><p>World &amp; more</p></body></html>"
    )
    msg.body_type = "html"
    headers = auth(org.token(org.alice), Prefer='outlook.body-content-type="text"')
    response = http.get(f"/v1.0/me/messages/{msg.rest_id}", headers=headers)
    assert response.json()["body"] == {
        "contentType": "text",
        "content": "Hello\r\n\r\nWorld & more",
    }
    assert response.headers["Preference-Applied"] == 'outlook.body-content-type="text"'


def test_immutable_ids_on_request(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    token = org.token(org.alice)
    listed = http.get("/v1.0/me/messages", headers=auth(token, **IMMUTABLE)).json()["value"]
    assert [m["id"] for m in listed] == [msg.immutable_id]
    # either id form finds the message
    for key in (msg.immutable_id, msg.rest_id):
        got = http.get(f"/v1.0/me/messages/{key}", headers=auth(token))
        assert got.status_code == 200 and got.json()["id"] == msg.rest_id


def test_unknown_and_malformed_ids(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    unknown = http.get(f"/v1.0/me/messages/AAMkAD{'x' * 60}=", headers=auth(token))
    assert unknown.status_code == 404
    assert error_of(unknown)["code"] == "ErrorItemNotFound"
    malformed = http.get("/v1.0/me/messages/not an id", headers=auth(token))
    assert malformed.status_code == 400
    assert error_of(malformed) | {"innerError": None} == {
        "code": "ErrorInvalidIdMalformed",
        "message": "Id is malformed.",
        "innerError": None,
    }


def test_folder_scoped_get_only_finds_messages_in_that_folder(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    token = org.token(org.alice)
    ok = http.get(f"/v1.0/me/mailFolders/inbox/messages/{msg.rest_id}", headers=auth(token))
    assert ok.status_code == 200
    other = http.get(f"/v1.0/me/mailFolders('archive')/messages/{msg.rest_id}", headers=auth(token))
    assert other.status_code == 404


def test_default_order_is_received_desc_and_paging_follows_next_link(
    http: httpx.Client, org: Org
) -> None:
    _inbox(org, 23)
    token = org.token(org.alice)
    upn = org.alice.user_principal_name
    url: str | None = f"/v1.0/users/{upn}/mailFolders/inbox/messages?$select=subject"
    subjects: list[str] = []
    pages = 0
    while url:
        response = http.get(url, headers=auth(token))
        assert response.status_code == 200
        body = response.json()
        assert (
            list(body)[:2] == ["@odata.context", "@odata.nextLink"] or "@odata.nextLink" not in body
        )
        assert all(set(m) == {"@odata.etag", "id", "subject"} for m in body["value"])
        subjects += [m["subject"] for m in body["value"]]
        url = body.get("@odata.nextLink")
        pages += 1
        if url:
            assert "$skiptoken=" in url and "$select=subject" in url
    assert pages == 3  # default page size 10
    assert subjects == [f"Mail {i}" for i in range(22, -1, -1)]


def test_top_and_maxpagesize(http: httpx.Client, org: Org) -> None:
    _inbox(org, 5)
    token = org.token(org.alice)
    top = http.get("/v1.0/me/messages?$top=2", headers=auth(token)).json()
    assert len(top["value"]) == 2 and "$top=2" in top["@odata.nextLink"]
    preferred = http.get("/v1.0/me/messages", headers=auth(token, Prefer="odata.maxpagesize=3"))
    assert len(preferred.json()["value"]) == 3
    assert preferred.headers["Preference-Applied"] == "odata.maxpagesize=3"
    for bad in ("0", "1001", "abc", "-1"):
        response = http.get(f"/v1.0/me/messages?$top={bad}", headers=auth(token))
        assert response.status_code == 400, bad


def test_count(http: httpx.Client, org: Org) -> None:
    _inbox(org, 3)
    body = http.get("/v1.0/me/messages?$count=true&$top=1", headers=auth(org.token(org.alice)))
    assert body.json()["@odata.count"] == 3


def test_select_unknown_property_is_parse_uri_error(http: httpx.Client, org: Org) -> None:
    org.deliver(org.alice)
    response = http.get(
        "/v1.0/me/messages?$select=subject,isJunk", headers=auth(org.token(org.alice))
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "RequestBroker--ParseUri"
    assert error["message"] == (
        "Could not find a property named 'isJunk' on type 'microsoft.graph.message'."
    )


def test_select_only_properties(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    msg.headers = [("X-Mailer", "Test")]
    url = f"/v1.0/me/messages/{msg.rest_id}?$select=uniqueBody,internetMessageHeaders"
    body = http.get(url, headers=auth(org.token(org.alice))).json()
    assert body["@odata.context"].endswith("/messages(uniqueBody,internetMessageHeaders)/$entity")
    assert body["internetMessageHeaders"] == [{"name": "X-Mailer", "value": "Test"}]
    assert body["uniqueBody"] == {"contentType": "text", "content": "Body text"}
    assert "subject" not in body


def _subjects(http: httpx.Client, org: Org, query: str) -> list[str]:
    response = http.get(f"/v1.0/me/messages?{query}&$top=50", headers=auth(org.token(org.alice)))
    assert response.status_code == 200, response.text
    return [m["subject"] for m in response.json()["value"]]


def test_filter_received_date_time(http: httpx.Client, org: Org) -> None:
    _inbox(org, 5)
    assert _subjects(http, org, "$filter=receivedDateTime ge 2024-05-01T11:00:00Z") == [
        "Mail 4",
        "Mail 3",
    ]
    assert _subjects(http, org, "$filter=receivedDateTime gt 2024-05-01T11:00:00Z") == ["Mail 4"]
    assert _subjects(
        http,
        org,
        "$filter=receivedDateTime ge 2024-05-01T09:00:00Z"
        " and receivedDateTime lt 2024-05-01T11:00:00Z",
    ) == ["Mail 2", "Mail 1"]
    assert _subjects(http, org, "$filter=receivedDateTime le 2024-05-01T08:00:00Z") == ["Mail 0"]
    assert _subjects(http, org, "$filter=receivedDateTime eq 2024-05-01T10:00:00Z") == ["Mail 2"]


def test_filter_is_read_and_categories(http: httpx.Client, org: Org) -> None:
    org.deliver(org.alice, subject="read", is_read=True, received=T0)
    org.deliver(org.alice, subject="invoice", categories=["Invoices"], received=T0 + timedelta(1))
    org.deliver(org.alice, subject="both", categories=["Urgent"], received=T0 + timedelta(2))
    assert _subjects(http, org, "$filter=isRead eq true") == ["read"]
    assert _subjects(http, org, "$filter=isRead eq false") == ["both", "invoice"]
    assert _subjects(http, org, "$filter=categories/any(c:c eq 'Invoices')") == ["invoice"]
    assert _subjects(
        http, org, "$filter=categories/any(c:c eq 'invoices') or categories/any(x:x eq 'Urgent')"
    ) == ["both", "invoice"]
    assert _subjects(http, org, "$filter=not (isRead eq false)") == ["read"]
    assert _subjects(
        http, org, "$filter=from/emailAddress/address eq 'CUSTOMER@fabrikam.test'"
    ) == [
        "both",
        "invoice",
        "read",
    ]
    assert _subjects(http, org, "$filter=startswith(subject,'inv')") == ["invoice"]


@pytest.mark.parametrize(
    "expression",
    ["isRead eq", "isRead eq true and", "(isRead eq true", "subject eq 'open", "isRead xx true"],
)
def test_filter_syntax_errors(http: httpx.Client, org: Org, expression: str) -> None:
    response = http.get(
        f"/v1.0/me/messages?$filter={expression}", headers=auth(org.token(org.alice))
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "BadRequest"
    assert error["message"].startswith("Invalid filter clause")


def test_filter_type_and_property_errors(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    wrong_type = http.get("/v1.0/me/messages?$filter=isRead eq 'yes'", headers=auth(token))
    assert wrong_type.status_code == 400
    assert "incompatible types" in error_of(wrong_type)["message"]
    unknown = http.get("/v1.0/me/messages?$filter=isJunk ne true", headers=auth(token))
    assert unknown.status_code == 400
    assert error_of(unknown)["code"] == "RequestBroker--ParseUri"


def test_orderby_and_inefficient_filter(http: httpx.Client, org: Org) -> None:
    org.deliver(org.alice, subject="b", received=T0)
    org.deliver(org.alice, subject="a", received=T0 + timedelta(1))
    org.deliver(org.alice, subject="c", received=T0 + timedelta(2), is_read=True)
    assert _subjects(http, org, "$orderby=subject") == ["a", "b", "c"]
    assert _subjects(http, org, "$orderby=receivedDateTime asc") == ["b", "a", "c"]
    ok = "$filter=receivedDateTime ge 2024-01-01T00:00:00Z and isRead eq false"
    assert _subjects(http, org, ok + "&$orderby=receivedDateTime desc") == ["a", "b"]
    token = org.token(org.alice)
    for query in (
        "$filter=isRead eq false&$orderby=receivedDateTime desc",
        "$filter=isRead eq false and receivedDateTime ge 2024-01-01&$orderby=receivedDateTime desc",
    ):
        response = http.get(f"/v1.0/me/messages?{query}", headers=auth(token))
        assert response.status_code == 400
        assert error_of(response) | {"innerError": None} == {
            "code": "InefficientFilter",
            "message": "The restriction or sort order is too complex for this operation.",
            "innerError": None,
        }


def test_all_messages_span_folders_but_not_recoverable_items(http: httpx.Client, org: Org) -> None:
    org.deliver(org.alice, subject="inbox")
    org.deliver(org.alice, subject="archived", folder="archive")
    org.deliver(org.alice, subject="purged", folder="recoverableitemsdeletions")
    assert sorted(_subjects(http, org, "$select=subject")) == ["archived", "inbox"]
    purged = http.get(
        "/v1.0/me/mailFolders/recoverableitemsdeletions/messages",
        headers=auth(org.token(org.alice)),
    )
    assert [m["subject"] for m in purged.json()["value"]] == ["purged"]


def test_unsupported_and_unknown_query_options(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    for query in ("$search=%22x%22&$filter=isRead eq true", "$expand=attachments", "$bogus=1"):
        response = http.get(f"/v1.0/me/messages?{query}", headers=auth(token))
        assert response.status_code == 400, query


def test_read_needs_a_mail_permission(http: httpx.Client, org: Org) -> None:
    org.deliver(org.alice)
    denied = http.get("/v1.0/me/messages", headers=auth(org.token(org.alice, ["User.Read"])))
    assert denied.status_code == 403
    assert error_of(denied)["code"] == "ErrorAccessDenied"
    app_only = http.get(f"/v1.0/users/{org.alice.id}/messages", headers=auth(org.app_token()))
    assert app_only.status_code == 200 and len(app_only.json()["value"]) == 1


def test_unknown_folder(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    unknown = http.get(f"/v1.0/me/mailFolders/AAMkAD{'y' * 40}=/messages", headers=auth(token))
    assert unknown.status_code == 404
    malformed = http.get("/v1.0/me/mailFolders/inbx/messages", headers=auth(token))
    assert malformed.status_code == 400
    assert error_of(malformed)["code"] == "ErrorInvalidIdMalformed"
