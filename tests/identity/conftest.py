"""Fixtures for the identity tests: MSAL pointed at the emulator, and a cookie-keeping browser.

MSAL is used unchanged, configured only by ``authority`` (``{base_url}/{tenant_id}``),
``instance_discovery=False`` and an ``http_client`` that trusts the emulator's CA. The session
sets ``trust_env = False`` because this machine exports ``REQUESTS_CA_BUNDLE``, which would
otherwise replace ``verify`` (NOTES.md). Each test makes its own application objects, so MSAL's
60-second cache of HTTP 400 token responses never leaks between cases (graph.md 1.9).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msal
import pytest
import requests

from tests.helpers import Org
from tests.identity.browser import Browser


@pytest.fixture
def msal_session(ca_file: Path) -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False
    session.verify = str(ca_file)
    yield session
    session.close()


MsalFactory = Callable[..., Any]


@pytest.fixture
def msal_app(org: Org, base_url: str, msal_session: requests.Session) -> MsalFactory:
    """``msal_app()`` → a new ConfidentialClientApplication for the org's app."""

    def make(
        *,
        secret: str | None = None,
        client_id: str | None = None,
        tenant: str | None = None,
        public: bool = False,
        **kwargs: Any,
    ) -> Any:
        authority = f"{base_url}/{tenant or org.tenant.id}"
        if public:
            return msal.PublicClientApplication(
                client_id or org.app.client_id,
                authority=authority,
                instance_discovery=False,
                http_client=msal_session,
                **kwargs,
            )
        return msal.ConfidentialClientApplication(
            client_id or org.app.client_id,
            client_credential=secret if secret is not None else org.secret,
            authority=authority,
            instance_discovery=False,
            http_client=msal_session,
            **kwargs,
        )

    return make


@pytest.fixture
def browser(sim_server: Any, ssl_context: ssl.SSLContext) -> Iterator[Browser]:
    with httpx.Client(verify=ssl_context, timeout=10, trust_env=False) as client:
        yield Browser(client)
