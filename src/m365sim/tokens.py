"""Signing keys and tokens.

Access tokens are RS256 JWTs shaped like Entra's v1 Graph tokens (``aud`` =
``https://graph.microsoft.com``; ``scp`` for delegated, ``roles`` for app-only). ID tokens are
v2.0 (``aud`` = client id, ``iss`` = ``{authority}/{tid}/v2.0``). Refresh tokens and
authorization codes are opaque strings whose records live in the :class:`~m365sim.store.Store`.
Clients must not parse Graph tokens; the emulator parses its own to authorize Graph calls.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from m365sim import ids

GRAPH_RESOURCE = "https://graph.microsoft.com"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


class SigningKey:
    """The RSA key that signs every token, with its JWKS entry."""

    def __init__(self, private_key: rsa.RSAPrivateKey, kid: str) -> None:
        self.private_key = private_key
        self.public_key = private_key.public_key()
        self.kid = kid
        self._pem = private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def generate(cls) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(key, kid=ids.opaque(16))

    @classmethod
    def load_or_create(cls, path: Path) -> SigningKey:
        if path.exists():
            data = json.loads(path.read_text())
            key = serialization.load_pem_private_key(data["pem"].encode(), password=None)
            assert isinstance(key, rsa.RSAPrivateKey)
            return cls(key, kid=data["kid"])
        made = cls.generate()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"kid": made.kid, "pem": made._pem.decode()}))
        path.chmod(0o600)
        return made

    def jwk(self) -> dict[str, Any]:
        numbers = self.public_key.public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": _b64int(numbers.n),
            "e": _b64int(numbers.e),
            "issuer": "https://login.microsoftonline.com/{tenantid}/v2.0",
        }

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(
            claims,
            self.private_key,  # the key object: re-parsing the PEM costs ~0.1 s per token
            algorithm="RS256",
            headers={"kid": self.kid, "x5t": self.kid, "typ": "JWT"},
        )

    def verify(self, token: str, *, audience: str | None = None) -> dict[str, Any]:
        # Time claims are checked by callers against the emulator's (advanceable) clock.
        options: Any = {
            "verify_aud": audience is not None,
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
        }
        return jwt.decode(
            token, self.public_key, algorithms=["RS256"], audience=audience, options=options
        )


def _b64int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def client_info(uid: str, utid: str) -> str:
    """MSAL's ``client_info``: base64url JSON ``{"uid": oid, "utid": tid}``."""
    return b64url(json.dumps({"uid": uid, "utid": utid}).encode())


def pkce_matches(verifier: str, challenge: str, method: str) -> bool:
    if method.upper() == "S256":
        return b64url(hashlib.sha256(verifier.encode()).digest()) == challenge
    return verifier == challenge


@dataclass(frozen=True)
class AccessClaims:
    """What the Graph side needs from a validated access token."""

    tenant_id: str
    client_id: str
    user_id: str | None  # None for app-only tokens
    scopes: frozenset[str]
    roles: frozenset[str]
    expires: float

    @property
    def app_only(self) -> bool:
        return self.user_id is None


def graph_scope_name(scope: str) -> str | None:
    """``https://graph.microsoft.com/Mail.Read`` or ``Mail.Read`` -> ``Mail.Read``; others None."""
    if scope.lower().startswith(GRAPH_RESOURCE + "/"):
        return scope[len(GRAPH_RESOURCE) + 1 :]
    if scope.lower().startswith(GRAPH_APP_ID + "/"):
        return scope[len(GRAPH_APP_ID) + 1 :]
    if "/" in scope or ":" in scope:
        return None
    if scope.lower() in ("openid", "profile", "email", "offline_access"):
        return None
    return scope


def issue_access_token(
    key: SigningKey,
    *,
    now: float,
    lifetime: int,
    tenant_id: str,
    client_id: str,
    user_id: str | None,
    scopes: list[str] | None = None,
    roles: list[str] | None = None,
    name: str | None = None,
    upn: str | None = None,
    app_name: str = "",
    wids: list[str] | None = None,
) -> str:
    """An access token for Graph: delegated (``scp``) when ``user_id`` is set, else app-only
    (``roles``, ``idtyp=app``). ``wids``: the user's directory role template ids, if given."""
    claims: dict[str, Any] = {
        "aud": GRAPH_RESOURCE,
        "iss": f"https://sts.windows.net/{tenant_id}/",
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now + lifetime),
        "tid": tenant_id,
        "appid": client_id,
        "azp": client_id,
        "app_displayname": app_name,
        "appidacr": "1",
        "ver": "1.0",
        "uti": ids.opaque(16),
        "jti": ids.opaque(16),
    }
    if user_id is None:
        claims["oid"] = client_id
        claims["sub"] = client_id
        claims["idtyp"] = "app"
        claims["roles"] = sorted(roles or [])
    else:
        claims["oid"] = user_id
        claims["sub"] = hashlib.sha256(f"{user_id}:{client_id}".encode()).hexdigest()[:43]
        claims["idtyp"] = "user"
        claims["scp"] = " ".join(sorted(scopes or []))
        if name:
            claims["name"] = name
        if upn:
            claims["upn"] = upn
            claims["unique_name"] = upn
        if wids is not None:
            claims["wids"] = list(wids)
    return key.sign(claims)
