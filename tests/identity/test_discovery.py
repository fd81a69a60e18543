"""Discovery documents, signing keys, instance discovery and userinfo (graph.md 1.8)."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import Org
from tests.identity.browser import Browser
from tests.identity.conftest import MsalFactory
from tests.identity.flows import sign_in_with_msal


@pytest.mark.parametrize("by", ["guid", "domain"])
def test_tenant_configuration_uses_the_tenant_guid(
    org: Org, http: httpx.Client, base_url: str, by: str
) -> None:
    key = org.tenant.id if by == "guid" else org.tenant.domain
    response = http.get(f"/{key}/v2.0/.well-known/openid-configuration")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    doc = response.json()
    tid = org.tenant.id
    assert doc["issuer"] == f"{base_url}/{tid}/v2.0"
    assert doc["authorization_endpoint"] == f"{base_url}/{tid}/oauth2/v2.0/authorize"
    assert doc["token_endpoint"] == f"{base_url}/{tid}/oauth2/v2.0/token"
    assert doc["jwks_uri"] == f"{base_url}/{tid}/discovery/v2.0/keys"
    assert doc["end_session_endpoint"] == f"{base_url}/{tid}/oauth2/v2.0/logout"
    assert doc["response_modes_supported"] == ["query", "fragment", "form_post"]
    assert doc["subject_types_supported"] == ["pairwise"]
    assert doc["id_token_signing_alg_values_supported"] == ["RS256"]
    assert "client_secret_basic" in doc["token_endpoint_auth_methods_supported"]
    assert doc["scopes_supported"] == ["openid", "profile", "email", "offline_access"]


@pytest.mark.parametrize("segment", ["common", "organizations"])
def test_multi_tenant_configuration_has_tenantid_placeholder(
    http: httpx.Client, base_url: str, segment: str
) -> None:
    doc = http.get(f"/{segment}/v2.0/.well-known/openid-configuration").json()
    assert doc["issuer"] == f"{base_url}/{{tenantid}}/v2.0"
    assert doc["token_endpoint"] == f"{base_url}/{segment}/oauth2/v2.0/token"
    assert doc["tenant_region_scope"] is None


def test_unknown_tenant_configuration_is_invalid_tenant(http: httpx.Client) -> None:
    response = http.get("/unknown-tenant.example/v2.0/.well-known/openid-configuration")
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_tenant"
    assert body["error_codes"] == [90002]
    keys = http.get("/unknown-tenant.example/discovery/v2.0/keys")
    assert keys.status_code == 400


def test_jwks_has_the_token_signing_key(org: Org, http: httpx.Client) -> None:
    keys = http.get(f"/{org.tenant.id}/discovery/v2.0/keys").json()["keys"]
    assert len(keys) == 1
    key = keys[0]
    assert key["kty"] == "RSA" and key["use"] == "sig" and key["kid"]
    assert key["issuer"].endswith(f"/{org.tenant.id}/v2.0")


def test_instance_discovery(org: Org, http: httpx.Client, base_url: str) -> None:
    host = base_url.split("//", 1)[1]
    response = http.get(
        "/common/discovery/instance",
        params={
            "api-version": "1.1",
            "authorization_endpoint": f"https://localhost/{org.tenant.id}/oauth2/v2.0/authorize",
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["tenant_discovery_endpoint"] == (
        f"https://{host}/{org.tenant.id}/v2.0/.well-known/openid-configuration"
    )
    assert body["metadata"][0]["aliases"] == ["localhost"]
    v1 = http.get(
        "/common/discovery/instance",
        params={"authorization_endpoint": "https://localhost/common/oauth2/authorize"},
    ).json()
    assert v1["tenant_discovery_endpoint"].endswith("/common/.well-known/openid-configuration")
    unknown = http.get(
        "/common/discovery/instance",
        params={"authorization_endpoint": "https://login.example.org/common/oauth2/authorize"},
    )
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_instance"
    missing = http.get("/common/discovery/instance")
    assert missing.status_code == 400 and missing.json()["error_codes"] == [50050]


def test_userinfo(org: Org, msal_app: MsalFactory, browser: Browser, http: httpx.Client) -> None:
    result = sign_in_with_msal(msal_app(), browser, org.alice)
    response = http.get(
        "/oidc/userinfo", headers={"Authorization": f"Bearer {result['access_token']}"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["sub"] == result["id_token_claims"]["sub"]
    assert body["name"] == org.alice.display_name
    assert body["email"] == org.alice.user_principal_name
    anonymous = http.get("/oidc/userinfo")
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "InvalidAuthenticationToken"
    app_only = http.get("/oidc/userinfo", headers={"Authorization": f"Bearer {org.app_token()}"})
    assert app_only.status_code == 401
