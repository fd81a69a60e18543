"""Change keys and ETags on message updates: ``If-Match`` and ``changeKey`` (issue 16, item 7).

Outlook refuses an update naming a stale change key with ``ErrorIrresolvableConflict``; the
HTTP status is ``config.stale_change_key_status`` (412 by default).
"""

from __future__ import annotations

import httpx
import pytest

from tests.graph.mailtools import auth, error_of
from tests.helpers import Org


def _patch(
    http: httpx.Client, org: Org, message_id: str, body: object, **headers: str
) -> httpx.Response:
    return http.patch(
        f"/v1.0/me/messages/{message_id}", json=body, headers=auth(org.token(org.alice), **headers)
    )


def test_etag_is_the_change_key_and_changes_on_every_update(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    token = org.token(org.alice)
    seen = {msg.change_key}
    current = http.get(f"/v1.0/me/messages/{msg.rest_id}", headers=auth(token))
    assert current.json()["@odata.etag"] == f'W/"{msg.change_key}"' == current.headers["ETag"]
    for body in ({"isRead": True}, {"categories": ["A"]}, {"isRead": True}):
        response = _patch(http, org, msg.rest_id, body)
        assert response.status_code == 200
        key = response.json()["changeKey"]
        assert key not in seen and response.headers["ETag"] == f'W/"{key}"'
        seen.add(key)
    moved = http.post(
        f"/v1.0/me/messages/{msg.rest_id}/move",
        json={"destinationId": "archive"},
        headers=auth(token),
    ).json()
    assert moved["changeKey"] not in seen


@pytest.mark.parametrize(
    "if_match",
    ["{etag}", '"{key}"', "{key}", "*", 'W/"stale", {etag}', 'w/"{key}"'],
)
def test_if_match_with_the_current_change_key(http: httpx.Client, org: Org, if_match: str) -> None:
    msg = org.deliver(org.alice)
    header = if_match.format(etag=f'W/"{msg.change_key}"', key=msg.change_key)
    response = _patch(http, org, msg.rest_id, {"isRead": True}, **{"If-Match": header})
    assert response.status_code == 200, response.text
    assert msg.is_read is True


def test_stale_if_match_is_refused(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    stale = f'W/"{msg.change_key}"'
    assert _patch(http, org, msg.rest_id, {"categories": ["Mine"]}).status_code == 200
    response = _patch(http, org, msg.rest_id, {"categories": ["Theirs"]}, **{"If-Match": stale})
    assert response.status_code == 412
    error = error_of(response)
    assert error["code"] == "ErrorIrresolvableConflict"
    assert "does not match the current change key" in error["message"]
    assert msg.categories == ["Mine"]


def test_stale_status_is_a_setting(http: httpx.Client, org: Org) -> None:
    org.state.config.stale_change_key_status = 409
    msg = org.deliver(org.alice)
    response = _patch(http, org, msg.rest_id, {"isRead": True}, **{"If-Match": 'W/"old"'})
    assert response.status_code == 409
    assert error_of(response)["code"] == "ErrorIrresolvableConflict"
    assert msg.is_read is False


def test_change_key_in_the_body(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    ok = _patch(http, org, msg.rest_id, {"changeKey": msg.change_key, "isRead": True})
    assert ok.status_code == 200, ok.text
    stale = _patch(http, org, msg.rest_id, {"changeKey": "CQAAAB0old", "isRead": False})
    assert stale.status_code == 412
    assert msg.is_read is True
    bad_type = _patch(http, org, msg.rest_id, {"changeKey": 5})
    assert bad_type.status_code == 400
    assert error_of(bad_type)["code"] == "RequestBodyRead"


def test_change_key_in_the_body_as_read_only_is_a_setting(http: httpx.Client, org: Org) -> None:
    org.state.config.patch_change_key_in_body = False
    msg = org.deliver(org.alice)
    response = _patch(http, org, msg.rest_id, {"changeKey": msg.change_key})
    assert response.status_code == 400
    assert error_of(response)["code"] == "ErrorInvalidPropertySet"


def test_if_match_in_a_batch_item(http: httpx.Client, org: Org) -> None:
    msg = org.deliver(org.alice)
    response = http.post(
        "/v1.0/$batch",
        json={
            "requests": [
                {
                    "id": "1",
                    "method": "PATCH",
                    "url": f"/me/messages/{msg.rest_id}",
                    "headers": {"Content-Type": "application/json", "If-Match": 'W/"stale"'},
                    "body": {"isRead": True},
                }
            ]
        },
        headers=auth(org.token(org.alice)),
    )
    item = response.json()["responses"][0]
    assert item["status"] == 412
    assert item["body"]["error"]["code"] == "ErrorIrresolvableConflict"
