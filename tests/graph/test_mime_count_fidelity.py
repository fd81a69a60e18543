"""``GET /messages/{id}/$value`` (MIME), ``.../messages/$count``, and the cheap fidelity items:
HTML bodies as whole documents, ``OData-Version: 4.0``, the context of ``$select=id``
(issue 16, items 5 and 8)."""

from __future__ import annotations

import httpx
import pytest

from m365sim.mime import parse_rfc822
from m365sim.store import Attachment, Recipient
from tests.graph.mailtools import IMMUTABLE, auth
from tests.helpers import Org


def test_message_value_is_its_mime(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice, subject="Factuur – März", body="<p>Grüße</p>")
    msg.body_type = "html"
    msg.cc = [Recipient("Zoë", "zoe@fabrikam.test")]
    msg.headers = [("Received", "from mx.fabrikam.test"), ("X-Mailer", "Shop 1.0")]
    msg.attachments = [
        Attachment("AAMkADatt000000000000000001=", "f.pdf", "application/pdf", b"%PDF")
    ]
    for headers in (auth(org.token(org.alice)), auth(org.token(org.alice), **IMMUTABLE)):
        key = msg.immutable_id if "Prefer" in headers else msg.rest_id
        response = http.get(f"/v1.0/me/messages/{key}/$value", headers=headers)
        assert response.status_code == 200, response.text
        assert response.headers["Content-Type"].startswith("text/plain")
        parsed = parse_rfc822(response.content, max_bytes=10**6, max_header_bytes=10**5)
        assert parsed.subject == "Factuur – März"
        assert "<body>\r\n<p>Grüße</p>\r\n</body>" in parsed.body
        assert parsed.body_type == "html"
        assert parsed.from_ is not None and parsed.from_.address == "customer@fabrikam.test"
        assert [(r.name, r.address) for r in parsed.cc] == [("Zoë", "zoe@fabrikam.test")]
        assert parsed.internet_message_id == msg.internet_message_id
        assert ("X-Mailer", "Shop 1.0") in parsed.headers
        assert [(a.name, a.content) for a in parsed.attachments] == [("f.pdf", b"%PDF")]


def test_message_value_cannot_inject_headers(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    draft = http.post(
        "/v1.0/me/messages",
        json={"subject": "Hi\r\nBcc: victim@fabrikam.test", "body": {"content": "x"}},
        headers=auth(token),
    ).json()
    raw = http.get(f"/v1.0/me/messages/{draft['id']}/$value", headers=auth(token)).content
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"\r\nBcc:" not in head


def test_mime_content_type_is_a_setting(http: httpx.Client, org: Org) -> None:
    org.state.config.mime_value_content_type = "message/rfc822"
    msg = org.deliver(org.alice)
    response = http.get(
        f"/v1.0/me/messages/{msg.rest_id}/$value", headers=auth(org.token(org.alice))
    )
    assert response.headers["Content-Type"] == "message/rfc822"


def test_message_value_errors(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    unknown = http.get(f"/v1.0/me/messages/AAMkAD{'q' * 40}=/$value", headers=auth(token))
    assert unknown.status_code == 404
    other = org.deliver(org.bob)
    foreign = http.get(f"/v1.0/me/messages/{other.rest_id}/$value", headers=auth(token))
    assert foreign.status_code == 404
    denied = http.get(
        f"/v1.0/users/{org.bob.id}/messages/{other.rest_id}/$value",
        headers=auth(org.app_token(["User.Read.All"])),
    )
    assert denied.status_code == 403


def test_count(http: httpx.Client, org: Org) -> None:
    for i in range(3):
        org.deliver(org.alice, subject=f"m{i}", is_read=i == 0)
    org.deliver(org.alice, folder="archive")
    token = org.token(org.alice)
    total = http.get("/v1.0/me/messages/$count", headers=auth(token))
    assert total.status_code == 200, total.text
    assert total.text == "4" and total.headers["Content-Type"].startswith("text/plain")
    inbox = http.get("/v1.0/me/mailFolders/inbox/messages/$count", headers=auth(token))
    assert inbox.text == "3"
    unread = http.get(
        f"/v1.0/users/{org.alice.id}/mailFolders/inbox/messages/$count",
        params={"$filter": "isRead eq false"},
        headers=auth(org.app_token()),
    )
    assert unread.text == "2"
    bad = http.get("/v1.0/me/messages/$count", params={"$filter": "nope eq 1"}, headers=auth(token))
    assert bad.status_code == 400


def test_html_bodies_are_whole_documents(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    draft = http.post(
        "/v1.0/me/messages",
        json={"body": {"contentType": "html", "content": "<p>Hello</p>"}},
        headers=auth(token),
    ).json()
    content = draft["body"]["content"]
    assert content.startswith("<html><head>") and content.rstrip().endswith("</html>")
    assert "<body>\r\n<p>Hello</p>\r\n</body>" in content
    document = "<html><body><p>Already whole</p></body></html>"
    msg = org.deliver(org.alice, body=document)
    msg.body_type = "html"
    got = http.get(f"/v1.0/me/messages/{msg.rest_id}", headers=auth(token)).json()
    assert got["body"]["content"] == document
    text = org.deliver(org.alice, body="plain")
    plain = http.get(f"/v1.0/me/messages/{text.rest_id}", headers=auth(token)).json()
    assert plain["body"] == {"contentType": "text", "content": "plain"}


@pytest.mark.parametrize(
    "path", ["/v1.0/me/messages", "/v1.0/me/mailFolders", "/v1.0/me/outlook/masterCategories"]
)
def test_odata_version_header(http: httpx.Client, org: Org, path: str) -> None:
    response = http.get(path, headers=auth(org.token(org.alice)))
    assert response.headers["OData-Version"] == "4.0"
    failed = http.get("/v1.0/me/messages/nope", headers=auth(org.token(org.alice)))
    assert failed.headers["OData-Version"] == "4.0"


def test_odata_version_in_batch_items(http: httpx.Client, org: Org) -> None:
    response = http.post(
        "/v1.0/$batch",
        json={"requests": [{"id": "1", "method": "GET", "url": "/me/mailFolders"}]},
        headers=auth(org.token(org.alice)),
    )
    assert response.json()["responses"][0]["headers"]["OData-Version"] == "4.0"


def test_context_of_select_id(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    token = org.token(org.alice)
    listing = http.get("/v1.0/me/messages", params={"$select": "id"}, headers=auth(token)).json()
    assert listing["@odata.context"].endswith(f"#users('{org.alice.id}')/messages(id)")
    one = http.get(
        f"/v1.0/me/messages/{msg.rest_id}", params={"$select": "id"}, headers=auth(token)
    ).json()
    assert one["@odata.context"].endswith("/messages(id)/$entity")
    both = http.get("/v1.0/me/messages", params={"$select": "subject"}, headers=auth(token)).json()
    assert both["@odata.context"].endswith("/messages(subject)")
    folders = http.get("/v1.0/me/mailFolders", params={"$select": "id"}, headers=auth(token))
    assert folders.json()["@odata.context"].endswith("/mailFolders(id)")
