"""What an alert says, in plain words (pure: no I/O; healthchecks' ``payload()`` apart from
``notify()``).

Every problem message says what happened, why, and the one button to press on the
integration's page (Reconnect, Retry admin consent, Check connection), with the link. The email
goes to the workspace's owners and admins, who see the mailbox addresses on that page anyway;
the chat text (Slack or Teams incoming webhook, often a wider audience) carries no email
address (:func:`no_addresses`: ``…@contoso.com``). Nothing from any email ever appears here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from postroom.alerts.models import LAGGING
from postroom.integrations.statuses import (
    ACCESS_DENIED,
    ADMIN_CONSENT_MISSING,
    LABELS,
    NEEDS_RECONNECT,
    REASONS,
)


@dataclass(frozen=True)
class About:
    """What an incident is about, read from the database when its message is sent."""

    workspace_name: str
    integration_name: str
    integration_url: str
    kind: str  # models.STOPPED | models.LAGGING
    code: str  # the status (needs_reconnect, admin_consent_missing, access_denied) or "lag"
    reason: str | None  # a reason code (statuses.REASONS)
    mailbox_address: str | None  # None: the whole integration
    since: datetime
    lag_minutes: int | None = None
    threshold_minutes: int | None = None
    last_error: str | None = None  # a code, e.g. "http_503"


@dataclass(frozen=True)
class Message:
    subject: str
    text: str  # the email's body
    chat: str  # the webhook's text: no mailbox address


def button(about: About) -> str:
    """The one button to press on the integration's page."""
    if about.kind == LAGGING:
        return "Check connection"
    if about.code == ADMIN_CONSENT_MISSING:
        return "Retry admin consent"
    if about.code == NEEDS_RECONNECT:
        return "Reconnect"
    return "Check connection"  # access denied: fixed in Exchange, then checked here


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def _what(about: About) -> str:
    where = (
        f'the mailbox {about.mailbox_address} of the integration "{about.integration_name}"'
        if about.mailbox_address
        else f'the integration "{about.integration_name}"'
    )
    if about.kind == LAGGING:
        return (
            f"Postroom is behind on {where}: its last successful sync was "
            f"{about.lag_minutes} minutes ago (you are told after {about.threshold_minutes})."
        )
    label = LABELS.get(about.code, about.code)
    return f"Postroom stopped processing email for {where}: {label}, since {_stamp(about.since)}."


def _why(about: About) -> str:
    if about.kind == LAGGING:
        detail = f" The last error was {about.last_error}." if about.last_error else ""
        return "Microsoft did not answer its requests, or no Postroom worker is running." + detail
    reason = REASONS.get(about.reason or "")
    if reason is None:
        reason = REASONS["mailbox_access_denied" if about.code == ACCESS_DENIED else "unknown"]
    return f"{reason.words} {reason.fix}"


def problem(about: About) -> Message:
    action = button(about)
    what = _what(about)
    why = _why(about)
    subject = (
        f'Postroom is behind: "{about.integration_name}"'
        if about.kind == LAGGING
        else f'Postroom stopped: "{about.integration_name}" — {LABELS.get(about.code, about.code)}'
    )
    text = (
        f"{what}\n\n"
        f"Why: {why}\n\n"
        f"What to do: open the integration and press {action}:\n"
        f"{about.integration_url}\n\n"
        "New email waits in the mailbox meanwhile; nothing is lost, and Postroom catches up "
        "once this is fixed. You will get one more email when it works again.\n\n"
        f'You get this because you are an owner or admin of the workspace "'
        f'{about.workspace_name}" in Postroom.\n'
    )
    where = f'"{about.integration_name}" ({about.workspace_name})'
    if about.kind == LAGGING:
        chat = f"Postroom is behind on {where}: a mailbox was last synced {about.lag_minutes} min"
        chat += " ago."
    else:
        chat = (
            f"Postroom stopped {where}"
            + (" for a mailbox" if about.mailbox_address else "")
            + f": {LABELS.get(about.code, about.code)}."
        )
    chat += f" {why} Press {action}: {about.integration_url}"
    return Message(subject=subject, text=text, chat=no_addresses(chat))


def recovery(about: About, *, at: datetime) -> Message:
    where = (
        f'the mailbox {about.mailbox_address} of the integration "{about.integration_name}"'
        if about.mailbox_address
        else f'the integration "{about.integration_name}"'
    )
    what = "caught up" if about.kind == LAGGING else "works again"
    subject = f'Postroom {what}: "{about.integration_name}"'
    text = (
        f"Postroom {what} on {where} since {_stamp(at)} (the problem started "
        f"{_stamp(about.since)}). Email that arrived meanwhile is being processed; nothing was "
        f"lost.\n\n{about.integration_url}\n\n"
        f'You get this because you are an owner or admin of the workspace "'
        f'{about.workspace_name}" in Postroom.\n'
    )
    chat = (
        f'Postroom {what} on "{about.integration_name}" ({about.workspace_name})'
        + (" for a mailbox" if about.mailbox_address else "")
        + f" since {_stamp(at)}. {about.integration_url}"
    )
    return Message(subject=subject, text=text, chat=no_addresses(chat))


_ADDRESS = re.compile(r"[^\s@\"'<>(),;:]+@(?=[^\s@]+\.)")


def no_addresses(text: str) -> str:
    """Hide the local part of every email address (an integration is named after its account,
    ``Outlook — alice@contoso.com``): the chat sees ``…@contoso.com``."""
    return _ADDRESS.sub("…@", text)


def webhook_test(workspace_name: str) -> Message:
    """What "Send a test message" on the Alerts page posts."""
    chat = (
        f'Postroom test message: alerts of the workspace "{workspace_name}" will be posted here '
        "when an integration stops or falls behind, and when it works again."
    )
    return Message(subject="Postroom test message", text=chat, chat=no_addresses(chat))


def webhook_payload(message: Message) -> dict[str, Any]:
    """JSON that Slack and Microsoft Teams incoming webhooks both accept."""
    return {"text": message.chat}
