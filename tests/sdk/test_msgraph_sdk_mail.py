"""The real msgraph-sdk, unchanged, against the emulator's mail endpoints (graph.md 6).

The client is built the way an application points it at another host: an
``httpx.AsyncClient`` with the emulator's base URL and CA, msgraph-core's default middleware
(retry, redirect, URL replacement ``/users/me-token-to-replace`` -> ``/me``), and
``AzureIdentityAuthenticationProvider`` with ``allowed_hosts=["localhost"]`` — without it the
provider silently sends no token to a non-Microsoft host. The credential is a minimal
azure-core ``TokenCredential`` returning tokens the emulator issued.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
from azure.core.credentials import AccessToken
from kiota_abstractions.base_request_configuration import RequestConfiguration
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphServiceClient
from msgraph.generated.models.category_color import CategoryColor
from msgraph.generated.models.email_address import EmailAddress
from msgraph.generated.models.message import Message
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.outlook_category import OutlookCategory
from msgraph.generated.models.recipient import Recipient
from msgraph.generated.users.item.mail_folders.item.messages.delta.delta_request_builder import (
    DeltaRequestBuilder,
)
from msgraph.generated.users.item.mail_folders.item.messages.messages_request_builder import (
    MessagesRequestBuilder,
)
from msgraph.generated.users.item.messages.item.create_forward.create_forward_post_request_body import (  # noqa: E501
    CreateForwardPostRequestBody,
)
from msgraph.generated.users.item.messages.item.forward.forward_post_request_body import (
    ForwardPostRequestBody,
)
from msgraph.generated.users.item.messages.item.move.move_post_request_body import (
    MovePostRequestBody,
)
from msgraph.graph_request_adapter import GraphRequestAdapter
from msgraph.graph_request_adapter import options as graph_options
from msgraph_core import GraphClientFactory
from msgraph_core.tasks.page_iterator import PageIterator

from tests.helpers import Org

T = TypeVar("T")


class EmulatorCredential:
    """An azure-core TokenCredential handing out one emulator-issued access token."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.scopes_seen: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes_seen.append(scopes)
        return AccessToken(self.token, int(time.time()) + 3600)


def _run(
    graph_url: str, ssl_context: ssl.SSLContext, token: str, body: Callable[..., Awaitable[T]]
) -> T:
    """Build a GraphServiceClient for this event loop, run ``body(client, adapter)``."""

    async def main() -> T:
        # msgraph-core wraps the client's transport in one whose aclose() does nothing, so the
        # test keeps its own transport to close the connection pool itself.
        transport = httpx.AsyncHTTPTransport(verify=ssl_context)
        http = httpx.AsyncClient(base_url=graph_url, transport=transport, trust_env=False)
        client_http = GraphClientFactory.create_with_default_middleware(
            client=http, options=graph_options
        )
        provider = AzureIdentityAuthenticationProvider(
            EmulatorCredential(token),
            scopes=["https://graph.microsoft.com/.default"],
            allowed_hosts=["localhost"],
        )
        adapter = GraphRequestAdapter(provider, client=client_http)
        try:
            return await body(GraphServiceClient(request_adapter=adapter), adapter)
        finally:
            await http.aclose()
            await transport.aclose()

    return asyncio.run(main())


def test_list_messages_with_select_top_and_page_iterator(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org
) -> None:
    for i in range(5):
        org.deliver(org.alice, subject=f"Order {i}", categories=["Orders"] if i % 2 else [])

    async def body(client: GraphServiceClient, adapter: GraphRequestAdapter) -> list[Any]:
        config = RequestConfiguration(
            query_parameters=MessagesRequestBuilder.MessagesRequestBuilderGetQueryParameters(
                select=["subject", "categories"], top=2
            )
        )
        inbox = client.users.by_user_id(org.alice.id).mail_folders.by_mail_folder_id("inbox")
        first = await inbox.messages.get(request_configuration=config)
        assert first is not None and first.value is not None and len(first.value) == 2
        assert first.odata_next_link and "$skiptoken=" in first.odata_next_link
        seen: list[Any] = []

        def collect(message: Message) -> bool:
            seen.append((message.subject, message.categories, message.body))
            return True

        await PageIterator(first, adapter).iterate(collect)
        return seen

    seen = _run(graph_url, ssl_context, org.app_token(), body)
    assert [s[0] for s in seen] == [f"Order {i}" for i in range(4, -1, -1)]
    assert seen[1][1] == ["Orders"] and seen[0][1] == []
    assert all(s[2] is None for s in seen)  # not selected


def test_delta_initial_then_incremental_after_move_and_category_edit(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org
) -> None:
    first, second, third = (org.deliver(org.alice, subject=f"M{i}") for i in range(3))
    first_id_in_inbox = first.rest_id  # a move gives the message a new REST id

    async def body(client: GraphServiceClient, adapter: GraphRequestAdapter) -> dict[str, Any]:
        user = client.users.by_user_id(org.alice.user_principal_name)
        delta = user.mail_folders.by_mail_folder_id("inbox").messages.delta
        config = RequestConfiguration(
            query_parameters=DeltaRequestBuilder.DeltaRequestBuilderGetQueryParameters(
                select=["subject", "categories"]
            )
        )
        config.headers.add("Prefer", "odata.maxpagesize=2")
        page = await delta.get(request_configuration=config)
        initial: list[str] = []
        pages = 0
        while True:
            assert page is not None
            pages += 1
            initial += [m.subject for m in page.value or []]
            if page.odata_delta_link:
                delta_link = page.odata_delta_link
                break
            assert page.odata_next_link
            page = await delta.with_url(page.odata_next_link).get(request_configuration=config)
        moved = await user.messages.by_message_id(first.rest_id).move.post(
            MovePostRequestBody(destination_id="archive")
        )
        await user.messages.by_message_id(second.rest_id).patch(Message(categories=["Invoices"]))
        changes = await delta.with_url(delta_link).get()
        assert changes is not None
        return {
            "pages": pages,
            "initial": initial,
            "moved": moved,
            "changes": changes.value,
            "delta_link": changes.odata_delta_link,
        }

    result = _run(graph_url, ssl_context, org.app_token(), body)
    assert result["pages"] == 2
    assert sorted(result["initial"]) == ["M0", "M1", "M2"]
    assert result["moved"].parent_folder_id == org.alice.mailbox.folder("archive").id  # type: ignore[union-attr]
    assert result["moved"].id == first.rest_id != first_id_in_inbox
    by_id = {m.id: m for m in result["changes"]}
    assert set(by_id) == {first_id_in_inbox, second.rest_id}
    assert by_id[first_id_in_inbox].additional_data.get("@removed") == {"reason": "deleted"}
    assert by_id[second.rest_id].categories == ["Invoices"]
    assert third.rest_id not in by_id
    assert result["delta_link"]


def test_create_forward_then_send_and_forward(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org
) -> None:
    source = org.deliver(org.alice, subject="Invoice 4711")
    other = org.deliver(org.alice, subject="Order 12")

    async def body(client: GraphServiceClient, adapter: GraphRequestAdapter) -> Message | None:
        messages = client.users.by_user_id(org.alice.id).messages
        draft = await messages.by_message_id(source.rest_id).create_forward.post(
            CreateForwardPostRequestBody(
                to_recipients=[
                    Recipient(email_address=EmailAddress(address=org.bob.user_principal_name))
                ],
                comment="Please handle",
            )
        )
        assert draft is not None and draft.is_draft and draft.id
        await messages.by_message_id(draft.id).send.post()
        await messages.by_message_id(other.rest_id).forward.post(
            ForwardPostRequestBody(
                to_recipients=[Recipient(email_address=EmailAddress(address="ap@fabrikam.test"))],
                comment="FYI",
            )
        )
        return draft

    draft = _run(graph_url, ssl_context, org.app_token(), body)
    assert draft is not None and draft.subject == "FW: Invoice 4711"
    sent = org.alice.mailbox.folder("sentitems")
    assert sent is not None
    subjects = sorted(org.alice.mailbox.messages[i].subject for i in sent.messages)
    assert subjects == ["FW: Invoice 4711", "FW: Order 12"]
    assert [m.subject for m in org.bob.mailbox.messages.values()] == ["FW: Invoice 4711"]
    outbound = [o for o in org.state.store.outbound if o.tenant_id == org.tenant.id]
    assert {(tuple(o.to), o.internal) for o in outbound} == {
        ((org.bob.user_principal_name,), True),
        (("ap@fabrikam.test",), False),
    }


def test_patch_categories_and_master_categories(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org
) -> None:
    msg = org.deliver(org.alice, categories=["Old"])

    async def body(client: GraphServiceClient, adapter: GraphRequestAdapter) -> dict[str, Any]:
        me = client.me
        updated = await me.messages.by_message_id(msg.rest_id).patch(
            Message(categories=["Invoices", "Urgent"])
        )
        created = await me.outlook.master_categories.post(
            OutlookCategory(display_name="Invoices", color=CategoryColor.Preset3)
        )
        listed = await me.outlook.master_categories.get()
        return {"updated": updated, "created": created, "listed": listed}

    result = _run(graph_url, ssl_context, org.token(org.alice), body)
    assert result["updated"].categories == ["Invoices", "Urgent"]
    assert msg.categories == ["Invoices", "Urgent"]
    assert result["created"].color == CategoryColor.Preset3 and result["created"].id
    assert [(c.display_name, c.color) for c in result["listed"].value] == [
        ("Invoices", CategoryColor.Preset3)
    ]


def test_errors_surface_as_odata_errors(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org
) -> None:
    async def body(client: GraphServiceClient, adapter: GraphRequestAdapter) -> None:
        await (
            client.users.by_user_id(org.alice.id)
            .messages.by_message_id("AAMkAD" + "n" * 60 + "=")
            .get()
        )

    with pytest.raises(ODataError) as caught:
        _run(graph_url, ssl_context, org.app_token(), body)
    assert caught.value.response_status_code == 404
    assert caught.value.error is not None and caught.value.error.code == "ErrorItemNotFound"
