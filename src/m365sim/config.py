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
    # Graph
    default_page_size: int = 10  # messages and folders without $top
    max_page_size: int = 1000  # $top above this answers 400
    folder_exists_status: int = 409  # reported as 409 by some, 400 by others (graph.md 3.4)
    delta_filter_cap: int = 5000  # delta with $filter returns at most this many messages
    delta_token_lifetime_days: int = 30  # older delta tokens answer 410 SyncStateNotFound
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
            elif isinstance(current, list):
                if not isinstance(value, list) or not all(
                    isinstance(v, int | float) and not isinstance(v, bool) for v in value
                ):
                    raise ValueError(f"{name} must be a list of numbers")
                value = [float(v) for v in value]
            setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
