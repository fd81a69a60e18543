"""Secrets at rest: AES-GCM for token caches and other credentials.

The key comes from ``POSTROOM_TOKEN_KEY`` (base64, 32 bytes) or is generated on first run into
``<data_dir>/token.key`` with mode 0600. A database dump alone therefore holds no usable token.
Each value is ``nonce (12 bytes) || ciphertext+tag``, and the associated data binds it to its
purpose and owner (e.g. ``b"token-cache:<integration id>"``), so a ciphertext copied onto
another row does not decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class DecryptionFailed(Exception):
    """The ciphertext is corrupt, belongs elsewhere, or the key changed."""


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the token key must be 32 bytes (base64 of 32 bytes)")
        self._aead = AESGCM(key)
        self._key = key

    def derive(self, label: bytes) -> bytes:
        """A separate 32-byte key for another purpose (e.g. HMACs), derived from this one."""
        return hmac.new(self._key, b"postroom-derive:" + label, hashlib.sha256).digest()

    def encrypt(self, plaintext: bytes, *, context: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, context)

    def decrypt(self, blob: bytes, *, context: bytes) -> bytes:
        if len(blob) < 13:
            raise DecryptionFailed("ciphertext too short")
        try:
            return self._aead.decrypt(blob[:12], blob[12:], context)
        except InvalidTag as exc:
            raise DecryptionFailed("ciphertext does not decrypt with this key/context") from exc


def load_or_create_key(configured: str | None, path: Path) -> bytes:
    """The configured base64 key, else the key file, else a new key written with 0600."""
    if configured:
        try:
            return base64.b64decode(configured, validate=True)
        except ValueError as exc:
            raise ValueError("POSTROOM_TOKEN_KEY must be base64") from exc
    if path.exists():
        return base64.b64decode(path.read_text().strip())
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(key).decode())
    return key


def load_or_create_text_secret(configured: str | None, path: Path) -> str:
    """A random text secret (e.g. the session-cookie key), kept like the token key."""
    if configured:
        return configured
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    return value
