"""The one seam for Postroom's own outgoing email: sign-up links and invitations.

Two backends, chosen by :func:`mailer` from the settings:

* SMTP when ``POSTROOM_SMTP_URL`` is set: ``smtp://user:pass@host:587`` (STARTTLS when the
  server offers it; credentials are never sent over a connection that is neither TLS nor to
  this machine) or ``smtps://user:pass@host:465`` (TLS from the first byte). The password may
  instead come from ``POSTROOM_SMTP_PASSWORD`` or ``POSTROOM_SMTP_PASSWORD_FILE``. Every
  connection has a timeout (``POSTROOM_SMTP_TIMEOUT_SECONDS``).
* The console, when no SMTP server is configured (the local demo): the whole email is written
  to standard output between two clear lines, as Django's console backend does, so the person
  running the demo can open the link. ``postroom serve`` warns at start that it does this.

Every failure is translated into :class:`MailError`; no library exception leaves this module.
Nothing here logs an address, a subject or a body (the console backend prints them on purpose,
to the operator's own terminal, and only when no SMTP server is configured).
"""

from __future__ import annotations

import ipaddress
import logging
import smtplib
import ssl
import sys
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol, TextIO
from urllib.parse import unquote, urlsplit

from postroom.settings import Settings

log = logging.getLogger("postroom.mail")


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class MailError(Exception):
    """The email could not be sent (server unreachable, refused, misconfigured)."""


class Mailer(Protocol):
    def send(self, *, to: str, subject: str, text: str) -> None: ...


def _one_line(value: str) -> str:
    """Header values never carry line breaks or other control characters."""
    return " ".join("".join(c if c.isprintable() else " " for c in value).split())


def compose(*, sender: str, to: str, subject: str, text: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = _one_line(sender)
    message["To"] = _one_line(to)
    message["Subject"] = _one_line(subject)
    message["Date"] = formatdate(localtime=False, usegmt=True)
    domain = sender.rpartition("@")[2].strip(" >") or "localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    message.set_content(text)
    return message


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    implicit_tls: bool
    username: str | None
    password: str | None
    timeout: float


def parse_smtp_url(url: str, *, password: str | None = None, timeout: float = 10.0) -> SmtpConfig:
    """``smtp://[user[:pass]@]host[:port]`` or ``smtps://...``; ValueError when malformed."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps"):
        raise ValueError("POSTROOM_SMTP_URL must start with smtp:// or smtps://")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError("POSTROOM_SMTP_URL has an invalid port") from exc
    if not parts.hostname:
        raise ValueError("POSTROOM_SMTP_URL names no host")
    implicit_tls = parts.scheme == "smtps"
    return SmtpConfig(
        host=parts.hostname,
        port=port or (465 if implicit_tls else 587),
        implicit_tls=implicit_tls,
        username=unquote(parts.username) if parts.username else None,
        password=password
        if password is not None
        else (unquote(parts.password) if parts.password else None),
        timeout=timeout,
    )


class SmtpMailer:
    """Sends each email over a fresh SMTP connection (Postroom sends few), with a timeout."""

    def __init__(self, config: SmtpConfig, *, sender: str) -> None:
        self.config = config
        self.sender = sender

    def send(self, *, to: str, subject: str, text: str) -> None:
        message = compose(sender=self.sender, to=to, subject=subject, text=text)
        config = self.config
        context = ssl.create_default_context()
        try:
            client: smtplib.SMTP
            if config.implicit_tls:
                client = smtplib.SMTP_SSL(
                    config.host, config.port, timeout=config.timeout, context=context
                )
            else:
                client = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
            with client:
                client.ehlo()
                secure = config.implicit_tls
                if not secure and client.has_extn("starttls"):
                    client.starttls(context=context)
                    client.ehlo()
                    secure = True
                if config.username:
                    if not secure and not _is_loopback(config.host):
                        raise MailError(
                            "the SMTP server offers no TLS: refusing to send the password in "
                            "the clear (use smtps:// or a server with STARTTLS)"
                        )
                    client.login(config.username, config.password or "")
                client.send_message(message)
        except MailError:
            raise
        except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
            log.warning("could not send an email through %s: %s", config.host, type(exc).__name__)
            raise MailError(f"the SMTP server could not be used ({type(exc).__name__})") from exc
        log.info("sent an email through %s", config.host)


class ConsoleMailer:
    """Prints each email to the terminal instead of sending it (no SMTP server configured)."""

    def __init__(self, *, sender: str, stream: TextIO | None = None) -> None:
        self.sender = sender
        self.stream = stream

    def send(self, *, to: str, subject: str, text: str) -> None:
        stream = self.stream or sys.stdout
        rule = "-" * 72
        stream.write(
            f"{rule}\n"
            "Postroom email, printed here instead of sent (POSTROOM_SMTP_URL is not set)\n"
            f"To: {_one_line(to)}\nSubject: {_one_line(subject)}\n\n"
            f"{text.rstrip()}\n{rule}\n"
        )
        stream.flush()


def mailer(settings: Settings) -> Mailer:
    """The backend the settings choose: SMTP when ``smtp_url`` is set, else the console."""
    if settings.smtp_url is None or not settings.smtp_url.get_secret_value():
        return ConsoleMailer(sender=settings.mail_from)
    config = parse_smtp_url(
        settings.smtp_url.get_secret_value(),
        password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
        timeout=settings.smtp_timeout_seconds,
    )
    return SmtpMailer(config, sender=settings.mail_from)


def console_warning(settings: Settings) -> str | None:
    """What ``postroom serve`` says at start when emails are printed instead of sent."""
    if settings.smtp_url is not None and settings.smtp_url.get_secret_value():
        return None
    return (
        "Warning: POSTROOM_SMTP_URL is not set, so Postroom prints its emails (sign-up links, "
        "invitations) to this terminal instead of sending them."
    )
