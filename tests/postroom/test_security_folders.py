"""Issue 12: folder paths are normalized where people type them (wizard, category editor), and
a path that normalizes to Deleted Items or Recoverable Items is refused with a clear message.

The executor resolves paths with the same function (:mod:`postroom.processing.folder_paths`),
so what is refused here is what the executor would have found; identity (ids and ancestry) is
tested in ``tests/processing_exec/test_security_never_delete.py``.
"""

from __future__ import annotations

import html

import httpx
import pytest

from m365sim.state import EmulatorState
from postroom.integrations import wizard
from postroom.processing import folder_paths
from tests.postroom.conftest import Postroom
from tests.postroom.test_editor import category_id, finished, invoice_form, stored, submit

PROTECTED = [
    ("Deleted Items /Purge", "Deleted Items"),
    ("Deleted\u00a0Items/Purge", "Deleted Items"),
    ("deleted\u2003items/x", "Deleted Items"),
    ("Deleted\u200bItems/x", "Deleted Items"),
    ("\ufeffDeleted Items", "Deleted Items"),
    ("Deleted\u3000Items/x", "Deleted Items"),
    ("\uff24\uff25\uff2c\uff25\uff34\uff25\uff24 ITEMS/x", "Deleted Items"),  # full-width
    ("DeletedItems/x", "Deleted Items"),
    ("Verwijderde items/Oud", "Deleted Items"),
    ("Gelo\u0308schte Elemente/Alt", "Deleted Items"),  # decomposed ö
    ("Recoverable Items /x", "Recoverable Items"),
    ("recoverableitemsdeletions", "Recoverable Items"),
]


@pytest.mark.parametrize(("path", "protected"), PROTECTED)
def test_protected_folders_are_recognised_in_any_spelling(path: str, protected: str) -> None:
    assert folder_paths.protected_folder(path) == protected


@pytest.mark.parametrize(
    "path", ["Finance/Invoices", "Inbox/Deleted Items", "Deleted Itemsx", "Archive", "Items"]
)
def test_ordinary_folders_are_not_protected(path: str) -> None:
    assert folder_paths.protected_folder(path) is None


def test_segments_are_cleaned_and_compared_like_outlook_shows_them() -> None:
    assert folder_paths.clean_path(" Finance\u00a0 /\u200bInvoices\u2003 ") == "Finance/Invoices"
    assert folder_paths.segment_key("FINANCE\u00a0Team") == folder_paths.segment_key("finance team")
    assert folder_paths.has_blank_segment("Finance/\u200b/Invoices")
    assert not folder_paths.has_blank_segment("Finance/Invoices")


@pytest.mark.parametrize(("path", "protected"), PROTECTED)
def test_the_wizard_refuses_a_protected_folder_with_a_clear_message(
    path: str, protected: str
) -> None:
    with pytest.raises(wizard.StepError) as refused:
        wizard.parse_categories(["Junk"], ["preset0"], [path], [""], forwarding_allowed=True)
    (problem,) = refused.value.errors
    assert problem.startswith("Row 1: ")
    assert f"is in {protected}" in problem
    assert "Postroom never moves mail into Deleted Items or Recoverable Items" in problem
    assert "\u200b" not in problem and "\ufeff" not in problem  # shown cleaned


def test_the_wizard_stores_the_cleaned_path() -> None:
    (parsed,) = wizard.parse_categories(
        ["Invoices"], ["preset0"], ["Finance\u00a0/ Invoices\u200b"], [""], forwarding_allowed=True
    )
    assert parsed.folder == "Finance/Invoices"
    with pytest.raises(wizard.StepError) as blank:
        wizard.parse_categories(
            ["Invoices"], ["preset0"], ["Finance/\u200b/x"], [""], forwarding_allowed=True
        )
    assert "the folder path is not valid" in blank.value.errors[0]


def test_the_category_editor_refuses_every_spelling_and_saves_nothing(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    _, base = finished(web, postroom, sim)
    cid = category_id(postroom, "Invoices")
    before = stored(postroom)
    for path, protected in PROTECTED:
        response = submit(web, base, invoice_form(cid, folder=path))
        assert response.status_code == 400, path
        text = html.unescape(response.text)
        assert f"is in {protected}" in text, path
        assert "Postroom never moves mail into Deleted Items or Recoverable Items" in text
        assert "Nothing was saved" in text
        assert stored(postroom) == before, path
    saved = submit(web, base, invoice_form(cid, folder="Finance\u00a0/ Invoices "))
    assert saved.status_code in (200, 303)
    assert [row[2] for row in stored(postroom)] == ["Finance/Invoices"]
