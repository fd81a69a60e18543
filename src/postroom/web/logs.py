"""Keep credentials out of logs.

The OAuth callbacks carry an authorization code, ``state``, ``client_info`` and
``session_state`` in their query string, sign-up and invitation links a ``token`` (also inside
``next=``), and web servers log request lines. The filter here rewrites those values to
``[redacted]`` in every record of the loggers it is installed on (uvicorn's access and error
loggers; Postroom's own never log them). MSAL's logger is held at WARNING, because its debug
output contains token requests verbatim.
"""

from __future__ import annotations

import logging
import re
import traceback

SENSITIVE = re.compile(
    r"(?i)\b(code|state|session_state|client_info|id_token|access_token|refresh_token|"
    r"client_secret|code_verifier|admin_consent_token|token)=([^&\s\"']+)"
)
# a sign-up or invitation link's token inside another URL's query (``/signin?next=...``)
ENCODED_TOKEN = re.compile(r"(?i)((?:%3F|%26)token)%3D([A-Za-z0-9_\-]+)")
JSON_SENSITIVE = re.compile(
    r"(?i)(\"(?:code|code_verifier|client_secret|refresh_token|access_token|id_token|"
    r"client_assertion)\"\s*:\s*\")([^\"]+)"
)
BEARER = re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+")


def redact(text: str) -> str:
    text = SENSITIVE.sub(r"\1=[redacted]", text)
    text = ENCODED_TOKEN.sub(r"\1%3D[redacted]", text)
    text = JSON_SENSITIVE.sub(r"\1[redacted]", text)
    return BEARER.sub("Bearer [redacted]", text)


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(
                redact(a) if isinstance(a, str) else a
                for a in (record.args if isinstance(record.args, tuple) else (record.args,))
            )
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


class WithholdExceptionText(logging.Filter):
    """Tracebacks without the exceptions' messages. uvicorn logs every exception that escapes
    a request ("Exception in ASGI application"); a database error's text quotes the statement
    and PostgreSQL's detail, which can carry what a person typed. The frames stay (code and
    line numbers, never values); each message becomes its type. Postroom's own error handler
    logs the type and a reference."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = withheld_traceback(record.exc_info[1])
            record.exc_info = None
        return True


def withheld_traceback(exc: BaseException) -> str:
    lines: list[str] = []
    seen: set[int] = set()

    def add(current: BaseException) -> None:
        seen.add(id(current))
        if current.__cause__ is not None and id(current.__cause__) not in seen:
            add(current.__cause__)
            lines.append("\nThe above exception was the direct cause of the following:\n\n")
        elif (
            current.__context__ is not None
            and not current.__suppress_context__
            and id(current.__context__) not in seen
        ):
            add(current.__context__)
            lines.append("\nDuring handling of the above exception, another occurred:\n\n")
        lines.append("Traceback (most recent call last):\n")
        lines.extend(traceback.format_list(traceback.extract_tb(current.__traceback__)))
        kind = type(current)
        lines.append(f"{kind.__module__}.{kind.__qualname__} (message withheld from the log)\n")

    add(exc)
    return "".join(lines).rstrip("\n")


def install() -> None:
    # MSAL's debug log prints token requests (code, code_verifier) verbatim: never below INFO.
    msal_logger = logging.getLogger("msal")
    if msal_logger.level < logging.WARNING:  # NOTSET included: don't inherit DEBUG from root
        msal_logger.setLevel(logging.WARNING)
    for name in ("uvicorn.access", "uvicorn.error", "uvicorn", "httpx", "postroom", "msal"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
    for name in ("uvicorn.error", "uvicorn"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, WithholdExceptionText) for f in logger.filters):
            logger.addFilter(WithholdExceptionText())
