"""Who may use the control API and the viewer: an optional bearer token, and no cross-site writes.

The control API (``/_emulator/...``) can empty the emulator, read every mailbox and mint
consents; the viewer shows every message and changes categories and folders. Both are the
emulator's own, not Microsoft's, so they get their own protection, checked once for every
request before routing (:meth:`AccessGuard.refusal`):

Control token (``EmulatorState.control_token``; ``m365sim serve --control-token`` or the
environment variable ``M365SIM_CONTROL_TOKEN`` / ``M365SIM_CONTROL_TOKEN_FILE``)
  Unset (the default), nothing is asked for: tests and ``postroom demo`` run the emulator on
  loopback. Set, every control request needs ``Authorization: Bearer <token>``, compared in
  constant time, else 401 (``GET /_emulator/health`` stays open for liveness probes). The
  viewer then needs the token too: a person enters it once at ``/viewer/signin`` and gets an
  ``HttpOnly; Secure; SameSite=Strict`` cookie holding a value derived from the token (never
  the token itself); scripts may send the bearer header instead. The control API never
  accepts that cookie, so a browser cannot be made to use it. :func:`listen_problem` refuses
  to start the emulator on a non-loopback address without a token (and a token shorter than
  :data:`MIN_TOKEN_LENGTH` characters).

Cross-site writes (whether or not a token is set)
  A state-changing control request (POST, PUT, PATCH, DELETE) whose ``Sec-Fetch-Site`` is
  anything but ``same-origin`` or ``none``, or whose ``Origin`` names another origin (or is
  ``null``, as sandboxed frames send it), gets 403. HTML forms can post cross-site without a
  CORS preflight only as ``application/x-www-form-urlencoded``, ``multipart/form-data`` or
  ``text/plain``: those content types get 415 on the control API, which takes JSON, YAML or
  raw MIME (``message/rfc822``) only. Scripts and test clients send no ``Origin`` and are
  unaffected. The viewer's own forms post to ``/viewer/...`` (never to the control API) and
  are checked by the viewer (``Sec-Fetch-Site`` / ``Origin``, :func:`same_origin`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets

from starlette.requests import HTTPConnection
from starlette.responses import RedirectResponse, Response

from m365sim.state import EmulatorState

CONTROL_PREFIX = "/_emulator"
VIEWER_PREFIX = "/viewer"
VIEWER_OPEN = ("/viewer/signin", "/viewer/static/")  # reachable without the token
OPEN_CONTROL = {("GET", "/_emulator/health"), ("HEAD", "/_emulator/health")}
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# what an HTML form (or a no-preflight fetch) can send cross-site
FORM_CONTENT_TYPES = frozenset(
    {"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}
)
MIN_TOKEN_LENGTH = 16
VIEWER_COOKIE = "m365sim_viewer"
TOKEN_ENV = "M365SIM_CONTROL_TOKEN"


def is_loopback(host: str) -> bool:
    """``localhost``, 127.0.0.0/8 and ::1; wildcard addresses (0.0.0.0, ::) and names are not."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def listen_problem(host: str, token: str) -> str | None:
    """Why the emulator must not listen on ``host`` with ``token``; None when it may."""
    if token and len(token) < MIN_TOKEN_LENGTH:
        return (
            f"the control token must be at least {MIN_TOKEN_LENGTH} characters "
            '(e.g. python -c "import secrets; print(secrets.token_urlsafe(32))")'
        )
    if not token and not is_loopback(host):
        return (
            f"listening on {host} (beyond loopback) needs a control token: set {TOKEN_ENV} "
            "or --control-token, so nobody else on the network can use the control API"
        )
    return None


def new_token() -> str:
    return secrets.token_urlsafe(32)


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def token_matches(expected: str, presented: str) -> bool:
    """Constant time (both sides hashed to the same length first)."""
    return bool(expected) and hmac.compare_digest(_digest(expected), _digest(presented))


def bearer(connection: HTTPConnection) -> str | None:
    scheme, _, value = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def viewer_cookie_value(token: str) -> str:
    """What the viewer's cookie holds: derived from the token, useless as a bearer token."""
    return hmac.new(token.encode(), b"m365sim viewer session v1", hashlib.sha256).hexdigest()


def own_origin(connection: HTTPConnection) -> str:
    return f"{connection.url.scheme}://{connection.url.netloc}"


def cross_site(connection: HTTPConnection, *, allow_null_origin: bool) -> bool:
    """A request a browser made for another site's page (``Sec-Fetch-Site``, else ``Origin``).
    Clients that send neither header (scripts, tests, Postroom) are not browsers' cross-site
    requests."""
    site = connection.headers.get("sec-fetch-site")
    if site is not None and site.strip().lower() not in ("same-origin", "none"):
        return True
    origin = connection.headers.get("origin")
    if origin is None:
        return False
    if origin.strip() == "null":
        return not allow_null_origin
    return origin.strip().rstrip("/") != own_origin(connection)


def same_origin(connection: HTTPConnection) -> bool:
    """A form post from the viewer's own pages. The viewer's ``Referrer-Policy: no-referrer``
    makes browsers send ``Origin: null`` on its forms, so ``null`` passes here when
    ``Sec-Fetch-Site`` did not already say cross-site."""
    return not cross_site(connection, allow_null_origin=True)


def _media_type(connection: HTTPConnection) -> str:
    return connection.headers.get("content-type", "").split(";")[0].strip().lower()


def _json_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps({"error": message}),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


class AccessGuard:
    """Checks every request to ``/_emulator`` and ``/viewer`` before it is routed."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def refusal(self, scope: dict[str, object]) -> Response | None:
        path = str(scope.get("path", ""))
        if path == CONTROL_PREFIX or path.startswith(CONTROL_PREFIX + "/"):
            return self._control(HTTPConnection(scope))
        if path == VIEWER_PREFIX or path.startswith(VIEWER_PREFIX + "/"):
            return self._viewer(HTTPConnection(scope))
        return None

    def _control(self, connection: HTTPConnection) -> Response | None:
        method = str(connection.scope.get("method", "GET")).upper()
        if (method, connection.url.path) in OPEN_CONTROL:
            return None
        unsafe = method in UNSAFE_METHODS
        if unsafe and cross_site(connection, allow_null_origin=False):
            return _json_error(403, "cross-site requests to the control API are refused")
        token = self.state.control_token
        if token:
            presented = bearer(connection)
            if presented is None:
                return _json_error(
                    401,
                    "the control API needs Authorization: Bearer <control token>",
                    {"WWW-Authenticate": 'Bearer realm="m365sim-control"'},
                )
            if not token_matches(token, presented):
                return _json_error(
                    401,
                    "the control token is wrong",
                    {"WWW-Authenticate": 'Bearer realm="m365sim-control", error="invalid_token"'},
                )
        if unsafe and _media_type(connection) in FORM_CONTENT_TYPES:
            return _json_error(
                415,
                f"the control API does not take {_media_type(connection)} (a form's content "
                "type); send application/json (or application/yaml, message/rfc822 where "
                "documented)",
            )
        return None

    def viewer_authenticated(self, connection: HTTPConnection) -> bool:
        token = self.state.control_token
        if not token:
            return True
        presented = bearer(connection)
        if presented is not None:
            return token_matches(token, presented)
        cookie = connection.cookies.get(VIEWER_COOKIE, "")
        return hmac.compare_digest(_digest(cookie), _digest(viewer_cookie_value(token))) and bool(
            cookie
        )

    def _viewer(self, connection: HTTPConnection) -> Response | None:
        path = connection.url.path
        if any(path == p or (p.endswith("/") and path.startswith(p)) for p in VIEWER_OPEN):
            return None
        if self.viewer_authenticated(connection):
            return None
        method = str(connection.scope.get("method", "GET")).upper()
        if method in ("GET", "HEAD"):
            return RedirectResponse("/viewer/signin", status_code=303)
        return Response(
            "The viewer needs the control token: sign in at /viewer/signin.",
            status_code=401,
            media_type="text/plain; charset=utf-8",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )
