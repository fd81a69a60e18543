"""What happened to one email, in people's words, from its ledger row. Pure functions.

The ledger keeps codes (``last_error`` is Microsoft's error code, or one of the executor's own:
``DeletionRefused``, ``forward_unconfirmed``); the activity page says what they mean for the
email: which step did not happen, why, and whether Postroom tries again. The step is read from
the stored plan and the recorded actions (the first planned step not recorded), so no step name
needs storing.
"""

from __future__ import annotations

from typing import Any

from postroom.processing.executor import DECIDE_FAILED, FORWARD_UNCONFIRMED, MAX_ATTEMPTS

_REFUSED = ("ErrorAccessDenied", "AccessDenied", "Authorization_RequestDenied", "http_403")
_NOT_FOUND = ("ErrorItemNotFound", "ErrorInvalidUser", "http_404", "NotFound")
_TRANSIENT = (
    "serviceNotAvailable",
    "generalException",
    "badGateway",
    "gatewayTimeout",
    "TooManyRequests",
    "ApplicationThrottled",
    "ErrorServerBusy",
    "TransientError",
    "Throttled",
    "http_408",
    "http_429",
    "http_500",
    "http_502",
    "http_503",
    "http_504",
)


def _cause(code: str) -> str:
    if code in _REFUSED:
        return "Microsoft refused access"
    if code == "DeletionRefused":
        return "the folder lies in Deleted Items, and Postroom never deletes mail"
    if code == "ErrorFolderExists":
        return "a hidden folder already has that name"
    if code in _NOT_FOUND:
        return "Microsoft could not find it"
    if code in _TRANSIENT:
        return "Microsoft was unavailable"
    return "Microsoft refused the request"


def _pending_step(plan: dict[str, Any], actions_done: list[str]) -> str:
    done = set(actions_done)
    if plan.get("add_categories") and "label" not in done:
        return "label it"
    folder = plan.get("folder")
    if folder and not {"folder", "move"} <= done:
        return f"file it in {folder}"
    forward = plan.get("forward")
    if forward and forward.get("to") and "forward_sent" not in done:
        return "forward it"
    return "finish"


ALREADY_FILED = "already_filed"
"""``last_error`` of a row left alone because the email already had a category of its own."""
LEFT_FOLDER = "left_folder"
"""``last_error`` of a row left alone because the email had left the folder Postroom reads
before Postroom got to it (a person or an Outlook rule moved it): already filed, too."""
LEFT_ALONE = (ALREADY_FILED, LEFT_FOLDER)
FILED_BEFORE_LIVE = "filed_before_live"
"""``last_error`` of a Suggest-only row Go live was asked to file, left alone because a person
had filed, moved or deleted the email since (:mod:`postroom.sync.shadow`)."""


def outcome_words(
    *,
    state: str,
    last_error: str | None,
    plan: dict[str, Any] | None,
    actions_done: list[str] | None,
    attempts: int,
) -> str | None:
    """One sentence for the activity page, or None when there is nothing to explain (done)."""
    plan = plan or {}
    actions = list(actions_done or [])
    code = last_error or ""
    if state == "done":
        if code == FORWARD_UNCONFIRMED:
            return (
                "The forward may not have gone out: its draft disappeared after Postroom asked "
                "Microsoft to send it, so it was not sent again."
            )
        return None
    if state == "skipped" and code == ALREADY_FILED:
        return (
            "Left alone: already filed — it had a category of its own (a person or an Outlook "
            "rule set it) when Postroom got to it."
        )
    if state == "skipped" and code == LEFT_FOLDER:
        return (
            "Left alone: already filed — it had left the folder before Postroom got to it (a "
            "person or an Outlook rule moved it)."
        )
    if state == "skipped" and code == FILED_BEFORE_LIVE:
        return (
            "Left alone at Go live: a person had filed, moved or deleted it since Postroom "
            "suggested it."
        )
    if state == "skipped":
        return "The email was deleted or moved out of reach before Postroom got to it."
    step = _pending_step(plan, actions)
    if state == "failed" and code == DECIDE_FAILED:
        return (
            "Postroom could not decide what to do with this email: an error inside Postroom, "
            "logged for the operator. Postroom does not try this email again."
        )
    if state == "failed":
        cause = _cause(code) if code else "an unexpected error"
        if code in _TRANSIENT and attempts >= MAX_ATTEMPTS:
            cause = f"Microsoft kept failing ({attempts} tries)"
        suffix = f" ({code})" if code else ""
        return f"Could not {step}: {cause}{suffix}. Postroom does not try this email again."
    if state == "claimed" and code:
        if code in _REFUSED:
            return (
                f"Waiting: Microsoft refused access to this mailbox ({code}). Postroom goes on "
                "once access is back (use Check connection on the integration)."
            )
        if code in _TRANSIENT:
            return (
                f"Trying again: Microsoft was unavailable ({code}); attempt {attempts} of "
                f"{MAX_ATTEMPTS}."
            )
        return f"Waiting to {step}: {_cause(code)} ({code}); Postroom tries again."
    return None
