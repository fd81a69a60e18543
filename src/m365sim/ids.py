"""Identifiers shaped like Microsoft's.

Graph message and folder ids are opaque base64 strings (``AAMkAD...``); immutable ids have a
different prefix (``AAkALg...``). Tenant, user and application ids are GUIDs. Tests and clients
must treat all of them as opaque; the shapes only make logs and the viewer look familiar.
"""

from __future__ import annotations

import base64
import secrets
import uuid


def guid() -> str:
    return str(uuid.uuid4())


def _b64(prefix: bytes, n: int) -> str:
    return base64.urlsafe_b64encode(prefix + secrets.token_bytes(n)).decode().rstrip("=") + "="


def rest_message_id() -> str:
    """A REST item id: changes when the message moves, unless immutable ids were asked for."""
    return _b64(b"\x00\x03\x24\x00", 44)


def immutable_message_id() -> str:
    """An immutable id (``Prefer: IdType="ImmutableId"``): stable across moves in a mailbox."""
    return _b64(b"\x00\x09\x00\x2e", 44)


def folder_id() -> str:
    return _b64(b"\x00\x03\x24\x00\x01", 40)


def change_key() -> str:
    return base64.b64encode(b"\x09\x00\x00\x00" + secrets.token_bytes(18)).decode()


def opaque(n: int = 24) -> str:
    return secrets.token_urlsafe(n)
