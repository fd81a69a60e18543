"""Issue 12, "people can be added to a workspace without their consent": invitations that a
person accepts as the invited address, a workspace switcher, the same answer whether or not an
address has an account (invitations and sign-up), bidi controls stripped from names, and
mixed-script look-alike addresses refused. Mail travels through a real SMTP server."""

from __future__ import annotations

import hashlib
import io
import logging
import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from postroom import mail
from postroom.accounts import service
from postroom.accounts.models import (
    Invitation,
    Membership,
    PendingSignup,
    User,
    Workspace,
    utcnow,
)
from postroom.integrations.models import Integration
from postroom.settings import Settings
from tests.postroom.conftest import Postroom
from tests.postroom.smtp import INBOX, SmtpServer
from tests.postroom.webtools import (
    accept_invitation,
    csrf,
    invitation_link,
    invite,
    local_path,
    post_form,
    request_sign_up,
    sign_up,
    signup_link,
)

PASSWORD = "correct horse battery"


def client(postroom: Postroom) -> httpx.Client:
    return httpx.Client(base_url=postroom.url, trust_env=False, timeout=30)


def sign_in(web: httpx.Client, email: str, password: str = PASSWORD) -> httpx.Response:
    return post_form(web, "/signin", "/signin", {"email": email, "password": password})


def memberships_of(postroom: Postroom, email: str) -> list[tuple[str, str]]:
    with postroom.database.session() as db:
        rows = db.execute(
            select(Workspace.name, Membership.role)
            .join(Membership, Membership.workspace_id == Workspace.id)
            .join(User, User.id == Membership.user_id)
            .where(User.email == email)
            .order_by(Workspace.name)
        ).all()
        return [(r[0], r[1]) for r in rows]


def notice(page: str) -> str:
    match = re.search(r'<p class="alert info" role="status">(.*?)</p>', page, re.S)
    assert match, "no notice on the page"
    return match.group(1)


def token_of(link: str) -> str:
    match = re.search(r"token=([A-Za-z0-9_\-]+)", link)
    assert match
    return match.group(1)


# -- nobody is moved without their consent ---------------------------------------------------


def test_adding_an_account_by_email_no_longer_moves_anyone(
    web: httpx.Client, postroom: Postroom
) -> None:
    sign_up(web)
    with client(postroom) as max_:
        sign_up(max_, email="max@acme.test", name="Max", workspace="Max's own")
    # The old add-by-email form is gone: posting it changes nothing.
    old = post_form(
        web, "/workspace/members", "/workspace/members", {"email": "max@acme.test", "role": "admin"}
    )
    assert old.status_code in (404, 405)
    # An invitation is only an invitation until Max accepts it.
    assert invite(web, "max@acme.test", "admin").status_code == 200
    assert memberships_of(postroom, "max@acme.test") == [("Max's own", "owner")]
    with client(postroom) as max_:
        assert sign_in(max_, "max@acme.test").status_code == 303
        page = max_.get("/integrations")
        assert "Max&#39;s own" in page.text and "Acme" not in page.text


def test_invitation_arrives_by_smtp_and_makes_a_member_only_when_accepted(
    web: httpx.Client, postroom: Postroom, smtp_server: SmtpServer
) -> None:
    sign_up(web)
    with client(postroom) as max_:
        sign_up(max_, email="max@acme.test", name="Max", workspace="Max's own")
        max_.cookies.clear()
        answer = invite(web, "Max@Acme.test", "admin")
        assert answer.status_code == 200
        assert notice(answer.text) == "Invitation sent to max@acme.test."
        # Listed as pending, with actions, on the members page.
        assert "Pending invitations" in answer.text and "max@acme.test" in answer.text
        mail_ = INBOX.last_to("max@acme.test")
        assert mail_.sender == "postroom@localhost"
        assert "Olga Owner invited you to Acme" in mail_.subject
        assert "as an admin" in mail_.text
        link = mail_.link("/invitations/accept")
        assert link.startswith(postroom.url + "/invitations/accept?token=")
        token = token_of(link)
        # Only the token's hash is stored.
        with postroom.database.session() as db:
            row = db.scalar(select(Invitation))
            assert row is not None and row.email == "max@acme.test" and row.role == "admin"
            assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
            assert token not in repr(db.execute(select(Invitation.__table__)).all())

        # Signed out: the page offers to sign in as that address; sign-in comes back to it.
        page = max_.get(local_path(link))
        assert page.status_code == 200
        assert "Sign in as max@acme.test to accept" in page.text
        signin_url = re.search(r'href="(/signin\?next=[^"]+)"', page.text)
        assert signin_url
        form = max_.get(signin_url.group(1).replace("&amp;", "&"))
        back = max_.post(
            "/signin",
            data={
                "csrf_token": csrf(form.text),
                "email": "max@acme.test",
                "password": PASSWORD,
                "next": re.search(r'name="next" value="([^"]+)"', form.text).group(1),  # type: ignore[union-attr]
            },
        )
        assert back.status_code == 303
        assert back.headers["location"] == f"/invitations/accept?token={token}"
        accepted = accept_invitation(max_, "max@acme.test")
        assert accepted.status_code == 303 and accepted.headers["location"] == "/integrations"
        assert memberships_of(postroom, "max@acme.test") == [
            ("Acme", "admin"),
            ("Max's own", "owner"),
        ]
        # The accepted workspace is now the current one, and the header offers a switch.
        landing = max_.get("/integrations")
        assert "Connect Integration" in landing.text  # admin in Acme
        assert 'action="/workspace/switch"' in landing.text
    members = web.get("/workspace/members").text
    assert "Pending invitations" not in members and "max@acme.test" in members


def test_an_invited_address_without_an_account_signs_up_from_the_link(
    web: httpx.Client, postroom: Postroom
) -> None:
    sign_up(web)
    invite(web, "new@acme.test", "member")
    with client(postroom) as new:
        page = new.get(local_path(invitation_link("new@acme.test")))
        assert "New to Postroom?" in page.text
        token = re.search(r'name="token" value="([^"]+)"', page.text)
        assert token
        weak = new.post(
            "/invitations/signup",
            data={
                "csrf_token": csrf(page.text),
                "token": token.group(1),
                "name": "Nina",
                "password": "short",
            },
        )
        assert weak.status_code == 400 and "at least 10 characters" in weak.text
        done = new.post(
            "/invitations/signup",
            data={
                "csrf_token": csrf(weak.text),
                "token": token.group(1),
                "name": "Nina \u202eNew",
                "password": PASSWORD,
            },
        )
        assert done.status_code == 303, re.findall(r'role="alert">(.*?)</p>', done.text, re.S)
        assert done.headers["location"] == "/integrations"
        assert new.get("/integrations").status_code == 200
    assert memberships_of(postroom, "new@acme.test") == [("Acme", "member")]
    with postroom.database.session() as db:
        assert db.scalar(select(User.name).where(User.email == "new@acme.test")) == "Nina New"


def test_a_signed_in_user_with_another_address_is_refused(
    web: httpx.Client, postroom: Postroom
) -> None:
    sign_up(web)
    invite(web, "max@acme.test")
    link = local_path(invitation_link("max@acme.test"))
    with client(postroom) as eve:
        sign_up(eve, email="eve@evil.test", name="Eve", workspace="Evil")
        page = eve.get(link)
        assert page.status_code == 403
        assert "This invitation is for max@acme.test" in page.text
        assert 'action="/invitations/accept"' not in page.text
        forced = eve.post(
            "/invitations/accept", data={"csrf_token": csrf(page.text), "token": token_of(link)}
        )
        assert forced.status_code == 403
        # Creating an account from the link while signed in elsewhere takes the invited address.
    assert memberships_of(postroom, "eve@evil.test") == [("Evil", "owner")]
    with postroom.database.session() as db:
        invitation = db.scalar(select(Invitation))
        assert invitation is not None and invitation.accepted_at is None


def test_used_expired_revoked_and_unknown_links_are_refused(
    web: httpx.Client, postroom: Postroom
) -> None:
    sign_up(web)
    with client(postroom) as max_:
        sign_up(max_, email="max@acme.test", name="Max", workspace="Max's own")
        invite(web, "max@acme.test")
        link = local_path(invitation_link("max@acme.test"))
        accept_invitation(max_, "max@acme.test")
        again = max_.get(link)
        assert again.status_code == 410 and "already been used" in again.text
        reused = max_.post(
            "/invitations/accept",
            data={"csrf_token": csrf(max_.get("/integrations").text), "token": token_of(link)},
        )
        assert reused.status_code == 410

    invite(web, "late@acme.test")
    late = local_path(invitation_link("late@acme.test"))
    with postroom.database.session() as db:
        db.execute(
            update(Invitation)
            .where(Invitation.email == "late@acme.test")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    with client(postroom) as anyone:
        expired = anyone.get(late)
        assert expired.status_code == 410 and "expired" in expired.text
    # An expired invitation is no longer listed as pending.
    assert "late@acme.test" not in web.get("/workspace/members").text

    invite(web, "gone@acme.test")
    gone = local_path(invitation_link("gone@acme.test"))
    page = web.get("/workspace/members")
    revoke = re.search(r'action="(/workspace/invitations/[^"/]+/revoke)"', page.text)
    assert revoke
    assert web.post(revoke.group(1), data={"csrf_token": csrf(page.text)}).status_code == 303
    with client(postroom) as anyone:
        revoked = anyone.get(gone)
        assert revoked.status_code == 410 and "withdrawn" in revoked.text
        unknown = anyone.get("/invitations/accept?token=not-a-token")
        assert unknown.status_code == 404 and "not valid" in unknown.text
        empty = anyone.get("/invitations/accept")
        assert empty.status_code == 404
    assert "gone@acme.test" not in web.get("/workspace/members").text
    # Another workspace cannot revoke or resend this workspace's invitations.
    invite(web, "kept@acme.test")
    page = web.get("/workspace/members")
    kept = re.search(r'action="(/workspace/invitations/[^"/]+)/revoke"', page.text)
    assert kept
    with client(postroom) as other:
        sign_up(other, email="eve@evil.test", name="Eve", workspace="Evil")
        token = csrf(other.get("/integrations").text)
        for action in ("revoke", "resend"):
            refused = other.post(f"{kept.group(1)}/{action}", data={"csrf_token": token})
            assert refused.status_code == 404
    assert "kept@acme.test" in web.get("/workspace/members").text


def test_resend_replaces_the_link(web: httpx.Client, postroom: Postroom) -> None:
    sign_up(web)
    invite(web, "max@acme.test")
    first = local_path(invitation_link("max@acme.test"))
    page = web.get("/workspace/members")
    resend = re.search(r'action="(/workspace/invitations/[^"/]+/resend)"', page.text)
    assert resend
    answer = web.post(resend.group(1), data={"csrf_token": csrf(page.text)})
    assert answer.status_code == 200 and notice(answer.text) == "Invitation sent to max@acme.test."
    second = local_path(invitation_link("max@acme.test"))
    assert second != first
    with client(postroom) as anyone:
        assert anyone.get(first).status_code == 404
        assert anyone.get(second).status_code == 200
    assert len(INBOX.to("max@acme.test")) == 2


def test_only_owners_invite_owners_and_members_cannot_invite(
    web: httpx.Client, postroom: Postroom
) -> None:
    sign_up(web)
    with client(postroom) as admin:
        sign_up(admin, email="ada@acme.test", name="Ada", workspace="Ada's")
        invite(web, "ada@acme.test", "admin")
        accept_invitation(admin, "ada@acme.test")
        refused = invite(admin, "boss@acme.test", "owner")
        assert refused.status_code == 403 and "Only an owner can invite an owner" in refused.text
        assert invite(admin, "helper@acme.test", "member").status_code == 200
    with client(postroom) as member:
        sign_up(member, email="mo@acme.test", name="Mo", workspace="Mo's")
        invite(web, "mo@acme.test", "member")
        accept_invitation(member, "mo@acme.test")
        page = member.get("/workspace/members")
        assert 'action="/workspace/invitations"' not in page.text
        forbidden = member.post(
            "/workspace/invitations",
            data={"csrf_token": csrf(page.text), "email": "x@acme.test", "role": "member"},
        )
        assert forbidden.status_code == 403
    with postroom.database.session() as db:
        invited = set(db.scalars(select(Invitation.email)))
    assert "boss@acme.test" not in invited and "x@acme.test" not in invited
    assert INBOX.to("boss@acme.test") == [] and INBOX.to("x@acme.test") == []
    # Inviting someone who is already a member says so (the members page shows them anyway).
    already = invite(web, "ada@acme.test", "member")
    assert already.status_code == 400 and "already a member" in already.text


# -- the same answer whether or not an address has an account ---------------------------------


def _masked(text: str, *secrets: str) -> str:
    for secret in secrets:
        text = text.replace(secret, "<x>")
    return re.sub(r'name="csrf_token" value="[^"]+"', "", text)


def test_invitations_answer_the_same_for_existing_and_new_addresses(
    web: httpx.Client, postroom: Postroom
) -> None:
    sign_up(web)
    with client(postroom) as other:
        sign_up(other, email="has@acme.test", name="Has", workspace="Has")
    existing = invite(web, "has@acme.test")
    new = invite(web, "none@acme.test")
    assert existing.status_code == new.status_code == 200
    assert notice(existing.text) == "Invitation sent to has@acme.test."
    assert notice(new.text) == "Invitation sent to none@acme.test."
    has_mail, none_mail = INBOX.last_to("has@acme.test"), INBOX.last_to("none@acme.test")
    assert has_mail.subject == none_mail.subject
    has_link, none_link = token_of(has_mail.text), token_of(none_mail.text)
    assert _masked(has_mail.text, "has@acme.test", has_link) == _masked(
        none_mail.text, "none@acme.test", none_link
    )
    # The invitation pages look the same too (a visitor signed out).
    with client(postroom) as visitor:
        a = visitor.get(local_path(has_mail.link("/invitations/accept")))
        b = visitor.get(local_path(none_mail.link("/invitations/accept")))
    assert a.status_code == b.status_code == 200
    assert _masked(a.text, "has@acme.test", has_link) == _masked(
        b.text, "none@acme.test", none_link
    )


def test_sign_up_answers_the_same_and_changes_nothing_for_an_existing_address(
    web: httpx.Client, postroom: Postroom
) -> None:
    sign_up(web)
    with postroom.database.session() as db:
        before = db.execute(select(User.id, User.name, User.password_hash)).all()
    with client(postroom) as stranger:
        existing = request_sign_up(
            stranger,
            email="owner@acme.test",
            name="Mallory",
            password="another long password",
            workspace="Takeover",
        )
        new = request_sign_up(
            stranger,
            email="fresh@acme.test",
            name="Mallory",
            password="another long password",
            workspace="Takeover",
        )
    assert existing.status_code == new.status_code == 200
    assert "Check your inbox: we sent a link to <strong>owner@acme.test</strong>" in existing.text
    assert _masked(existing.text, "owner@acme.test") == _masked(new.text, "fresh@acme.test")
    # The owner is told someone tried; nothing about their account changed.
    note = INBOX.last_to("owner@acme.test")
    assert "tried to create a new Postroom account" in note.text
    assert "/signup/confirm" not in note.text and "Takeover" not in note.text
    with postroom.database.session() as db:
        assert db.execute(select(User.id, User.name, User.password_hash)).all() == before
        pending = db.scalars(
            select(PendingSignup.email).where(PendingSignup.used_at.is_(None))
        ).all()
        assert pending == ["fresh@acme.test"]
        # The owner's spent sign-up keeps no copy of the password hash.
        spent = db.scalar(select(PendingSignup).where(PendingSignup.used_at.is_not(None)))
        assert spent is not None and spent.password_hash == ""
        assert db.scalar(select(func.count()).select_from(Workspace)) == 1
    with client(postroom) as owner:
        assert sign_in(owner, "owner@acme.test", "another long password").status_code == 400
        assert sign_in(owner, "owner@acme.test").status_code == 303
    # The new address's link works once, and stores only a hash of its token.
    link = signup_link("fresh@acme.test")
    with postroom.database.session() as db:
        row = db.scalar(select(PendingSignup).where(PendingSignup.email == "fresh@acme.test"))
        assert (
            row is not None
            and row.token_hash == hashlib.sha256(token_of(link).encode()).hexdigest()
        )
        assert "another long password" not in row.password_hash
    with client(postroom) as fresh:
        page = fresh.get(local_path(link))
        assert page.status_code == 200 and "Takeover" in page.text
        done = fresh.post(
            "/signup/confirm", data={"csrf_token": csrf(page.text), "token": token_of(link)}
        )
        assert done.status_code == 303
        assert "Takeover" in fresh.get("/integrations").text
        again = fresh.get(local_path(link))
        assert again.status_code == 410 and "already been used" in again.text
    assert memberships_of(postroom, "fresh@acme.test") == [("Takeover", "owner")]


def test_sign_up_hashes_the_password_in_both_branches(
    postroom: Postroom, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Similar timing: the expensive step (Argon2) runs whether or not the address exists."""
    calls: list[str] = []
    real = service.hash_password

    def counting(password: str) -> str:
        calls.append(password)
        return real(password)

    monkeypatch.setattr(service, "hash_password", counting)
    with postroom.database.session() as db:
        service.sign_up(db=db, email="a@acme.test", name="A", password=PASSWORD, workspace_name="A")
    calls.clear()
    for address in ("a@acme.test", "b@acme.test"):
        with postroom.database.session() as db:
            service.request_signup(
                db=db,
                email=address,
                name="B",
                password=PASSWORD,
                workspace_name="B",
                lifetime=timedelta(hours=1),
            )
    assert calls == [PASSWORD, PASSWORD]


def test_an_expired_sign_up_link_creates_nothing(web: httpx.Client, postroom: Postroom) -> None:
    request_sign_up(web, email="slow@acme.test")
    link = local_path(signup_link("slow@acme.test"))
    with postroom.database.session() as db:
        db.execute(update(PendingSignup).values(expires_at=utcnow() - timedelta(seconds=1)))
    page = web.get(link)
    assert page.status_code == 410 and "expired" in page.text
    forced = web.post(
        "/signup/confirm",
        data={"csrf_token": csrf(web.get("/signup").text), "token": token_of(link)},
    )
    assert forced.status_code == 410
    with postroom.database.session() as db:
        assert db.scalar(select(func.count()).select_from(User)) == 0


def test_tokens_never_reach_the_access_log(
    web: httpx.Client, postroom: Postroom, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    sign_up(web)
    invite(web, "max@acme.test")
    link = invitation_link("max@acme.test")
    with client(postroom) as visitor:
        page = visitor.get(local_path(link))
        signin = re.search(r'href="(/signin\?next=[^"]+)"', page.text)
        assert signin
        visitor.get(signin.group(1).replace("&amp;", "&"))
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "/invitations/accept?token=[redacted]" in logged
    assert token_of(link) not in logged
    assert token_of(signup_link("owner@acme.test")) not in logged


def test_a_mail_server_that_is_down_gives_a_clear_page(
    web: httpx.Client, postroom: Postroom
) -> None:
    app_state = postroom.app.state
    original: Settings = app_state.settings
    app_state.settings = original.model_copy(update={"smtp_url": _closed_port_url()})
    try:
        answer = request_sign_up(web, email="later@acme.test")
        assert answer.status_code == 503
        assert "could not send the email" in answer.text and "Traceback" not in answer.text
    finally:
        app_state.settings = original


def _closed_port_url() -> Any:
    import socket

    from pydantic import SecretStr

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return SecretStr(f"smtp://127.0.0.1:{port}")


# -- the workspace switcher -------------------------------------------------------------------


def test_the_switcher_changes_the_current_workspace_only_among_the_users_own(
    web: httpx.Client, postroom: Postroom
) -> None:
    sign_up(web)
    with client(postroom) as max_:
        sign_up(max_, email="max@acme.test", name="Max", workspace="Max's own")
        with postroom.database.session() as db:
            own = db.scalar(select(Workspace.id).where(Workspace.name == "Max's own"))
            acme = db.scalar(select(Workspace.id).where(Workspace.name == "Acme"))
            assert own and acme
            db.add(Integration(workspace_id=own, kind="personal", name="Max's Outlook"))
        with client(postroom) as eve:
            sign_up(eve, email="eve@evil.test", name="Eve", workspace="Evil")
            with postroom.database.session() as db:
                evil = db.scalar(select(Workspace.id).where(Workspace.name == "Evil"))
        # One workspace: no switcher.
        assert 'action="/workspace/switch"' not in max_.get("/integrations").text
        invite(web, "max@acme.test")
        accept_invitation(max_, "max@acme.test")
        page = max_.get("/integrations")
        assert "Max&#39;s Outlook" not in page.text  # Acme is current now
        options = re.findall(r'<option value="([^"]+)"[^>]*>([^<]+)</option>', page.text)
        assert sorted(options) == sorted([(acme, "Acme"), (own, "Max&#39;s own")])
        token = csrf(page.text)
        # Not a member: refused, nothing changes.
        assert (
            max_.post(
                "/workspace/switch", data={"csrf_token": token, "workspace_id": evil}
            ).status_code
            == 404
        )
        assert max_.post("/workspace/switch", data={"workspace_id": own}).status_code == 400
        assert "Max&#39;s Outlook" not in max_.get("/integrations").text
        switched = max_.post("/workspace/switch", data={"csrf_token": token, "workspace_id": own})
        assert switched.status_code == 303 and switched.headers["location"] == "/integrations"
        assert "Max&#39;s Outlook" in max_.get("/integrations").text
        # Sign-in opens the most recently used workspace.
        max_.cookies.clear()
        sign_in(max_, "max@acme.test")
        assert "Max&#39;s Outlook" in max_.get("/integrations").text
        max_.post(
            "/workspace/switch",
            data={"csrf_token": csrf(max_.get("/integrations").text), "workspace_id": acme},
        )
        max_.cookies.clear()
        sign_in(max_, "max@acme.test")
        assert "Max&#39;s Outlook" not in max_.get("/integrations").text
        assert "Olga Owner" in max_.get("/workspace/members").text


# -- names and addresses ----------------------------------------------------------------------


def test_bidi_controls_are_stripped_from_names(web: httpx.Client, postroom: Postroom) -> None:
    sign_up(
        web,
        name="Olga\u202e \u2066Owner\u2069\u200f",
        workspace="\u202dAcme\u061c Corp\u200e",
    )
    with postroom.database.session() as db:
        assert db.scalar(select(User.name)) == "Olga Owner"
        assert db.scalar(select(Workspace.name)) == "Acme Corp"
    assert service.clean_name("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069x") == "x"
    # A name that is nothing but controls is no name.
    page = web.get("/signup")
    empty = web.post(
        "/signup",
        data={
            "csrf_token": csrf(page.text),
            "email": "b@acme.test",
            "name": "\u202e\u202e",
            "password": PASSWORD,
            "workspace": "B",
        },
    )
    assert empty.status_code == 400 and "Enter your name" in empty.text


@pytest.mark.parametrize(
    "address",
    [
        "p\u0430ypal@acme.test",  # Cyrillic а in a Latin local part
        "olga@\u0430cme.test",  # ... in a domain label
        "olga@xn--cme-8cd.test",  # the same, as punycode
        "ol\u03bfa@acme.test",  # Greek omicron
        "olga@acme.t\u0435st",  # Cyrillic е in the top-level domain
        "olga\u200b@acme.test",  # a zero-width space
        "\uff4flga@acme.test",  # a full-width letter
    ],
)
def test_look_alike_addresses_are_refused_at_sign_up_and_invitation(
    web: httpx.Client, postroom: Postroom, address: str
) -> None:
    refused = request_sign_up(web, email=address)
    assert refused.status_code == 400
    assert "alphabets" in refused.text or "valid email" in refused.text or "plain" in refused.text
    sign_up(web)
    invited = invite(web, address)
    assert invited.status_code == 400
    with postroom.database.session() as db:
        assert db.scalar(select(func.count()).select_from(Invitation)) == 0
        assert db.scalar(select(func.count()).select_from(PendingSignup)) == 1  # the owner's
    assert [m.recipients for m in INBOX.mails] == [("owner@acme.test",)]


def test_single_script_international_addresses_are_accepted() -> None:
    assert service.check_email("иван@пример.рф") == "иван@пример.рф"
    assert service.check_email("Olga@Acme.test") == "olga@acme.test"
    assert service.check_email("やまだ太郎@例え.jp") == "やまだ太郎@例え.jp"
    assert service.check_email("o.brien-2@acme-1.test") == "o.brien-2@acme-1.test"
    with pytest.raises(service.AccountError, match="alphabets"):
        service.check_email("ivan\u0430@acme.test")


# -- the mail seam ------------------------------------------------------------------------------


def test_the_console_backend_prints_the_whole_email_when_no_smtp_is_configured(
    tmp_path: Any,
) -> None:
    settings = Settings(data_dir=tmp_path)
    backend = mail.mailer(settings)
    assert isinstance(backend, mail.ConsoleMailer)
    out = io.StringIO()
    backend.stream = out
    subject, text = __import__("postroom.accounts.emails", fromlist=["x"]).signup_link(
        link="http://localhost:8000/signup/confirm?token=abc", hours=24
    )
    backend.send(to="olga@acme.test", subject=subject, text=text)
    printed = out.getvalue()
    assert "printed here instead of sent" in printed
    assert (
        "Open this link to finish signing up: http://localhost:8000/signup/confirm?token=abc"
        in (printed)
    )
    assert mail.console_warning(settings) is not None
    smtp = Settings(data_dir=tmp_path, smtp_url="smtp://mail.example.test:587")
    assert mail.console_warning(smtp) is None and isinstance(mail.mailer(smtp), mail.SmtpMailer)


def test_the_smtp_backend_sends_over_smtp_with_a_timeout_and_clean_headers(
    smtp_server: SmtpServer, tmp_path: Any
) -> None:
    settings = Settings(
        data_dir=tmp_path,
        smtp_url=smtp_server.url,
        mail_from="Postroom <noreply@postroom.test>",
        smtp_timeout_seconds=3,
    )
    backend = mail.mailer(settings)
    assert isinstance(backend, mail.SmtpMailer) and backend.config.timeout == 3
    backend.send(to="x@acme.test", subject="Hello\r\nBcc: evil@evil.test", text="Body\n")
    got = INBOX.last_to("x@acme.test")
    assert got.recipients == ("x@acme.test",)
    assert got.subject == "Hello Bcc: evil@evil.test" and got.message["Bcc"] is None
    assert got.text.strip() == "Body"
    config = mail.parse_smtp_url("smtps://u%40x:p%3Ass@mail.example.test", password=None)
    assert (config.host, config.port, config.implicit_tls) == ("mail.example.test", 465, True)
    assert (config.username, config.password) == ("u@x", "p:ss")
    assert mail.parse_smtp_url("smtp://h", password="file-secret").password == "file-secret"
    assert mail.parse_smtp_url("smtp://h").port == 587


def test_smtp_settings_are_checked_and_the_password_may_come_from_a_file(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text("s3cret\n")
    monkeypatch.setenv("POSTROOM_SMTP_PASSWORD_FILE", str(secret))
    settings = Settings(data_dir=tmp_path, smtp_url="smtp://user@mail.example.test:2525")
    assert settings.smtp_password is not None
    backend = mail.mailer(settings)
    assert isinstance(backend, mail.SmtpMailer)
    assert (backend.config.username, backend.config.password) == ("user", "s3cret")
    for bad in ("http://mail.example.test", "smtp://", "smtp://u:hunter2@h:notaport"):
        with pytest.raises(ValueError, match="smtp://") as error:
            Settings(data_dir=tmp_path, smtp_url=bad)
        assert "hunter2" not in str(error.value)  # a configuration error echoes no password


def test_credentials_are_never_sent_without_tls_beyond_this_machine(
    smtp_server: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test server offers no STARTTLS; were it another machine, the password would cross
    the network in the clear: Postroom refuses before it logs in."""
    monkeypatch.setattr(mail, "_is_loopback", lambda host: False)
    backend = mail.SmtpMailer(
        mail.parse_smtp_url(f"smtp://user:pw@127.0.0.1:{smtp_server.port}", timeout=3),
        sender="p@x.test",
    )
    with pytest.raises(mail.MailError, match="refusing to send the password"):
        backend.send(to="tls@acme.test", subject="s", text="t")
    assert INBOX.to("tls@acme.test") == []
    monkeypatch.undo()
    assert mail._is_loopback("127.0.0.1") and mail._is_loopback("localhost")
    assert mail._is_loopback("::1") and not mail._is_loopback("mail.example.test")


def test_an_operator_creates_an_account_from_the_command_line(
    clean_db: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from typer.testing import CliRunner

    from postroom.cli import app

    monkeypatch.setenv("POSTROOM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", clean_db.url)
    args = ["create-user", "--email", "Op@Acme.test", "--name", "Op\u202e", "--workspace", "Ops"]
    done = CliRunner().invoke(app, args, input=f"{PASSWORD}\n{PASSWORD}\n")
    assert done.exit_code == 0, done.output
    assert "Created op@acme.test" in done.output and PASSWORD not in done.output
    again = CliRunner().invoke(app, args, input=f"{PASSWORD}\n{PASSWORD}\n")
    assert again.exit_code == 1 and "already exists" in again.output
    weak = CliRunner().invoke(
        app, [*args[:2], "x@acme.test", *args[3:]], input="aaaaaaaaaa\naaaaaaaaaa\n"
    )
    assert weak.exit_code == 1 and "Not created" in weak.output and "password" in weak.output
    with clean_db.session() as db:
        assert db.execute(select(User.email, User.name)).all() == [("op@acme.test", "Op")]
