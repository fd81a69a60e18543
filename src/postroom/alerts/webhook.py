"""A workspace's own chat webhook (Slack or Teams incoming webhook), posted to SSRF-safely.

The URL comes from a workspace's admin, so it is hostile until checked: without these rules it
would make Postroom's servers post to anything they can reach (a cloud metadata service at
169.254.169.254, a database port on localhost, an internal admin page).

* :func:`parse` (pure): ``https`` only, no user name or password, at most :data:`MAX_LENGTH`
  characters of printable ASCII, a DNS name or an IP literal as host, a port in 1-65535. One
  parser (httpx's) reads the URL for both the check and the request, so they cannot disagree.
* :func:`is_public` (pure): an address is allowed only if it is globally routable — not
  loopback, private (RFC 1918), link-local (169.254.0.0/16 and its metadata services), CGNAT
  (100.64.0.0/10), multicast, unspecified, reserved or documentation, nor an IPv6 ULA, link-local
  or site-local address, nor an IPv4 address wrapped in IPv6 (``::ffff:127.0.0.1``, NAT64)
  that is any of those. ``ipaddress``'s ``is_global`` alone lets some through (224.0.0.1,
  ``::7f00:1``), hence the explicit networks.
* :func:`check`: the host is resolved (:func:`resolve`, the one seam tests replace) and *every*
  address must be public; done when the URL is saved and again before every post.
* :func:`pinned_request`: the post goes to the checked address itself (the URL's host replaced
  by the IP literal), with the name in ``Host`` and as TLS SNI (httpx's ``sni_hostname``
  extension): the certificate is still verified for the name, and a DNS answer that changes
  between the check and the connection (rebinding) cannot send it elsewhere.
* :func:`post`: no redirects, no proxy from the environment, a connect and read timeout and an
  overall deadline; only the status code is read, never the body. Neither the URL nor the body
  is logged: callers log the workspace id and :func:`host_of`.

``POSTROOM_ALERT_WEBHOOK_ALLOW_PRIVATE`` (the operator's setting, off by default) lifts the
address rule and allows plain ``http``: a chat server on the internal network, and the tests.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import socket
import ssl
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from typing import Any

import httpx

MAX_LENGTH = 2000
TIMEOUT = httpx.Timeout(10.0, connect=5.0)  # each step (also alerts.service.WEBHOOK_TIMEOUT)
DEADLINE = 15.0  # seconds for the whole exchange: a server dripping its answer cannot hold on

IPAddress = IPv4Address | IPv6Address

NOT_PUBLIC_V4 = tuple(
    ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network", 0.0.0.0
        "10.0.0.0/8",
        "100.64.0.0/10",  # carrier-grade NAT
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local: cloud metadata services
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relays (deprecated)
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255
    )
)
NOT_PUBLIC_V6 = tuple(
    ip_network(n)
    for n in (
        "::/96",  # unspecified, loopback, IPv4-compatible (deprecated)
        "64:ff9b:1::/48",  # local-use NAT64
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments, Teredo
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4 (deprecated; would reach any IPv4 address)
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
NAT64 = ip_network("64:ff9b::/96")  # the well-known prefix: the last 32 bits are an IPv4 address

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")


class Refused(Exception):
    """The URL may not be used; ``str()`` says why in plain words (shown on the form)."""


class Failed(Exception):
    """The post went out but was not accepted: ``status`` is the answer's code, or None when
    there was no answer (``str()`` says what happened, in plain words)."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class Endpoint:
    """A parsed webhook URL: where it points, without the fragment."""

    scheme: str  # https (http only when private targets are allowed)
    host: str  # lower case, no brackets or trailing dot: a DNS name or an IP literal
    port: int
    target: str  # path and query, as sent
    literal: IPAddress | None  # the host, when it is an IP literal

    @property
    def default_port(self) -> bool:
        return self.port == (443 if self.scheme == "https" else 80)


@dataclass(frozen=True)
class Target:
    """An endpoint and the checked address the post connects to."""

    endpoint: Endpoint
    address: IPAddress


def parse(url: str, *, allow_private: bool = False) -> Endpoint:
    """Read a webhook URL or raise :class:`Refused` (pure: no DNS)."""
    url = url.strip()
    if not url:
        raise Refused("Enter the webhook URL.")
    if len(url) > MAX_LENGTH:
        raise Refused(f"The URL is too long: at most {MAX_LENGTH:,} characters.")
    if not _PRINTABLE_ASCII.fullmatch(url) or "\\" in url:
        raise Refused(
            "The URL may not contain spaces, backslashes or non-ASCII characters: copy it as "
            "your chat app shows it."
        )
    schemes = ("https", "http") if allow_private else ("https",)
    scheme, separator, rest = url.partition("://")
    if not separator or scheme.lower() not in schemes:
        raise Refused("The URL must start with https://.")
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in authority:
        raise Refused("The URL may not contain a user name or password.")
    try:
        parsed = httpx.URL(url)
        port = parsed.port if parsed.port is not None else 443 if parsed.scheme == "https" else 80
        host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise Refused("This is not a valid URL.") from None
    if not 0 < port < 65536:
        raise Refused("The URL's port must be between 1 and 65535.")
    if not host:
        raise Refused("The URL has no host name.")
    literal: IPAddress | None = None
    try:
        literal = ip_address(host)
    except ValueError:
        if not _HOST_NAME.fullmatch(host) or len(host) > 253 or host.rsplit(".", 1)[-1].isdigit():
            # a numeric last label is no DNS name: 2130706433, 127.1, 0x7f.1 are IPv4 in disguise
            raise Refused(f"{host[:80]} is not a valid host name.") from None
    return Endpoint(
        scheme=parsed.scheme,
        host=host,
        port=port,
        target=parsed.raw_path.decode("ascii"),
        literal=literal,
    )


def embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: mapped (``::ffff:a.b.c.d``) or NAT64."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """Whether ``address`` is a globally routable unicast address (see the module docstring)."""
    if isinstance(address, IPv6Address):
        if address.scope_id:
            return False
        inner = embedded_ipv4(address)
        if inner is not None:
            return is_public(inner)
        if any(address in network for network in NOT_PUBLIC_V6):
            return False
    elif any(address in network for network in NOT_PUBLIC_V4):
        return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


RESOLVE_TIMEOUT = 5.0  # seconds: a host whose DNS never answers must not hold the alerts up
_RESOLVER = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="resolve")


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to (the system resolver). The one seam tests replace."""
    lookup = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        found = lookup.result(timeout=RESOLVE_TIMEOUT)
    except concurrent.futures.TimeoutError:
        raise Refused(f"The host {host} did not resolve within {RESOLVE_TIMEOUT:g} s.") from None
    except (OSError, UnicodeError):
        raise Refused(f"The host {host} could not be found.") from None
    addresses: list[IPAddress] = []
    for family, _type, _proto, _name, sockaddr in found:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        try:
            addresses.append(ip_address(str(sockaddr[0])))
        except ValueError:
            raise Refused(f"The host {host} resolves to an address Postroom cannot read.") from None
    return addresses


def check(url: str, *, allow_private: bool = False) -> Target:
    """Parse ``url``, resolve its host and check every address; the target to post to (an
    IPv4 address when there is one), or :class:`Refused`."""
    endpoint = parse(url, allow_private=allow_private)
    if endpoint.literal is not None:
        addresses: list[IPAddress] = [endpoint.literal]
    else:
        addresses = resolve(endpoint.host, endpoint.port)
    if not addresses:
        raise Refused(f"The host {endpoint.host} could not be found.")
    if not allow_private and not all(is_public(a) for a in addresses):
        if endpoint.literal is not None:
            raise Refused(
                f"{endpoint.host} is not a public internet address (it is private, loopback, "
                "link-local or reserved): Postroom posts only to public addresses."
            )
        raise Refused(
            f"The host {endpoint.host} resolves to an address that is not on the public "
            "internet: Postroom posts only to public addresses."
        )
    chosen = next((a for a in addresses if a.version == 4), addresses[0])
    return Target(endpoint=endpoint, address=chosen)


def pinned_request(target: Target, payload: dict[str, Any]) -> httpx.Request:
    """The POST to the checked address, with the name as ``Host`` and as TLS SNI (pure)."""
    endpoint = target.endpoint
    url = httpx.URL(
        scheme=endpoint.scheme,
        host=str(target.address),
        port=None if endpoint.default_port else endpoint.port,
        raw_path=endpoint.target.encode("ascii"),
    )
    extensions: dict[str, Any] = {"timeout": TIMEOUT.as_dict()}
    if endpoint.literal is None:
        host_header = endpoint.host if endpoint.default_port else f"{endpoint.host}:{endpoint.port}"
        extensions["sni_hostname"] = endpoint.host
    else:
        host_header = url.netloc.decode("ascii")  # the IP literal itself, bracketed if IPv6
    return httpx.Request(
        "POST",
        url,
        json=payload,
        headers={"Host": host_header, "User-Agent": "Postroom alerts"},
        extensions=extensions,
    )


def post(
    url: str,
    payload: dict[str, Any],
    *,
    allow_private: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    verify: ssl.SSLContext | bool = True,
) -> int:
    """Check ``url`` again and POST the JSON to the checked address; the 2xx status code, or
    :class:`Refused` (nothing was sent) or :class:`Failed`. Blocking: call it from a thread
    without a running event loop (a sync view, the alert pass)."""
    target = check(url, allow_private=allow_private)
    request = pinned_request(target, payload)
    try:
        status = asyncio.run(
            asyncio.wait_for(_send(request, transport=transport, verify=verify), DEADLINE)
        )
    except (TimeoutError, httpx.TimeoutException):
        raise Failed("The webhook did not answer in time.") from None
    except (httpx.HTTPError, OSError) as exc:
        if _tls_failure(exc):
            raise Failed(
                f"The webhook's TLS certificate could not be verified for {target.endpoint.host}."
            ) from None
        raise Failed(f"The webhook could not be reached ({type(exc).__name__}).") from None
    if 300 <= status < 400:
        raise Failed(f"The webhook answered {status}, a redirect (not followed).", status=status)
    if not 200 <= status < 300:
        raise Failed(f"The webhook answered {status}.", status=status)
    return status


def _tls_failure(exc: BaseException) -> bool:
    """Whether a connection error was the TLS handshake (httpx wraps httpcore wraps ssl)."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _send(
    request: httpx.Request,
    *,
    transport: httpx.AsyncBaseTransport | None,
    verify: ssl.SSLContext | bool,
) -> int:
    async with httpx.AsyncClient(
        timeout=TIMEOUT,
        trust_env=False,  # no proxy from the environment: the connection goes where checked
        follow_redirects=False,
        transport=transport,
        verify=verify,
    ) as client:
        response = await client.send(request, stream=True)
        await response.aclose()  # the body is never read
        return response.status_code


def host_of(url: str) -> str:
    """The host of a URL for a log line or the page (never the URL: it holds the secret)."""
    try:
        return parse(url, allow_private=True).host
    except Refused:
        return "(not a valid URL)"
