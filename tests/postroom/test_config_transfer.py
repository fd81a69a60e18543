"""Configuration people can carry (issue 18): an integration's categories, rules and examples
exported as JSON and imported into another integration, in this workspace or another one,
with a preview first. Real app over HTTP, real PostgreSQL, m365sim for the connections.

Asserted on the file (its keys: no id, token or mailbox), on the pages (the preview, each
problem in words, the status codes) and on the rows (nothing written by a preview, a refused
file, a stale preview, a member or another workspace; exactly the exported configuration
after an import).
"""

from __future__ import annotations

import json
import ssl
from datetime import UTC, datetime
from typing import Any

import httpx
from sqlalchemy import func, select, update

from m365sim.state import EmulatorState
from postroom.categories.transfer import CATEGORY_KEYS, MAX_FILE_BYTES
from postroom.integrations.models import Category, Integration, Mailbox
from postroom.integrations.oauth import GRAPH
from postroom.learning.models import CategoryExample, ModelState
from tests.postroom.conftest import Postroom
from tests.postroom.test_connect import connect_personal, finish_wizard
from tests.postroom.test_editor import category_id, finished, submit
from tests.postroom.webtools import add_member, csrf, forms, post_form, sign_up

RULE_KEYS = {"mode", "items", "field", "operator", "value"}
# carried through a file, a form's hidden fields and a browser unchanged
EXAMPLE = 'Factuur "2024-17" van Müller & Zn <b>€ 12,50</b>\nregel twee\t</script>'
NESTED = {
    "mode": "all",
    "items": [
        {"field": "From.Name", "operator": "EXISTS"},
        {"field": "Body", "operator": "NOT_CONTAINS", "value": "unsubscribe"},
    ],
}


# ---------------------------------------------------------------------- helpers
def configure(web: httpx.Client, postroom: Postroom, base: str) -> None:
    """Three categories through the editor: rules (one nested group), forwarding with a
    comment, descriptions and pasted examples."""
    cid = category_id(postroom, "Invoices")
    saves: list[dict[str, Any]] = [
        {
            "category_id": cid,
            "name": "Invoices",
            "color": "preset7",
            "folder": "Finance/Invoices",
            "forward_to": "ap@partner.test",
            "forward_comment": "For the books",
            "description": "Bills from suppliers",
            "examples": f"{EXAMPLE}\n\nPlease pay invoice 2 (reminder)",
            "mode": "any",
            "rule_field": ["Subject", "From.Email"],
            "rule_operator": ["CONTAINS", "ENDS_WITH"],
            "rule_value": ["invoice", "@vendor.test"],
            "rule_group": json.dumps(NESTED),
        },
        {
            "name": "Orders",
            "color": "preset4",
            "mode": "all",
            "rule_field": ["HasAttachments", "Importance"],
            "rule_operator": ["EQUAL", "NOT_EQUALS"],
            "rule_value": ["true", "low"],
            "examples": "Order 55: three pallets of paper",
        },
        {
            "name": "Complaints",
            "color": "preset0",
            "folder": "Service/Complaints",
            "description": "Unhappy customers",
            "examples": "The parcel arrived broken\n\nNobody answers the phone",
        },
    ]
    for data in saves:
        saved = submit(web, base, {**data, "action": "save"})
        assert saved.status_code == 303, saved.text[:2000]


def integration_of(base: str) -> str:
    return base.rsplit("/", 1)[1]


def snapshot(postroom: Postroom, integration_id: str) -> list[tuple[Any, ...]]:
    """The integration's categories as stored, in order, with their examples (no ids)."""
    with postroom.database.session() as db:
        rows = db.scalars(
            select(Category)
            .where(Category.integration_id == integration_id)
            .order_by(Category.position)
        )
        return [
            (
                c.name,
                c.color,
                c.folder,
                c.forward_to,
                c.forward_comment,
                c.description,
                c.rules,
                list(
                    db.scalars(
                        select(CategoryExample.text)
                        .where(CategoryExample.category_id == c.id)
                        .order_by(CategoryExample.position)
                    )
                ),
            )
            for c in rows
        ]


def counts(postroom: Postroom) -> tuple[Any, ...]:
    """Every row an import could touch, in every integration."""
    with postroom.database.session() as db:
        return (
            db.scalar(select(func.count()).select_from(Category)),
            db.scalar(select(func.count()).select_from(CategoryExample)),
            tuple(db.execute(select(ModelState.integration_id, ModelState.refit_requested_at))),
            tuple(
                db.execute(
                    select(Category.id, Category.name, Category.rules, Category.position).order_by(
                        Category.id
                    )
                )
            ),
        )


def preview(
    web: httpx.Client, base: str, *, file: bytes | None = None, pasted: str = ""
) -> httpx.Response:
    token = csrf(web.get(f"{base}/categories/import").text)
    return web.post(
        f"{base}/categories/import",
        data={"csrf_token": token, "action": "preview", "pasted": pasted},
        files={"file": ("categories.json", file or b"", "application/json")},
    )


def apply_form(page: str) -> dict[str, list[str]]:
    """The fields of the preview's Apply form, as the browser would post them."""
    found = [f for f in forms(page) if ("action", "apply") in f["fields"]]  # type: ignore[operator]
    assert len(found) == 1, "no Apply form on the page"
    fields: dict[str, list[str]] = {}
    for name, value in found[0]["fields"]:  # type: ignore[attr-defined]
        fields.setdefault(name, []).append(value)
    return fields


def apply(web: httpx.Client, base: str, page: str) -> httpx.Response:
    return web.post(f"{base}/categories/import", data=apply_form(page))


def extra_integration(postroom: Postroom, like: str, *, scopes: list[str]) -> str:
    """Another finished integration in the workspace of ``like`` (no mailbox: an import
    needs none)."""
    with postroom.database.session() as db:
        workspace_id = db.scalar(select(Integration.workspace_id).where(Integration.id == like))
        item = Integration(
            workspace_id=workspace_id,
            kind="personal",
            name="Second",
            status="connected",
            granted_scopes=scopes,
            finished_at=datetime.now(UTC),
        )
        db.add(item)
        db.flush()
        db.add(Category(integration_id=item.id, name="Personal stuff", color="preset3"))
        return item.id


def all_keys(data: object) -> set[str]:
    keys: set[str] = set()
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            keys |= set(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return keys


# ---------------------------------------------------------------------- tests
def test_round_trip_into_another_workspace_and_this_one_with_a_preview_first(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, ssl_context: ssl.SSLContext
) -> None:
    org, base = finished(web, postroom, sim)
    configure(web, postroom, base)
    source = snapshot(postroom, integration_of(base))
    assert [c[0] for c in source] == ["Invoices", "Orders", "Complaints"]
    assert "Export as JSON" in web.get(f"{base}/categories").text

    exported = web.get(f"{base}/categories/export.json")
    assert exported.status_code == 200
    assert exported.headers["content-type"].startswith("application/json")
    assert exported.headers["content-disposition"].startswith(
        'attachment; filename="postroom-categories-'
    )
    document = exported.json()
    # Only configuration: no id, token, mailbox, ledger or model state.
    assert set(document) == {"postroom_export", "categories"}
    assert document["postroom_export"] == 1
    assert all(set(c) == set(CATEGORY_KEYS) for c in document["categories"])
    assert all_keys(document) <= {"postroom_export", "categories", *CATEGORY_KEYS, *RULE_KEYS}
    with postroom.database.session() as db:
        secret_values = [
            *db.scalars(select(Integration.id)),
            *db.scalars(select(Integration.workspace_id)),
            *db.scalars(select(Category.id)),
            *db.scalars(select(Mailbox.id)),
            *db.scalars(select(Mailbox.address)),
            *db.scalars(select(Mailbox.graph_user_id)),
            org.alice.user_principal_name,
            org.tenant.id,
        ]
    assert secret_values and not [v for v in secret_values if v in exported.text]
    assert document["categories"][0] == {
        "name": "Invoices",
        "color": "preset7",
        "folder": "Finance/Invoices",
        "description": "Bills from suppliers",
        "rules": {
            "mode": "any",
            "items": [
                {"field": "Subject", "operator": "CONTAINS", "value": "invoice"},
                {"field": "From.Email", "operator": "ENDS_WITH", "value": "@vendor.test"},
                NESTED,
            ],
        },
        "forward_to": ["ap@partner.test"],
        "forward_comment": "For the books",
        "examples": [EXAMPLE, "Please pay invoice 2 (reminder)"],
    }

    # Another workspace: its integration has its own "Invoices" from the wizard.
    other_org = postroom.org(sim)
    with httpx.Client(
        base_url=postroom.url, timeout=30, trust_env=False, verify=ssl_context
    ) as other:
        sign_up(other, email="olaf@beta.test", name="Olaf", workspace="Beta")
        other_base = connect_personal(other, postroom, other_org).removesuffix("/setup")
        finish_wizard(other, other_base)
        target = integration_of(other_base)
        before, rows = snapshot(postroom, target), counts(postroom)
        assert [c[0] for c in before] == ["Invoices"]

        shown = preview(other, other_base, file=exported.content)
        assert shown.status_code == 200, shown.text[:3000]
        page = shown.text
        assert "Nothing has changed yet" in page
        assert "Added (2)" in page and "Changed (1)" in page and "Already the same (0)" in page
        changed = page.split('id="import-changed"')[1].split("</table>")[0]
        for field in ("description", "forward to", "forward comment", "rules", "examples"):
            assert f"<td>{field}</td>" in changed, field
        assert "<td>colour</td>" not in changed and "<td>folder</td>" not in changed
        assert "0 examples" in changed and "2 examples" in changed
        # A preview writes nothing.
        assert snapshot(postroom, target) == before and counts(postroom) == rows

        done = apply(other, other_base, page)
        assert done.status_code == 303, done.text[:3000]
        assert done.headers["location"] == (
            f"{other_base}/categories/import?added=2&changed=1&unchanged=0"
        )
        assert "Imported: 2 added, 1 changed" in other.get(done.headers["location"]).text
        assert snapshot(postroom, target) == source
        # The same document comes out again; the refit was asked for, as after an edit.
        assert other.get(f"{other_base}/categories/export.json").json() == document
        with postroom.database.session() as db:
            state = db.get(ModelState, target)
            assert state is not None and state.refit_requested_at is not None

        # Pasted the same again: nothing to do, no Apply button.
        again = preview(other, other_base, pasted=exported.text)
        assert again.status_code == 200
        assert "Already the same (3)" in again.text and "nothing new" in again.text
        assert not [f for f in forms(again.text) if ("action", "apply") in f["fields"]]  # type: ignore[operator]

    # This workspace, an integration with a category of its own: kept, not deleted, and the
    # imported ones come after it. It may not forward (minimal permissions) at first.
    second = extra_integration(postroom, integration_of(base), scopes=[])
    second_base = f"/integrations/{second}"
    rows = counts(postroom)
    refused = preview(web, second_base, file=exported.content)
    assert refused.status_code == 400
    assert "Category 1 (“Invoices”): forwarding needs the Mail.Send permission" in refused.text
    assert counts(postroom) == rows
    with postroom.database.session() as db:
        db.execute(
            update(Integration)
            .where(Integration.id == second)
            .values(granted_scopes=[f"{GRAPH}/Mail.Send"])
        )
    shown = preview(web, second_base, file=exported.content)
    assert shown.status_code == 200, shown.text[:3000]
    assert "Added (3)" in shown.text
    assert "Kept as they are, not deleted: Personal stuff." in shown.text

    # Someone edits the categories between preview and apply: refused, the new preview shown.
    with postroom.database.session() as db:
        db.execute(
            update(Category).where(Category.integration_id == second).values(name="Personal things")
        )
    rows = counts(postroom)
    stale = apply(web, second_base, shown.text)
    assert stale.status_code == 409
    assert "changed since this preview" in stale.text and "Personal things" in stale.text
    assert counts(postroom) == rows
    done = apply(web, second_base, stale.text)
    assert done.status_code == 303, done.text[:3000]
    assert snapshot(postroom, second) == [
        ("Personal things", "preset3", None, [], "", "", None, []),
        *source,
    ]


def test_bad_files_members_other_workspaces_and_forms_without_csrf_change_nothing(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    _, base = finished(web, postroom, sim)
    good = web.get(f"{base}/categories/export.json").json()

    def with_category(**fields: Any) -> bytes:
        return json.dumps(
            {"postroom_export": 1, "categories": [{"name": "Orders", **fields}]}
        ).encode()

    many = [{"name": f"Category {i}"} for i in range(10_000)]
    three_mb = json.dumps(
        {"postroom_export": 1, "categories": [{"name": "Orders", "description": "x" * 3_000_000}]}
    ).encode()
    assert len(three_mb) > MAX_FILE_BYTES
    cases: list[tuple[bytes, str]] = [
        (b"this is not JSON", "The file is not valid JSON (line 1, column 1"),
        (b"\xff\xfe{}", "The file is not UTF-8 text"),
        (json.dumps([1, 2]).encode(), "This is not a Postroom export"),
        (
            json.dumps({"postroom_export": 2, "categories": []}).encode(),
            "This file is version 2 of Postroom&#39;s export format; "
            "this installation reads version 1",
        ),
        (
            with_category(folder="Deleted Items/Old"),
            "Category 1 (“Orders”): “Deleted Items/Old” is in Deleted Items",
        ),
        (
            with_category(folder="Finance//Invoices"),
            "Category 1 (“Orders”): the folder path is not valid",
        ),
        (
            with_category(
                rules={"mode": "all", "items": [{"field": "Subject", "operator": "LIKE"}]}
            ),
            "Category 1 (“Orders”): rules: condition 1: unknown operator &#39;LIKE&#39;",
        ),
        (
            with_category(
                rules={
                    "mode": "all",
                    "items": [{"field": "HasAttachments", "operator": "EQUAL", "value": "maybe"}],
                }
            ),
            "rules: condition 1: HasAttachments must be compared with true or false",
        ),
        (
            json.dumps({"postroom_export": 1, "categories": [{"name": "N" * 300}]}).encode(),
            "The name may be at most 255 characters",
        ),
        (
            json.dumps({"postroom_export": 1, "categories": many}).encode(),
            "The file holds 10000 categories; an integration has at most 50",
        ),
        (three_mb, "The file is larger than 2 MB"),
        (with_category(examples=5), "Category 1 (“Orders”): examples must be a list of texts"),
        (with_category(examples=["fine", 7]), "examples: item 2 must be text, not a number"),
        (with_category(name=["Orders"]), "name must be text, not a list"),
        (with_category(color="pink"), "choose one of Outlook&#39;s colours"),
        (with_category(forward_to=["not an address"]), "Not an email address"),
        (with_category(examples=["x" * 6000]), "Give at most 50 examples"),
        (with_category(id="c0ffee"), "Category 1 (“Orders”): unknown field “id”"),
        (
            json.dumps(
                {"postroom_export": 1, "categories": [{"name": "Orders"}, {"name": " orders "}]}
            ).encode(),
            "Category 2 (“orders”): category 1 has this name already",
        ),
        (b'{"postroom_export": 1, "postroom_export": 1}', "repeats the key “postroom_export”"),
        (with_category(description="a\u0000b"), "NUL character"),
    ]
    before, rows = snapshot(postroom, integration_of(base)), counts(postroom)
    for raw, expected in cases:
        answer = preview(web, base, file=raw)
        assert answer.status_code == 400, (expected, answer.text[:2000])
        assert expected in answer.text, (expected, answer.text[:4000])
        assert "Nothing was imported" in answer.text
    # pasted JSON is read the same way, and shown again to be fixed
    pasted = preview(web, base, pasted='{"postroom_export": 1, "categories": {}}')
    assert pasted.status_code == 400 and "“categories” must be a list" in pasted.text
    assert "&#34;categories&#34;: {}" in pasted.text or "&quot;categories&quot;" in pasted.text
    assert preview(web, base).status_code == 400  # neither a file nor text
    both = preview(web, base, file=json.dumps(good).encode(), pasted=json.dumps(good))
    assert both.status_code == 400 and "not both" in both.text
    # an Apply without a preview's fingerprint, or with a document changed after it
    shown = preview(web, base, file=with_category())
    assert shown.status_code == 200 and "Added (1)" in shown.text
    fields = apply_form(shown.text)
    tampered = {
        **fields,
        "document": ["".join(fields["document"]).replace("Orders", "Deleted Items")],
    }
    assert web.post(f"{base}/categories/import", data=tampered).status_code == 409
    bad = {**fields, "document": ['{"postroom_export": 1, "categories": [{"name": ","}]}']}
    assert web.post(f"{base}/categories/import", data=bad).status_code == 400
    assert (
        web.post(f"{base}/categories/import", data={**fields, "fingerprint": ""}).status_code == 409
    )
    # without the CSRF token: refused
    no_csrf = {k: v for k, v in fields.items() if k != "csrf_token"}
    refused = web.post(f"{base}/categories/import", data=no_csrf)
    assert refused.status_code == 400 and "This form has expired" in refused.text
    assert snapshot(postroom, integration_of(base)) == before and counts(postroom) == rows

    # A member sees and exports the categories but cannot import.
    with httpx.Client(base_url=postroom.url, trust_env=False) as member:
        sign_up(member, email="member@acme.test", name="Max Member", workspace="Max's own")
        add_member(web, member, "member@acme.test")
        post_form(
            member,
            "/signin",
            "/signin",
            {"email": "member@acme.test", "password": "correct horse battery"},
        )
        listing = member.get(f"{base}/categories")
        assert "Export as JSON" in listing.text and "Import from JSON" not in listing.text
        assert member.get(f"{base}/categories/export.json").json() == good
        assert member.get(f"{base}/categories/import").status_code == 403
        token = csrf(listing.text)
        for data in (
            {"csrf_token": token, "action": "preview", "pasted": json.dumps(good)},
            {**fields, "csrf_token": token},
        ):
            assert member.post(f"{base}/categories/import", data=data).status_code == 403
    # Another workspace: 404 for the export, the form and both steps.
    with httpx.Client(base_url=postroom.url, trust_env=False) as other:
        sign_up(other, email="eve@other.test", workspace="Other")
        token = csrf(other.get("/integrations").text)
        assert other.get(f"{base}/categories/export.json").status_code == 404
        assert other.get(f"{base}/categories/import").status_code == 404
        for data in (
            {"csrf_token": token, "action": "preview", "pasted": json.dumps(good)},
            {**fields, "csrf_token": token},
        ):
            assert other.post(f"{base}/categories/import", data=data).status_code == 404
    assert snapshot(postroom, integration_of(base)) == before and counts(postroom) == rows

    # A large file (1.5 MB of examples: more than one form field holds) goes through both steps.
    large = {
        "postroom_export": 1,
        "categories": [
            {"name": f"Large {i}", "examples": [f"{i}.{j} Müller " + "x" * 4980 for j in range(50)]}
            for i in range(6)
        ],
    }
    raw = json.dumps(large, ensure_ascii=False).encode()
    assert 1024 * 1024 < len(raw) < MAX_FILE_BYTES
    shown = preview(web, base, file=raw)
    assert shown.status_code == 200 and "Added (6)" in shown.text
    assert len(apply_form(shown.text)["document"]) > 1
    done = apply(web, base, shown.text)
    assert done.status_code == 303, done.text[:2000]
    assert snapshot(postroom, integration_of(base))[1:] == [
        (c["name"], "preset0", None, [], "", "", None, c["examples"]) for c in large["categories"]
    ]
