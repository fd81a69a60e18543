"""msgraph-sdk, unchanged, creates, renews and deletes a subscription (graph.md 6)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
from azure.core.credentials import AccessToken
from kiota_authentication_azure.azure_identity_authentication_provider import (
    AzureIdentityAuthenticationProvider,
)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.subscription import Subscription
from msgraph_core import GraphClientFactory

from m365sim.state import EmulatorState
from tests.helpers import Org
from tests.notifications.receiver import Hook


class StaticCredential:
    """The smallest azure-core TokenCredential: hands out one emulator-issued token."""

    def __init__(self, token: str, expires_on: int) -> None:
        self._token = AccessToken(token, expires_on)

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self._token


def _client(
    graph_url: str, ssl_context: ssl.SSLContext, org: Org
) -> tuple[GraphServiceClient, httpx.AsyncHTTPTransport]:
    """A GraphServiceClient on the emulator, as graph.md 6 describes; close the transport."""
    credential = StaticCredential(org.app_token(), int(org.state.clock.time()) + 3600)
    auth = AzureIdentityAuthenticationProvider(
        credential,
        scopes=["https://graph.microsoft.com/.default"],
        allowed_hosts=["localhost"],
    )
    # The SDK's middleware wraps the client's transport and never closes it: keep a handle.
    transport = httpx.AsyncHTTPTransport(verify=ssl_context, trust_env=False)
    http_client = GraphClientFactory.create_with_default_middleware(
        client=httpx.AsyncClient(base_url=graph_url, transport=transport, trust_env=False)
    )
    adapter = GraphRequestAdapter(auth, client=http_client)
    return GraphServiceClient(request_adapter=adapter), transport


def test_sdk_creates_renews_and_deletes_a_subscription(
    graph_url: str,
    ssl_context: ssl.SSLContext,
    org: Org,
    sim: EmulatorState,
    hook: Callable[..., Hook],
) -> None:
    target = hook()
    client, transport = _client(graph_url, ssl_context, org)

    async def scenario() -> tuple[Subscription | None, Subscription | None, int]:
        async with transport:
            return await steps()

    async def steps() -> tuple[Subscription | None, Subscription | None, int]:
        created = await client.subscriptions.post(
            Subscription(
                change_type="created,updated",
                notification_url=target.url,
                resource=f"users/{org.alice.id}/mailFolders('inbox')/messages",
                expiration_date_time=sim.clock.now() + timedelta(hours=2),
                client_state="sdk-state",
            )
        )
        assert created is not None and created.id is not None
        renewed = await client.subscriptions.by_subscription_id(created.id).patch(
            Subscription(expiration_date_time=sim.clock.now() + timedelta(days=2))
        )
        listing = await client.subscriptions.get()
        count = len(listing.value or []) if listing else 0
        await client.subscriptions.by_subscription_id(created.id).delete()
        return created, renewed, count

    created, renewed, count = asyncio.run(scenario())
    assert created is not None and renewed is not None
    assert len(target.validations) == 1  # the handshake happened
    assert created.client_state == "sdk-state"
    assert created.application_id == org.app.client_id
    assert created.change_type == "created,updated"
    assert created.expiration_date_time is not None
    assert renewed.expiration_date_time is not None
    assert renewed.expiration_date_time > created.expiration_date_time
    assert count == 1
    remaining = [s for s in sim.extensions["subscriptions"].all() if s.tenant_id == org.tenant.id]
    assert remaining == []
