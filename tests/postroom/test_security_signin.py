"""Issue 12, sign-in: failures throttled per account and per client address (counted in
PostgreSQL, the password not even checked while locked, the same answer whether or not the
account exists), and the password policy after NIST SP 800-63B."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from postroom.accounts import service, throttle
from postroom.accounts.passwords import (
    WeakPassword,
    check_password_policy,
    common_passwords,
)
from postroom.accounts.throttle import SignInAttempt
from tests.postroom.conftest import Postroom
from tests.postroom.test_security_sessions import PASSWORD, add_person, new_browser, sign_in
from tests.postroom.webtools import csrf, post_form


@contextlib.contextmanager
def app_settings(postroom: Postroom, **changes: Any) -> Iterator[None]:
    app = postroom.app
    original = app.state.settings
    app.state.settings = original.model_copy(update=changes)
    try:
        yield
    finally:
        app.state.settings = original


@pytest.fixture
def password_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every password the server checks against a hash (the app runs in this process)."""
    checked: list[str] = []
    real = service.verify_password

    def counting(password_hash: str, password: str) -> bool:
        checked.append(password)
        return real(password_hash, password)

    monkeypatch.setattr(service, "verify_password", counting)
    return checked


def alert(page: httpx.Response) -> str:
    match = re.search(r'role="alert">([^<]*)<', page.text)
    assert match, page.text
    return match.group(1)


def attempts(postroom: Postroom) -> int:
    with postroom.database.session() as db:
        return int(db.scalar(select(func.count()).select_from(SignInAttempt)) or 0)


# --- throttling ----------------------------------------------------------------------------------


def test_sixty_wrong_passwords_then_the_right_one_is_refused(
    postroom: Postroom, password_checks: list[str]
) -> None:
    add_person(postroom, "owner@acme.test")
    with new_browser(postroom) as attacker:
        answers = [sign_in(attacker, "owner@acme.test", f"guess number {i}") for i in range(60)]
        assert [a.status_code for a in answers[:5]] == [400] * 5
        assert {a.status_code for a in answers[5:]} == {429}
        assert alert(answers[5]) == "Too many attempts: try again in 15 minutes."
        assert 14 * 60 < int(answers[5].headers["retry-after"]) <= 15 * 60 + 1

        right = sign_in(attacker, "owner@acme.test", PASSWORD)
        assert right.status_code == 429
        assert attacker.get("/integrations").status_code == 303  # not signed in
    assert len(password_checks) == 5  # the 56 others were refused unchecked
    assert attempts(postroom) == 10  # 5 per account key and 5 per address key; no emails
    with postroom.database.session() as db:
        assert all(len(key) == 64 for key in db.scalars(select(SignInAttempt.key)))


def test_an_unknown_account_gets_the_same_answer(postroom: Postroom) -> None:
    add_person(postroom, "owner@acme.test")
    with new_browser(postroom) as first, new_browser(postroom) as second:
        real = [sign_in(first, "owner@acme.test", "wrong wrong wrong") for _ in range(6)]
        ghost = [sign_in(second, "ghost@acme.test", "wrong wrong wrong") for _ in range(6)]
    assert [r.status_code for r in real] == [r.status_code for r in ghost] == [400] * 5 + [429]
    assert alert(real[-1]) == alert(ghost[-1])
    assert alert(real[0]) == alert(ghost[0])


def test_the_lock_ends_with_the_window_and_a_success_starts_afresh(postroom: Postroom) -> None:
    add_person(postroom, "owner@acme.test")
    with new_browser(postroom) as person:
        for _ in range(5):
            sign_in(person, "OWNER@acme.test ", "mistyped password")  # one account, however typed
        assert sign_in(person, "owner@acme.test", PASSWORD).status_code == 429
        with postroom.database.session() as db:  # 16 minutes pass
            db.execute(update(SignInAttempt).values(at=SignInAttempt.at - timedelta(minutes=16)))
        assert sign_in(person, "owner@acme.test", PASSWORD).status_code == 303
        post_form(person, "/integrations", "/signout")
        # the success cleared the account's failures: four more mistakes do not lock it
        answers = [sign_in(person, "owner@acme.test", "mistyped again!") for _ in range(4)]
        assert [a.status_code for a in answers] == [400] * 4
        assert sign_in(person, "owner@acme.test", PASSWORD).status_code == 303


def test_the_lock_grows_with_repeated_failures(postroom: Postroom) -> None:
    add_person(postroom, "owner@acme.test")
    key = throttle.account_key("owner@acme.test")
    now = datetime.now(UTC)
    with postroom.database.session() as db:  # 10 failures 16-25 minutes ago: none in the window
        db.add_all(SignInAttempt(key=key, at=now - timedelta(minutes=16 + i)) for i in range(10))
    with new_browser(postroom) as person:
        refused = sign_in(person, "owner@acme.test", PASSWORD)
    assert refused.status_code == 429  # but 10 in the hour: the next tier
    assert "try again in 35 minutes" in alert(refused) or "try again in 36 minutes" in alert(
        refused
    )


def test_tiers_and_waits_are_pure_arithmetic() -> None:
    minutes = timedelta(minutes=1)
    levels = throttle.tiers(5, 15 * minutes, timedelta(hours=24))
    assert levels == [
        (5, 15 * minutes),
        (10, timedelta(hours=1)),
        (15, timedelta(hours=4)),
        (20, timedelta(hours=16)),
        (25, timedelta(hours=24)),
    ]
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert throttle.wait_seconds([now] * 4, now=now, levels=levels) == 0
    assert throttle.wait_seconds([now] * 5, now=now, levels=levels) == 15 * 60
    old = [now - timedelta(hours=3)] * 14
    assert throttle.wait_seconds(old, now=now, levels=levels) == 0
    assert throttle.wait_seconds([*old, now], now=now, levels=levels) == 3600
    assert throttle.describe_wait(1) == "1 minute"
    assert throttle.describe_wait(3 * 3600) == "3 hours"


def test_failures_from_one_address_are_throttled_across_accounts(
    postroom: Postroom, password_checks: list[str]
) -> None:
    _, ws = add_person(postroom, "owner@acme.test")
    with app_settings(postroom, signin_address_failures=8), new_browser(postroom) as sprayer:
        for i in range(8):  # one guess each at eight accounts: no account reaches its limit
            assert sign_in(sprayer, f"person{i}@acme.test", "Summer2026!!").status_code == 400
        refused = sign_in(sprayer, "owner@acme.test", PASSWORD)
        assert refused.status_code == 429
        assert alert(refused) == "Too many attempts: try again in 15 minutes."
    assert PASSWORD not in password_checks


def test_simultaneous_guesses_cannot_slip_past_the_limit(
    postroom: Postroom, password_checks: list[str]
) -> None:
    add_person(postroom, "owner@acme.test")
    clients = [new_browser(postroom) for _ in range(16)]
    try:
        forms = [csrf(c.get("/signin").text) for c in clients]

        def guess(i: int) -> int:
            data = {"csrf_token": forms[i], "email": "owner@acme.test", "password": f"guess {i}"}
            return clients[i].post("/signin", data=data).status_code

        with ThreadPoolExecutor(max_workers=16) as pool:
            answers = list(pool.map(guess, range(16)))
    finally:
        for client in clients:
            client.close()
    assert answers.count(400) <= 5 and answers.count(429) >= 11
    assert len(password_checks) <= 5


def test_the_password_change_form_is_throttled_too(postroom: Postroom) -> None:
    add_person(postroom, "owner@acme.test")
    with new_browser(postroom) as thief:  # holds a session, wants the password
        sign_in(thief, "owner@acme.test")
        answers = [
            post_form(
                thief,
                "/account",
                "/account/password",
                {"current_password": f"guess {i}", "new_password": "a brand new passphrase"},
            )
            for i in range(7)
        ]
    assert [a.status_code for a in answers] == [400] * 5 + [429] * 2
    assert "Too many attempts" in answers[-1].text


def test_control_characters_get_a_clear_answer_not_an_error(postroom: Postroom) -> None:
    add_person(postroom, "owner@acme.test")
    with new_browser(postroom) as browser:
        assert sign_in(browser, "own\x00er@acme.test", "pass\x00word!!").status_code == 400
        assert sign_in(browser, "owner@acme.test", "pass\x00word!!").status_code == 400
        assert sign_in(browser, "owner@acme.test").status_code == 303
        # a NUL anywhere is refused before routing (400); an implausible id is simply not found
        assert post_form(browser, "/account", "/account/sessions/%00/end").status_code == 400
        path = "/account/sessions/" + "x" * 300 + "/end"
        assert post_form(browser, "/account", path).status_code == 404
        refused = post_form(
            browser,
            "/account",
            "/account/password",
            {"current_password": PASSWORD, "new_password": "pass\x00word long enough"},
        )
        # the app-wide NUL guard answers first, naming the field; nothing is changed
        assert refused.status_code == 400 and "new_password" in refused.text


# --- password policy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "reason"),
    [
        ("aaaaaaaaaa", "commonly used"),
        ("password12", "commonly used"),
        ("PassWord12", "commonly used"),
        ("iloveyou12", "commonly used"),
        ("zzzzzzzzzzzzzzz", "repeats or counts"),
        ("abcabcabcabc", "repeats or counts"),
        ("2345678901234", "repeats or counts"),
        ("0123456789", "commonly used"),
        ("abcdefghijklm", "repeats or counts"),
        ("98765432109", "repeats or counts"),
        ("olga.owner-rocks", "email address"),
        ("my Postroom secret", "Postroom"),
        ("short", "at least 10"),
        ("x" * 990 + "correct horse", "at most 1000"),
        ("correct\x00horse battery", "no control characters"),
    ],
)
def test_the_policy_refuses_guessable_passwords(password: str, reason: str) -> None:
    with pytest.raises(WeakPassword, match=reason):
        check_password_policy(password, email="olga.owner@acme.test")
    with pytest.raises(service.AccountError, match=reason):
        service.validate_password(password=password, email="olga.owner@acme.test")


@pytest.mark.parametrize(
    "password",
    ["correct horse battery", "Tr0ub4dor&3-long", "zeven kleine zeehondjes", "ünïcödé pässwörd"],
)
def test_the_policy_accepts_long_uncommon_passwords_without_composition_rules(
    password: str,
) -> None:
    check_password_policy(password, email="olga.owner@acme.test")


def test_the_common_password_list_ships_with_the_project() -> None:
    common = common_passwords()
    assert len(common) > 19_000
    assert {"password", "123456", "qwerty", "password12", "aaaaaaaaaa"} <= common


@pytest.mark.parametrize("password", ["aaaaaaaaaa", "password12"])
def test_sign_up_refuses_a_weak_password_with_a_clear_message(
    web: httpx.Client, postroom: Postroom, password: str
) -> None:
    page = web.get("/signup")
    form = {"email": "olga@acme.test", "name": "Olga", "password": password, "workspace": "Acme"}
    response = web.post("/signup", data={"csrf_token": csrf(page.text), **form})
    assert response.status_code == 400
    assert "commonly used passwords" in response.text
