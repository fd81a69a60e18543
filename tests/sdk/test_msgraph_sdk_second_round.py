"""The real msgraph-sdk, unchanged, on what issue 16 added or fixed: createForward without
recipients, reply/replyAll/createReply/createReplyAll, sendMail, attachments, ``$search``,
``$count``, a message's MIME (``$value``), folder rename/delete, folder delta, ``If-Match``,
and an HTML body as a whole document."""

from __future__ import annotations

import base64
import ssl
from typing import Any

import pytest
from kiota_abstractions.base_request_configuration import RequestConfiguration
from msgraph import GraphServiceClient
from msgraph.generated.models.body_type import BodyType
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.file_attachment import FileAttachment
from msgraph.generated.models.item_attachment import ItemAttachment
from msgraph.generated.models.item_body import ItemBody
from msgraph.generated.models.mail_folder import MailFolder
from msgraph.generated.models.message import Message
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.users.item.mail_folders.delta.delta_request_builder import (
    DeltaRequestBuilder,
)
from msgraph.generated.users.item.messages.count.count_request_builder import (
    CountRequestBuilder,
)
from msgraph.generated.users.item.messages.item.create_forward.create_forward_post_request_body import (  # noqa: E501
    CreateForwardPostRequestBody,
)
from msgraph.generated.users.item.messages.item.create_reply.create_reply_post_request_body import (  # noqa: E501
    CreateReplyPostRequestBody,
)
from msgraph.generated.users.item.messages.item.create_reply_all.create_reply_all_post_request_body import (  # noqa: E501
    CreateReplyAllPostRequestBody,
)
from msgraph.generated.users.item.messages.item.reply.reply_post_request_body import (
    ReplyPostRequestBody,
)
from msgraph.generated.users.item.messages.item.reply_all.reply_all_post_request_body import (
    ReplyAllPostRequestBody,
)
from msgraph.generated.users.item.messages.messages_request_builder import (
    MessagesRequestBuilder,
)
from msgraph.generated.users.item.send_mail.send_mail_post_request_body import (
    SendMailPostRequestBody,
)
from msgraph.graph_request_adapter import GraphRequestAdapter

from m365sim.mime import parse_rfc822
from m365sim.store import Recipient as StoredRecipient
from tests.helpers import Org
from tests.sdk.test_msgraph_sdk_mail import _run


def _to(address: str) -> Recipient:
    return Recipient(email_address=EmailAddress(address=address, name=address))


def _outbound(org: Org) -> list[tuple[tuple[str, ...], str]]:
    return sorted(
        (tuple(o.to), o.kind) for o in org.state.store.outbound if o.tenant_id == org.tenant.id
    )


def test_create_forward_without_recipients_then_reply_family(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org
) -> None:
    source = org.deliver(org.alice, subject="Question", sender="carol@fabrikam.test")
    source.cc = [StoredRecipient("Dave", "dave@fabrikam.test")]

    async def body(client: GraphServiceClient, _: GraphRequestAdapter) -> None:
        me = client.users.by_user_id(org.alice.id)
        item = me.messages.by_message_id(source.rest_id)
        draft = await item.create_forward.post(CreateForwardPostRequestBody())
        assert draft is not None and draft.is_draft is True
        assert draft.subject == "FW: Question" and draft.to_recipients == []
        reply_draft = await item.create_reply_all.post(CreateReplyAllPostRequestBody())
        assert reply_draft is not None and reply_draft.subject == "RE: Question"
        assert [r.email_address.address for r in reply_draft.cc_recipients or []] == [  # type: ignore[union-attr]
            "dave@fabrikam.test"
        ]
        plain = await item.create_reply.post(CreateReplyPostRequestBody())
        assert plain is not None and plain.cc_recipients == []
        await item.reply.post(ReplyPostRequestBody(comment="Tomorrow."))
        await item.reply_all.post(ReplyAllPostRequestBody(comment="Tomorrow, all."))

    _run(graph_url, ssl_context, org.app_token(), body)
    assert _outbound(org) == [
        (("carol@fabrikam.test",), "reply"),
        (("carol@fabrikam.test", "dave@fabrikam.test"), "reply"),
    ]


def test_send_mail_with_an_attachment_then_read_it_back(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org
) -> None:
    async def body(client: GraphServiceClient, _: GraphRequestAdapter) -> None:
        message = Message(
            subject="Report",
            body=ItemBody(content_type=BodyType.Html, content="<p>See attached</p>"),
            to_recipients=[_to(org.bob.user_principal_name)],
            attachments=[
                FileAttachment(
                    odata_type="#microsoft.graph.fileAttachment",
                    name="report.csv",
                    content_type="text/csv",
                    content_bytes=b"a,b\n1,2\n",
                )
            ],
        )
        request = SendMailPostRequestBody(message=message, save_to_sent_items=True)
        await client.users.by_user_id(org.alice.id).send_mail.post(request)

        bob = client.users.by_user_id(org.bob.id)
        inbox = await bob.mail_folders.by_mail_folder_id("inbox").messages.get()
        assert inbox is not None and inbox.value is not None and len(inbox.value) == 1
        received = inbox.value[0]
        assert received.has_attachments is True
        assert received.body is not None and received.body.content is not None
        assert received.body.content.startswith("<html>")  # a whole document, as Outlook's
        attachments = await bob.messages.by_message_id(str(received.id)).attachments.get()
        assert attachments is not None and attachments.value is not None
        (attachment,) = attachments.value
        assert isinstance(attachment, FileAttachment)
        assert attachment.name == "report.csv" and attachment.content_bytes == b"a,b\n1,2\n"
        one = await (
            bob.messages.by_message_id(str(received.id))
            .attachments.by_attachment_id(str(attachment.id))
            .get()
        )
        assert isinstance(one, FileAttachment) and one.size == 8

        mime = await bob.messages.by_message_id(str(received.id)).content.get()
        assert mime is not None
        parsed = parse_rfc822(mime, max_bytes=10**6, max_header_bytes=10**5)
        assert parsed.subject == "Report"
        assert [a.name for a in parsed.attachments] == ["report.csv"]

    _run(graph_url, ssl_context, org.app_token(), body)
    assert _outbound(org) == [((org.bob.user_principal_name,), "send")]


def test_item_attachment_from_delivered_mail(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org
) -> None:
    from m365sim.mime import parse_rfc822 as parse

    raw = (
        b"From: a@fabrikam.test\r\nSubject: Outer\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/plain\r\n\r\nhi\r\n--b\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: x@fabrikam.test\r\nSubject: Inner\r\n\r\ninner body\r\n--b--\r\n"
    )
    parsed = parse(raw, max_bytes=10**6, max_header_bytes=10**5)
    msg = org.deliver(org.alice, subject=parsed.subject)
    msg.attachments = parsed.attachments

    async def body(client: GraphServiceClient, _: GraphRequestAdapter) -> None:
        item = client.users.by_user_id(org.alice.id).messages.by_message_id(msg.rest_id)
        attachments = await item.attachments.get()
        assert attachments is not None and attachments.value is not None
        (attachment,) = attachments.value
        assert isinstance(attachment, ItemAttachment) and attachment.name == "Inner"

    _run(graph_url, ssl_context, org.app_token(), body)


def test_search_and_count(graph_url: str, ssl_context: ssl.SSLContext, org: Org) -> None:
    org.deliver(org.alice, subject="Invoice 1", sender="billing@fabrikam.test")
    org.deliver(org.alice, subject="Lunch", body="pizza")
    org.deliver(org.alice, subject="Invoice 2", sender="billing@fabrikam.test", is_read=True)

    async def body(client: GraphServiceClient, _: GraphRequestAdapter) -> None:
        me = client.users.by_user_id(org.alice.id)
        query = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
            search='"from:billing@fabrikam.test"', select=["subject"]
        )
        found = await me.messages.get(RequestConfiguration(query_parameters=query))
        assert found is not None and found.value is not None
        assert sorted(str(m.subject) for m in found.value) == ["Invoice 1", "Invoice 2"]
        total = await me.messages.count.get()
        assert total == 3
        unread = await me.messages.count.get(
            RequestConfiguration(
                query_parameters=CountRequestBuilder.CountRequestBuilderGetQueryParameters(
                    filter="isRead eq false"
                )
            )
        )
        assert unread == 2
        with pytest.raises(ODataError) as caught:
            both = MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
                search='"invoice"', filter="isRead eq false"
            )
            await me.messages.get(RequestConfiguration(query_parameters=both))
        assert caught.value.response_status_code == 400

    _run(graph_url, ssl_context, org.app_token(), body)


def test_folder_rename_delete_and_delta(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org
) -> None:
    async def body(client: GraphServiceClient, adapter: GraphRequestAdapter) -> None:
        me = client.users.by_user_id(org.alice.id)
        created = await me.mail_folders.post(MailFolder(display_name="Invoices"))
        assert created is not None and created.id is not None
        config = RequestConfiguration(
            query_parameters=DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
                select=["displayName", "parentFolderId"]
            )
        )
        config.headers.add("Prefer", "odata.maxpagesize=4")
        page = await me.mail_folders.delta.get(config)
        names: list[str] = []
        while True:
            assert page is not None and page.value is not None
            names += [str(f.display_name) for f in page.value]
            if page.odata_delta_link:
                break
            assert page.odata_next_link
            page = await me.mail_folders.delta.with_url(page.odata_next_link).get()
        assert "Invoices" in names and "Inbox" in names
        delta_link = page.odata_delta_link
        renamed = await me.mail_folders.by_mail_folder_id(created.id).patch(
            MailFolder(display_name="Bills")
        )
        assert renamed is not None and renamed.display_name == "Bills"
        changes = await me.mail_folders.delta.with_url(delta_link).get()
        assert changes is not None and changes.value is not None
        assert [f.display_name for f in changes.value] == ["Bills"]
        await me.mail_folders.by_mail_folder_id(created.id).delete()
        with pytest.raises(ODataError) as caught:
            await me.mail_folders.by_mail_folder_id("inbox").delete()
        assert caught.value.error is not None
        assert caught.value.error.code == "ErrorDeleteDistinguishedFolder"

    _run(graph_url, ssl_context, org.app_token(), body)
    deleted = org.alice.mailbox.folder("deleteditems")
    assert deleted is not None
    assert [f.display_name for f in org.alice.mailbox.children(deleted.id)] == ["Bills"]


def test_if_match_through_the_sdk(graph_url: str, ssl_context: ssl.SSLContext, org: Org) -> None:
    msg = org.deliver(org.alice)

    async def body(client: GraphServiceClient, _: GraphRequestAdapter) -> Any:
        item = client.users.by_user_id(org.alice.id).messages.by_message_id(msg.rest_id)
        current = await item.get()
        assert current is not None and current.change_key == msg.change_key
        fresh: RequestConfiguration[Any] = RequestConfiguration()
        fresh.headers.add("If-Match", f'W/"{current.change_key}"')
        updated = await item.patch(Message(categories=["Mine"]), fresh)
        assert updated is not None and updated.change_key != current.change_key
        stale: RequestConfiguration[Any] = RequestConfiguration()
        stale.headers.add("If-Match", f'W/"{current.change_key}"')
        with pytest.raises(ODataError) as caught:
            await item.patch(Message(categories=["Theirs"]), stale)
        assert caught.value.response_status_code == 412
        assert caught.value.error is not None
        assert caught.value.error.code == "ErrorIrresolvableConflict"

    _run(graph_url, ssl_context, org.app_token(), body)
    assert msg.categories == ["Mine"]


def test_attachment_content_over_http_matches_sdk_bytes(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org
) -> None:
    """Attachments' ``$value`` has no SDK builder; its bytes equal ``contentBytes``."""
    import httpx

    from m365sim.store import Attachment

    msg = org.deliver(org.alice)
    msg.attachments = [Attachment("AAMkADattach0000000000001=", "a.bin", "application/zip", b"PK")]
    with httpx.Client(verify=ssl_context, trust_env=False) as http:
        raw = http.get(
            f"{graph_url}/me/messages/{msg.rest_id}/attachments/{msg.attachments[0].id}/$value",
            headers={"Authorization": f"Bearer {org.token(org.alice)}"},
        )
    assert raw.status_code == 200 and raw.content == b"PK"
    assert base64.b64encode(raw.content).decode() == "UEs="
