"""Discovery: the OpenID configuration, signing keys, instance discovery and userinfo.

``GET /{tenant}/v2.0/.well-known/openid-configuration`` (graph.md 1.8)
  For a tenant (GUID or verified domain) every endpoint carries the tenant GUID and ``issuer``
  is ``{base}/{tid}/v2.0``. For ``common`` and ``organizations`` the endpoints keep the segment
  and ``issuer`` has the literal ``{tenantid}`` placeholder, as Entra's does; ``consumers``
  answers with the personal-account tenant id. MSAL reads ``authorization_endpoint`` and
  ``token_endpoint`` and takes its tenant from the token endpoint's first path segment (graph.md
  1.9). ``{base}`` is the scheme and host the client used, so a client reaching the emulator
  under another name gets usable links. Unknown tenant → 400 ``invalid_tenant`` (AADSTS90002).
  Like Entra's, the document lists no ``code_challenge_methods_supported`` (PKCE S256 and
  plain both work) and, because the emulator has no device-code flow, no
  ``device_authorization_endpoint`` either.

``GET /{tenant}/discovery/v2.0/keys``
  The JWKS with the emulator's one signing key (``kid`` = the tokens' header ``kid``).

``GET /common/discovery/instance`` (MSAL instance discovery, graph.md 1.8)
  ``tenant_discovery_endpoint`` for the ``authorization_endpoint`` asked about (v2.0 document
  when that endpoint is a ``/oauth2/v2.0/`` one, else the v1 path) and ``metadata`` whose single
  alias group is the emulator's own host name — or Microsoft's public-cloud aliases when the
  emulator is being reached as ``login.microsoftonline.com``. MSAL drops the port when it asks,
  so hosts compare by name and the answer carries the emulator's real ``host:port``. An unknown
  host → 400 ``invalid_instance`` (AADSTS50049).

``GET|POST /oidc/userinfo``
  The OpenID Connect userinfo endpoint (served by Graph at Microsoft): a Graph access token in,
  ``sub`` (the id token's), ``name``, ``family_name``, ``given_name``, ``picture``, ``email`` out.
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from m365sim.errors import GraphError, IdentityError, graph_error_body, identity_error_body
from m365sim.graph.access import authenticate
from m365sim.identity.protocol import MSA_TENANT_ID, resolve_authority
from m365sim.identity.token import pairwise_subject
from m365sim.state import EmulatorState

MICROSOFT_ALIASES = [
    "login.microsoftonline.com",
    "login.windows.net",
    "login.microsoft.com",
    "sts.windows.net",
]
JSON_TYPE = "application/json; charset=utf-8"


def _json(body: dict[str, Any], status: int = 200, *, cache: bool = False) -> Response:
    headers = {"Cache-Control": "max-age=86400, private" if cache else "no-store, no-cache"}
    return Response(
        json.dumps(body).encode(), status_code=status, media_type=JSON_TYPE, headers=headers
    )


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _identity_error(state: EmulatorState, kind: str, **params: Any) -> Response:
    err = IdentityError(kind, dict(params))
    return _json(identity_error_body(err, now=state.clock.now()), err.entry.status)


async def openid_configuration(state: EmulatorState, request: Request) -> Response:
    segment = request.path_params["tenant"]
    authority = resolve_authority(state.store, segment)
    if authority is None:
        return _identity_error(state, "invalid_tenant", tenant=segment)
    base = _base(request)
    seg = authority.segment
    if authority.tenant is not None:
        issuer_tenant = authority.tenant.id
        region: str | None = "EU"
    elif seg == "consumers":
        issuer_tenant = MSA_TENANT_ID
        region = None
    else:
        issuer_tenant = "{tenantid}"
        region = None
    host = urllib.parse.urlsplit(base).netloc
    doc: dict[str, Any] = {
        "token_endpoint": f"{base}/{seg}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": [
            "client_secret_post",
            "private_key_jwt",
            "client_secret_basic",
        ],
        "jwks_uri": f"{base}/{seg}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": f"{base}/{issuer_tenant}/v2.0",
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": f"{base}/oidc/userinfo",
        "authorization_endpoint": f"{base}/{seg}/oauth2/v2.0/authorize",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{base}/{seg}/oauth2/v2.0/logout",
        "claims_supported": [
            "sub",
            "iss",
            "cloud_instance_name",
            "cloud_instance_host_name",
            "cloud_graph_host_name",
            "msgraph_host",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "acr",
            "nonce",
            "preferred_username",
            "name",
            "tid",
            "ver",
            "at_hash",
            "c_hash",
            "email",
        ],
        "tenant_region_scope": region,
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": host,
        "rbac_url": "https://pas.windows.net",
    }
    return _json(doc, cache=True)


async def keys(state: EmulatorState, request: Request) -> Response:
    segment = request.path_params["tenant"]
    authority = resolve_authority(state.store, segment)
    if authority is None:
        return _identity_error(state, "invalid_tenant", tenant=segment)
    jwk = dict(state.signing_key.jwk())
    tenant = authority.tenant.id if authority.tenant else "{tenantid}"
    jwk["issuer"] = f"{_base(request)}/{tenant}/v2.0"
    return _json({"keys": [jwk]}, cache=True)


async def instance_discovery(state: EmulatorState, request: Request) -> Response:
    endpoint = request.query_params.get("authorization_endpoint", "")
    if not endpoint:
        return _identity_error(state, "malformed_discovery")
    parts = urllib.parse.urlsplit(endpoint)
    asked = (parts.hostname or "").lower()
    own = urllib.parse.urlsplit(_base(request))
    own_host = (own.hostname or "").lower()
    if asked == own_host:
        # MSAL asks by host name (it drops the port); answer with the address that works
        aliases = [own_host]
        netloc = own.netloc
    elif asked in MICROSOFT_ALIASES and own_host in MICROSOFT_ALIASES:
        aliases = list(MICROSOFT_ALIASES)
        netloc = parts.netloc.lower()
    else:
        return _identity_error(state, "invalid_instance")
    segments = [s for s in parts.path.split("/") if s]
    tenant = segments[0] if segments else "common"
    version = "/v2.0" if "/oauth2/v2.0/" in parts.path.lower() + "/" else ""
    body = {
        "tenant_discovery_endpoint": (
            f"https://{netloc}/{tenant}{version}/.well-known/openid-configuration"
        ),
        "api-version": "1.1",
        "metadata": [
            {"preferred_network": aliases[0], "preferred_cache": aliases[0], "aliases": aliases}
        ],
    }
    return _json(body, cache=True)


async def userinfo(state: EmulatorState, request: Request) -> Response:
    now = state.clock.now()
    try:
        caller = authenticate(state, request.headers.get("authorization"))
        if caller.user is None:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token validation failure.")
    except GraphError as err:
        body = graph_error_body(
            err.code,
            err.message,
            now=now,
            request_id=str(uuid.uuid4()),
            client_request_id=request.headers.get("client-request-id"),
        )
        response = _json(body, err.status)
        response.headers["WWW-Authenticate"] = 'Bearer realm="", error="invalid_token"'
        return response
    user = caller.user
    return _json(
        {
            "sub": pairwise_subject(user.id, caller.client_id),
            "name": user.display_name,
            "family_name": user.surname,
            "given_name": user.given_name,
            "picture": f"{_base(request)}/v1.0/me/photo/$value",
            "email": user.mail,
        }
    )
