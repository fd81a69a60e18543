"""Small helpers shared by the mail endpoint tests."""

from __future__ import annotations

from typing import Any

import httpx

IMMUTABLE = {"Prefer": 'IdType="ImmutableId"'}


def auth(token: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **extra}


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The Graph error object, after checking the envelope's shape."""
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["code"], str) and isinstance(error["message"], str)
    assert error["innerError"]["request-id"]
    return dict(error)
