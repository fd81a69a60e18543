"""Issue 15, a workspace's own alert webhook: owners and admins set a Slack/Teams incoming
webhook on the Alerts page; it gets one problem message and one recovery message per incident,
beside the operator's webhook. The URL is hostile (SSRF): https to public addresses only,
checked when saved and again at every send, and the post is pinned to the checked address with
the name in Host and TLS SNI. Real parts: the web app over HTTP, PostgreSQL, SMTP, and local
HTTP(S) receivers; the one seam replaced is the DNS resolver (``webhook.resolve``)."""

from __future__ import annotations

import json
import re
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import select, text, update

from m365sim.state import EmulatorState
from m365sim.tls import ensure_tls
from postroom.accounts.models import Workspace
from postroom.alerts import service as alerts
from postroom.alerts import webhook
from postroom.alerts.models import Incident
from postroom.crypto import DecryptionFailed, SecretBox
from postroom.integrations.models import Integration
from postroom.settings import Settings
from tests.postroom.conftest import Postroom
from tests.postroom.test_reliability_alerts import ADMIN, MEMBER, OWNER, alerts_to, set_up
from tests.postroom.webtools import add_member, csrf, post_form, sign_up

SECRET_PATH = "/services/T0001/B0002/SeCrEtToKeN9876"


class Receiver:
    """A chat webhook stand-in on 127.0.0.1 (optionally https): records every connection,
    each JSON body and its Host header (and TLS SNI), and answers ``status``."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.bodies: list[Any] = []
        self.hosts: list[str] = []
        self.server_names: list[str | None] = []
        self.connections = 0
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                receiver.bodies.append(json.loads(raw))
                receiver.hosts.append(self.headers.get("host", ""))
                self.send_response(receiver.status)
                if 300 <= receiver.status < 400:
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def verify_request(self, request: Any, client_address: Any) -> bool:
                receiver.connections += 1
                return True

        self.server = Server(("127.0.0.1", 0), Handler)
        if tls is not None:
            tls.sni_callback = lambda _sock, name, _ctx: receiver.server_names.append(name)
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{SECRET_PATH}"

    @property
    def texts(self) -> list[str]:
        return [str(b["text"]) for b in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def operator_hook() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def allow_private(postroom: Postroom) -> Iterator[Settings]:
    """The operator allows private targets (POSTROOM_ALERT_WEBHOOK_ALLOW_PRIVATE): the local
    receivers can be a workspace's webhook."""
    app = postroom.app
    original = app.state.settings
    app.state.settings = original.model_copy(update={"alert_webhook_allow_private": True})
    try:
        yield app.state.settings
    finally:
        app.state.settings = original


def set_webhook(web: httpx.Client, url: str) -> httpx.Response:
    return post_form(web, "/workspace/alerts", "/workspace/alerts/webhook", {"url": url})


def stored(postroom: Postroom) -> dict[str, bytes | None]:
    with postroom.database.session() as db:
        return {w.id: w.alert_webhook for w in db.scalars(select(Workspace))}


def stop_integration(postroom: Postroom) -> None:
    with postroom.database.session() as db:
        db.execute(
            update(Integration).values(status="needs_reconnect", status_reason="sessions_revoked")
        )


def restart_integration(postroom: Postroom) -> None:
    with postroom.database.session() as db:
        db.execute(update(Integration).values(status="connected", status_reason=None))


def channels(postroom: Postroom) -> tuple[list[str], list[str]]:
    with postroom.database.session() as db:
        [incident] = db.scalars(select(Incident)).all()
        return list(incident.opened_sent), list(incident.resolved_sent)


# --------------------------------------------------------------------------- delivery


def test_the_workspace_webhook_and_the_operators_each_get_one_problem_and_one_recovery(
    web: httpx.Client,
    postroom: Postroom,
    sim: EmulatorState,
    receiver: Receiver,
    operator_hook: Receiver,
    allow_private: Settings,
) -> None:
    set_up(web, postroom, postroom.org(sim))
    saved = set_webhook(web, receiver.url)
    assert saved.status_code == 303 and saved.headers["location"] == "/workspace/alerts?done=saved"
    settings = allow_private.model_copy(update={"alert_webhook_url": SecretStr(operator_hook.url)})
    assert alerts.check_sync(postroom.database, settings)["sent"] == 0

    stop_integration(postroom)
    counts = alerts.check_sync(postroom.database, settings)
    assert counts["opened"] == 1 and counts["sent"] == 4 and counts["failed"] == 0
    for hook in (receiver, operator_hook):
        [body] = hook.bodies
        assert set(body) == {"text"}  # the JSON Slack and Teams incoming webhooks accept
        assert "Needs reconnect" in body["text"] and "Press Reconnect" in body["text"]
        assert "@" not in body["text"].replace("…@", "")  # no mailbox address in the chat
    assert receiver.hosts == [f"127.0.0.1:{receiver.port}"]
    assert len(alerts_to(OWNER)) == 1 and len(alerts_to(ADMIN)) == 1 and alerts_to(MEMBER) == []
    assert sorted(channels(postroom)[0])[-2:] == ["webhook", "webhook:workspace"]

    # once per incident
    assert alerts.check_sync(postroom.database, settings)["sent"] == 0
    assert len(receiver.bodies) == 1 and len(operator_hook.bodies) == 1

    restart_integration(postroom)
    counts = alerts.check_sync(postroom.database, settings)
    assert counts["resolved"] == 1 and counts["sent"] == 4
    for hook in (receiver, operator_hook):
        assert len(hook.bodies) == 2 and "works again" in hook.texts[1]
    assert alerts.check_sync(postroom.database, settings)["sent"] == 0
    assert len(receiver.bodies) == 2 and len(operator_hook.bodies) == 2


def test_only_the_workspace_webhook_without_the_operators(
    web: httpx.Client,
    postroom: Postroom,
    sim: EmulatorState,
    receiver: Receiver,
    allow_private: Settings,
) -> None:
    set_up(web, postroom, postroom.org(sim))
    assert set_webhook(web, receiver.url).status_code == 303
    stop_integration(postroom)
    assert alerts.check_sync(postroom.database, allow_private)["sent"] == 3  # owner, admin, hook
    restart_integration(postroom)
    assert alerts.check_sync(postroom.database, allow_private)["sent"] == 3
    assert len(receiver.bodies) == 2 and "works again" in receiver.texts[1]
    assert "webhook" not in channels(postroom)[0]


def test_a_failing_workspace_webhook_is_retried_without_resending_the_others(
    web: httpx.Client,
    postroom: Postroom,
    sim: EmulatorState,
    receiver: Receiver,
    operator_hook: Receiver,
    allow_private: Settings,
) -> None:
    set_up(web, postroom, postroom.org(sim))
    assert set_webhook(web, receiver.url).status_code == 303
    settings = allow_private.model_copy(update={"alert_webhook_url": SecretStr(operator_hook.url)})
    receiver.status = 500
    stop_integration(postroom)
    counts = alerts.check_sync(postroom.database, settings)
    assert counts["sent"] == 3 and counts["failed"] == 1
    assert "webhook:workspace" not in channels(postroom)[0]
    page = web.get("/workspace/alerts")
    assert "Last attempt failed" in page.text and "The webhook answered 500." in page.text

    receiver.status = 200
    receiver.bodies.clear()
    # the next pass a moment later leaves the failed hook alone (it backs off) ...
    counts = alerts.check_sync(postroom.database, settings)
    assert counts["sent"] == 0 and counts["failed"] == 1 and receiver.bodies == []
    # ... and the one after the back-off posts it
    later = datetime.now(UTC) + alerts.WEBHOOK_BACKOFF + timedelta(seconds=5)
    counts = alerts.check_sync(postroom.database, settings, now=later)
    assert counts["sent"] == 1 and counts["failed"] == 0
    assert len(receiver.bodies) == 1 and len(operator_hook.bodies) == 1
    assert len(alerts_to(OWNER)) == 1
    assert "Last attempt failed" not in web.get("/workspace/alerts").text


def test_the_send_time_check_refuses_a_host_that_now_resolves_private(
    web: httpx.Client,
    postroom: Postroom,
    sim: EmulatorState,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """DNS changed after the URL was saved (rebinding): the send-time check refuses it and
    nothing connects to the receiver its host now points at."""
    set_up(web, postroom, postroom.org(sim))
    answers = {"hooks.example.test": [ip_address("93.184.215.14")]}
    monkeypatch.setattr(webhook, "resolve", lambda host, port: answers[host])
    url = f"https://hooks.example.test:{receiver.port}{SECRET_PATH}"
    assert set_webhook(web, url).status_code == 303  # public when saved

    answers["hooks.example.test"] = [ip_address("127.0.0.1")]  # where the receiver listens
    stop_integration(postroom)
    counts = alerts.check_sync(postroom.database, postroom.settings)
    assert counts["sent"] == 2 and counts["failed"] == 1  # the emails only
    assert receiver.connections == 0 and receiver.bodies == []
    assert "webhook:workspace" not in channels(postroom)[0]
    page = web.get("/workspace/alerts")
    assert "Last attempt failed" in page.text
    assert "resolves to an address that is not on the public internet" in page.text

    tested = post_form(web, "/workspace/alerts", "/workspace/alerts/webhook/test")
    assert tested.status_code == 400
    assert "not on the public internet" in tested.text
    assert receiver.connections == 0


# --------------------------------------------------------------------------- the page


def test_the_page_sets_tests_and_removes_the_webhook_showing_only_its_host_and_ending(
    web: httpx.Client, postroom: Postroom, receiver: Receiver, allow_private: Settings
) -> None:
    sign_up(web)
    page = web.get("/workspace/alerts")
    assert page.status_code == 200
    assert "No webhook is set" in page.text and 'href="/workspace/alerts"' in page.text
    assert "owner@acme.test" in page.text  # who gets the emails

    assert set_webhook(web, "  " + receiver.url + "  ").status_code == 303
    page = web.get("/workspace/alerts?done=saved")
    assert "The webhook is saved" in page.text
    assert "<strong>127.0.0.1</strong>" in page.text and "…9876" in page.text
    assert "SeCrEtToKeN" not in page.text and SECRET_PATH not in page.text

    tested = post_form(web, "/workspace/alerts", "/workspace/alerts/webhook/test")
    assert tested.status_code == 200 and "accepted the test message" in tested.text
    [body] = receiver.bodies
    assert set(body) == {"text"} and "test message" in body["text"] and "Acme" in body["text"]

    receiver.status = 404
    tested = post_form(web, "/workspace/alerts", "/workspace/alerts/webhook/test")
    assert tested.status_code == 502
    assert "The webhook answered 404." in tested.text and "Last attempt failed" in tested.text

    receiver.status = 302  # a redirect is a failure, never followed
    tested = post_form(web, "/workspace/alerts", "/workspace/alerts/webhook/test")
    assert tested.status_code == 502 and "answered 302" in tested.text
    assert len(receiver.bodies) == 3

    removed = post_form(web, "/workspace/alerts", "/workspace/alerts/webhook/remove")
    assert removed.status_code == 303
    assert list(stored(postroom).values()) == [None]
    assert "No webhook is set" in web.get("/workspace/alerts").text
    tested = post_form(web, "/workspace/alerts", "/workspace/alerts/webhook/test")
    assert tested.status_code == 400 and "No webhook is set" in tested.text


def test_the_url_is_stored_encrypted(
    web: httpx.Client, postroom: Postroom, receiver: Receiver, allow_private: Settings
) -> None:
    sign_up(web)
    assert set_webhook(web, receiver.url).status_code == 303
    with postroom.database.engine.connect() as conn:
        [(workspace_id, blob)] = conn.execute(
            text("SELECT id, alert_webhook FROM workspaces")
        ).all()
    raw = bytes(blob)
    assert b"SeCrEtToKeN" not in raw and b"127.0.0.1" not in raw and b"http" not in raw
    box: SecretBox = postroom.app.state.box
    assert box.decrypt(raw, context=f"alert-webhook:{workspace_id}".encode()) == (
        receiver.url.encode()
    )
    with pytest.raises(DecryptionFailed):  # bound to its workspace
        box.decrypt(raw, context=b"alert-webhook:another-workspace")


REFUSED = [
    ("http://127.0.0.1/hook", "must start with https://"),
    ("http://hooks.slack.com/services/x", "must start with https://"),
    ("ftp://hooks.slack.com/x", "must start with https://"),
    ("https://10.0.0.1/hook", "not a public internet address"),
    ("https://192.168.1.20/hook", "not a public internet address"),
    ("https://169.254.169.254/latest/meta-data/", "not a public internet address"),
    ("https://100.64.0.1/hook", "not a public internet address"),
    ("https://0.0.0.0/hook", "not a public internet address"),
    ("https://[::1]/hook", "not a public internet address"),
    ("https://[::ffff:127.0.0.1]/hook", "not a public internet address"),
    ("https://[fd00::1]/hook", "not a public internet address"),
    ("https://localhost/hook", "resolves to an address that is not on the public internet"),
    ("https://user:pass@hooks.slack.com/services/x", "user name or password"),
    ("https://hooks.slack.com@127.0.0.1/x", "user name or password"),
    ("https://2130706433/hook", "not a valid host name"),
    ("https://127.1/hook", "not a valid host name"),
    ("not a url", "may not contain spaces"),
    ("hooks.slack.com/services/x", "must start with https://"),
    ("https://", "has no host name"),
    ("https://hooks.slack.com:0/x", "port must be between"),
    ("https://hooks.slack.com/" + "a" * 2000, "too long"),
    ("https://hooks.slack.com\\@127.0.0.1/x", "backslashes"),
    ("", "Enter the webhook URL"),
]


def test_the_form_refuses_urls_that_could_reach_the_servers_own_network(
    web: httpx.Client, postroom: Postroom
) -> None:
    """POSTROOM_ALERT_WEBHOOK_ALLOW_PRIVATE off (the default): each is a clear 400 form error
    and nothing is stored."""
    sign_up(web)
    for url, reason in REFUSED:
        answer = set_webhook(web, url)
        assert answer.status_code == 400, url
        assert reason in answer.text, (url, answer.text[-2000:])
        assert "Nothing was saved." in answer.text
        assert 'role="alert"' in answer.text
    assert list(stored(postroom).values()) == [None]


def test_members_and_other_workspaces_cannot_see_or_change_it(
    web: httpx.Client, postroom: Postroom, receiver: Receiver, allow_private: Settings
) -> None:
    sign_up(web)
    assert set_webhook(web, receiver.url).status_code == 303
    with httpx.Client(base_url=postroom.url, trust_env=False) as member:
        sign_up(member, email="max.member@acme.test", name="Max Member", workspace="Max's own")
        add_member(web, member, "max.member@acme.test")
        assert 'href="/workspace/alerts"' not in member.get("/workspace/members").text
        assert member.get("/workspace/alerts").status_code == 403
        token = csrf(member.get("/workspace/members").text)
        for action, data in (
            ("/workspace/alerts/webhook", {"url": "https://hooks.slack.com/services/evil"}),
            ("/workspace/alerts/webhook/remove", {}),
            ("/workspace/alerts/webhook/test", {}),
        ):
            answer = member.post(action, data={"csrf_token": token, **data})
            assert answer.status_code == 403, action
    assert receiver.bodies == []

    with httpx.Client(base_url=postroom.url, trust_env=False) as other:
        sign_up(other, email="olaf@beta.test", name="Olaf", workspace="Beta")
        page = other.get("/workspace/alerts")
        assert page.status_code == 200 and "No webhook is set" in page.text
        assert "127.0.0.1" not in page.text
        assert (
            post_form(other, "/workspace/alerts", "/workspace/alerts/webhook/remove").status_code
            == 303
        )
        tested = post_form(other, "/workspace/alerts", "/workspace/alerts/webhook/test")
        assert tested.status_code == 400 and receiver.bodies == []
    with postroom.database.session() as db:
        acme = db.scalar(select(Workspace).where(Workspace.name == "Acme"))
        assert acme is not None and acme.alert_webhook is not None  # untouched
    assert "<strong>127.0.0.1</strong>" in web.get("/workspace/alerts").text

    # without the form's CSRF token nothing changes either
    answer = web.post("/workspace/alerts/webhook/remove", data={})
    assert answer.status_code == 400
    assert web.post("/workspace/alerts/webhook", data={"url": receiver.url}).status_code == 400
    with postroom.database.session() as db:
        acme = db.scalar(select(Workspace).where(Workspace.name == "Acme"))
        assert acme is not None and acme.alert_webhook is not None


# ------------------------------------------------------------------ the check, unit by unit

NOT_PUBLIC = [
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "172.16.5.4",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.254",
    "0.0.0.0",
    "0.1.2.3",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.0.9",
    "192.0.2.1",
    "198.18.0.1",
    "198.51.100.7",
    "203.0.113.9",
    "::",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:0.0.0.0",
    "::7f00:1",  # IPv4-compatible
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1::1",
    "2002:7f00:1::1",  # 6to4
    "2001::1",  # Teredo
    "2001:db8::1",
    "100::1",
    "fc00::1",
    "fd12:3456:789a::1",
    "fe80::1",
    "fe80::1%2",
    "fec0::1",
    "ff02::1",
    "ff0e::1",
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "100.63.255.255",
    "100.128.0.1",
    "172.32.0.1",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_addresses_that_are_not_public_are_refused(address: str) -> None:
    assert webhook.is_public(ip_address(address)) is False


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert webhook.is_public(ip_address(address)) is True


def test_every_resolved_address_must_be_public(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [ip_address("8.8.8.8"), ip_address("10.0.0.1")]
    monkeypatch.setattr(webhook, "resolve", lambda host, port: answers)
    with pytest.raises(webhook.Refused, match="not on the public internet"):
        webhook.check("https://mixed.example.test/x")
    # the operator's setting allows private targets, and plain http
    target = webhook.check("http://mixed.example.test/x", allow_private=True)
    assert target.address == ip_address("8.8.8.8")
    answers[:] = []
    with pytest.raises(webhook.Refused, match="could not be found"):
        webhook.check("https://nothing.example.test/x")


def test_the_pinned_request_goes_to_the_checked_address_with_the_name_in_host_and_sni() -> None:
    endpoint = webhook.parse("https://Hooks.Slack.com./services/T/B/X?a=1#frag")
    target = webhook.Target(endpoint=endpoint, address=ip_address("52.1.2.3"))
    request = webhook.pinned_request(target, {"text": "hi"})
    assert str(request.url) == "https://52.1.2.3/services/T/B/X?a=1"
    assert request.headers["host"] == "hooks.slack.com"
    assert request.extensions["sni_hostname"] == "hooks.slack.com"
    assert json.loads(request.content) == {"text": "hi"}

    v6 = webhook.Target(
        endpoint=webhook.parse("https://chat.example.test:8443/hook"),
        address=ip_address("2606:4700::6810:84e5"),
    )
    request = webhook.pinned_request(v6, {"text": "hi"})
    assert str(request.url) == "https://[2606:4700::6810:84e5]:8443/hook"
    assert request.headers["host"] == "chat.example.test:8443"
    assert request.extensions["sni_hostname"] == "chat.example.test"

    literal = webhook.Target(
        endpoint=webhook.parse("https://8.8.8.8/hook"), address=ip_address("8.8.8.8")
    )
    request = webhook.pinned_request(literal, {"text": "hi"})
    assert request.headers["host"] == "8.8.8.8" and "sni_hostname" not in request.extensions


def test_post_checks_again_connects_to_the_checked_address_and_follows_no_redirect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = [ip_address("93.184.215.14")]
    lookups: list[str] = []

    def resolve(host: str, port: int) -> list[Any]:
        lookups.append(host)
        return list(answers)

    monkeypatch.setattr(webhook, "resolve", resolve)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200 if len(seen) == 1 else 301, headers={"Location": "/x"})

    transport = httpx.MockTransport(handler)
    url = "https://hooks.example.test/services/x"
    assert webhook.post(url, {"text": "a"}, transport=transport) == 200
    [request] = seen
    assert request.url.host == "93.184.215.14" and request.headers["host"] == "hooks.example.test"
    assert request.extensions["sni_hostname"] == "hooks.example.test"
    with pytest.raises(webhook.Failed, match="answered 301") as failed:
        webhook.post(url, {"text": "a"}, transport=transport)
    assert failed.value.status == 301 and len(seen) == 2  # not followed

    answers[:] = [ip_address("169.254.169.254")]  # the name now points at the metadata service
    with pytest.raises(webhook.Refused):
        webhook.post(url, {"text": "a"}, transport=transport)
    assert len(seen) == 2 and lookups == ["hooks.example.test"] * 3


@pytest.fixture
def tls_files(tmp_path: Path) -> Any:
    return ensure_tls(tmp_path / "tls", extra_hosts=("hooks.example.test",))


def test_tls_to_the_pinned_address_verifies_the_certificate_for_the_name(
    tls_files: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real TLS exchange with the connection pinned to 127.0.0.1: the server sees SNI and
    Host of the name, and the certificate must be valid for the name — this one is valid for
    127.0.0.1 too, so a check against the address would wrongly pass for another name."""
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(tls_files.server_cert, tls_files.server_key)
    receiver = Receiver(tls=server_tls)
    try:
        monkeypatch.setattr(webhook, "resolve", lambda host, port: [ip_address("127.0.0.1")])
        trust = ssl.create_default_context(cafile=str(tls_files.ca_cert))
        url = f"https://hooks.example.test:{receiver.port}{SECRET_PATH}"
        assert webhook.post(url, {"text": "hi"}, allow_private=True, verify=trust) == 200
        assert receiver.bodies == [{"text": "hi"}]
        assert receiver.hosts == [f"hooks.example.test:{receiver.port}"]
        assert receiver.server_names == ["hooks.example.test"]

        other = f"https://elsewhere.example.test:{receiver.port}/hook"
        with pytest.raises(webhook.Failed, match="certificate could not be verified"):
            webhook.post(other, {"text": "hi"}, allow_private=True, verify=trust)
        assert len(receiver.bodies) == 1
    finally:
        receiver.close()


def test_the_host_of_a_url_for_logs_and_the_page() -> None:
    assert webhook.host_of("https://Hooks.Slack.com/services/T/B/X") == "hooks.slack.com"
    assert webhook.host_of("garbage") == "(not a valid URL)"
    assert re.fullmatch(r"\(.*\)", webhook.host_of("https://u:p@x.test/"))


def test_a_host_whose_dns_never_answers_is_refused_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """One workspace's hook must not hold up the alerts pass: the lookup is bounded."""
    import socket
    import time as clock

    from postroom.alerts import webhook

    def slow(*args: object, **kwargs: object) -> object:
        clock.sleep(2)
        return []

    monkeypatch.setattr(webhook, "RESOLVE_TIMEOUT", 0.2)
    monkeypatch.setattr(socket, "getaddrinfo", slow)
    began = clock.monotonic()
    with pytest.raises(webhook.Refused, match="did not resolve"):
        webhook.resolve("hooks.example.test", 443)
    assert clock.monotonic() - began < 1.5
