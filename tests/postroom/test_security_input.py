"""Bad input is a clear 4xx, never a 500, and nothing is saved: a NUL character in any field
(PostgreSQL cannot store it in text), rule groups nested too deeply, and SQL parameters never
reach a log line or an error's text.
"""

from __future__ import annotations

import io
import json
import logging
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from m365sim.state import EmulatorState
from postroom.accounts.models import User
from postroom.categories import form as editor
from postroom.db import Database
from postroom.integrations.models import Category
from postroom.processing.rules import MAX_DEPTH, RuleError, RuleGroup
from tests.postroom.conftest import Postroom
from tests.postroom.test_connect import connect_personal
from tests.postroom.test_editor import category_id, finished, invoice_form, stored, submit
from tests.postroom.webtools import csrf, post_form, request_sign_up, sign_up

NUL = "\x00"


def _refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 400, (field, response.status_code, response.text[:300])
    assert "Some fields could not be read" in response.text, field
    assert f"try again: {field}." in response.text, field
    assert "Nothing was changed" in response.text


def _no_500_logged(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if "unexpected error" in r.getMessage()]


def test_a_nul_in_any_editor_field_is_refused_by_name_and_nothing_saved(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, caplog: pytest.LogCaptureFixture
) -> None:
    _, base = finished(web, postroom, sim)
    cid = category_id(postroom, "Invoices")
    before = stored(postroom)
    fields = [
        "name",
        "folder",
        "forward_to",
        "forward_comment",
        "description",
        "examples",
        "rule_value",
        "mode",
        "category_id",
        "action",
    ]
    for field in fields:
        data = invoice_form(cid)
        value = data.get(field) or "x"
        data[field] = (value[0] if isinstance(value, list) else value) + NUL + "y"
        _refused(submit(web, base, data), field)
        assert stored(postroom) == before, field
    # a NUL escaped inside a nested group's JSON arrives as a NUL too
    group = {"mode": "any", "items": [{"field": "Subject", "operator": "CONTAINS", "value": NUL}]}
    response = submit(web, base, {**invoice_form(cid), "rule_group": json.dumps(group)})
    assert response.status_code == 400 and "Group 1 could not be read" in response.text
    # in a query and in the path
    _refused(web.get(f"{base}/activity", params={"category": "a\x00b"}), "category")
    _refused(web.get(f"{base}/activity", params={"page": NUL}), "page")
    _refused(web.get("/integrations/%00"), "integration_id")
    assert stored(postroom) == before
    with postroom.database.session() as db:
        assert db.scalar(select(func.count()).select_from(Category)) == 1
    _no_500_logged(caplog)


def test_a_nul_in_wizard_fields_is_refused(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, caplog: pytest.LogCaptureFixture
) -> None:
    org = postroom.org(sim)
    sign_up(web)
    base = connect_personal(web, postroom, org).removesuffix("/setup")
    assert post_form(web, f"{base}/setup/1", f"{base}/setup/1").status_code == 303
    for field, value in (("folders", "inbox"), ("shared", ""), ("own", "on")):
        data = {"own": "on", "folders": "inbox", "shared": "", field: value + NUL}
        _refused(post_form(web, f"{base}/setup/2", f"{base}/setup/2", data), field)
    step2 = {"own": "on", "folders": "inbox", "shared": ""}
    assert post_form(web, f"{base}/setup/2", f"{base}/setup/2", step2).status_code == 303
    row = {"name": "Invoices", "color": "preset7", "folder": "Finance", "forward_to": ""}
    for field in row:
        data = {**row, field: row[field] + NUL}
        _refused(post_form(web, f"{base}/setup/3", f"{base}/setup/3", data), field)
    assert post_form(web, f"{base}/setup/3", f"{base}/setup/3", row).status_code == 303
    for field, value in (("mode", "since"), ("since", "2024-01-01")):
        data = {"mode": "since", "since": "2024-01-01", field: value + NUL}
        _refused(post_form(web, f"{base}/setup/4", f"{base}/setup/4", data), field)
    with postroom.database.session() as db:
        assert db.scalar(select(func.count()).select_from(Category)) == 0
    _no_500_logged(caplog)


def test_a_nul_in_sign_up_and_sign_in_is_refused_and_no_account_made(
    web: httpx.Client, postroom: Postroom, caplog: pytest.LogCaptureFixture
) -> None:
    good = {
        "email": "nul@acme.test",
        "name": "Nora",
        "password": "a long enough passphrase",
        "workspace": "Acme",
    }
    for field in good:
        changed: dict[str, Any] = {**good, field: good[field] + NUL}
        _refused(request_sign_up(web, **changed), field)
    page = web.get("/signin")
    for field in ("email", "password", "next"):
        data = {"email": "nul@acme.test", "password": "x", "next": "/integrations"}
        data[field] += NUL
        _refused(web.post("/signin", data={"csrf_token": csrf(page.text), **data}), field)
    _refused(web.get("/signin", params={"next": "/x\x00"}), "next")
    with postroom.database.session() as db:
        assert db.scalar(select(func.count()).select_from(User)) == 0
    _no_500_logged(caplog)


def test_parse_category_names_the_field_with_a_control_character() -> None:
    for field in ("description", "examples"):
        form = editor.CategoryForm(name="Invoices", **{field: "bad\x00text"})
        parsed, problems = editor.parse_category(form, others=[], forwarding_allowed=True)
        assert parsed is None
        assert any(field in p.lower() for p in problems), (field, problems)
    ok = editor.CategoryForm(name="Invoices", description="Bills", examples="one\n\ntwo\tthree")
    assert editor.parse_category(ok, others=[], forwarding_allowed=True)[1] == []


# ---------------------------------------------------------------------- nested rule groups
def _nested(depth: int) -> dict[str, Any]:
    group: dict[str, Any] = {
        "mode": "any",
        "items": [{"field": "Subject", "operator": "CONTAINS", "value": "x"}],
    }
    for _ in range(depth - 1):
        group = {"mode": "all", "items": [group]}
    return group


def test_deeply_nested_rule_groups_are_a_clear_400(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, caplog: pytest.LogCaptureFixture
) -> None:
    _, base = finished(web, postroom, sim)
    cid = category_id(postroom, "Invoices")
    before = stored(postroom)
    for raw in (
        "[" * 100_000,
        '{"mode": "any", "items": [' * 10_000,
        json.dumps(_nested(MAX_DEPTH + 1)),
        '{"mode": "all", "items": [' * 900 + json.dumps(_nested(1)) + "]}" * 900,
    ):
        response = submit(web, base, {**invoice_form(cid), "rule_group": raw})
        assert response.status_code == 400, response.text[:300]
        assert "Group 1 could not be read" in response.text, raw[:30]
        assert stored(postroom) == before
    _no_500_logged(caplog)


def test_rule_group_parsing_is_bounded_for_any_input() -> None:
    for data in (_nested(MAX_DEPTH + 1), _nested(5000)):
        with pytest.raises(RuleError, match="nested more than"):
            RuleGroup.from_json(data)
    with pytest.raises(RuleError):
        RuleGroup.from_text("[" * 100_000)
    with pytest.raises(RuleError):
        RuleGroup.from_text("x" * 1_000_000)
    assert RuleGroup.from_text(json.dumps(_nested(MAX_DEPTH))).depth == MAX_DEPTH


# ---------------------------------------------------------------------- SQL parameters
def test_database_errors_never_carry_their_parameters(database: Database) -> None:
    with pytest.raises(Exception) as raised, database.session() as db:
        db.execute(
            text("SELECT 1 / (length(:value) - length(:value))"), {"value": "secret-subject-4711"}
        )
    assert "division by zero" in str(raised.value)
    assert "secret-subject-4711" not in str(raised.value)


def test_an_unexpected_error_logs_no_exception_text_and_keeps_the_headers(
    web: httpx.Client,
    postroom: Postroom,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from postroom.web import help_pages

    sender = "@".join(("alice", "contoso.test"))  # (the traceback shows source lines)

    def boom(*args: object, **kwargs: object) -> None:
        try:
            raise KeyError(f"cause: {sender}")
        except KeyError as cause:
            raise ValueError(f"Invoice {4700 + 11} from {sender}") from cause

    monkeypatch.setattr(help_pages, "render", boom)
    caplog.set_level(logging.INFO)
    # uvicorn's own loggers may not propagate (its default logging config): listen on them
    server_log = io.StringIO()
    handler = logging.StreamHandler(server_log)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    logging.getLogger("uvicorn.error").addHandler(handler)
    try:
        response = web.get("/help")
        # the server logs after the answer has left
        deadline = time.monotonic() + 10
        while "Exception in ASGI" not in server_log.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        logging.getLogger("uvicorn.error").removeHandler(handler)
    assert response.status_code == 500
    assert "Something went wrong" in response.text and "4711" not in response.text
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    logged = server_log.getvalue() + caplog.text
    assert "Exception in ASGI application" in logged  # uvicorn logs it, with a traceback
    assert "alice@contoso.test" not in logged and "4711" not in logged
    assert "builtins.ValueError (message withheld" in logged  # the type and where stay
    assert "builtins.KeyError (message withheld" in logged
    assert "in boom" in logged
    assert "unexpected error" in caplog.text and ": ValueError" in caplog.text
