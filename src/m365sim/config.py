"""The emulator's knobs: Microsoft's limits as defaults, each changeable per test or scenario.

Where Microsoft's real behaviour is unknown or varies (the status of ``ErrorFolderExists``, the
subscription lifetime cap), the value is a setting and its docstring says what is known.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class EmulatorConfig:
    # Identity platform
    access_token_lifetime: int = 3599  # seconds; Entra issues 60-90 minute tokens
    code_lifetime: int = 600  # authorization codes live about ten minutes
    refresh_token_inactivity_days: int = 90  # AADSTS700082 after this long unused
    # ``wids`` (directory role template ids) in delegated Graph access tokens. Graph access
    # tokens are shaped by Graph's registration, not the client's groupMembershipClaims, and
    # real ones carry ``wids``; clients must not read Graph tokens anyway. Off = leave it out.
    graph_access_token_wids: bool = True
    # Whether groupMembershipClaims "SecurityGroup" alone puts ``wids`` into id tokens: the
    # optional-claims docs require "DirectoryRole" or "All"; Graph's application resource says
    # SecurityGroup is "for security groups and Microsoft Entra roles". Unverified: a setting.
    wids_with_security_group: bool = False
    # Graph
    default_page_size: int = 10  # messages and folders without $top
    max_page_size: int = 1000  # $top above this answers 400
    folder_exists_status: int = 409  # reported as 409 by some, 400 by others (graph.md 3.4)
    delta_filter_cap: int = 5000  # delta with $filter returns at most this many messages
    delta_token_lifetime_days: int = 30  # older delta tokens answer 410 SyncStateNotFound
    # Creating a master category whose displayName exists: not verified on a real tenant
    # (graph.md 3.7), so both the status and the error code are settings.
    category_exists_status: int = 409
    category_exists_code: str = "ErrorDuplicateCategory"
    # createForward (and createReply/createReplyAll) without recipients: Microsoft's first
    # documented example posts no body at all and gets 201 with the draft; the same page also
    # lists a 400 when no recipients are given. Off = the documented example (a draft without
    # recipients, to be completed by PATCH); on = 400 ErrorInvalidRecipients.
    create_forward_requires_recipients: bool = False
    # JSON request bodies nested deeper than this answer 400 (ODataLib's MaxNestingDepth
    # default is 100). Values above ~900 cannot be honoured: Python's parser stops first,
    # which is answered with the same 400.
    json_max_depth: int = 100
    # $filter limits. ODataLib stops at a recursion limit (the emulator counts nesting levels:
    # brackets, not, lambdas); how many terms Exchange accepts in one restriction is not
    # documented. Both answer 400, the code and wording are the emulator's (not verified).
    filter_max_depth: int = 100
    filter_max_terms: int = 500
    # PATCH of a message with a stale change key (If-Match, or changeKey in the body): Exchange
    # answers ErrorIrresolvableConflict; the HTTP status Graph uses for it is reported as 412
    # (Precondition Failed) and, less often, 409. A setting.
    stale_change_key_status: int = 412
    # A changeKey in a message PATCH body: on = a concurrency check like If-Match (EWS sends
    # the change key with the item id; whether Graph honours it in the body is not verified);
    # off = refused as a read-only property (ErrorInvalidPropertySet).
    patch_change_key_in_body: bool = True
    # Content-Type of GET /messages/{id}/$value (the MIME of a message). Graph's docs show the
    # MIME text but not the header; "text/plain" is what clients report seeing.
    mime_value_content_type: str = "text/plain"
    # POST /messages/{id}/attachments takes attachments up to this size (3 MB, documented;
    # larger files need an upload session, which the emulator does not offer).
    attachment_max_bytes: int = 3 * 1024 * 1024
    # Throttling, per (application, mailbox): on by default, as in Microsoft 365
    throttling_enabled: bool = True
    mailbox_requests_per_window: int = 10_000
    mailbox_window_seconds: float = 600.0
    mailbox_concurrency: int = 4
    throttle_retry_after: float = 2.0  # seconds in Retry-After for the rate limit
    # Change notifications
    subscription_max_minutes: int = 10_080  # docs disagree (4,230 or 10,080); configurable
    subscription_min_minutes: int = 45  # shorter requests are raised to this
    subscriptions_per_mailbox: int = 1000
    validation_timeout: float = 10.0
    delivery_timeout: float = 3.0
    slow_threshold_ms: int = 2900
    # retry delays in seconds after a failed delivery; Graph retries for up to four hours
    delivery_retry_delays: list[float] = field(
        default_factory=lambda: [10.0, 30.0, 60.0, 300.0, 900.0, 3600.0]
    )
    delivery_batch_max: int = 10  # notifications per POST
    delivery_coalesce_ms: int = 50  # wait this long to batch several notifications
    lifecycle_reauthorize_minutes: int = 60  # reauthorizationRequired this long before expiry
    # Graph requires https notification URLs ("NotificationUrl scheme='http' is not supported.");
    # the emulator also accepts http for loopback hosts (127.0.0.1, ::1, localhost) when this
    # is on, so tests and local Postroom runs need no certificate. Off = Microsoft's rule.
    allow_http_notification_url: bool = True
    # CA bundle (PEM path) trusted for https notification URLs; "" = the system's trust store
    notification_ca_file: str = ""
    # The validation response must be text/plain (documented); whether Graph enforces the
    # content type is not known, so it is a setting.
    validation_require_text_plain: bool = True
    # Status for the 1,000-subscriptions-per-mailbox limit: not documented for Outlook
    # (directory resources answer 403), so configurable.
    subscription_limit_status: int = 403
    # Slow-endpoint policy (graph.md 4.5): after this many notifications within a window, an
    # endpoint with >= throttle % slow answers is delayed, >= drop % has notifications dropped.
    slow_endpoint_min_notifications: int = 100
    slow_endpoint_throttle_percent: float = 10.0
    slow_endpoint_drop_percent: float = 15.0
    slow_endpoint_delay_minutes: float = 10.0  # delay for a throttled endpoint (real time)
    slow_endpoint_window_minutes: float = 10.0  # counters reset this often (emulator clock)
    # After the creator's access token expires, delivery continues this long (emulator clock)
    # before pausing until reauthorize/renew. Microsoft only says "for a while".
    reauthorization_grace_minutes: float = 60.0
    lifecycle_tick_seconds: float = 0.25  # how often expiry/lifecycle conditions are checked

    # Delivery through the control API (POST /_emulator/mailboxes/{id}/deliver). Exchange
    # Online's default maximum receive size is 36 MB (35 MB of content after encoding overhead)
    # and it refuses messages whose header exceeds 256 KB.
    deliver_max_bytes: int = 35 * 1024 * 1024
    deliver_max_header_bytes: int = 256 * 1024

    def update(self, values: dict[str, Any]) -> None:
        """Apply a partial update, rejecting unknown names and wrong types."""
        known = {f.name: f for f in fields(self)}
        for name, value in values.items():
            if name not in known:
                raise ValueError(f"unknown setting {name!r}")
            current = getattr(self, name)
            if isinstance(current, bool):
                if not isinstance(value, bool):
                    raise ValueError(f"{name} must be true or false")
            elif isinstance(current, int):
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ValueError(f"{name} must be an integer")
            elif isinstance(current, float):
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise ValueError(f"{name} must be a number")
                value = float(value)
            elif isinstance(current, str):
                if not isinstance(value, str):
                    raise ValueError(f"{name} must be a string")
            elif isinstance(current, list):
                if not isinstance(value, list) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) for v in value
                ):
                    raise ValueError(f"{name} must be a list of numbers")
                value = [float(v) for v in value]
            elif isinstance(current, str) and not isinstance(value, str):
                raise ValueError(f"{name} must be a string")
            setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
