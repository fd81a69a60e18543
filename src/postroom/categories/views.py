"""The categories pages: the editor (with its rule builder and "test against a recent email")
and the colours of the categories in Outlook. The activity view is :mod:`postroom.activity`.

Pages
  ``GET  /integrations/{id}/categories`` — the categories in the order rules are tried; with
  ``?new=1`` or ``?edit={category}`` the editor for managers. ``POST`` to the same path saves,
  adds or removes a condition row, or tests the rules in the form against a recent email.
  ``POST .../categories/{category}/delete`` and ``.../move`` delete and reorder;
  ``POST .../categories/colours`` creates the missing master categories in Outlook.

The rule builder needs no JavaScript: a group mode (all/any) and rows of (field, operator,
value); "Add condition" and "Remove" are submit buttons that re-render the form. Nested groups
of a stored rule (written through other means) are kept as they are and can be removed, not
edited. Every submitted value is checked (:func:`parse_category`); a form with problems is
shown again with each problem in plain words, HTTP 400, and nothing saved.

Invariant 2 — no mailbox content in the database — holds here by construction: the recent
emails of the test and the subjects of the activity view are fetched from Graph for the page
being rendered and only ever reach the template (which escapes them). The test only reads
(GETs) and never writes to the database or the mailbox.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from postroom.categories.colours import (
    RemoteFacts,
    _align_colours,
    _colour_checks,
    _create_colours,
    _graph_words,
    _recent_messages,
)
from postroom.categories.form import (
    FIELD_LABELS,
    MAX_MESSAGE_ID,
    OPERATOR_LABELS,
    RECENT_SELECT,
    CategoryForm,
    RuleRow,
    _config,
    describe,
    parse_category,
    parse_rules,
    rules_text,
)
from postroom.categories.preview import PreviewResult, explain
from postroom.graph import GraphClient, GraphError, NotFound
from postroom.integrations import service, wizard
from postroom.integrations.graph_access import TokenFailure
from postroom.integrations.models import Integration, Mailbox
from postroom.integrations.oauth import GRAPH
from postroom.integrations.statuses import LABELS, REASONS, Reason
from postroom.integrations.web import graph_call, load_integration
from postroom.learning import service as learning
from postroom.learning.views import defer_refit_from_thread, status_words
from postroom.processing.executor import record_created_category
from postroom.processing.plan import CategoryConfig
from postroom.processing.rules import (
    FIELDS,
    MAX_CONDITIONS,
    OPERATORS,
    RuleError,
    RuleGroup,
)
from postroom.web.deps import DbSession, current_caller, render
from postroom.web.security import Caller, check_csrf

router = APIRouter()
CallerDep = Annotated[Caller, Depends(current_caller)]
Token = Annotated[str, Form(max_length=200)]


# ---------------------------------------------------------------------- helpers for the views
def _can_read_colours(integration: Integration) -> bool:
    scopes = integration.granted_scopes or []
    return integration.kind == "organization" or any(
        s in scopes for s in (f"{GRAPH}/MailboxSettings.Read", f"{GRAPH}/MailboxSettings.ReadWrite")
    )


def _can_write_colours(integration: Integration) -> bool:
    return integration.kind == "organization" or f"{GRAPH}/MailboxSettings.ReadWrite" in (
        integration.granted_scopes or []
    )


def _forwarding_allowed(integration: Integration) -> bool:
    return integration.kind == "organization" or f"{GRAPH}/Mail.Send" in (
        integration.granted_scopes or []
    )


def _test_mailbox(mailboxes: list[Mailbox], chosen: str | None = None) -> Mailbox | None:
    """The mailbox whose inbox the test reads: the one chosen (any mailbox of the
    integration), else the first synced one."""
    for box in mailboxes:
        if chosen and box.id == chosen:
            return box
    working = [m for m in mailboxes if m.status == "connected"] or mailboxes
    return working[0] if working else None


def _status_notice(integration: Integration) -> Reason | None:
    if integration.status in ("needs_reconnect", "admin_consent_missing", "access_denied"):
        return REASONS.get(integration.status_reason or "") or REASONS["unknown"]
    return None


def _remote(
    request: Request,
    db: Session,
    integration: Integration,
    *,
    recent: bool,
    colours: bool,
    test_box_id: str | None = None,
) -> RemoteFacts:
    """Read what the page shows from Graph (the recent emails, the colours) in one go."""
    facts = RemoteFacts()
    mailboxes = service.mailboxes(db=db, integration=integration)
    categories = service.categories(db=db, integration=integration)
    test_box = _test_mailbox(mailboxes, test_box_id)
    want_recent = recent and test_box is not None
    want_colours = colours and bool(categories) and _can_read_colours(integration)
    if not want_recent and not want_colours:
        return facts
    if _status_notice(integration) is not None:
        facts.recent_problem = "Reconnect the integration to read its emails."
        return facts

    async def work(client: GraphClient) -> RemoteFacts:
        if want_recent and test_box is not None:
            try:
                facts.recent = await _recent_messages(client, test_box.graph_user_id)
            except GraphError as exc:
                facts.recent_problem = (
                    f"The inbox of {test_box.address} could not be read ({_graph_words(exc)})."
                )
        if want_colours:
            facts.colours = await _colour_checks(client, mailboxes, categories)
        return facts

    try:
        result: RemoteFacts = graph_call(request, db, integration, work)
        return result
    except TokenFailure:
        facts.recent, facts.colours = None, None
        facts.recent_problem = "Reconnect the integration to read its emails."
        return facts


def _categories_page(
    request: Request,
    db: Session,
    caller: Caller,
    integration: Integration,
    *,
    form: CategoryForm | None = None,
    errors: list[str] | None = None,
    result: PreviewResult | None = None,
    notice: str | None = None,
    status_code: int = 200,
    with_colours: bool = True,
    test_box_id: str | None = None,
) -> Response:
    categories = service.categories(db=db, integration=integration)
    editing = form is not None and caller.can_manage
    remote = _remote(
        request, db, integration, recent=editing, colours=with_colours, test_box_id=test_box_id
    )
    colours = {value: (label, hex_) for value, label, hex_ in wizard.COLOURS}
    mailboxes = service.mailboxes(db=db, integration=integration)
    return render(
        request,
        "integrations/categories.html",
        status_code,
        nav="integrations",
        item=integration,
        categories=[(c, rules_text(c)) for c in categories],
        colours=colours,
        colour_list=wizard.COLOURS,
        form=form if editing else None,
        errors=errors or [],
        result=result,
        notice=notice,
        remote=remote,
        test_box=_test_mailbox(mailboxes, test_box_id),
        test_boxes=mailboxes,
        field_labels=FIELD_LABELS,
        operator_labels=OPERATOR_LABELS,
        fields=FIELDS,
        operators=OPERATORS,
        groups=[_group_text(g) for g in (form.groups if form else [])],
        can_read_colours=_can_read_colours(integration),
        can_write_colours=_can_write_colours(integration),
        forwarding_allowed=_forwarding_allowed(integration),
        status_notice=_status_notice(integration),
        model_off=status_words(learning.model_status(db, integration.id)),
        labels=LABELS,
        max_conditions=MAX_CONDITIONS,
    )


def _group_text(raw: str) -> str:
    try:
        return describe(RuleGroup.from_text(raw))
    except RuleError:
        return "(a group that cannot be read)"


def _finished(integration: Integration, caller: Caller) -> Response | None:
    """Categories are edited in the wizard until setup is finished."""
    if integration.finished_at is not None:
        return None
    target = f"/integrations/{integration.id}"
    return RedirectResponse(target + "/setup" if caller.can_manage else target, status_code=303)


# ---------------------------------------------------------------------- categories pages
@router.get("/integrations/{integration_id}/categories")
def categories_page(
    request: Request,
    integration_id: str,
    caller: CallerDep,
    db: DbSession,
) -> Response:
    integration = load_integration(db, caller, integration_id)
    if (redirect := _finished(integration, caller)) is not None:
        return redirect
    form: CategoryForm | None = None
    edit = request.query_params.get("edit")
    if edit and caller.can_manage:
        category = service.get_category(db=db, integration=integration, category_id=edit[:64])
        if category is None:
            raise HTTPException(404)
        form = CategoryForm.from_category(category)
        form.examples = "\n\n".join(learning.examples_of(db, category.id))
    elif request.query_params.get("new") and caller.can_manage:
        form = CategoryForm.from_category(None)
    notice = None
    saved = request.query_params.get("saved")
    if saved:
        category = service.get_category(db=db, integration=integration, category_id=saved[:64])
        notice = f"Saved “{category.name}”." if category else None
        status = learning.model_status(db, integration.id) if notice else None
        if status is not None and status.on and status.rebuilding:  # (off: the page says why)
            notice = f"{notice} The learned model is being retrained in the background."
    aligned = request.query_params.get("aligned")
    if aligned and aligned.isdigit():
        count = int(aligned)
        notice = (
            f"Gave {count} categor{'y' if count == 1 else 'ies'} in Outlook Postroom's colour."
            if count
            else "Every category already has Postroom's colour in Outlook."
        )
    coloured = request.query_params.get("coloured")
    if coloured and coloured.isdigit():
        count = int(coloured)
        notice = (
            f"Created {count} categor{'y' if count == 1 else 'ies'} with colours in Outlook."
            if count
            else "Every category already exists in Outlook."
        )
    chosen = request.query_params.get("test_mailbox")
    return _categories_page(
        request,
        db,
        caller,
        integration,
        form=form,
        notice=notice,
        test_box_id=chosen[:64] if chosen else None,
    )


@router.post("/integrations/{integration_id}/categories")
async def categories_submit(request: Request, integration_id: str, caller: CallerDep) -> Response:
    data = await request.form()
    return await run_in_threadpool(_categories_submit, request, integration_id, caller, data)


def _categories_submit(
    request: Request, integration_id: str, caller: Caller, data: FormData
) -> Response:
    token = data.get("csrf_token")
    check_csrf(request, token if isinstance(token, str) else None)
    caller.require_manager()
    database = request.app.state.db
    with database.session() as db:
        integration = load_integration(db, caller, integration_id)
        if (redirect := _finished(integration, caller)) is not None:
            return redirect
        form = CategoryForm.from_submission(data)
        if form.category_id and (
            service.get_category(db=db, integration=integration, category_id=form.category_id)
            is None
        ):
            raise HTTPException(404)
        raw_action = data.get("action")
        action, _, argument = (raw_action if isinstance(raw_action, str) else "save").partition(":")
        # the mailbox whose recent emails the test shows (any mailbox of the integration)
        shown, chosen = data.get("shown_mailbox"), data.get("test_mailbox")
        box_id = chosen if action == "show_recent" else shown
        box_id = box_id[:64] if isinstance(box_id, str) else None

        def page(**kw: Any) -> Response:
            return _categories_page(
                request,
                db,
                caller,
                integration,
                form=form,
                with_colours=False,
                test_box_id=box_id,
                **kw,
            )

        if action == "show_recent":
            return page()

        if action == "add_condition":
            if len(form.rows) + len(form.groups) < MAX_CONDITIONS:
                form.rows.append(RuleRow())
            return page()
        if action == "remove_condition":
            if argument.isdigit() and int(argument) < len(form.rows):
                del form.rows[int(argument)]
            if not form.rows:
                form.rows.append(RuleRow())
            return page()
        if action == "remove_group":
            if argument.isdigit() and int(argument) < len(form.groups):
                del form.groups[int(argument)]
            return page()
        if action == "test":
            return _test(request, db, caller, integration, form, argument, box_id)
        others = service.categories(db=db, integration=integration)
        parsed, problems = parse_category(
            form, others=others, forwarding_allowed=_forwarding_allowed(integration)
        )
        if parsed is None:
            db.rollback()
            return page(errors=problems, status_code=400)
        category = service.save_category(
            db=db,
            integration=integration,
            category_id=form.category_id or None,
            name=parsed.name,
            color=parsed.color,
            folder=parsed.folder,
            forward_to=parsed.forward_to,
            description=parsed.description,
            rules=parsed.rules.to_json() if parsed.rules is not None else None,
            forward_comment=parsed.forward_comment,
        )
        changed = learning.set_examples(
            db,
            integration_id=integration.id,
            category_id=category.id,
            texts=learning.split_examples(form.examples),
        )
        if changed or learning.state_row(db, integration.id).version > 0:
            # In the background: a model that learned thousands of decisions takes a minute
            # to fit (longer with e5); the request does not wait for it.
            learning.request_refit(db, integration_id=integration.id)
            db.commit()
            defer_refit_from_thread(request, integration.id)
        return RedirectResponse(
            f"/integrations/{integration.id}/categories?saved={category.id}", status_code=303
        )


def _test(
    request: Request,
    db: Session,
    caller: Caller,
    integration: Integration,
    form: CategoryForm,
    message_id: str,
    box_id: str | None = None,
) -> Response:
    """Decide a recent email with the form's unsaved rules: read only, nothing written."""

    def page(**kw: Any) -> Response:
        return _categories_page(
            request,
            db,
            caller,
            integration,
            form=form,
            with_colours=False,
            test_box_id=box_id,
            **kw,
        )

    rules, problems = parse_rules(form)
    if problems:
        return page(errors=problems, status_code=400)
    if not message_id or len(message_id) > MAX_MESSAGE_ID:
        return page(errors=["Choose one of the recent emails to test."], status_code=400)
    box = _test_mailbox(service.mailboxes(db=db, integration=integration), box_id)
    if box is None:
        return page(errors=["This integration has no mailbox to test with."], status_code=400)
    rows = service.categories(db=db, integration=integration)
    configs = [_config(c) for c in rows if c.id != form.category_id]
    edited = CategoryConfig(
        name=form.name.strip() or "(this category)",
        color=form.color,
        folder=form.folder.strip() or None,
        forward_to=tuple(a for a in form.forward_to.replace(";", ",").split(",") if a.strip()),
        rules=rules,
    )
    position = next((i for i, c in enumerate(rows) if c.id == form.category_id), len(configs))
    configs.insert(position, edited)
    needs_body = any(c.rules is not None and "Body" in c.rules.fields for c in configs)

    async def work(client: GraphClient) -> dict[str, Any]:
        path = f"{client.mailbox_path(box.graph_user_id)}/messages/{quote(message_id, safe='')}"
        _, data, _ = await client.request(
            "GET", path, mailbox=box.graph_user_id, params={"$select": RECENT_SELECT}
        )
        if needs_body:
            _, full, _ = await client.request(
                "GET",
                path,
                mailbox=box.graph_user_id,
                params={"$select": "body"},
                headers={"Prefer": 'outlook.body-content-type="text"'},
            )
            data = {**data, "body": full.get("body")}
        return dict(data)

    from postroom.sync.engine import message_view

    try:
        message = graph_call(request, db, integration, work)
    except TokenFailure:
        return page(
            errors=["Microsoft refused the saved sign-in; reconnect the integration."],
            status_code=409,
        )
    except GraphError as exc:
        if isinstance(exc, NotFound) or exc.status == 400:  # gone, or an id that never was
            return page(
                errors=["That email is no longer in the mailbox; choose another."],
                status_code=400,
            )
        return page(errors=[f"The email could not be read ({_graph_words(exc)})."], status_code=502)
    result = explain(
        message_view(message),
        configs,
        position,
        allow_forward=_forwarding_allowed(integration),
    )
    return page(result=result)


@router.post("/integrations/{integration_id}/categories/{category_id}/delete")
def delete_category(
    request: Request,
    integration_id: str,
    category_id: str,
    caller: CallerDep,
    db: DbSession,
    csrf_token: Token = "",
) -> Response:
    check_csrf(request, csrf_token)
    caller.require_manager()
    integration = load_integration(db, caller, integration_id)
    if (redirect := _finished(integration, caller)) is not None:
        return redirect
    if not service.delete_category(db=db, integration=integration, category_id=category_id):
        raise HTTPException(404)
    return RedirectResponse(f"/integrations/{integration.id}/categories", status_code=303)


@router.post("/integrations/{integration_id}/categories/{category_id}/move")
def move_category(
    request: Request,
    integration_id: str,
    category_id: str,
    caller: CallerDep,
    db: DbSession,
    csrf_token: Token = "",
    direction: Token = "",
) -> Response:
    check_csrf(request, csrf_token)
    caller.require_manager()
    integration = load_integration(db, caller, integration_id)
    if (redirect := _finished(integration, caller)) is not None:
        return redirect
    if direction not in ("up", "down"):
        raise HTTPException(400, "Move a category up or down.")
    offset = -1 if direction == "up" else 1
    if not service.move_category(
        db=db, integration=integration, category_id=category_id, offset=offset
    ):
        raise HTTPException(404)
    return RedirectResponse(f"/integrations/{integration.id}/categories", status_code=303)


@router.post("/integrations/{integration_id}/categories/colours")
def create_colours(
    request: Request,
    integration_id: str,
    caller: CallerDep,
    db: DbSession,
    csrf_token: Token = "",
    action: Token = "",
) -> Response:
    """Create the missing master categories with their colours, or (``action=align``) give the
    ones that exist with another colour Postroom's colour (needs MailboxSettings.ReadWrite)."""
    check_csrf(request, csrf_token)
    caller.require_manager()
    integration = load_integration(db, caller, integration_id)
    if (redirect := _finished(integration, caller)) is not None:
        return redirect
    base = f"/integrations/{integration.id}/categories"
    if not _can_write_colours(integration):
        return _categories_page(
            request,
            db,
            caller,
            integration,
            errors=[
                "This connection may not change Outlook's categories (it lacks "
                "MailboxSettings.ReadWrite). Add the colours in Outlook as described below, or "
                "reconnect with “Manage category colours in Outlook”."
            ],
            status_code=403,
        )
    mailboxes = service.mailboxes(db=db, integration=integration)
    categories = service.categories(db=db, integration=integration)
    align = action == "align"
    made: list[tuple[str, str, str]] = []
    try:
        created, problems = graph_call(
            request,
            db,
            integration,
            lambda c: (
                _align_colours(c, mailboxes, categories)
                if align
                else _create_colours(c, mailboxes, categories, made)
            ),
        )
    except TokenFailure:
        # The categories created before the token failed are Postroom's all the same: recorded,
        # so a disconnect offers to remove them.
        for mailbox_row_id, name, graph_id in made:
            record_created_category(db, mailbox_row_id, name, graph_id)
        db.commit()
        return RedirectResponse(base, status_code=303)
    except GraphError as exc:
        problems, created = [_graph_words(exc)], 0
    for mailbox_row_id, name, graph_id in made:
        record_created_category(db, mailbox_row_id, name, graph_id)
    db.commit()
    if problems:
        done = f"Changed {created}." if align else f"Created {created} with colours."
        return _categories_page(
            request,
            db,
            caller,
            integration,
            errors=[
                "Some colours could not be changed:"
                if align
                else "Some colours could not be created:",
                *problems,
            ],
            notice=done if created else None,
            status_code=502,
        )
    answer = {"aligned" if align else "coloured": created}
    return RedirectResponse(f"{base}?{urlencode(answer)}", status_code=303)
