"""Settings from the environment (with *_FILE secrets) and secrets at rest."""

from __future__ import annotations

import base64
import logging
import stat
from pathlib import Path

import httpx
import pytest

from m365sim.state import EmulatorState
from postroom.crypto import DecryptionFailed, SecretBox, load_or_create_key
from postroom.settings import Settings
from tests.postroom.conftest import Postroom
from tests.postroom.test_connect import connect_personal, finish_wizard
from tests.postroom.webtools import sign_up


def test_defaults_point_at_microsofts_cloud(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "POSTROOM_AUTHORITY_HOST", "POSTROOM_GRAPH_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.authority_host == "https://login.microsoftonline.com"
    assert settings.graph_base_url == "https://graph.microsoft.com/v1.0"
    assert settings.database_url is None


def test_secret_file_and_database_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("POSTROOM_MS_CLIENT_SECRET_FILE", str(secret))
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@db/postroom")
    monkeypatch.setenv("POSTROOM_AUTHORITY_HOST", "https://localhost:8443/")
    settings = Settings()
    assert settings.ms_client_secret is not None
    assert settings.ms_client_secret.get_secret_value() == "from-a-file"
    assert "from-a-file" not in repr(settings)
    assert settings.database_url == "postgresql://u@db/postroom"
    assert settings.authority_host == "https://localhost:8443"


def test_unreadable_secret_file_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("POSTROOM_MS_CLIENT_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="POSTROOM_MS_CLIENT_SECRET_FILE"):
        Settings()


def test_bad_urls_and_booleans_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTROOM_GRAPH_BASE_URL", "graph.microsoft.com")
    with pytest.raises(ValueError):
        Settings()
    monkeypatch.delenv("POSTROOM_GRAPH_BASE_URL")
    monkeypatch.setenv("POSTROOM_COOKIE_SECURE", "maybe")
    with pytest.raises(ValueError):
        Settings()


def test_generated_token_key_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "token.key"
    key = load_or_create_key(None, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(None, path) == key
    configured = base64.b64encode(b"k" * 32).decode()
    assert load_or_create_key(configured, path) == b"k" * 32


def test_ciphertext_is_bound_to_its_owner() -> None:
    box = SecretBox(b"x" * 32)
    blob = box.encrypt(b"refresh-token-material", context=b"token-cache:one")
    assert b"refresh-token-material" not in blob
    assert box.decrypt(blob, context=b"token-cache:one") == b"refresh-token-material"
    with pytest.raises(DecryptionFailed):
        box.decrypt(blob, context=b"token-cache:two")
    with pytest.raises(DecryptionFailed):
        SecretBox(b"y" * 32).decrypt(blob, context=b"token-cache:one")


def test_no_token_secret_or_code_in_logs(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Loggers are process-wide: an in-process uvicorn started by another test (m365sim's, at
    # log level "warning") raises the access logger's level, and uvicorn's default log config
    # turns its propagation off. This test reads those lines through the root, at INFO.
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):
        caplog.set_level(logging.DEBUG, logger=name)
        logging.getLogger(name).propagate = True
        logging.getLogger(name).disabled = False
    org = postroom.org(sim)
    sign_up(web)
    base = connect_personal(web, postroom, org).removesuffix("/setup")
    finish_wizard(web, base)
    # What the server side logged (uvicorn access lines, MSAL, the Graph client), not this
    # test's own HTTP client, which of course sees the redirect URLs.
    server_records = [r for r in caplog.records if r.threadName != "MainThread"]
    assert any(r.name == "uvicorn.access" for r in server_records)
    text = "\n".join(r.getMessage() for r in server_records)
    assert "/auth/callback?" in text and "code=[redacted]" in text
    secrets = [postroom.settings.ms_client_secret.get_secret_value()]  # type: ignore[union-attr]
    secrets += [r.token for r in sim.store.refresh_tokens.values()]
    secrets += [c.code for c in sim.store.auth_codes.values()]
    assert secrets
    for secret in secrets:
        assert secret not in text
    assert "eyJ0eXAi" not in text  # no JWT (access or id token)
