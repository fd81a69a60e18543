"""Delivering mail through the control API: raw RFC 822 in any encoding, JSON, bulk.

Every odd input is either stored correctly or refused with a clear 400/413, and a refused
message leaves the mailbox exactly as it was.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from m365sim.state import EmulatorState
from tests.helpers import Org

RFC822 = {"Content-Type": "message/rfc822"}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _deliver(http: httpx.Client, mailbox: str, raw: bytes, query: str = "") -> httpx.Response:
    return http.post(f"/_emulator/mailboxes/{mailbox}/deliver{query}", content=raw, headers=RFC822)


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode("ascii")


def _stored(org: Org, message_id: str):  # type: ignore[no-untyped-def]
    msg = org.alice.mailbox.message(message_id)
    assert msg is not None
    return msg


MULTIPART = _crlf(
    """From: =?utf-8?q?Fabrikam_Facturatie?= <billing@fabrikam.test>
To: "Jansen, Alice" <alice@contoso.test>, Bob <bob@contoso.test>
Cc: =?iso-8859-1?q?J=FCrgen?= <j@example.test>
Reply-To: ap@fabrikam.test
Subject: =?UTF-8?B?RmFjdHV1ciA0NzExIOKCrCAyLjQ4MCw1MA==?=
Date: Mon, 12 Aug 2024 10:43:22 +0200
Message-ID: <inv-4711@fabrikam.test>
References: <thread-root@fabrikam.test> <inv-4710@fabrikam.test>
Importance: High
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

--outer
Content-Type: multipart/related; boundary="related"

--related
Content-Type: multipart/alternative; boundary="alt"

--alt
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

Factuur 4711: =E2=82=AC 2.480,50
--alt
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<p>Factuur 4711: =E2=82=AC 2.480,50</p><img src=3D"cid:logo@fabrikam">
--alt--
--related
Content-Type: image/png
Content-ID: <logo@fabrikam>
Content-Transfer-Encoding: base64

iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==
--related--
--outer
Content-Type: application/pdf
Content-Disposition: attachment; filename*=utf-8''factuur%204711%20%E2%82%AC.pdf
Content-Transfer-Encoding: base64

JVBERi0xLjQKJcTl8uXrp/Og0MTGCg==
--outer
Content-Type: message/rfc822

From: someone@example.test
Subject: The original order

Order text
--outer--
"""
)


def test_multipart_message_with_html_inline_image_and_attachments(
    http: httpx.Client, org: Org
) -> None:
    response = _deliver(http, org.alice.user_principal_name, MULTIPART)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["internetMessageId"] == "<inv-4711@fabrikam.test>"
    assert body["mailboxId"] == org.alice.id
    msg = _stored(org, body["id"])
    assert msg.rest_id == body["restId"]
    assert msg.subject == "Factuur 4711 € 2.480,50"
    assert msg.body_type == "html" and "€ 2.480,50" in msg.body_content
    assert msg.from_ is not None and msg.from_.name == "Fabrikam Facturatie"
    assert [(r.name, r.address) for r in msg.to] == [
        ("Jansen, Alice", "alice@contoso.test"),
        ("Bob", "bob@contoso.test"),
    ]
    assert msg.cc[0].name == "Jürgen" and msg.reply_to[0].address == "ap@fabrikam.test"
    assert msg.importance == "high"
    assert msg.received == datetime(2024, 8, 12, 8, 43, 22, tzinfo=UTC)
    attachments = {a.name: a for a in msg.attachments}
    assert set(attachments) == {"ATT00001.png", "factuur 4711 €.pdf", "The original order.eml"}
    logo = attachments["ATT00001.png"]
    assert logo.is_inline and logo.content_id == "logo@fabrikam"
    assert logo.content.startswith(b"\x89PNG")
    assert attachments["factuur 4711 €.pdf"].content.startswith(b"%PDF-1.4")
    assert b"Subject: The original order" in attachments["The original order.eml"].content
    assert msg.has_attachments
    assert ("Importance", "High") in msg.headers

    listed = http.get(
        f"/v1.0/users/{org.alice.id}/mailFolders/inbox/messages",
        headers=_auth(org.token(org.alice)),
    )
    assert listed.status_code == 200
    item = listed.json()["value"][0]
    assert item["subject"] == "Factuur 4711 € 2.480,50"
    assert item["hasAttachments"] is True
    assert item["from"]["emailAddress"] == {
        "name": "Fabrikam Facturatie",
        "address": "billing@fabrikam.test",
    }


def test_messages_in_one_thread_share_a_conversation(http: httpx.Client, org: Org) -> None:
    first = _deliver(
        http,
        org.alice.id,
        _crlf("Subject: a\nMessage-ID: <thread-root@fabrikam.test>\n\nx"),
    ).json()
    reply = _deliver(http, org.alice.id, MULTIPART).json()
    other = _deliver(http, org.alice.id, _crlf("Subject: b\n\nx")).json()
    conversation = _stored(org, first["id"]).conversation_id
    assert _stored(org, reply["id"]).conversation_id == conversation
    assert _stored(org, other["id"]).conversation_id != conversation


ODD_MESSAGES = [
    pytest.param(
        b"From: J\xfcrgen M\xfcller <j@example.test>\r\nSubject: Caf\xe9 cr\xe8me\r\n\r\n"
        b"Bestelling voor \xe9\xe9n caf\xe9\r\n",
        "Café crème",
        "Bestelling voor één café",
        "Jürgen Müller",
        id="8bit-latin1-without-charset",
    ),
    pytest.param(
        b"Subject: utf-8 declared\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        b"na\xefve caf\xe9\r\n",
        "utf-8 declared",
        "naïve café",
        None,
        id="wrong-charset-declared-latin1-bytes",
    ),
    pytest.param(
        "Subject: latin-1 declared\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\n"
        "Groeten uit Düsseldorf\r\n".encode(),
        "latin-1 declared",
        "Groeten uit Düsseldorf",
        None,
        id="utf8-bytes-declared-latin1",
    ),
    pytest.param(
        b"Subject: =?windows-1252?q?Prijs_=80_12=2C50?=\r\nContent-Type: text/plain; "
        b"charset=windows-1252\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"Totaal =80 12,50 =96 inclusief btw\r\n",
        "Prijs € 12,50",
        "Totaal € 12,50 – inclusief btw",
        None,
        id="quoted-printable-windows-1252",
    ),
    pytest.param(
        b"Subject: unknown charset\r\nContent-Type: text/plain; charset=x-klingon\r\n\r\n"
        b"hello \xc3\xa9\r\n",
        "unknown charset",
        "hello é",
        None,
        id="unknown-charset",
    ),
    pytest.param(
        b"From: =?utf-8?b?w4lsb2RpZSBEdXBvbnQ=?= <elodie@example.test>\r\n"
        b"Subject: =?utf-8?q?Commande_n=C2=B0_7712?= =?utf-8?q?_livr=C3=A9e?=\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes("Livrée à Liège".encode()),
        "Commande n° 7712 livrée",
        "Livrée à Liège",
        "Élodie Dupont",
        id="rfc2047-and-base64",
    ),
    pytest.param(
        b"Subject: no sender\r\nTo: alice@contoso.test\r\n\r\nbody\r\n",
        "no sender",
        "body",
        None,
        id="no-from",
    ),
    pytest.param(
        b"Subject: headers only\r\nFrom: a@example.test\r\n",
        "headers only",
        "",
        "a@example.test",
        id="empty-body",
    ),
    pytest.param(
        b'From: "Broken <x@y\r\nTo: ,,, <>, @@, plain text\r\nDate: yesterday-ish\r\n'
        b"Subject: garbage addresses\r\n\r\nstill stored\r\n",
        "garbage addresses",
        "still stored",
        None,
        id="garbage-addresses-and-date",
    ),
    pytest.param(
        b"From MAILER-DAEMON Mon Aug 12 10:00:00 2024\r\nSubject: mbox separator\r\n\r\nok\r\n",
        "mbox separator",
        "ok",
        None,
        id="mbox-from-line",
    ),
]


@pytest.mark.parametrize(("raw", "subject", "body", "sender"), ODD_MESSAGES)
def test_oddly_encoded_messages_are_stored_readably(
    http: httpx.Client, org: Org, raw: bytes, subject: str, body: str, sender: str | None
) -> None:
    response = _deliver(http, org.alice.id, raw)
    assert response.status_code == 201, response.text
    msg = _stored(org, response.json()["id"])
    assert msg.subject == subject
    assert msg.body_content.strip() == body
    if sender is not None:
        assert msg.from_ is not None and msg.from_.name == sender
    # everything stored can be served as JSON by Graph
    listed = http.get(
        f"/v1.0/users/{org.alice.id}/mailFolders/inbox/messages",
        headers=_auth(org.token(org.alice)),
    )
    assert listed.status_code == 200
    assert listed.json()["value"][0]["subject"] == subject


def test_nested_multipart_and_huge_header_below_the_limit(http: httpx.Client, org: Org) -> None:
    long_subject = "Order " + "x" * 100_000
    raw = _crlf(
        f"""Subject: {long_subject}
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="a"

--a
Content-Type: multipart/mixed; boundary="b"

--b
Content-Type: multipart/alternative; boundary="c"

--c
Content-Type: text/plain

deep text
--c--
--b--
--a--
"""
    )
    response = _deliver(http, org.alice.id, raw)
    assert response.status_code == 201, response.text
    msg = _stored(org, response.json()["id"])
    assert msg.subject == long_subject and msg.body_content.strip() == "deep text"


REFUSED = [
    pytest.param(b"", "empty message", id="empty"),
    pytest.param(b"just some words, not a mail", "no header fields", id="not-mail"),
    pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "no header fields", id="binary"),
    pytest.param(
        b"Subject: broken\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"SGVsbG8gd29yb\r\n",
        "not valid base64",
        id="undecodable-base64",
    ),
    pytest.param(
        b"Subject: " + b"y" * 300_000 + b"\r\n\r\nbody",
        "header section",
        id="header-over-256kb",
    ),
]


@pytest.mark.parametrize(("raw", "reason"), REFUSED)
def test_undeliverable_input_is_refused_and_nothing_is_stored(
    http: httpx.Client, org: Org, raw: bytes, reason: str
) -> None:
    before = (len(org.alice.mailbox.messages), org.alice.mailbox.seq)
    response = _deliver(http, org.alice.id, raw)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert (len(org.alice.mailbox.messages), org.alice.mailbox.seq) == before


def test_oversized_message_is_413_with_configurable_limit(
    http: httpx.Client, org: Org, sim: EmulatorState
) -> None:
    sim.config.deliver_max_bytes = 10_000
    raw = b"Subject: big\r\n\r\n" + b"a" * 20_000
    response = _deliver(http, org.alice.id, raw)
    assert response.status_code == 413
    assert "10000 bytes" in response.json()["error"]
    assert org.alice.mailbox.messages == {}
    assert _deliver(http, org.alice.id, b"Subject: small\r\n\r\nok").status_code == 201


def test_received_time_from_date_header_or_now(http: httpx.Client, org: Org) -> None:
    raw = b"Subject: dated\r\nDate: Tue, 1 Oct 2024 12:00:00 +0000\r\n\r\nx"
    from_header = _stored(org, _deliver(http, org.alice.id, raw).json()["id"])
    assert from_header.received == datetime(2024, 10, 1, 12, tzinfo=UTC)
    now = _stored(org, _deliver(http, org.alice.id, raw, "?received=now").json()["id"])
    assert abs(now.received - org.state.clock.now()) < timedelta(seconds=30)
    assert now.sent == datetime(2024, 10, 1, 12, tzinfo=UTC)
    bad = _deliver(http, org.alice.id, raw, "?received=later")
    assert bad.status_code == 400


def test_raw_delivery_options_folder_read_state_and_categories(
    http: httpx.Client, org: Org
) -> None:
    raw = b"Subject: filed\r\n\r\nx"
    response = _deliver(http, org.bob.id, raw, "?folder=archive&isRead=true&categories=A,B")
    assert response.status_code == 201
    msg = org.bob.mailbox.message(response.json()["id"])
    assert msg is not None
    assert msg.folder_id == org.bob.mailbox.well_known["archive"]
    assert msg.is_read and msg.categories == ["A", "B"]
    assert _deliver(http, org.bob.id, raw, "?folder=Nowhere").status_code == 400


def test_json_delivery_with_every_field(http: httpx.Client, org: Org) -> None:
    folder = http.post(
        f"/_emulator/mailboxes/{org.shared.user_principal_name}/folders",
        json={"path": "Inbox/Orders/2024"},
    )
    assert folder.status_code == 201 and folder.json()["path"] == "Inbox/Orders/2024"
    same = http.post(
        f"/_emulator/mailboxes/{org.shared.id}/folders", json={"path": "inbox/orders/2024"}
    )
    assert same.status_code == 200 and same.json()["id"] == folder.json()["id"]

    response = http.post(
        f"/_emulator/mailboxes/{org.shared.user_principal_name}/deliver",
        json={
            "subject": "Bestelling 2024-0815",
            "body": "<p>40 dozen potgrond</p>",
            "bodyType": "html",
            "from": "Sanne Visser <sanne@visser.test>",
            "to": [{"emailAddress": {"name": "Orders", "address": "orders@contoso.test"}}],
            "cc": ["piet@visser.test"],
            "receivedDateTime": "2024-08-15T08:30:00Z",
            "categories": ["Orders"],
            "isRead": True,
            "importance": "high",
            "folder": "Inbox/Orders/2024",
            "internetMessageId": "order-0815@visser.test",
            "attachments": [
                {
                    "name": "order.csv",
                    "contentType": "text/csv",
                    "contentBase64": base64.b64encode(b"sku,qty\nPG-20,40\n").decode(),
                }
            ],
        },
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["folderId"] == folder.json()["id"]
    assert body["internetMessageId"] == "<order-0815@visser.test>"
    msg = org.shared.mailbox.message(body["id"])
    assert msg is not None
    assert msg.body_type == "html" and msg.is_read and msg.importance == "high"
    assert msg.from_ is not None and msg.from_.address == "sanne@visser.test"
    assert msg.cc[0].address == "piet@visser.test"
    assert msg.received == datetime(2024, 8, 15, 8, 30, tzinfo=UTC)
    assert msg.attachments[0].content == b"sku,qty\nPG-20,40\n"

    listed = http.get(f"/_emulator/mailboxes/{org.shared.id}/messages?folder=Inbox/Orders/2024")
    assert [m["subject"] for m in listed.json()["value"]] == ["Bestelling 2024-0815"]


@pytest.mark.parametrize(
    ("payload", "status", "reason"),
    [
        ({"subject": "x", "folder": "Nope"}, 400, "no folder"),
        ({"subject": "x", "bodyType": "rtf"}, 400, "bodyType"),
        ({"subject": "x", "from": "not an address"}, 400, "from"),
        ({"subject": "x", "receivedDateTime": "soon"}, 400, "receivedDateTime"),
        ({"subject": "x", "attachments": [{"name": "a", "contentBase64": "@@"}]}, 400, "base64"),
        ({"subject": "x", "colour": "red"}, 400, "unknown field"),
    ],
)
def test_json_delivery_errors(
    http: httpx.Client, org: Org, payload: dict[str, object], status: int, reason: str
) -> None:
    response = http.post(f"/_emulator/mailboxes/{org.alice.id}/deliver", json=payload)
    assert response.status_code == status
    assert reason in response.json()["error"]
    assert org.alice.mailbox.messages == {}


def test_delivery_to_unknown_mailbox_or_with_wrong_content_type(
    http: httpx.Client, org: Org
) -> None:
    missing = _deliver(http, "nobody@nowhere.test", b"Subject: x\r\n\r\n")
    assert missing.status_code == 404
    wrong = http.post(
        f"/_emulator/mailboxes/{org.alice.id}/deliver",
        content=b"x",
        headers={"Content-Type": "image/png"},
    )
    assert wrong.status_code == 400 and "message/rfc822" in wrong.json()["error"]


def test_bulk_delivery_feeds_the_folder_change_log(http: httpx.Client, org: Org) -> None:
    inbox_id = org.bob.mailbox.well_known["inbox"]
    log_before = len(org.bob.mailbox.logs[inbox_id].entries)
    response = http.post(
        f"/_emulator/mailboxes/{org.bob.id}/deliver-bulk",
        json={"count": 500, "template": {"subject": "Order {n}", "from": "shop@example.test"}},
    )
    assert response.status_code == 201, response.text
    assert response.json()["delivered"] == 500
    assert len(org.bob.mailbox.messages) == 500
    assert len(org.bob.mailbox.logs[inbox_id].entries) == log_before + 500
    newest = org.bob.mailbox.message(response.json()["lastId"])
    assert newest is not None and newest.subject == "Order 500"
    oldest = org.bob.mailbox.message(response.json()["firstId"])
    assert oldest is not None and oldest.received < newest.received

    too_many = http.post(
        f"/_emulator/mailboxes/{org.bob.id}/deliver-bulk", json={"count": 10**7, "template": {}}
    )
    assert too_many.status_code == 400
    no_count = http.post(f"/_emulator/mailboxes/{org.bob.id}/deliver-bulk", json={"template": {}})
    assert no_count.status_code == 400


def test_master_categories_and_mailbox_summary(http: httpx.Client, org: Org) -> None:
    created = http.post(
        f"/_emulator/mailboxes/{org.alice.id}/categories",
        json={"displayName": "Invoices", "color": "preset7"},
    )
    assert created.status_code == 201
    assert created.json()["color"] == "preset7"
    duplicate = http.post(
        f"/_emulator/mailboxes/{org.alice.id}/categories", json={"displayName": "invoices"}
    )
    assert duplicate.status_code == 409
    bad_color = http.post(
        f"/_emulator/mailboxes/{org.alice.id}/categories",
        json={"displayName": "Other", "color": "preset25"},
    )
    assert bad_color.status_code == 400

    http.post(f"/_emulator/mailboxes/{org.alice.id}/deliver", json={"subject": "one"})
    summary = http.get(f"/_emulator/mailboxes/{org.alice.user_principal_name}").json()
    inbox = next(f for f in summary["folders"] if f["wellKnownName"] == "inbox")
    assert inbox["totalItemCount"] == 1 and inbox["unreadItemCount"] == 1
    assert summary["categories"][0]["displayName"] == "Invoices"
    graph = http.get(
        f"/v1.0/users/{org.alice.id}/outlook/masterCategories", headers=_auth(org.token(org.alice))
    )
    assert graph.status_code == 200
    assert [c["displayName"] for c in graph.json()["value"]] == ["Invoices"]
