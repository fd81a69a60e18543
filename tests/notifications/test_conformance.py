"""Every property name the emulator emits for subscriptions and notifications exists in Graph's
v1.0 metadata (CSDL ``subscription``, ``changeNotification``, ``resourceData`` and the
``lifecycleEventType`` enum), read from the checked-in extract when it has these types, else
from the CSDL file itself."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from m365sim.notifications.registry import (
    LIFECYCLE_EVENTS,
    Subscription,
    change_notification,
    lifecycle_notification,
    subscription_json,
)

CSDL = Path("/work/shared/reference/graph-v1.0-csdl.xml")
EXTRACT = Path(__file__).parents[2] / "src" / "m365sim" / "schema" / "graph-mail.json"
EDM = "{http://docs.oasis-open.org/odata/ns/edm}"
# Returned by Graph v1.0 (documented response samples) but declared only in the beta metadata.
NOT_IN_V1_CSDL = {"notificationContentType"}


def _from_csdl(names: tuple[str, ...]) -> dict[str, set[str]]:
    if not CSDL.exists():
        pytest.skip(f"neither a usable {EXTRACT.name} nor {CSDL} is available")
    found: dict[str, set[str]] = {}
    for _, element in ET.iterparse(CSDL):
        name = element.get("Name")
        if element.tag in (f"{EDM}EntityType", f"{EDM}ComplexType") and name in names:
            found[name] = {p.get("Name", "") for p in element.iter(f"{EDM}Property")}
            if element.get("BaseType") == "graph.entity":
                found[name].add("id")
        elif element.tag == f"{EDM}EnumType" and name in names:
            found[name] = {m.get("Name", "") for m in element.iter(f"{EDM}Member")}
        if element.tag in (f"{EDM}EntityType", f"{EDM}ComplexType", f"{EDM}EnumType"):
            element.clear()
    return found


def _from_extract(names: tuple[str, ...]) -> dict[str, set[str]]:
    """Property names per type from the extract, whatever its exact layout (best effort)."""
    if not EXTRACT.exists():
        return {}
    data = json.loads(EXTRACT.read_text())
    found: dict[str, set[str]] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in names and isinstance(value, dict):
                    members = value.get("properties", value.get("members"))
                    if isinstance(members, dict):
                        found[key] = set(members)
                    elif isinstance(members, list):
                        found[key] = {
                            m if isinstance(m, str) else str(m.get("name")) for m in members
                        }
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(data)
    return found


@pytest.fixture(scope="module")
def schema() -> dict[str, set[str]]:
    names = ("subscription", "changeNotification", "resourceData", "lifecycleEventType")
    found = _from_extract(names)
    if not all(n in found for n in names):
        found = _from_csdl(names)
    assert all(n in found for n in names), found.keys()
    return found


def _sample() -> Subscription:
    return Subscription(
        id="7f105c7d-2dc5-4530-97cd-4e7ae6534c07",
        tenant_id="84bd8158-6d4d-4958-8b9f-9d6445542f95",
        client_id="24d3b144-21ae-4080-943f-7067b395b913",
        creator_id="8ee44408-0679-472c-bc2a-692812af3437",
        app_only=False,
        mailbox_id="8ee44408-0679-472c-bc2a-692812af3437",
        folder_id=None,
        resource="me/messages",
        change_type="created",
        change_types=frozenset({"created"}),
        notification_url="https://example.test/hook",
        lifecycle_url=None,
        client_state="s",
        expiration=datetime(2030, 1, 1, tzinfo=UTC),
        latest_tls="v1_2",
        immutable_ids=False,
        token_expires=0.0,
        created=0.0,
    )


def test_subscription_properties_exist(schema: dict[str, set[str]]) -> None:
    emitted = set(subscription_json(_sample()))
    assert emitted - schema["subscription"] == NOT_IN_V1_CSDL
    # and nothing the CSDL declares is missing from the emulator's answer
    assert schema["subscription"] <= emitted


def test_change_notification_properties_exist(schema: dict[str, set[str]]) -> None:
    note = change_notification(
        _sample(), message_id="AAMk=", change_key="CQ", change_type="created"
    )
    assert set(note) <= schema["changeNotification"]
    data_keys = {k for k in note["resourceData"] if not k.startswith("@odata.")}
    # resourceData is an open type: only its declared part is checked
    assert data_keys <= schema["resourceData"] | {"id"}


def test_lifecycle_notification_and_events_exist(schema: dict[str, set[str]]) -> None:
    assert set(LIFECYCLE_EVENTS) == schema["lifecycleEventType"]
    for event in LIFECYCLE_EVENTS:
        assert set(lifecycle_notification(_sample(), event)) <= schema["changeNotification"]
