"""Export and import of an integration's categories (:mod:`postroom.categories.transfer`).

Pages
  ``GET  /integrations/{id}/categories/export.json`` — the categories as a JSON download; for
  everyone who may see them.
  ``GET  /integrations/{id}/categories/import`` — the upload form; owners and admins only.
  ``POST`` to it with ``action=preview`` (a file, or JSON pasted into the text box) shows what
  would change and writes nothing; ``action=apply`` writes it.

Between the two steps the browser carries the document itself, as hidden fields of the preview
page (split in pieces: a form field holds at most 1 MB, the file up to 2 MB), with the
preview's fingerprint. Apply checks the document again from scratch and refuses — showing the
new preview — when the fingerprint differs, i.e. when the file or the integration's categories
are not what the person saw. Every answer to a bad file is the form again with the problems,
HTTP 400, and nothing changed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile

from postroom.categories import transfer
from postroom.categories.form import describe
from postroom.categories.views import _finished
from postroom.integrations import wizard
from postroom.integrations.models import Integration
from postroom.integrations.web import load_integration
from postroom.learning.views import defer_refit_from_thread
from postroom.processing.rules import RuleError, RuleGroup
from postroom.web.deps import DbSession, current_caller, render
from postroom.web.security import Caller, check_csrf

router = APIRouter()
CallerDep = Annotated[Caller, Depends(current_caller)]
PIECE = 80_000  # characters per hidden field: under the 1 MB a field may hold, even %-encoded
MAX_PASTE_SHOWN = 200_000  # pasted text shown again with its problems (longer: not repeated)


def _rules_words(rules: dict[str, Any] | None) -> str:
    if rules is None:
        return "No rules (learned model only)"
    try:
        return describe(RuleGroup.from_json(rules))
    except RuleError:  # parse() accepted it, so this does not happen
        return "(a rule that cannot be read)"


def _page(
    request: Request,
    integration: Integration,
    *,
    errors: tuple[str, ...] | list[str] = (),
    result: transfer.Preview | None = None,
    document: str = "",
    pasted: str = "",
    notice: str | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "integrations/categories_import.html",
        status_code,
        nav="integrations",
        item=integration,
        errors=list(errors),
        result=result,
        pieces=[document[i : i + PIECE] for i in range(0, len(document), PIECE)],
        pasted=pasted if len(pasted) <= MAX_PASTE_SHOWN else "",
        notice=notice,
        colours=wizard.COLOUR_NAMES,
        rules_words=_rules_words,
        max_mb=transfer.MAX_FILE_BYTES // (1024 * 1024),
    )


@router.get("/integrations/{integration_id}/categories/export.json")
def export_categories(integration_id: str, caller: CallerDep, db: DbSession) -> Response:
    integration = load_integration(db, caller, integration_id)
    if (redirect := _finished(integration, caller)) is not None:
        return redirect
    body = json.dumps(transfer.export(db, integration), ensure_ascii=False, indent=2) + "\n"
    day = datetime.now(UTC).date().isoformat()
    return Response(
        body.encode(),
        media_type="application/json",
        headers={
            # no name of the integration (it may be a mailbox address), nothing to escape
            "Content-Disposition": f'attachment; filename="postroom-categories-{day}.json"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/integrations/{integration_id}/categories/import")
def import_form(
    request: Request, integration_id: str, caller: CallerDep, db: DbSession
) -> Response:
    caller.require_manager()
    integration = load_integration(db, caller, integration_id)
    if (redirect := _finished(integration, caller)) is not None:
        return redirect
    counts = [request.query_params.get(k, "") for k in ("added", "changed", "unchanged")]
    notice = None
    if all(c.isdigit() and len(c) < 4 for c in counts):
        added, changed, unchanged = (int(c) for c in counts)
        notice = (
            f"Imported: {added} added, {changed} changed, {unchanged} already the same. "
            "Categories that were not in the file are kept."
        )
    return _page(request, integration, notice=notice)


@router.post("/integrations/{integration_id}/categories/import")
async def import_submit(request: Request, integration_id: str, caller: CallerDep) -> Response:
    data = await request.form()  # parsed once already (the NUL check), with its size limits
    try:
        upload = data.get("file")
        raw: bytes | None = None
        if isinstance(upload, UploadFile):
            raw = await upload.read(transfer.MAX_FILE_BYTES + 1)
    finally:
        await data.close()  # the uploaded file's temporary copy
    return await run_in_threadpool(_import_submit, request, integration_id, caller, data, raw)


def _one(data: FormData, key: str) -> str:
    value = data.get(key)
    return value if isinstance(value, str) else ""


def _import_submit(
    request: Request, integration_id: str, caller: Caller, data: FormData, uploaded: bytes | None
) -> Response:
    token = data.get("csrf_token")
    check_csrf(request, token if isinstance(token, str) else None)
    caller.require_manager()
    with request.app.state.db.session() as db:
        integration = load_integration(db, caller, integration_id)
        if (redirect := _finished(integration, caller)) is not None:
            return redirect
        if _one(data, "action") == "apply":
            return _apply(request, db, integration, data)
        pasted = _one(data, "pasted")
        if uploaded and pasted.strip():
            return _page(
                request,
                integration,
                errors=["Choose a file or paste the JSON, not both."],
                pasted=pasted,
                status_code=400,
            )
        raw = uploaded or pasted.encode()
        if not raw.strip():
            return _page(
                request,
                integration,
                errors=["Choose the file Postroom exported, or paste its JSON."],
                status_code=400,
            )
        plan = transfer.parse(raw)
        if isinstance(plan, transfer.Errors):
            return _page(request, integration, errors=plan.problems, pasted=pasted, status_code=400)
        result = transfer.preview(db, integration, plan)
        db.rollback()  # a preview writes nothing
        if isinstance(result, transfer.Errors):
            return _page(
                request, integration, errors=result.problems, pasted=pasted, status_code=400
            )
        return _page(request, integration, result=result, document=plan.document)


def _apply(request: Request, db: Session, integration: Integration, data: FormData) -> Response:
    document = "".join(v for v in data.getlist("document") if isinstance(v, str))
    if not document:
        return _page(
            request,
            integration,
            errors=["Choose the file Postroom exported, or paste its JSON."],
            status_code=400,
        )
    outcome = transfer.apply(
        db, integration, document.encode(), expected=_one(data, "fingerprint")[:64]
    )
    if isinstance(outcome, transfer.Errors):
        db.rollback()
        return _page(request, integration, errors=outcome.problems, status_code=400)
    if isinstance(outcome, transfer.Stale):
        db.rollback()
        return _page(
            request,
            integration,
            errors=[
                "The categories changed since this preview was made; nothing was imported. "
                "Check the preview below again, then apply it."
            ],
            result=outcome.preview,
            document=document,
            status_code=409,
        )
    db.commit()
    if outcome.refit_requested:
        defer_refit_from_thread(request, integration.id)
    return RedirectResponse(
        f"/integrations/{integration.id}/categories/import?added={outcome.added}"
        f"&changed={outcome.changed}&unchanged={outcome.unchanged}",
        status_code=303,
    )
