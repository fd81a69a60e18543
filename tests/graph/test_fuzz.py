"""A bounded, seeded fuzz test over every Graph route and every identity route (issue 16,
item 9).

Each round sends hostile requests — random JSON bodies built from real property names and
wrong types, odd Unicode (lone surrogates as JSON escapes, NUL, right-to-left marks,
combining marks, emoji), huge strings and numbers, deep nesting, unknown and broken query
options, odd headers, and the ids of another tenant's users, messages and folders — and checks:

* no answer is a 5xx;
* another tenant's mailbox is never reachable (no 2xx for a path naming it) and unchanged;
* afterwards the fuzzed mailbox still reads normally: folder list, every message (JSON and
  MIME), delta, folder delta, master categories, the control API and the viewer page.

The seed and size come from ``M365SIM_FUZZ_SEED`` / ``M365SIM_FUZZ_REQUESTS`` (defaults keep the
run well under a minute); a failure message names the seed and the request to replay it.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest

from m365sim.graph import dispatch
from m365sim.graph.routes import load
from m365sim.store import Category
from tests.graph.mailtools import auth
from tests.helpers import Org, make_org

SEED = int(os.environ.get("M365SIM_FUZZ_SEED", "1616"))
REQUESTS = int(os.environ.get("M365SIM_FUZZ_REQUESTS", "1000"))
TIME_BUDGET = 40.0  # seconds; the request count is the bound, this guards a loaded machine

PROPERTY_NAMES = [
    "displayName",
    "isHidden",
    "subject",
    "body",
    "content",
    "contentType",
    "categories",
    "isRead",
    "importance",
    "flag",
    "flagStatus",
    "dueDateTime",
    "startDateTime",
    "completedDateTime",
    "dateTime",
    "timeZone",
    "inferenceClassification",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "from",
    "sender",
    "emailAddress",
    "address",
    "name",
    "id",
    "changeKey",
    "@odata.type",
    "@odata.etag",
    "DestinationId",
    "destinationId",
    "Comment",
    "comment",
    "Message",
    "message",
    "ToRecipients",
    "saveToSentItems",
    "SaveToSentItems",
    "attachments",
    "contentBytes",
    "isInline",
    "contentId",
    "item",
    "color",
    "requests",
    "method",
    "url",
    "headers",
    "dependsOn",
    "notificationUrl",
    "resource",
    "changeType",
    "expirationDateTime",
    "clientState",
    "lifecycleNotificationUrl",
    "isDraft",
    "receivedDateTime",
    "internetMessageHeaders",
    "totalItemCount",
    "unknownProp",
]
ODATA_TYPES = [
    "#microsoft.graph.message",
    "#microsoft.graph.fileAttachment",
    "#microsoft.graph.itemAttachment",
    "#microsoft.graph.mailFolder",
    "microsoft.graph.user",
    "#x",
    "",
]
ODD_STRINGS = [
    "",
    " ",
    "x",
    "Inbox",
    "inbox",
    "deleteditems",
    "recoverableitemsdeletions",
    "preset7",
    "none",
    "flagged",
    "notFlagged",
    "complete",
    "high",
    "HTML",
    "text",
    "focused",
    "a@b.test",
    "not-an-address",
    "2024-06-01T10:00:00",
    "not a date",
    "UTC",
    "Mars/Base",
    "W. Europe Standard Time",
    "\u202eevil\u202c",
    "e\u0301\u0301\u0301",
    "\U0001f4e6\U0001f600",
    "\x00nul",
    "tab\tnew\nline\r\n",
    "'; DROP TABLE--",
    "<script>alert(1)</script>",
    "..\\..\\etc/passwd",
    "%00%2e%2e",
    "${jndi:ldap://x}",
    "\ufeffbom",
    "\uffff",
    "eA==",
    "not base64!",
    "*",
    'W/"stale"',
    "https://localhost:1/hook",
]
QUERY_OPTIONS = [
    ("$top", ["0", "-1", "1", "1001", "99999999999999999999", "x", ""]),
    ("$skip", ["-5", "x", "1e9", "3"]),
    ("$skiptoken", ["garbage", "eyJvIjotMX0", "e30", "%%%", ""]),
    ("$deltatoken", ["garbage", "eyJwaCI6ImQifQ", ""]),
    ("$select", ["id", "subject,bogus", ",,,", "body,flag", "displayName", "*"]),
    (
        "$filter",
        [
            "isRead eq true",
            "subject eq 'x",
            "((((",
            "not not not isRead",
            "categories/any(c:c eq 'A')",
            "receivedDateTime ge 2024-13-45T99:00:00Z",
            "startswith(subject, 1)",
            "bogus eq 1",
            " or ".join(["isRead eq true"] * 600),
            "(" * 300 + "isRead" + ")" * 300,
            "subject eq '" + "x" * 5000 + "'",
        ],
    ),
    ("$orderby", ["receivedDateTime desc", "subject sideways", "bogus", ",", "isRead,subject"]),
    ("$search", ['"invoice"', '"(x"', '""', "from:", '"subject:\\"x"', "a OR", "x" * 5000]),
    ("$expand", ["attachments", "x"]),
    ("$count", ["true", "maybe"]),
    ("$bogus", ["1"]),
    ("includeHiddenFolders", ["true", "yes"]),
    ("$format", ["json"]),
]
PREFER = [
    'IdType="ImmutableId"',
    "odata.maxpagesize=0",
    "odata.maxpagesize=-3",
    "odata.maxpagesize=99999999999",
    'outlook.body-content-type="text"',
    'outlook.body-content-type="xml"',
    "odata.maxpagesize=x",
]


class Fuzzer:
    """Builds random requests from a seed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def string(self) -> str:
        rng = self.rng
        roll = rng.random()
        if roll < 0.6:
            return rng.choice(ODD_STRINGS)
        if roll < 0.75:
            return "".join(chr(rng.randint(1, 0x2FFF)) for _ in range(rng.randint(1, 40)))
        if roll < 0.85:
            return rng.choice("xé€\U0001f600") * rng.choice([256, 300, 10_000, 30_000])
        return rng.choice(ODD_STRINGS) + rng.choice(ODD_STRINGS)

    def value(self, depth: int = 0) -> Any:
        rng = self.rng
        roll = rng.random()
        if depth > 3 or roll < 0.45:
            return rng.choice(
                [
                    self.string(),
                    self.string(),
                    rng.choice([True, False, None]),
                    rng.choice([0, -1, 1, 2**31, 2**63, 10**30, 1.5, -1e308]),
                ]
            )
        if roll < 0.75:
            return self.obj(depth + 1)
        return [self.value(depth + 1) for _ in range(rng.randint(0, 4))]

    def obj(self, depth: int = 0) -> dict[str, Any]:
        rng = self.rng
        out: dict[str, Any] = {}
        for _ in range(rng.randint(0, 5)):
            key = rng.choice(PROPERTY_NAMES) if rng.random() < 0.85 else self.string()[:40]
            if key == "@odata.type":
                out[key] = rng.choice(ODATA_TYPES)
            else:
                out[key] = self.value(depth)
        return out

    def body(self) -> bytes:
        """A request body: mostly JSON objects; sometimes escapes JSON cannot encode as
        UTF-8 (lone surrogates), deep nesting, broken JSON, huge or empty."""
        rng = self.rng
        roll = rng.random()
        if roll < 0.55:
            return json.dumps(self.obj()).encode()
        if roll < 0.65:
            text = json.dumps(self.obj())
            return text.replace('"', '"\\udc00', 1).encode()  # a lone surrogate escape
        if roll < 0.70:
            depth = rng.choice([150, 5_000, 60_000])
            return ("[" * depth + "]" * depth).encode()
        if roll < 0.78:
            return rng.choice([b"", b"{", b"null", b"[]", b'"x"', b"\xff\xfe", b"{}" * 3])
        if roll < 0.80:
            return json.dumps({"displayName": "x" * 3_000_000}).encode()  # under 4 MB
        return json.dumps(self.value()).encode()

    def query(self) -> dict[str, str]:
        rng = self.rng
        out: dict[str, str] = {}
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
            name, values = rng.choice(QUERY_OPTIONS)
            out[name] = rng.choice(values)
        return out

    def headers(self) -> dict[str, str]:
        rng = self.rng
        headers: dict[str, str] = {"Content-Type": "application/json"}
        if rng.random() < 0.3:
            headers["Prefer"] = rng.choice(PREFER)
        if rng.random() < 0.15:
            headers["If-Match"] = rng.choice(["*", 'W/"stale"', '"x", W/"y"', ""])
        if rng.random() < 0.05:
            headers["Content-Type"] = rng.choice(["text/plain", "application/xml", "x"])
        return headers


@pytest.fixture
def mailboxes(org: Org) -> tuple[Org, Org]:
    """The fuzzed organisation (with mail, folders, categories, attachments) and another
    tenant whose ids the fuzzer throws at it."""
    other = make_org(org.state)
    for target in (org, other):
        for i in range(6):
            msg = target.deliver(target.alice, subject=f"Message {i}", categories=["Orders"])
            if i % 2:
                msg.body_type = "html"
                msg.body_content = f"<p>Body {i}</p>"
        target.state.store.create_folder(
            target.alice.mailbox, "Invoices", target.alice.mailbox.root_id()
        )
        target.alice.mailbox.categories["c1"] = Category(
            "5b1c3e3a-0000-4000-8000-000000000001", "Orders", "preset1"
        )
    return org, other


def _ids(org: Org) -> dict[str, list[str]]:
    mailbox = org.alice.mailbox
    messages = list(mailbox.messages.values())
    return {
        "message": [m.rest_id for m in messages] + [m.immutable_id for m in messages],
        "folder": list(mailbox.folders),
        "category": [c.id for c in mailbox.categories.values()],
        "attachment": [a.id for m in messages for a in m.attachments],
        "user": [org.alice.id, org.alice.user_principal_name, org.bob.id],
    }


def _expand(
    template: str, fuzz: Fuzzer, own: dict[str, list[str]], other: dict[str, list[str]]
) -> tuple[str, set[str]]:
    """Fill ``{param}`` segments; (path, the tenants whose ids it names: "own", "other")."""
    rng = fuzz.rng
    named: set[str] = set()

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        kind = {"child": "folder", "sid": "subscription"}.get(name, name)
        roll = rng.random()
        if kind == "folder" and roll < 0.2:  # well-known names belong to no tenant
            return rng.choice(["inbox", "Drafts", "deleteditems", "archive", "msgfolderroot"])
        if roll < 0.6 and own.get(kind):
            named.add("own")
            return quote(rng.choice(own[kind]), safe="")
        if roll < 0.8 and other.get(kind):
            named.add("other")
            return quote(rng.choice(other[kind]), safe="")
        return quote(
            rng.choice(
                ["AAMkAD" + "x" * 40 + "=", "inbx", "..", "%", "x" * 3000, fuzz.string()[:200]]
            ),
            safe="",
        )

    return re.sub(r"\{(\w+)\}", fill, template), named


def _graph_requests(
    fuzz: Fuzzer, org: Org, other: Org
) -> Iterator[tuple[str, str, dict[str, str], dict[str, str], bytes, bool]]:
    load()
    own, theirs = _ids(org), _ids(other)
    routes = [(r.method, r.template, r.mailbox) for r in dispatch._ROUTES]
    rng = fuzz.rng
    while True:
        method, template, on_mailbox = rng.choice(routes)
        path, named = _expand(template, fuzz, own, theirs)
        caller = "own"
        token = org.token(org.alice) if rng.random() < 0.6 else org.app_token()
        if rng.random() < 0.05:  # the other tenant's caller, naming this tenant's ids
            # read-only, so the other tenant's mailbox stays as it was
            caller = "other"
            token = (
                other.token(other.alice, ["Mail.Read", "MailboxSettings.Read"])
                if rng.random() < 0.5
                else other.app_token(["Mail.Read", "MailboxSettings.Read"])
            )
        if on_mailbox:
            roll = rng.random()
            if roll < 0.45:
                prefix, named = "/me", named | {caller}
            elif roll < 0.85:
                prefix, named = f"/users/{org.alice.id}", named | {"own"}
            else:
                prefix, named = f"/users/{quote(other.alice.id)}", named | {"other"}
            path = prefix + path
        if rng.random() < 0.03:
            method = rng.choice(["PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"])
        headers = {**fuzz.headers(), **auth(token)}
        if rng.random() < 0.03:
            headers["Authorization"] = rng.choice(["Bearer x", "Bearer a.b.c", ""])
            caller = "nobody"
        crossing = any(t != caller for t in named)
        yield method, "/v1.0" + path, fuzz.query(), headers, fuzz.body(), crossing


IDENTITY_PATHS = [
    ("GET", "/{tenant}/v2.0/.well-known/openid-configuration"),
    ("GET", "/{tenant}/discovery/v2.0/keys"),
    ("GET", "/common/discovery/instance"),
    ("GET", "/oidc/userinfo"),
    ("POST", "/oidc/userinfo"),
    ("GET", "/{tenant}/oauth2/v2.0/authorize"),
    ("POST", "/{tenant}/oauth2/v2.0/authorize"),
    ("POST", "/{tenant}/oauth2/v2.0/token"),
    ("GET", "/{tenant}/oauth2/v2.0/token"),
    ("GET", "/{tenant}/oauth2/v2.0/logout"),
    ("POST", "/{tenant}/oauth2/v2.0/logout"),
    ("GET", "/{tenant}/v2.0/adminconsent"),
    ("GET", "/{tenant}/adminconsent"),
    ("POST", "/{tenant}/login"),
    ("POST", "/{tenant}/mfa"),
    ("POST", "/{tenant}/password"),
    ("POST", "/{tenant}/select_account"),
    ("POST", "/{tenant}/consent"),
]
FORM_FIELDS = [
    "client_id",
    "client_secret",
    "grant_type",
    "code",
    "redirect_uri",
    "scope",
    "refresh_token",
    "state",
    "nonce",
    "response_type",
    "response_mode",
    "prompt",
    "login_hint",
    "domain_hint",
    "code_challenge",
    "code_challenge_method",
    "code_verifier",
    "username",
    "password",
    "otc",
    "flow",
    "client_assertion",
    "client_assertion_type",
    "admin_consent",
    "tenant",
    "post_logout_redirect_uri",
    "x",
]


def _identity_requests(
    fuzz: Fuzzer, org: Org
) -> Iterator[tuple[str, str, dict[str, str], dict[str, str], bytes, bool]]:
    rng = fuzz.rng
    tenants = [org.tenant.id, org.tenant.domain, "common", "organizations", "consumers"]
    values = {
        "client_id": [org.app.client_id, "not-a-guid"],
        "client_secret": [org.secret, "wrong"],
        "grant_type": [
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "password",
            "x",
        ],
        "redirect_uri": ["https://postroom.test/auth/callback", "javascript:alert(1)"],
        "scope": ["https://graph.microsoft.com/.default", "openid offline_access Mail.Read", ""],
        "response_type": ["code", "token", "id_token code"],
        "code_challenge_method": ["S256", "plain", "MD5"],
        "username": [org.alice.user_principal_name, "nobody@x.test"],
        "password": ["alice-pass", "wrong"],
    }
    while True:
        method, template = rng.choice(IDENTITY_PATHS)
        tenant = rng.choice(tenants) if rng.random() < 0.85 else quote(fuzz.string()[:80], safe="")
        path = template.replace("{tenant}", tenant or "x")
        fields = {}
        for _ in range(rng.randint(0, 8)):
            name = rng.choice(FORM_FIELDS)
            options = values.get(name)
            fields[name] = rng.choice(options) if options and rng.random() < 0.6 else fuzz.string()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        body = b""
        query: dict[str, str] = {}
        if method == "POST" and rng.random() < 0.8:
            body = "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in fields.items()).encode(
                "utf-8", "surrogatepass"
            )
            if rng.random() < 0.1:
                body = rng.choice([b"\xff\xfe\x00", b"a=%ff%fe", b"=&=&", b"a" * 200_000])
        else:
            query = {k: v for k, v in fields.items()}
        if rng.random() < 0.1:
            headers["Authorization"] = "Bearer " + rng.choice([org.token(org.alice), "x.y.z"])
        yield method, path, query, headers, body, False


def _send(
    http: httpx.Client,
    method: str,
    path: str,
    query: dict[str, str],
    headers: dict[str, str],
    body: bytes,
) -> httpx.Response:
    # httpx refuses URL components over 64 KB; the server sees at most that much anyway
    safe_query = {
        k: v.encode("utf-8", "surrogatepass").decode("utf-8", "replace") for k, v in query.items()
    }
    while safe_query and len(urlencode(safe_query)) > 60_000:
        longest = max(safe_query, key=lambda k: len(safe_query[k]))
        safe_query[longest] = safe_query[longest][: len(safe_query[longest]) // 2]
    return http.request(method, path, params=safe_query, headers=headers, content=body or None)


def _reads_normally(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    folders = http.get("/v1.0/me/mailFolders", params={"$top": "100"}, headers=auth(token))
    assert folders.status_code == 200, folders.text
    assert (
        http.get(
            f"/v1.0/users/{org.alice.id}/mailFolders", headers=auth(org.app_token())
        ).status_code
        == 200
    )
    url: str | None = "/v1.0/me/messages?$top=50"
    ids: list[str] = []
    while url:
        page = http.get(url, headers=auth(token))
        assert page.status_code == 200, page.text
        ids += [m["id"] for m in page.json()["value"]]
        url = page.json().get("@odata.nextLink")
    for message_id in ids:
        one = http.get(f"/v1.0/me/messages/{message_id}", headers=auth(token))
        assert one.status_code == 200, one.text
        mime = http.get(f"/v1.0/me/messages/{message_id}/$value", headers=auth(token))
        assert mime.status_code == 200
        attachments = http.get(f"/v1.0/me/messages/{message_id}/attachments", headers=auth(token))
        assert attachments.status_code == 200, attachments.text
    for folder in folders.json()["value"]:
        delta = http.get(f"/v1.0/me/mailFolders/{folder['id']}/messages/delta", headers=auth(token))
        assert delta.status_code == 200, delta.text
    folder_delta = http.get("/v1.0/me/mailFolders/delta", headers=auth(token))
    assert folder_delta.status_code == 200, folder_delta.text
    categories = http.get("/v1.0/me/outlook/masterCategories", headers=auth(token))
    assert categories.status_code == 200
    assert http.get(f"/_emulator/mailboxes/{org.alice.id}").status_code == 200
    assert http.get(f"/viewer/mailboxes/{org.alice.id}").status_code == 200
    assert http.get("/viewer").status_code == 200


def test_fuzz_every_graph_and_identity_route(
    http: httpx.Client, mailboxes: tuple[Org, Org]
) -> None:
    org, other = mailboxes
    config = org.state.config
    config.validation_timeout = 0.3  # a fuzzed notificationUrl must not stall the run
    config.delivery_timeout = 0.3
    config.throttling_enabled = False  # throttling is tested elsewhere; 429s would hide paths
    before_other = {
        m.immutable_id: (m.subject, m.folder_id, list(m.categories), m.change_key)
        for m in other.alice.mailbox.messages.values()
    }
    other_folders = {
        f.id: (f.display_name, f.parent_id) for f in other.alice.mailbox.folders.values()
    }
    fuzz = Fuzzer(SEED)
    graph = _graph_requests(fuzz, org, other)
    identity = _identity_requests(fuzz, org)
    started = time.monotonic()
    failures: list[str] = []
    statuses: dict[int, int] = {}
    for n in range(REQUESTS):
        if time.monotonic() - started > TIME_BUDGET:
            break
        source = identity if fuzz.rng.random() < 0.2 else graph
        method, path, query, headers, body, foreign = next(source)
        try:
            response = _send(http, method, path, query, headers, body)
        except httpx.HTTPError as exc:
            failures.append(f"#{n} {method} {path[:120]} {query}: connection {exc!r}")
            continue
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        where = f"seed={SEED} #{n} {method} {path[:160]} {str(query)[:160]} body={body[:160]!r}"
        if response.status_code >= 500:
            failures.append(f"{where}: {response.status_code} {response.text[:300]}")
        elif foreign and response.status_code < 300:
            failures.append(f"{where}: reached another tenant ({response.status_code})")
    assert not failures, "\n".join(failures[:20])
    assert sum(statuses.values()) >= min(REQUESTS, 300), statuses
    assert any(200 <= s < 300 for s in statuses), statuses  # the fuzzer reached real handlers

    after_other = {
        m.immutable_id: (m.subject, m.folder_id, list(m.categories), m.change_key)
        for m in other.alice.mailbox.messages.values()
    }
    assert after_other == before_other
    assert {
        f.id: (f.display_name, f.parent_id) for f in other.alice.mailbox.folders.values()
    } == other_folders
    _reads_normally(http, org)
    _reads_normally(http, other)
