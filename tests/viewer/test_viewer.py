"""The Outlook-like viewer, as a browser gets it: HTML over HTTPS, escaped, with the folder
tree, unread state, category colours, message view, attachments and the audit pages."""

from __future__ import annotations

import re
from html import unescape

import httpx

from m365sim.state import EmulatorState
from m365sim.store import Category, Message, OutboundMail
from tests.helpers import Org


def _page(http: httpx.Client, path: str) -> str:
    response = http.get(path)
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp
    return response.text


def test_index_lists_tenants_and_mailboxes(http: httpx.Client, org: Org) -> None:
    org.deliver(org.alice, subject="unread one")
    html = _page(http, "/viewer")
    assert org.tenant.display_name in html
    assert f'href="/viewer/mailboxes/{org.alice.id}"' in html
    assert org.shared.user_principal_name in html and "Shared mailbox" in html
    assert org.app.client_id in html


def test_mailbox_page_shows_folder_tree_unread_and_category_colours(
    http: httpx.Client, org: Org, sim: EmulatorState
) -> None:
    mailbox = org.alice.mailbox
    mailbox.categories["c1"] = Category(id="c1", display_name="Invoices", color="preset7")
    mailbox.categories["c2"] = Category(id="c2", display_name="Urgent", color="preset3")
    org.deliver(org.alice, subject="Invoice 4711", categories=["Invoices", "Urgent", "Legacy"])
    org.deliver(org.alice, subject="Already read", is_read=True)
    with sim.store.lock:
        inbox = mailbox.folder("inbox")
        assert inbox is not None
        orders = sim.store.create_folder(mailbox, "Orders", inbox.id)
        assert orders is not None
        assert sim.store.create_folder(mailbox, "2024", orders.id) is not None

    html = _page(http, f"/viewer/mailboxes/{org.alice.user_principal_name}")
    tree = html[html.index('<nav class="folders"') : html.index("</nav>", html.index("folders"))]
    # nested: Inbox > Orders > 2024
    assert re.search(r"Inbox</span>.*?<ul>.*?Orders</span>.*?<ul>.*?2024</span>", tree, re.S)
    assert 'aria-current="page"' in tree and 'aria-label="1 unread"' in tree

    rows = re.findall(r'<tr class="(unread)?">(.*?)</tr>', html, re.S)
    by_subject = {("Invoice 4711" in row): cls for cls, row in rows}
    assert by_subject[True] == "unread" and by_subject[False] == ""
    chips = dict(
        re.findall(r'style="background-color: (#[0-9a-f]{6});[^"]*"[^>]*>([^<]+)</span>', html)
    )
    assert {v: k for k, v in chips.items()} == {
        "Invoices": "#0078d4",  # preset7 Blue
        "Urgent": "#ffb900",  # preset3 Yellow
        "Legacy": "#c8c6c4",  # no master category: grey
    }
    assert 'color: #000000" title="Category: Urgent (Yellow)"' in html  # dark text on yellow


def test_everything_is_escaped(http: httpx.Client, org: Org, sim: EmulatorState) -> None:
    evil = '<script>alert("x")</script>'
    msg = org.deliver(org.alice, subject=evil, sender="attacker@evil.test")
    msg.from_ = msg.sender = type(msg.to[0])(name='<img src=x onerror="alert(1)">', address="a@e.t")
    msg.body_type = "html"
    msg.body_content = '<p>hi</p><script>alert(document.cookie)</script><img src="cid:x">'
    listing = _page(http, f"/viewer/mailboxes/{org.alice.id}")
    page = _page(http, f"/viewer/mailboxes/{org.alice.id}/messages/{msg.immutable_id}")
    for html in (listing, page):
        assert "<script>" not in html and 'onerror="alert' not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    iframe = re.search(r'<iframe class="html-body"[^>]*sandbox=""[^>]*srcdoc="([^"]*)"', page)
    assert iframe is not None
    srcdoc = unescape(iframe.group(1))
    assert "<script>alert(document.cookie)</script>" in srcdoc  # inert inside the sandbox
    assert "Content-Security-Policy" in srcdoc and "script-src" not in srcdoc


def test_message_view_headers_attachments_and_inline_images(http: httpx.Client, org: Org) -> None:
    raw = (
        b"From: Fabrikam <billing@fabrikam.test>\r\nTo: alice@contoso.test\r\n"
        b"Cc: Bob <bob@contoso.test>\r\nSubject: Invoice with logo\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n'
        b'Content-Type: multipart/related; boundary="r"\r\n\r\n--r\r\n'
        b'Content-Type: text/html\r\n\r\n<p>Pay now</p><img src="cid:logo">\r\n--r\r\n'
        b"Content-Type: image/png\r\nContent-ID: <logo>\r\nContent-Transfer-Encoding: base64\r\n"
        b"\r\niVBORw0KGgo=\r\n--r--\r\n--m\r\nContent-Type: text/html\r\n"
        b'Content-Disposition: attachment; filename="evil.html"\r\n\r\n<script>x()</script>\r\n'
        b"--m--\r\n"
    )
    delivered = http.post(
        f"/_emulator/mailboxes/{org.alice.id}/deliver",
        content=raw,
        headers={"Content-Type": "message/rfc822"},
    ).json()
    base = f"/viewer/mailboxes/{org.alice.id}/messages/{delivered['id']}"
    page = _page(http, base)
    assert "Invoice with logo" in page and "Fabrikam &lt;billing@fabrikam.test&gt;" in page
    assert "Bob &lt;bob@contoso.test&gt;" in page
    assert delivered["internetMessageId"].replace("<", "&lt;").replace(">", "&gt;") in page
    links = re.findall(
        r'href="(' + re.escape(base) + r'/attachments/[^"]+)" download>([^<]+)<', page
    )
    assert [name for _, name in links] == ["evil.html"]  # the inline logo is not listed
    srcdoc = unescape(re.search(r'srcdoc="([^"]*)"', page).group(1))  # type: ignore[union-attr]
    inline_url = re.search(r'<img src="([^"]+)">', srcdoc).group(1)  # type: ignore[union-attr]
    assert inline_url.startswith(f"{base}/attachments/")

    image = http.get(inline_url)
    assert image.status_code == 200 and image.headers["content-type"] == "image/png"
    assert image.content.startswith(b"\x89PNG")
    evil = http.get(links[0][0])
    assert evil.headers["content-type"] == "application/octet-stream"
    assert evil.headers["content-disposition"].startswith("attachment;")
    assert evil.headers["x-content-type-options"] == "nosniff"


def test_text_body_and_not_found_pages(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.bob, subject="Plain", body="line one\n<b>not bold</b>")
    page = _page(http, f"/viewer/mailboxes/{org.bob.id}/messages/{msg.rest_id}")
    assert '<pre class="text-body">line one\n&lt;b&gt;not bold&lt;/b&gt;</pre>' in page
    for path in (
        "/viewer/mailboxes/nobody@nowhere.test",
        f"/viewer/mailboxes/{org.bob.id}/messages/AAMkNope",
        f"/viewer/mailboxes/{org.bob.id}?folder=nope",
        f"/viewer/mailboxes/{org.bob.id}/messages/{msg.rest_id}/attachments/nope",
    ):
        response = http.get(path)
        assert response.status_code == 404 and "<h1>Not found</h1>" in response.text


def test_mailbox_list_pages(http: httpx.Client, org: Org) -> None:
    http.post(
        f"/_emulator/mailboxes/{org.bob.id}/deliver-bulk",
        json={"count": 120, "template": {"subject": "Bulk {n}"}},
    ).raise_for_status()
    first = _page(http, f"/viewer/mailboxes/{org.bob.id}")
    assert "Page 1 of 3" in first and "Bulk 120" in first and "Bulk 70<" not in first
    last = _page(http, f"/viewer/mailboxes/{org.bob.id}?page=3")
    assert "Bulk 1<" in last and 'rel="prev"' in last


def test_outbound_deletions_and_requests_pages(
    http: httpx.Client, org: Org, sim: EmulatorState
) -> None:
    store = sim.store
    msg = org.deliver(org.alice, subject="to forward")
    with store.lock:
        store.outbound.append(
            OutboundMail(
                time=store.clock.now(),
                tenant_id=org.tenant.id,
                from_mailbox=org.alice.id,
                kind="forward",
                to=["<ap@fabrikam.test>"],
                subject="FW: <b>to forward</b>",
                comment=None,
                source_message_id=msg.immutable_id,
                internal=False,
            )
        )
        store.record_deletion(
            org.tenant, org.alice.mailbox, msg.immutable_id, "move:deleteditems", org.app.client_id
        )
    outbound = _page(http, "/viewer/outbound")
    assert (
        "FW: &lt;b&gt;to forward&lt;/b&gt;" in outbound and "&lt;ap@fabrikam.test&gt;" in outbound
    )
    assert org.alice.user_principal_name in outbound
    deletions = _page(http, "/viewer/deletions")
    assert "move:deleteditems" in deletions and org.app.display_name in deletions
    assert f"/messages/{msg.immutable_id}" in deletions  # still exists, so it links

    http.get("/v1.0/me", headers={"Authorization": f"Bearer {org.token(org.alice)}"})
    requests_page = _page(http, "/viewer/requests")
    assert "<code>/me</code>" in requests_page


def test_stylesheet_is_served(http: httpx.Client) -> None:
    css = http.get("/viewer/static/viewer.css")
    assert css.status_code == 200 and ".chip" in css.text


def test_the_owner_can_recategorize_and_move_a_message_as_in_outlook(
    http: httpx.Client, org: Org, sim: EmulatorState
) -> None:
    """The viewer's forms change a message through the store, as a Graph PATCH or move would:
    the folder logs (delta) record it and listeners (change notifications) hear it."""
    mailbox = org.alice.mailbox
    mailbox.categories["c1"] = Category(id="c1", display_name="Invoices", color="preset7")
    mailbox.categories["c2"] = Category(id="c2", display_name="Sales", color="preset4")
    msg = org.deliver(org.alice, subject="Quote please", categories=["Invoices"])
    heard: list[tuple[str, str]] = []

    def listener(tenant: object, box: object, m: Message, folder_id: str, change: str) -> None:
        heard.append((m.immutable_id, change))

    sim.store.add_listener(listener)
    try:
        _owner_changes(http, org, msg, heard)
    finally:
        sim.store.remove_listener(listener)


def _owner_changes(
    http: httpx.Client, org: Org, msg: Message, heard: list[tuple[str, str]]
) -> None:
    mailbox = org.alice.mailbox
    page = f"/viewer/mailboxes/{org.alice.id}/messages/{msg.immutable_id}"
    html = _page(http, page)
    assert 'value="Invoices" checked' in html and 'value="Sales">' in html
    assert "Move to folder" in html

    inbox = mailbox.folder("inbox")
    assert inbox is not None
    before = mailbox.logs[inbox.id].latest[msg.immutable_id]
    changed = http.post(f"{page}/categories", data={"category": ["Sales"], "other": " Follow  up "})
    assert changed.status_code == 303 and changed.headers["location"].endswith("?done=categories")
    assert msg.categories == ["Sales", "Follow up"]
    assert mailbox.logs[inbox.id].latest[msg.immutable_id] > before
    assert (msg.immutable_id, "updated") in heard
    assert "Categories changed." in _page(http, changed.headers["location"])

    archive = mailbox.folder("archive")
    assert archive is not None
    moved = http.post(f"{page}/move", data={"folder": archive.id})
    assert moved.status_code == 303
    assert msg.folder_id == archive.id and mailbox.message(msg.immutable_id) is msg
    assert msg.immutable_id in mailbox.logs[archive.id].latest

    # Bad input changes nothing; a cross-site post is refused.
    assert http.post(f"{page}/move", data={"folder": "nope"}).status_code == 404
    assert http.post(f"{page}/move", data={"folder": mailbox.root_id()}).status_code == 404
    many = {"category": [f"C{n}" for n in range(30)]}
    assert http.post(f"{page}/categories", data=many).status_code == 400
    forged = http.post(
        f"{page}/categories", data={"other": "Spam"}, headers={"Origin": "https://evil.test"}
    )
    assert forged.status_code == 403
    cross = http.post(
        f"{page}/move", data={"folder": "inbox"}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert cross.status_code == 403
    assert msg.categories == ["Sales", "Follow up"] and msg.folder_id == archive.id
    missing = http.post(f"/viewer/mailboxes/{org.alice.id}/messages/nope/categories", data={})
    assert missing.status_code == 404
