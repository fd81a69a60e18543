"""Security headers on every response Postroom sends.

* ``Content-Security-Policy``: scripts and styles only from Postroom's own ``/static`` (no
  inline ``<script>``, event handler or ``style`` attribute anywhere in the templates), images
  from itself or ``data:``, no framing, no ``<base>``. ``form-action`` also names the Microsoft
  authority: Chromium applies ``form-action`` to the redirects that follow a form submission,
  and "Connect Account" answers 303 to Microsoft's sign-in page.
* ``X-Frame-Options: DENY`` for browsers that predate ``frame-ancestors``,
  ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: strict-origin-when-cross-origin``
  (the OAuth ``code`` and ``state`` in a callback's query never leave in a ``Referer``).
* ``Strict-Transport-Security`` when the session cookie is marked secure (Postroom is behind
  https then).

A plain ASGI middleware: headers a view set itself are kept, nothing is buffered.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from postroom.settings import Settings

HSTS_MAX_AGE = 365 * 24 * 3600


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL: the form a CSP source expression takes."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(settings: Settings) -> str:
    directives = {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self' data:",
        "connect-src": "'self'",
        "object-src": "'none'",
        "frame-ancestors": "'none'",
        "base-uri": "'none'",
        "form-action": f"'self' {origin(settings.authority_host)}",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def security_headers(settings: Settings) -> dict[str, str]:
    headers = {
        "Content-Security-Policy": content_security_policy(settings),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
    }
    if settings.cookie_secure:
        headers["Strict-Transport-Security"] = f"max-age={HSTS_MAX_AGE}"
    return headers


class SecurityHeaders:
    """Adds :func:`security_headers` to every HTTP response (a view's own value wins)."""

    def __init__(self, app: ASGIApp, *, settings: Settings) -> None:
        self.app = app
        self.headers = security_headers(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    if name not in headers:
                        headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)
