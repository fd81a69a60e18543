"""One typed settings object, read from the environment (prefix ``POSTROOM_``).

Secrets may be given directly or as ``*_FILE`` paths (``POSTROOM_MS_CLIENT_SECRET_FILE``),
as container platforms mount them. Defaults point at the real Microsoft cloud; ``postroom demo``
points them at m365sim. Nothing here does I/O at import time: :func:`load_settings` reads the
environment when called.

``DATABASE_URL`` (no prefix, the common convention) selects a PostgreSQL server; when unset,
Postroom starts an embedded PostgreSQL (``pgserver``) in ``<data_dir>/pg``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DELEGATED_SCOPES = ["User.Read", "MailboxSettings.Read", "Mail.ReadWrite", "Mail.Send"]
SHARED_SCOPES = ["Mail.ReadWrite.Shared", "Mail.Send.Shared"]
MINIMAL_SCOPES = ["User.Read", "Mail.ReadWrite"]
CATEGORY_COLOUR_SCOPE = "MailboxSettings.ReadWrite"


class Settings(BaseSettings):
    # hide_input_in_errors: a configuration error never echoes a value (an SMTP URL or a
    # database URL may carry a password)
    model_config = SettingsConfigDict(
        env_prefix="POSTROOM_",
        extra="ignore",
        case_sensitive=False,
        frozen=True,
        hide_input_in_errors=True,
    )

    data_dir: Path = Path(".postroom")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "POSTROOM_DATABASE_URL")
    )
    public_base_url: str = "http://localhost:8000"
    secret_key: SecretStr | None = None  # signs session cookies; generated on first run if unset
    token_key: SecretStr | None = None  # encrypts token caches; generated on first run if unset

    ms_client_id: str = ""
    ms_client_secret: SecretStr | None = None
    authority_host: str = "https://login.microsoftonline.com"
    graph_base_url: str = "https://graph.microsoft.com/v1.0"
    ca_bundle: Path | None = None  # trust this CA bundle for Microsoft (m365sim's local CA)

    # sync: polling_only for installations Graph cannot reach (no public https URL)
    polling_only: bool = False
    poll_interval_seconds: int = Field(default=60, ge=10, le=3600)
    reconcile_minutes: int = Field(default=5, ge=1, le=60)
    worker_concurrency: int = Field(default=4, ge=1, le=64)
    # learned classifier: "none" is hashed n-grams only (fast; long mail). "e5" adds a cascade
    # stage with the multilingual e5 encoder for the emails the n-grams are unsure of (short or
    # cross-language mail, ~20-130 ms per unsure email on 2 cores). "e5+minilm" is the strongest:
    # logistic heads over n-grams and WordLlama, then e5 and English MiniLM plus a nearest-
    # example vote for the unsure ones (~40 ms more each; best with few examples or intent-like
    # mail). A change applies at each integration's next refit (editor save, Retrain): towards
    # "none" (or from "e5+minilm" to "e5") the corrections learned so far are kept; towards an
    # encoder they were made without they cannot be (their vectors would need the mail).
    classifier_embedder: Literal["none", "e5", "e5+minilm"] = "none"
    # mail that fits no category: "score" (every recipe) leaves an email alone when its best
    # category scores lower than nearly all of that category's own examples; "nearest"
    # (e5+minilm only) when no example of it is nearly as close as they are to one another.
    # "nearest" leaves more of the other mail alone on short intent-like mail (BANKING77: 0.47
    # of it filed instead of 0.55, at the same cost to the configured mail) but runs the
    # encoders for every email, about halving the emails/s of the recipe (decision 0016).
    classifier_open_set: Literal["score", "nearest"] = "score"
    # learning from decisions nobody corrected: a model or rule decision at or above this
    # confidence becomes an example once it has stood this long without a correction
    learn_from_decisions: bool = True
    learn_confidence: float = Field(default=0.9, ge=0.0, le=1.0)
    learn_after_seconds: int = Field(default=600, ge=0, le=7 * 24 * 3600)
    # ... and only in categories with at least this many examples from people (typed examples
    # and corrections): a model that has seen little teaches itself its own mistakes
    learn_minimum_examples: int = Field(default=20, ge=0, le=10_000)

    # Postroom's own email (sign-up links, invitations): SMTP when set, e.g.
    # smtp://user:pass@mail.example.com:587 (STARTTLS) or smtps://...:465; without it the emails
    # are printed to the terminal (the demo). The password may come apart, as a secret.
    smtp_url: SecretStr | None = None
    smtp_password: SecretStr | None = None
    smtp_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    mail_from: str = Field(default="Postroom <postroom@localhost>", min_length=3, max_length=320)
    # how long an invitation link and a sign-up link can be used (once)
    invitation_days: int = Field(default=7, ge=1, le=90)
    signup_link_hours: int = Field(default=24, ge=1, le=7 * 24)

    # sign-in sessions live in the database (postroom.accounts.sessions): a session ends at
    # sign-out, on a password change (the others), when revoked, after this long unused (idle)
    # and at the latest this long after sign-in (absolute; also the cookie's max age)
    session_idle_seconds: int = Field(default=24 * 3600, ge=60, le=90 * 24 * 3600)
    session_max_age: int = Field(default=14 * 24 * 3600, ge=60, le=365 * 24 * 3600)
    cookie_secure: bool = False  # set true behind https
    # sign-in throttling (postroom.accounts.throttle): after this many failures in the window an
    # account, or a client address, waits; an account's wait grows with further failures, up to
    # signin_lockout_max_seconds
    signin_window_seconds: int = Field(default=15 * 60, ge=10, le=24 * 3600)
    signin_account_failures: int = Field(default=5, ge=1, le=1000)
    signin_address_failures: int = Field(default=50, ge=1, le=100_000)
    signin_lockout_max_seconds: int = Field(default=24 * 3600, ge=10, le=7 * 24 * 3600)
    # /openapi.json describes every route; off unless an operator wants it (POSTROOM_API_DOCS)
    api_docs: bool = False

    # monitoring (docs/operations.md): /metrics answers only a request with
    # "Authorization: Bearer <metrics_token>" (unset: /metrics is 404); /readyz wants a worker
    # heartbeat younger than ready_worker_seconds
    metrics_token: SecretStr | None = None
    ready_worker_seconds: int = Field(default=60, ge=15, le=3600)
    # alerts to a workspace's owners and admins (email; and this Slack/Teams incoming webhook
    # if set) when an integration or mailbox stops, or a mailbox's sync lags this many minutes
    alert_lag_minutes: int = Field(default=30, ge=2, le=7 * 24 * 60)
    alert_webhook_url: SecretStr | None = None
    # a workspace's own webhook (its Alerts page) may point at private, loopback or link-local
    # addresses, and use plain http: only for a chat server on the internal network (and tests).
    # Off, it must be https to a public address (postroom.alerts.webhook: SSRF)
    alert_webhook_allow_private: bool = False
    # an email a worker claimed this long ago and never finished lost its worker (SIGKILL, a
    # lost machine): the reconcile finishes it (postroom.sync.stale_claims). Safe to lower: a
    # live sync holds its mailbox's lock, and the resume waits for that lock
    stale_claim_seconds: int = Field(default=600, ge=10, le=24 * 3600)

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data: Any) -> Any:
        """``*_FILE`` variables: the secret is the content of the named file."""
        import os

        if not isinstance(data, dict):
            return data
        for name in (
            "ms_client_secret",
            "secret_key",
            "token_key",
            "database_url",
            "smtp_url",
            "smtp_password",
            "metrics_token",
            "alert_webhook_url",
        ):
            env = f"POSTROOM_{name.upper()}_FILE"
            path = data.get(f"{name}_file") or os.environ.get(env)
            if path and not data.get(name):
                try:
                    data[name] = Path(path).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise ValueError(f"{env}: cannot read {path}: {exc.strerror}") from exc
        return data

    @model_validator(mode="after")
    def _open_set_needs_its_recipe(self) -> Settings:
        if self.classifier_open_set == "nearest" and self.classifier_embedder != "e5+minilm":
            raise ValueError(
                "POSTROOM_CLASSIFIER_OPEN_SET=nearest needs POSTROOM_CLASSIFIER_EMBEDDER=e5+minilm "
                f"(it is {self.classifier_embedder!r}): the check compares the e5 and MiniLM "
                "vectors of the email and of the examples"
            )
        return self

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value.get_secret_value())
            parts.port  # noqa: B018  (raises on a bad port)
        except ValueError:
            raise ValueError("must be smtp://[user:pass@]host[:port] or smtps://...") from None
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("must be smtp://[user:pass@]host[:port] or smtps://...")
        return value

    @field_validator("metrics_token", "alert_webhook_url")
    @classmethod
    def _empty_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value().strip() else None

    @field_validator("alert_webhook_url")
    @classmethod
    def _webhook_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL")
        return value

    @field_validator("public_base_url", "authority_host", "graph_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http(s) URL")
        return value.rstrip("/")

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_base_url}/auth/callback"

    @property
    def admin_consent_redirect_uri(self) -> str:
        return f"{self.public_base_url}/auth/admin-consent/callback"

    @property
    def webhook_url(self) -> str:
        return f"{self.public_base_url}/webhooks/graph"


def load_settings(**overrides: Any) -> Settings:
    return Settings(**overrides)
