"""The checked-in CSDL extract is what the CSDL says, and the emulator's own tables match it."""

from __future__ import annotations

import pytest

from m365sim.graph import serialize
from m365sim.store import CATEGORY_COLORS
from tests.conformance import extract_csdl
from tests.conformance.schema import SCHEMA_FILE, enum_members, operation, properties


@pytest.mark.skipif(
    not extract_csdl.DEFAULT_CSDL.exists(), reason="the Graph CSDL is not on this machine"
)
def test_checked_in_extract_is_up_to_date() -> None:
    fresh = extract_csdl.render(extract_csdl.extract(extract_csdl.DEFAULT_CSDL))
    assert SCHEMA_FILE.read_text() == fresh, (
        "src/m365sim/schema/graph-mail.json is stale: run python -m tests.conformance.extract_csdl"
    )


def test_extract_holds_what_the_tests_rely_on() -> None:
    assert operation("move", "graph.message")["parameters"] == [
        {"name": "DestinationId", "type": "Edm.String", "nullable": False}
    ]
    assert operation("delta", "Collection(graph.message)", "functions")["returnType"] == (
        "Collection(graph.message)"
    )
    assert {"changeType", "clientState", "resource", "subscriptionId", "tenantId"} <= set(
        properties("changeNotification")
    )
    assert "notificationUrl" in properties("subscription")


def test_emulator_property_tables_are_declared_by_the_csdl() -> None:
    assert set(serialize.MESSAGE_SELECTABLE) <= set(properties("message"))
    assert set(serialize.FOLDER_PROPERTIES) <= set(properties("mailFolder"))
    assert set(serialize.CATEGORY_PROPERTIES) <= set(properties("outlookCategory"))
    for prop in serialize.MESSAGE_ENTITY.props.values():
        head = prop.name.split("/")[0]
        assert head in properties("message"), prop.name


def test_emulator_enums_are_the_csdl_enums() -> None:
    assert list(serialize.IMPORTANCE) == enum_members("importance")
    assert list(serialize.INFERENCE) == enum_members("inferenceClassificationType")
    assert list(serialize.FLAG_STATUS) == enum_members("followupFlagStatus")
    assert list(serialize.BODY_TYPES) == enum_members("bodyType")
    assert list(CATEGORY_COLORS) == enum_members("categoryColor")
