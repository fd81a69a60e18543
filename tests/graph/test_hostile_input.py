"""Hostile and malformed input answers Graph's 400s, never a 500, and never breaks a later read
(issue 16, items 2-4)."""

from __future__ import annotations

import httpx
import pytest

from tests.graph.mailtools import auth, error_of
from tests.helpers import Org

LONE = '"x\\udc00y"'  # a lone low surrogate, as a JSON escape (the body itself is ASCII)


def _lone(template: str) -> str:
    """``template`` with ``@`` replaced by the JSON string holding a lone surrogate."""
    return template.replace("@", LONE)


def _raw(http: httpx.Client, method: str, url: str, token: str, body: str) -> httpx.Response:
    return http.request(
        method,
        url,
        content=body.encode(),
        headers=auth(token, **{"Content-Type": "application/json"}),
    )


def _mailbox_reads(http: httpx.Client, org: Org) -> None:
    """Every read of the mailbox still works: Graph (delegated and app-only), control, viewer."""
    for url, token in (
        ("/v1.0/me/mailFolders", org.token(org.alice)),
        (f"/v1.0/users/{org.alice.id}/mailFolders", org.app_token()),
        ("/v1.0/me/messages", org.token(org.alice)),
        ("/v1.0/me/outlook/masterCategories", org.token(org.alice)),
    ):
        response = http.get(url, headers=auth(token))
        assert response.status_code == 200, (url, response.text)
    assert http.get(f"/_emulator/mailboxes/{org.alice.id}").status_code == 200
    assert http.get(f"/viewer/mailboxes/{org.alice.id}").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/mailFolders", _lone('{"displayName": @}')),
        ("POST", "/mailFolders/inbox/childFolders", _lone('{"displayName": @}')),
        ("POST", "/outlook/masterCategories", _lone('{"displayName": @, "color": "preset1"}')),
        ("POST", "/messages", _lone('{"subject": @}')),
        ("POST", "/messages", _lone("{@: 1}")),  # in a key
        (
            "POST",
            "/messages",
            '{"toRecipients": [{"emailAddress": {"address": "a@b.test", "name": "\\ud800"}}]}',
        ),
    ],
)
def test_lone_surrogates_are_refused_before_storing(
    http: httpx.Client, org: Org, method: str, path: str, body: str
) -> None:
    folders_before = len(org.alice.mailbox.folders)
    response = _raw(http, method, f"/v1.0/me{path}", org.token(org.alice), body)
    assert response.status_code == 400, response.text
    assert error_of(response)["code"] == "RequestBodyRead"
    assert "surrogate" in error_of(response)["message"]
    assert len(org.alice.mailbox.folders) == folders_before
    assert not org.alice.mailbox.categories
    assert not org.alice.mailbox.messages
    _mailbox_reads(http, org)


def test_lone_surrogate_in_patch_categories_and_batch(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice, categories=["Keep"])
    token = org.token(org.alice)
    patched = _raw(
        http, "PATCH", f"/v1.0/me/messages/{msg.rest_id}", token, _lone('{"categories": [@]}')
    )
    assert patched.status_code == 400
    assert msg.categories == ["Keep"]
    batch = _raw(
        http,
        "POST",
        "/v1.0/$batch",
        token,
        _lone(
            '{"requests": [{"id": "1", "method": "POST", "url": "/me/mailFolders", '
            '"headers": {"Content-Type": "application/json"}, "body": {"displayName": @}}]}'
        ),
    )
    assert batch.status_code == 400
    _mailbox_reads(http, org)


def test_surrogate_pairs_are_fine(http: httpx.Client, org: Org) -> None:
    token = org.token(org.alice)
    created = _raw(http, "POST", "/v1.0/me/mailFolders", token, '{"displayName": "\\ud83d\\udce6"}')
    assert created.status_code == 201, created.text
    assert created.json()["displayName"] == "\U0001f4e6"
    _mailbox_reads(http, org)


def test_control_api_refuses_lone_surrogates(http: httpx.Client, org: Org) -> None:
    response = http.post(
        f"/_emulator/mailboxes/{org.alice.id}/folders",
        content=b'{"path": "Inbox/x\\udc00"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "surrogate" in response.json()["error"]
    _mailbox_reads(http, org)


@pytest.mark.parametrize("depth", [101, 5_000, 100_000])
def test_deeply_nested_json_is_a_400(http: httpx.Client, org: Org, depth: int) -> None:
    token = org.token(org.alice)
    body = '{"displayName": "x", "a": ' + "[" * depth + "]" * depth + "}"
    response = _raw(http, "POST", "/v1.0/me/mailFolders", token, body)
    assert response.status_code == 400
    assert error_of(response)["code"] == "RequestBodyRead"
    assert "cannot exceed 100" in error_of(response)["message"]
    batch = _raw(http, "POST", "/v1.0/$batch", token, "[" * depth + "]" * depth)
    assert batch.status_code == 400
    control = http.post(
        "/_emulator/tenants",
        content=("[" * depth + "]" * depth).encode(),
        headers={"Content-Type": "application/json"},
    )
    assert control.status_code == 400


def test_json_nesting_limit_is_a_setting(http: httpx.Client, org: Org) -> None:
    org.state.config.json_max_depth = 2
    token = org.token(org.alice)
    ok = _raw(http, "POST", "/v1.0/me/messages", token, '{"flag": {"flagStatus": "flagged"}}')
    assert ok.status_code == 201
    deep = _raw(
        http,
        "POST",
        "/v1.0/me/messages",
        token,
        '{"flag": {"startDateTime": {"dateTime": "2024-01-01T00:00:00", "timeZone": "UTC"}}}',
    )
    assert deep.status_code == 400
    assert "cannot exceed 2" in error_of(deep)["message"]


def test_filter_with_5000_nested_brackets(http: httpx.Client, org: Org) -> None:
    clause = "(" * 5000 + "isRead eq true" + ")" * 5000
    response = http.get(
        "/v1.0/me/messages", params={"$filter": clause}, headers=auth(org.token(org.alice))
    )
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "BadRequest"
    assert error["message"] == "Invalid filter clause: The recursion limit has been exceeded."
    nots = http.get(
        "/v1.0/me/messages",
        params={"$filter": "not " * 3000 + "isRead"},
        headers=auth(org.token(org.alice)),
    )
    assert nots.status_code == 400


def test_filter_nesting_within_the_limit_works(http: httpx.Client, org: Org) -> None:
    org.deliver(org.alice, is_read=True)
    clause = "(" * 90 + "isRead eq true" + ")" * 90
    response = http.get(
        "/v1.0/me/messages", params={"$filter": clause}, headers=auth(org.token(org.alice))
    )
    assert response.status_code == 200, response.text
    assert len(response.json()["value"]) == 1


def test_filter_with_1000_ored_terms(http: httpx.Client, org: Org) -> None:
    org.deliver(org.alice, subject="s7")
    token = org.token(org.alice)
    many = " or ".join(f"subject eq 's{i}'" for i in range(1000))
    response = http.get("/v1.0/me/messages", params={"$filter": many}, headers=auth(token))
    assert response.status_code == 400
    assert error_of(response)["code"] == "ErrorInvalidUrlQueryFilter"
    # 400 terms (below filter_max_terms) are fine, and evaluated without recursion
    fewer = " or ".join(f"subject eq 's{i}'" for i in range(400))
    ok = http.get("/v1.0/me/messages", params={"$filter": fewer}, headers=auth(token))
    assert ok.status_code == 200, ok.text
    assert [m["subject"] for m in ok.json()["value"]] == ["s7"]
    folders = http.get("/v1.0/me/mailFolders", params={"$filter": many}, headers=auth(token))
    assert folders.status_code == 400


def test_filter_limits_are_settings(http: httpx.Client, org: Org) -> None:
    org.state.config.filter_max_terms = 2
    org.state.config.filter_max_depth = 1
    token = org.token(org.alice)

    def status(clause: str) -> int:
        return http.get(
            "/v1.0/me/messages", params={"$filter": clause}, headers=auth(token)
        ).status_code

    assert status("isRead eq true or isDraft eq true") == 200
    assert status("isRead eq true or isDraft eq true or isRead eq false") == 400
    assert status("(isRead eq true)") == 200
    assert status("((isRead eq true))") == 400


# ------------------------------------------------------------------ follow-up flag (item 4)


def _flag(http: httpx.Client, org: Org, flag: object) -> httpx.Response:
    msg = org.deliver(org.alice)
    return http.patch(
        f"/v1.0/me/messages/{msg.rest_id}",
        json={"flag": flag},
        headers=auth(org.token(org.alice)),
    )


def _stamp(value: str, zone: str = "UTC") -> dict[str, str]:
    return {"dateTime": value, "timeZone": zone}


@pytest.mark.parametrize(
    ("flag", "code"),
    [
        # documented: "To set the due date, you must also specify the startDateTime;
        # otherwise, you get a 400 Bad Request response."
        (
            {"flagStatus": "flagged", "dueDateTime": _stamp("2024-06-01T10:00:00")},
            "ErrorInvalidRequest",
        ),
        ({"dueDateTime": _stamp("not a date")}, "UnableToDeserializePostBody"),
        (
            {"startDateTime": _stamp("not a date"), "dueDateTime": _stamp("2024-06-01T10:00:00")},
            "UnableToDeserializePostBody",
        ),
        (
            {"flagStatus": "flagged", "startDateTime": _stamp("2024-06-01T10:00:00", "Mars/Base")},
            "TimeZoneNotSupportedException",
        ),
        (
            {"flagStatus": "complete", "completedDateTime": _stamp("yesterday")},
            "UnableToDeserializePostBody",
        ),
    ],
)
def test_flag_validation(http: httpx.Client, org: Org, flag: object, code: str) -> None:
    msg = org.deliver(org.alice)
    response = http.patch(
        f"/v1.0/me/messages/{msg.rest_id}", json={"flag": flag}, headers=auth(org.token(org.alice))
    )
    assert response.status_code == 400, response.text
    assert error_of(response)["code"] == code
    assert msg.flag_status == "notFlagged" and not msg.flag_dates


@pytest.mark.parametrize(
    "zone", ["UTC", "W. Europe Standard Time", "Europe/Amsterdam", "Pacific Standard Time"]
)
def test_flag_with_start_and_due_is_stored(http: httpx.Client, org: Org, zone: str) -> None:
    start = _stamp("2024-06-01T08:00:00.0000000", zone)
    due = _stamp("2024-06-02T08:00:00.0000000", zone)
    response = _flag(
        http, org, {"flagStatus": "flagged", "startDateTime": start, "dueDateTime": due}
    )
    assert response.status_code == 200, response.text
    assert response.json()["flag"] == {
        "flagStatus": "flagged",
        "dueDateTime": due,
        "startDateTime": start,
    }


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"displayName": ""}, "ErrorInvalidRequest"),
        ({"displayName": "x" * 256}, "ErrorInvalidRequest"),
        ({"displayName": "a\x00b"}, "ErrorInvalidRequest"),
        ({"displayName": "a\nb"}, "ErrorInvalidRequest"),
        ({"displayName": 7}, "RequestBodyRead"),
    ],
)
def test_folder_names_exchange_refuses(
    http: httpx.Client, org: Org, body: dict[str, object], code: str
) -> None:
    before = len(org.alice.mailbox.folders)
    response = http.post("/v1.0/me/mailFolders", json=body, headers=auth(org.token(org.alice)))
    assert response.status_code == 400
    assert error_of(response)["code"] == code
    assert len(org.alice.mailbox.folders) == before
    _mailbox_reads(http, org)


@pytest.mark.parametrize(
    "raw",
    [
        # an encoded word whose charset decodes to a lone surrogate
        b"From: a@fabrikam.test\r\nSubject: =?unicode_escape?q?=5Cudc00?=\r\n\r\nbody\r\n",
        b"From: a@fabrikam.test\r\nSubject: =?utf-7?q?+2D3cAA-?=\r\nMessage-ID: "
        b"=?unicode_escape?q?=5Cudc00?=\r\n\r\nbody\r\n",
        # a text part in UTF-7 holding a lone surrogate
        b"From: a@fabrikam.test\r\nSubject: x\r\nContent-Type: text/plain; charset=utf-7\r\n\r\n"
        b"+2D3cAA-\r\n",
        # a charset label with a NUL in it
        b'From: a@fabrikam.test\r\nSubject: x\r\nContent-Type: text/plain; charset="a\x00b"\r\n'
        b"\r\nbody\r\n",
    ],
)
def test_delivered_mime_cannot_store_lone_surrogates(
    http: httpx.Client, org: Org, raw: bytes
) -> None:
    response = http.post(
        f"/_emulator/mailboxes/{org.alice.id}/deliver",
        content=raw,
        headers={"Content-Type": "message/rfc822"},
    )
    assert response.status_code in (201, 400), response.text
    _mailbox_reads(http, org)
    for msg in org.alice.mailbox.messages.values():
        got = http.get(f"/v1.0/me/messages/{msg.rest_id}", headers=auth(org.token(org.alice)))
        assert got.status_code == 200
        mime = http.get(
            f"/v1.0/me/messages/{msg.rest_id}/$value", headers=auth(org.token(org.alice))
        )
        assert mime.status_code == 200
