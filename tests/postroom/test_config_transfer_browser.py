"""Importing categories in a real browser (issue 18): from the categories page, choose the
exported file, read the preview, apply. The document travels in the preview's hidden fields:
quotes, markup, accents and line breaks in an example arrive unchanged. Playwright, Debian's
Chromium."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from m365sim.state import EmulatorState
from postroom.integrations.oauth import GRAPH
from tests.postroom.conftest import Postroom
from tests.postroom.test_browser import browser, page, shot  # noqa: F401  (fixtures)
from tests.postroom.test_config_transfer import (
    configure,
    extra_integration,
    integration_of,
    snapshot,
)
from tests.postroom.test_editor import finished
from tests.postroom.test_newcomer_browser import PHONE, _signed_in, _width


def _prepared(web: httpx.Client, postroom: Postroom, sim: EmulatorState) -> tuple[str, str]:
    _, base = finished(web, postroom, sim)
    configure(web, postroom, base)
    second = extra_integration(postroom, integration_of(base), scopes=[f"{GRAPH}/Mail.Send"])
    return base, second


def test_upload_preview_and_apply_in_a_browser(
    page: Any,  # noqa: F811
    web: httpx.Client,
    postroom: Postroom,
    sim: EmulatorState,
    tmp_path: Path,
) -> None:
    with ThreadPoolExecutor(1) as worker:  # (playwright's loop runs in this thread)
        base, second = worker.submit(_prepared, web, postroom, sim).result()
    source = snapshot(postroom, integration_of(base))
    exported = tmp_path / "categories.json"
    exported.write_bytes(web.get(f"{base}/categories/export.json").content)
    _signed_in(page, web, postroom)
    page.goto(f"{postroom.url}/integrations/{second}/categories")
    page.get_by_role("link", name="Import from JSON").click()
    page.get_by_label("File", exact=True).set_input_files(str(exported))
    page.get_by_role("button", name="Preview").click()
    preview = page.locator("#import-preview")
    preview.wait_for()
    assert "Added (3)" in preview.inner_text()
    assert "Kept as they are, not deleted: Personal stuff." in preview.inner_text()
    shot(page, "categories-import-preview")
    assert snapshot(postroom, second) == [("Personal stuff", "preset3", None, [], "", "", None, [])]
    page.get_by_role("button", name="Apply: add 3, change 0").click()
    page.get_by_text("Imported: 3 added, 0 changed").wait_for()
    assert snapshot(postroom, second)[1:] == source
    # the form and a preview are readable at phone width too
    page.set_viewport_size(PHONE)
    page.goto(f"{postroom.url}/integrations/{second}/categories/import")
    assert _width(page) <= PHONE["width"]
    page.get_by_label("File", exact=True).set_input_files(str(exported))
    page.get_by_role("button", name="Preview").click()
    page.locator("#import-preview").wait_for()
    assert "Already the same (3)" in page.locator("#import-preview").inner_text()
    assert _width(page) <= PHONE["width"]
