"""POST/GET/PATCH/DELETE /subscriptions and /reauthorize over HTTPS: shapes, rules, errors."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx

from m365sim.clock import parse_iso
from m365sim.state import EmulatorState
from tests.helpers import Org
from tests.notifications.receiver import Hook
from tests.notifications.support import auth, expiry, inbox_subscription, subscribe

SUBSCRIPTION_PROPERTIES = [
    "id",
    "resource",
    "applicationId",
    "changeType",
    "clientState",
    "notificationUrl",
    "notificationQueryOptions",
    "lifecycleNotificationUrl",
    "expirationDateTime",
    "creatorId",
    "includeResourceData",
    "latestSupportedTlsVersion",
    "encryptionCertificate",
    "encryptionCertificateId",
    "notificationUrlAppId",
    "notificationContentType",
]


def test_create_returns_201_with_every_property(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    target = hook(query="tenant=abc")
    lifecycle = hook()
    resource = f"users/{org.alice.id}/mailFolders('inbox')/messages"
    response = subscribe(
        http,
        org.app_token(),
        resource=resource,
        url=target.url,
        sim=sim,
        change_type="created,updated",
        lifecycleNotificationUrl=lifecycle.url,
        latestSupportedTlsVersion="v1_2",
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["@odata.context"].endswith("/v1.0/$metadata#subscriptions/$entity")
    assert [k for k in body if k != "@odata.context"] == SUBSCRIPTION_PROPERTIES
    assert body["resource"] == resource
    assert body["applicationId"] == org.app.client_id
    assert body["creatorId"] == org.app.client_id  # app-only: the service principal
    assert body["changeType"] == "created,updated"
    assert body["clientState"] == "secret-client-state"
    assert body["notificationUrl"] == target.url
    assert body["lifecycleNotificationUrl"] == lifecycle.url
    assert body["includeResourceData"] is False
    assert body["latestSupportedTlsVersion"] == "v1_2"
    # seven fractional digits, as Graph writes subscription times
    assert len(body["expirationDateTime"].split(".")[1]) == len("0000000Z")
    # both endpoints were validated, with the query string of notificationUrl kept
    assert len(target.validations) == 1 and len(lifecycle.validations) == 1


def test_delegated_creator_is_the_signed_in_user(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    response = subscribe(
        http,
        org.token(org.alice, ["Mail.Read"]),
        resource="me/mailFolders('inbox')/messages",
        url=hook().url,
        sim=sim,
    )
    assert response.status_code == 201, response.text
    assert response.json()["creatorId"] == org.alice.id


def test_expiration_over_the_cap_is_refused(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    sim.config.subscription_max_minutes = 4230
    target = hook()
    response = subscribe(
        http,
        org.app_token(),
        resource=f"users/{org.alice.id}/messages",
        url=target.url,
        sim=sim,
        minutes=4231,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "ExtensionError"
    assert error["message"] == "Subscription expiration can only be 4230 minutes in the future."
    assert target.validations == []  # refused before the handshake


def test_short_expiration_is_raised_to_the_minimum(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    response = subscribe(
        http,
        org.app_token(),
        resource=f"users/{org.alice.id}/messages",
        url=hook().url,
        sim=sim,
        minutes=5,
    )
    assert response.status_code == 201
    expires = parse_iso(response.json()["expirationDateTime"])
    assert expires >= sim.clock.now() + timedelta(minutes=44)


def test_bad_bodies_are_400(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    token = org.app_token()
    resource = f"users/{org.alice.id}/messages"
    url = hook().url
    cases = [
        ({"changeType": "created", "notificationUrl": url, "resource": resource}, "InvalidRequest"),
        (
            {
                "changeType": "created,moved",
                "notificationUrl": url,
                "resource": resource,
                "expirationDateTime": expiry(sim),
            },
            "InvalidRequest",
        ),
        (
            {
                "changeType": "created",
                "notificationUrl": url,
                "resource": resource,
                "expirationDateTime": "tomorrow",
            },
            "BadRequest",
        ),
        (
            {
                "changeType": "created",
                "notificationUrl": url,
                "resource": resource,
                "expirationDateTime": expiry(sim),
                "clientState": "x" * 129,
            },
            "InvalidRequest",
        ),
        (
            {
                "changeType": "created",
                "notificationUrl": url,
                "resource": resource,
                "expirationDateTime": expiry(sim),
                "colour": "blue",
            },
            "BadRequest",
        ),
        (
            {
                "changeType": "created",
                "notificationUrl": url,
                "resource": "users/{id}/events".replace("{id}", org.alice.id),
                "expirationDateTime": expiry(sim),
            },
            "InvalidRequest",
        ),
        (
            {
                "changeType": "created",
                "notificationUrl": url,
                "resource": resource,
                "expirationDateTime": expiry(sim, minutes=-5),
            },
            "InvalidRequest",
        ),
    ]
    for body, code in cases:
        response = http.post("/v1.0/subscriptions", json=body, headers=auth(token))
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["code"] == code, (body, response.text)
    missing = http.post(
        "/v1.0/subscriptions",
        json={"changeType": "created", "notificationUrl": url, "resource": resource},
        headers=auth(token),
    )
    assert missing.json()["error"]["message"] == (
        "expirationDateTime is a required property for subscription creation."
    )


def test_http_notification_url_follows_the_knob(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    target = hook()
    token = org.app_token()
    resource = f"users/{org.alice.id}/messages"
    # loopback http is accepted by default (tests, local Postroom)
    assert subscribe(http, token, resource=resource, url=target.url, sim=sim).status_code == 201
    sim.config.allow_http_notification_url = False
    refused = subscribe(http, token, resource=resource, url=target.url, sim=sim)
    assert refused.status_code == 400
    assert refused.json()["error"] == {
        **refused.json()["error"],
        "code": "InvalidRequest",
        "message": "NotificationUrl scheme='http' is not supported.",
    }
    sim.config.allow_http_notification_url = True
    remote = subscribe(http, token, resource=resource, url="http://example.test/hook", sim=sim)
    assert remote.status_code == 400
    garbage = subscribe(http, token, resource=resource, url="not a url", sim=sim)
    assert garbage.json()["error"]["message"] == "Invalid notification url='not a url'."


def test_list_get_patch_delete(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    token = org.app_token()
    first = inbox_subscription(http, org, hook(), sim)
    second = inbox_subscription(http, org, hook(), sim)
    listing = http.get("/v1.0/subscriptions", headers=auth(token))
    assert listing.status_code == 200
    assert listing.json()["@odata.context"].endswith("$metadata#subscriptions")
    assert [s["id"] for s in listing.json()["value"]] == [first["id"], second["id"]]

    got = http.get(f"/v1.0/subscriptions/{first['id']}", headers=auth(token))
    assert got.status_code == 200 and got.json()["id"] == first["id"]

    new_expiry = expiry(sim, minutes=3000)
    patched = http.patch(
        f"/v1.0/subscriptions/{first['id']}",
        json={"expirationDateTime": new_expiry},
        headers=auth(token),
    )
    assert patched.status_code == 200, patched.text
    assert parse_iso(patched.json()["expirationDateTime"]) == parse_iso(new_expiry)

    moved_to = hook()
    moved = http.patch(
        f"/v1.0/subscriptions/{first['id']}",
        json={"notificationUrl": moved_to.url},
        headers=auth(token),
    )
    assert moved.status_code == 200 and moved.json()["notificationUrl"] == moved_to.url
    assert len(moved_to.validations) == 1

    deleted = http.delete(f"/v1.0/subscriptions/{first['id']}", headers=auth(token))
    assert deleted.status_code == 204
    gone = http.get(f"/v1.0/subscriptions/{first['id']}", headers=auth(token))
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "ResourceNotFound"
    assert gone.json()["error"]["message"] == "The object was not found."
    remaining = http.get("/v1.0/subscriptions", headers=auth(token)).json()["value"]
    assert [s["id"] for s in remaining] == [second["id"]]


def test_patch_rules(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    token = org.app_token()
    sub = inbox_subscription(http, org, hook(), sim)
    url = f"/v1.0/subscriptions/{sub['id']}"
    lifecycle = http.patch(url, json={"lifecycleNotificationUrl": hook().url}, headers=auth(token))
    assert lifecycle.status_code == 400
    assert "lifecycleNotificationUrl" in lifecycle.json()["error"]["message"]
    nothing = http.patch(url, json={}, headers=auth(token))
    assert nothing.status_code == 400
    assert nothing.json()["error"]["message"] == (
        "Subscription must contain either the 'expirationDateTime' or 'notificationUrl' "
        "property and its value."
    )
    too_long = http.patch(
        url, json={"expirationDateTime": expiry(sim, minutes=20_000)}, headers=auth(token)
    )
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "ExtensionError"
    resource = http.patch(url, json={"resource": "me/messages"}, headers=auth(token))
    assert resource.status_code == 400


def test_another_app_cannot_see_or_touch_the_subscription(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    sub = inbox_subscription(http, org, hook(), sim)
    other_app = sim.store.add_app(
        display_name="Other",
        home_tenant_id=org.tenant.id,
        redirect_uris=[],
        application_permissions=["Mail.Read"],
    )
    sim.store.grant_admin_consent(org.tenant, other_app)
    from m365sim.tokens import issue_access_token

    other = issue_access_token(
        sim.signing_key,
        now=sim.clock.time(),
        lifetime=3600,
        tenant_id=org.tenant.id,
        client_id=other_app.client_id,
        user_id=None,
        roles=["Mail.Read"],
    )
    assert http.get("/v1.0/subscriptions", headers=auth(other)).json()["value"] == []
    for method in ("GET", "DELETE"):
        response = http.request(method, f"/v1.0/subscriptions/{sub['id']}", headers=auth(other))
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "ResourceNotFound"
    patch = http.patch(
        f"/v1.0/subscriptions/{sub['id']}",
        json={"expirationDateTime": expiry(sim, 500)},
        headers=auth(other),
    )
    assert patch.status_code == 404
    # still there for its owner
    assert http.get(f"/v1.0/subscriptions/{sub['id']}", headers=auth(org.app_token())).is_success


def test_delegated_subscription_on_a_shared_mailbox_is_refused(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    target = hook()
    # Alice has FullAccess on the shared mailbox and Mail.Read.Shared: reading works...
    token = org.token(org.alice, ["Mail.Read", "Mail.Read.Shared"])
    response = subscribe(
        http,
        token,
        resource=f"users/{org.shared.user_principal_name}/mailFolders('inbox')/messages",
        url=target.url,
        sim=sim,
    )
    # ...but .Shared permissions do not support subscriptions
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "ExtensionError"
    assert error["message"].startswith("Operation: Create; Exception: [Status Code: Forbidden")
    assert target.validations == []


def test_missing_permission_is_403(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    resource = f"users/{org.alice.id}/messages"
    app_denied = subscribe(
        http, org.app_token(roles=["User.Read.All"]), resource=resource, url=hook().url, sim=sim
    )
    assert app_denied.status_code == 403
    assert app_denied.json()["error"]["code"] == "ExtensionError"
    assert "Access is denied" in app_denied.json()["error"]["message"]
    user_denied = subscribe(
        http, org.token(org.alice, ["User.Read"]), resource="me/messages", url=hook().url, sim=sim
    )
    assert user_denied.status_code == 403
    # Mail.ReadWrite also works for subscriptions (graph.md 2.1)
    allowed = subscribe(
        http, org.app_token(roles=["Mail.ReadWrite"]), resource=resource, url=hook().url, sim=sim
    )
    assert allowed.status_code == 201


def test_application_access_policy_applies(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    from m365sim.store import AccessPolicy

    group = sim.store.add_group(org.tenant, display_name="Bots", mail="bots@x.test")
    group.members.add(org.bob.id)
    org.tenant.access_policies["p1"] = AccessPolicy(
        "p1", org.app.client_id, group.id, "RestrictAccess"
    )
    refused = subscribe(
        http, org.app_token(), resource=f"users/{org.alice.id}/messages", url=hook().url, sim=sim
    )
    assert refused.status_code == 403
    assert "Access to OData is disabled." in refused.json()["error"]["message"]
    allowed = subscribe(
        http, org.app_token(), resource=f"users/{org.bob.id}/messages", url=hook().url, sim=sim
    )
    assert allowed.status_code == 201


def test_unknown_mailbox_and_folder(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    token = org.app_token()
    nobody = subscribe(
        http, token, resource="users/nobody@nowhere.test/messages", url=hook().url, sim=sim
    )
    assert nobody.status_code == 404
    no_folder = subscribe(
        http,
        token,
        resource=f"users/{org.alice.id}/mailFolders/AAMkNoSuchFolder=/messages",
        url=hook().url,
        sim=sim,
    )
    assert no_folder.status_code == 404
    assert no_folder.json()["error"]["code"] == "ExtensionError"


def test_subscriptions_per_mailbox_cap_counts_all_apps(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    sim.config.subscriptions_per_mailbox = 2
    target = hook()
    app_token = org.app_token()
    resource = f"users/{org.alice.id}/messages"
    assert subscribe(http, app_token, resource=resource, url=target.url, sim=sim).is_success
    delegated = org.token(org.alice, ["Mail.Read"])
    assert subscribe(http, delegated, resource="me/messages", url=target.url, sim=sim).is_success
    third = subscribe(http, app_token, resource=resource, url=target.url, sim=sim)
    assert third.status_code == 403
    assert third.json()["error"]["code"] == "ExtensionError"
    # Bob's mailbox is not affected
    bob = subscribe(
        http, app_token, resource=f"users/{org.bob.id}/messages", url=target.url, sim=sim
    )
    assert bob.status_code == 201


def test_reauthorize_is_204_and_checks_access(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    sub = inbox_subscription(http, org, hook(), sim)
    ok = http.post(f"/v1.0/subscriptions/{sub['id']}/reauthorize", headers=auth(org.app_token()))
    assert ok.status_code == 204 and ok.content == b""
    denied = http.post(
        f"/v1.0/subscriptions/{sub['id']}/reauthorize",
        headers=auth(org.app_token(roles=["User.Read.All"])),
    )
    assert denied.status_code == 403
    missing = http.post("/v1.0/subscriptions/nope/reauthorize", headers=auth(org.app_token()))
    assert missing.status_code == 404


def test_expired_subscription_disappears(
    http: httpx.Client, org: Org, sim: EmulatorState, hook: Callable[..., Hook]
) -> None:
    sub = inbox_subscription(http, org, hook(), sim, minutes=60)
    sim.clock.advance(61 * 60)
    token = org.app_token()  # issued at the advanced time
    response = http.get(f"/v1.0/subscriptions/{sub['id']}", headers=auth(token))
    assert response.status_code == 404
    listing = http.get("/v1.0/subscriptions", headers=auth(token)).json()["value"]
    assert all(s["id"] != sub["id"] for s in listing)
