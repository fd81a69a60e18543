"""A real SMTP server for the tests (aiosmtpd on 127.0.0.1, a free port) and its inbox.

Postroom's settings in the tests point ``smtp_url`` at it, so every sign-up link and invitation
travels over SMTP as in production. :data:`INBOX` is the running server's inbox, so helpers
such as ``webtools.sign_up`` can follow the link of the email a person would receive.
"""

from __future__ import annotations

import email
import email.policy
import re
import threading
import time
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


@dataclass(frozen=True)
class Mail:
    sender: str
    recipients: tuple[str, ...]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        body = self.message.get_body(preferencelist=("plain",))
        assert body is not None
        return str(body.get_content())  # type: ignore[attr-defined]

    def link(self, path: str) -> str:
        """The first link in the body whose path starts with ``path``."""
        match = re.search(rf"https?://[^\s/]+{re.escape(path)}[^\s]*", self.text)
        assert match, f"no {path} link in the email {self.subject!r}"
        return match.group(0)


class Inbox:
    """Every email the server accepted, in order; thread-safe."""

    def __init__(self) -> None:
        self._mails: list[Mail] = []
        self._lock = threading.Condition()

    def add(self, mail: Mail) -> None:
        with self._lock:
            self._mails.append(mail)
            self._lock.notify_all()

    def clear(self) -> None:
        with self._lock:
            self._mails.clear()

    @property
    def mails(self) -> list[Mail]:
        with self._lock:
            return list(self._mails)

    def to(self, address: str) -> list[Mail]:
        return [m for m in self.mails if address.lower() in (r.lower() for r in m.recipients)]

    def last_to(self, address: str, *, timeout: float = 5.0) -> Mail:
        """The newest email to ``address``, waiting up to ``timeout`` seconds for one."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                found = [
                    m for m in self._mails if address.lower() in (r.lower() for r in m.recipients)
                ]
                if found:
                    return found[-1]
                left = deadline - time.monotonic()
                assert left > 0, f"no email to {address} arrived"
                self._lock.wait(left)


class _Handler:
    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.inbox.add(
            Mail(
                sender=envelope.mail_from,
                recipients=tuple(envelope.rcpt_tos),
                message=message,
            )
        )
        return "250 Message accepted for delivery"


class SmtpServer:
    def __init__(self, port: int, inbox: Inbox | None = None) -> None:
        self.inbox = inbox or Inbox()
        self.port = port
        self._controller = Controller(_Handler(self.inbox), hostname="127.0.0.1", port=port)

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()


INBOX = Inbox()  # the inbox of the session's server (tests/postroom/conftest.py)
