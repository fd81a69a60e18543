"""The setup wizard (five steps: account, what to sync, processing, existing mail, review) and
what can change after Finish without touching categories: mailboxes and folders, and applying
the rules to existing mail (resumable, exactly once).
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from postroom.graph import AccessDenied, GraphClient, GraphError, NotFound
from postroom.integrations import service, wizard
from postroom.integrations.graph_access import TokenFailure
from postroom.integrations.models import Integration, Mailbox
from postroom.integrations.oauth import (
    GRAPH,
)
from postroom.integrations.views import folder_name
from postroom.integrations.web import _flag, graph_call, load_integration
from postroom.web.deps import DbSession, current_caller, render
from postroom.web.security import Caller, check_csrf

router = APIRouter()
log = logging.getLogger("postroom.integrations")

Field = Annotated[str, Form(max_length=5000)]
FieldList = Annotated[list[str], Form(max_length=5000)]
HIDDEN_FOLDERS = {
    "deleteditems",
    "recoverableitemsdeletions",
    "drafts",
    "outbox",
    "sentitems",
    "conversationhistory",
}
# ---------------------------------------------------------------------- setup wizard
# After Finish the wizard is closed; each of its steps has a page of its own instead, which
# changes that part only (never the categories, rules and examples behind another).
AFTER_FINISH = {2: "mailboxes-and-folders", 3: "categories", 4: "existing-mail"}


def _after_finish(integration: Integration, step: int) -> Response:
    page = AFTER_FINISH.get(step)
    target = f"/integrations/{integration.id}" + (f"/{page}" if page else "")
    return RedirectResponse(target, status_code=303)


@router.get("/integrations/{integration_id}/setup")
def setupresume(
    integration_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
) -> Response:
    integration = load_integration(db, caller, integration_id)
    if integration.finished_at is not None:
        return _after_finish(integration, 0)
    return RedirectResponse(
        f"/integrations/{integration.id}/setup/{integration.wizard_step}", status_code=303
    )


async def _account_facts(client: GraphClient, integration: Integration) -> dict[str, Any]:
    if integration.kind == "organization":
        users = await client.users()
        return {"tenant_id": integration.tenant_id, "mailbox_count": len(users)}
    me = await client.me()
    inbox = await client.folder("me", "inbox")
    return {
        "id": me["id"],
        "name": me.get("displayName") or "",
        "address": me.get("mail") or me.get("userPrincipalName") or "",
        "inbox_total": inbox.get("totalItemCount"),
    }


async def _sync_choices(client: GraphClient, integration: Integration) -> dict[str, Any]:
    if integration.kind == "organization":
        users = await client.users()
        primary = users[0]["id"] if users else None
        mailboxes = [
            {
                "id": u["id"],
                "address": u.get("mail") or u.get("userPrincipalName"),
                "name": u.get("displayName") or "",
            }
            for u in users
            if u.get("mail") or u.get("userPrincipalName")
        ]
    else:
        primary = "me"
        mailboxes = []
    folders: list[dict[str, str]] = [{"key": "inbox", "name": "Inbox"}]
    listed = primary is not None
    if primary is not None:
        try:
            for f in await client.child_folders(primary):
                name = str(f.get("displayName") or "")
                if _offerable(name):
                    folders.append({"key": name, "name": name})
        except GraphError:
            listed = False  # the inbox is always offered; the others are not known just now
    return {"mailboxes": mailboxes, "folders": folders, "listed": listed}


def _offerable(name: str) -> bool:
    """A folder beside the inbox that may be synced (never Deleted Items, Drafts, Sent…)."""
    key = name.lower().replace(" ", "")
    return bool(name) and len(name) <= 255 and key not in HIDDEN_FOLDERS and key != "inbox"


def _with_chosen(
    choices: dict[str, Any], chosen: list[str], form: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """The folder choices to show, plus any folder chosen or offered on the form that came
    back (when Microsoft's listing fails on the way back, or a folder was renamed): a form
    never silently drops an option. Shown only: a submitted folder is checked against
    Microsoft's listing again (:func:`_parse_sync`)."""
    folders = list(choices.get("folders") or [{"key": "inbox", "name": "Inbox"}])
    known = {f["key"] for f in folders}
    for key in list(chosen) + list((form or {}).get("offered") or []):
        if key not in known and _offerable(key):
            folders.append({"key": key, "name": key})
            known.add(key)
    return {"mailboxes": [], **choices, "folders": folders}


def _render_step(
    request: Request,
    integration: Integration,
    step: int,
    *,
    errors: list[str] | None = None,
    fields: dict[str, list[str]] | None = None,
    confirm: bool = False,
    facts: dict[str, Any] | None = None,
    choices: dict[str, Any] | None = None,
    form: dict[str, list[str]] | None = None,
    status_code: int = 200,
) -> Response:
    data = integration.wizard_data or {}
    options = integration.options or {}
    values = wizard.step_values(step, data, form)
    later = wizard.later_steps_done(integration.wizard_step, step)
    if step == 2:
        choices = _with_chosen(choices or {}, values["folders"], form)
    return render(
        request,
        "integrations/setup.html",
        status_code,
        nav="integrations",
        item=integration,
        step=step,
        titles=wizard.TITLES,
        data=data,
        values=values,
        errors=errors or [],
        fields=fields or {},
        confirm=confirm,
        later=later,
        later_names=", ".join(f"{n} ({wizard.TITLES[n]})" for n in later),
        facts=facts or {},
        choices=choices or {},
        colours=wizard.COLOURS,
        colour_names=wizard.COLOUR_NAMES,
        forwarding_allowed=_forwarding_allowed(integration),
        manage_colours=integration.kind == "organization" or bool(options.get("manage_colours")),
        shared_access=bool(options.get("shared_access")),
        today=datetime.now(UTC).date().isoformat(),
    )


def _forwarding_allowed(integration: Integration) -> bool:
    if integration.kind == "organization":
        return True
    return f"{GRAPH}/Mail.Send" in (integration.granted_scopes or [])


@router.get("/integrations/{integration_id}/setup/{step}")
def setup_step(
    request: Request,
    integration_id: str,
    step: int,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
) -> Response:
    integration = load_integration(db, caller, integration_id)
    caller.require_manager()
    if integration.finished_at is not None:
        return _after_finish(integration, step)
    if step < 1 or step > integration.wizard_step or step > 5:
        return RedirectResponse(
            f"/integrations/{integration.id}/setup/{integration.wizard_step}", status_code=303
        )
    facts: dict[str, Any] = {}
    choices: dict[str, Any] = {}
    try:
        if step == 1:
            facts = graph_call(request, db, integration, lambda c: _account_facts(c, integration))
        elif step == 2:
            choices = graph_call(request, db, integration, lambda c: _sync_choices(c, integration))
    except TokenFailure:
        return RedirectResponse(f"/integrations/{integration.id}", status_code=303)
    except GraphError as exc:
        return _render_step(
            request,
            integration,
            step,
            status_code=502,
            errors=[
                f"Microsoft did not answer as expected ({exc.code or exc.status}). Reload to retry."
            ],
        )
    return _render_step(request, integration, step, facts=facts, choices=choices)


async def _verify_mailboxes(client: GraphClient, candidates: list[dict[str, str]]) -> list[str]:
    """Read each mailbox's inbox: the proof that Postroom can work in it."""
    problems = []
    for box in candidates:
        try:
            await client.folder(box["id"], "inbox")
        except AccessDenied as exc:
            if exc.by_policy:
                problems.append(
                    f"{box['address']}: access denied by your organization's policy "
                    "(an Exchange application access policy or RBAC for "
                    "Applications excludes it)."
                )
            else:
                problems.append(
                    f"{box['address']}: no access. The signed-in account needs Full "
                    "Access to this mailbox in Exchange."
                )
        except NotFound:
            problems.append(f"{box['address']}: no such mailbox.")
        except GraphError as exc:
            problems.append(f"{box['address']}: Microsoft answered {exc.code or exc.status}.")
    return problems


@router.post("/integrations/{integration_id}/setup/{step}")
async def setup_submit(
    request: Request,
    integration_id: str,
    step: int,
    caller: Annotated[Caller, Depends(current_caller)],
) -> Response:
    form = await request.form()
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(_setup_submit, request, integration_id, step, caller, form)


def _setup_submit(
    request: Request, integration_id: str, step: int, caller: Caller, form: Any
) -> Response:
    check_csrf(request, str(form.get("csrf_token") or ""))
    caller.require_manager()
    database = request.app.state.db
    with database.session() as db:
        integration = load_integration(db, caller, integration_id)
        if step < 1 or step > 5:
            raise HTTPException(404)
        if integration.finished_at is not None:
            return _after_finish(integration, step)  # changed on its own page, not here
        confirmed = form.get("confirm_reset") == "yes"
        try:
            value = _parse_step(request, db, integration, step, form)
            if step == 5:
                if integration.wizard_step < 5:
                    raise wizard.StepError(["Finish the earlier steps first."])
                start = str(form.get("start") or "live")
                if start not in ("live", "suggest"):
                    raise wizard.StepError(["Choose how Postroom starts."]).under("start")
                if start == "suggest":  # Suggest only: decide and record, touch nothing
                    integration.options = {
                        **(integration.options or {}),
                        "suggest_only": True,
                        "suggested_ever": True,
                        "suggest_since": datetime.now(UTC).isoformat(),
                    }
                service.finish_setup(db=db, integration=integration)
                from postroom.sync.folder_syncs import apply_folder_syncs

                apply_folder_syncs(db, integration.id)
                db.commit()
                # Subscriptions (or polling) and the first sync happen in the worker; existing
                # mail waits until the person starts it (their rules and examples come first).
                from anyio import from_thread

                from postroom.sync.jobs import defer_setup

                from_thread.run(defer_setup, request.app.state.runtime, integration.id)
                return RedirectResponse(f"/integrations/{integration.id}", status_code=303)
            data, next_step, needs_confirmation = wizard.apply_step(
                dict(integration.wizard_data or {}),
                integration.wizard_step,
                step,
                value,
                confirmed=confirmed,
            )
        except TokenFailure:
            return RedirectResponse(f"/integrations/{integration.id}", status_code=303)
        except wizard.StepError as exc:
            db.rollback()
            return _render_step(
                request,
                integration,
                step,
                errors=exc.errors,
                fields=exc.fields,
                form=_form_lists(form),
                status_code=400,
                choices=_choices_after_error(request, db, integration, step),
            )
        if needs_confirmation:
            return _render_step(
                request,
                integration,
                step,
                confirm=True,
                form=_form_lists(form),
                status_code=409,
                choices=_choices_after_error(request, db, integration, step),
            )
        service.save_wizard(db=db, integration=integration, data=data, step=next_step)
        return RedirectResponse(
            f"/integrations/{integration.id}/setup/{next_step}", status_code=303
        )


def _form_lists(form: Any) -> dict[str, list[str]]:
    """Every field of a submitted form with all its values, in order (what the person typed,
    to show again)."""
    return {key: [str(v) for v in form.getlist(key)] for key in form if key != "csrf_token"}


def _choices_after_error(
    request: Request, db: Session, integration: Integration, step: int
) -> dict[str, Any]:
    if step != 2:
        return {}
    try:
        result: dict[str, Any] = graph_call(
            request, db, integration, lambda c: _sync_choices(c, integration)
        )
        return result
    except (TokenFailure, GraphError):
        return {"mailboxes": [], "folders": [{"key": "inbox", "name": "Inbox"}]}


def _parse_step(
    request: Request, db: Session, integration: Integration, step: int, form: Any
) -> dict[str, Any]:
    if step == 1:
        facts = graph_call(request, db, integration, lambda c: _account_facts(c, integration))
        return {"confirmed": True, **{k: v for k, v in facts.items() if k != "inbox_total"}}
    if step == 2:
        return _parse_sync(request, db, integration, form)
    if step == 3:
        categories = wizard.parse_categories(
            [str(v) for v in form.getlist("name")],
            [str(v) for v in form.getlist("color")],
            [str(v) for v in form.getlist("folder")],
            [str(v) for v in form.getlist("forward_to")],
            forwarding_allowed=_forwarding_allowed(integration),
        )
        return {"categories": [c.to_dict() for c in categories]}
    if step == 4:
        return wizard.parse_backfill(
            str(form.get("mode") or ""),
            str(form.get("since") or ""),
            _flag(str(form.get("forward_history") or "")),
            today=datetime.now(UTC).date(),
        )
    return {}


def _parse_sync(
    request: Request, db: Session, integration: Integration, form: Any
) -> dict[str, Any]:
    """Mailboxes and folders (wizard step 2, or its page after Finish), each problem filed
    under the field it concerns."""
    choices = graph_call(request, db, integration, lambda c: _sync_choices(c, integration))
    chosen_keys = [k for k in form.getlist("folders") if isinstance(k, str)]
    folder_names = {f["key"]: f["name"] for f in choices["folders"]}
    # a folder in use that Microsoft did not list this time stays choosable
    for f in (integration.wizard_data or {}).get("sync", {}).get("folders", []):
        folder_names.setdefault(str(f.get("key")), str(f.get("name") or f.get("key")))
    unknown = [k for k in chosen_keys if k not in folder_names]
    if unknown and not choices.get("listed", True):
        raise wizard.StepError(
            [
                "Microsoft did not list your folders just now, so Postroom cannot check "
                f"“{unknown[0][:80]}”. Try again in a moment."
            ]
        ).under("folders")
    folders = [{"key": k, "name": folder_names[k]} for k in chosen_keys if k in folder_names]
    if not folders:
        raise wizard.StepError(["Choose at least one folder (Inbox is the usual choice)."]).under(
            "folders"
        )
    selected: list[dict[str, str]] = []
    field = "mailboxes"
    if integration.kind == "organization":
        by_id = {m["id"]: m for m in choices["mailboxes"]}
        for key in form.getlist("mailboxes"):
            if isinstance(key, str) and key in by_id:
                selected.append({**by_id[key], "kind": "tenant"})
        if not selected:
            raise wizard.StepError(["Choose at least one mailbox to process."]).under(field)
    else:
        own = integration.wizard_data.get("account", {})
        if _flag(str(form.get("own") or "")) and own.get("id"):
            selected.append(
                {
                    "id": own["id"],
                    "address": own.get("address", ""),
                    "name": own.get("name", ""),
                    "kind": "own",
                }
            )
        raw_shared = str(form.get("shared") or "")
        if raw_shared.strip():
            field = "shared"
            if not (integration.options or {}).get("shared_access"):
                raise wizard.StepError(
                    [
                        "This connection was made without access to shared mailboxes. Reconnect "
                        "with “Allow access to shared mailboxes” switched on to add them."
                    ]
                ).under(field)
            try:
                addresses = wizard.parse_emails(raw_shared)
            except wizard.StepError as exc:
                raise exc.under(field) from None
            selected += [{"id": a, "address": a, "name": "", "kind": "shared"} for a in addresses]
        if not selected:
            raise wizard.StepError(["Choose at least one mailbox to process."]).under("mailboxes")
    taken = service.mailboxes_taken(db=db, integration=integration, wanted=selected)
    if taken:
        raise wizard.StepError(taken).under(field)
    to_check = [m for m in selected if m["kind"] != "own"]
    problems = graph_call(request, db, integration, lambda c: _verify_mailboxes(c, to_check))
    if problems:
        raise wizard.StepError(problems).under(field)
    return {"mailboxes": selected, "folders": folders}


# ---------------------------------------------------------------------- after Finish
# What the wizard's steps 2 and 4 set, each on a page of its own: changing one never touches
# the categories, their rules or their examples.
def _finished(db: Session, caller: Caller, integration_id: str) -> Integration | Response:
    integration = load_integration(db, caller, integration_id)
    caller.require_manager()
    if integration.finished_at is None:
        return RedirectResponse(f"/integrations/{integration.id}/setup", status_code=303)
    return integration


def _render_sync_page(
    request: Request,
    integration: Integration,
    *,
    mailboxes: list[Mailbox],
    choices: dict[str, Any],
    form: dict[str, list[str]] | None = None,
    errors: list[str] | None = None,
    fields: dict[str, list[str]] | None = None,
    status_code: int = 200,
) -> Response:
    saved = {
        "mailboxes": [
            {"id": m.graph_user_id, "address": m.address, "kind": m.kind} for m in mailboxes
        ],
        "folders": [dict(f) for f in (mailboxes[0].folders if mailboxes else [])],
    }
    values = wizard.sync_values(saved, form)
    return render(
        request,
        "integrations/mailboxes_and_folders.html",
        status_code,
        nav="integrations",
        item=integration,
        values=values,
        choices=_with_chosen(choices, values["folders"], form),
        errors=errors or [],
        fields=fields or {},
        own_address=(integration.wizard_data or {}).get("account", {}).get("address", ""),
        shared_access=bool((integration.options or {}).get("shared_access")),
    )


@router.get("/integrations/{integration_id}/mailboxes-and-folders")
def mailboxes_and_folders_page(
    request: Request,
    integration_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
) -> Response:
    found = _finished(db, caller, integration_id)
    if isinstance(found, Response):
        return found
    integration = found
    mailboxes = service.mailboxes(db=db, integration=integration)
    try:
        choices = graph_call(request, db, integration, lambda c: _sync_choices(c, integration))
    except TokenFailure:
        return RedirectResponse(f"/integrations/{integration.id}", status_code=303)
    except GraphError as exc:
        return _render_sync_page(
            request,
            integration,
            mailboxes=mailboxes,
            choices={"mailboxes": [], "folders": [{"key": "inbox", "name": "Inbox"}]},
            errors=[
                f"Microsoft did not answer as expected ({exc.code or exc.status}). Reload to retry."
            ],
            status_code=502,
        )
    return _render_sync_page(request, integration, mailboxes=mailboxes, choices=choices)


@router.post("/integrations/{integration_id}/mailboxes-and-folders")
async def mailboxes_and_folders_submit(
    request: Request,
    integration_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
) -> Response:
    form = await request.form()
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(
        _save_mailboxes_and_folders, request, integration_id, caller, form
    )


def _save_mailboxes_and_folders(
    request: Request, integration_id: str, caller: Caller, form: Any
) -> Response:
    """Change which mailboxes and folders are processed. Mailboxes and folders taken out stop
    (nothing is deleted: not in Outlook, not their history); new ones get their subscriptions
    from the setup job and start with new mail. Categories, rules and examples stay as they
    are."""
    check_csrf(request, str(form.get("csrf_token") or ""))
    from postroom.sync.backfill import settle_backfill_status
    from postroom.sync.folder_syncs import apply_folder_syncs

    with request.app.state.db.session() as db:
        found = _finished(db, caller, integration_id)
        if isinstance(found, Response):
            return found
        integration = found
        try:
            chosen = _parse_sync(request, db, integration, form)
        except TokenFailure:
            return RedirectResponse(f"/integrations/{integration.id}", status_code=303)
        except wizard.StepError as exc:
            db.rollback()
            choices = _choices_after_error(request, db, integration, 2)
            return _render_sync_page(
                request,
                integration,
                mailboxes=service.mailboxes(db=db, integration=integration),
                choices=choices,
                form=_form_lists(form),
                errors=exc.errors,
                fields=exc.fields,
                status_code=400,
            )
        service.update_sync_choices(
            db=db, integration=integration, chosen=chosen["mailboxes"], folders=chosen["folders"]
        )
        data = dict(integration.wizard_data or {})
        data["sync"] = chosen
        integration.wizard_data = data
        apply_folder_syncs(db, integration.id)
        settle_backfill_status(db, integration.id)
        db.commit()
        from anyio import from_thread

        from postroom.sync.jobs import defer_setup

        try:
            from_thread.run(defer_setup, request.app.state.runtime, integration.id)
        except Exception:  # saved anyway: the reconcile sweep syncs the folders within minutes
            log.warning("integration %s: could not queue the setup now", integration.id)
        return RedirectResponse(f"/integrations/{integration.id}", status_code=303)


def _render_existing_mail(
    request: Request,
    db: Session,
    integration: Integration,
    *,
    form: dict[str, Any] | None = None,
    errors: list[str] | None = None,
    fields: dict[str, list[str]] | None = None,
    status_code: int = 200,
) -> Response:
    from postroom.sync.backfill import backfill_pending, folder_progress

    today = datetime.now(UTC).date()
    planned = (integration.wizard_data or {}).get("backfill") or {}
    values = form or {
        "since": planned.get("since") or (today - timedelta(days=30)).isoformat(),
        "forward_history": bool(planned.get("forward_history")),
    }
    rows = [
        row for row in folder_progress(db, integration.id) if row[0].active and not row[0].watch
    ]
    boxes = {b.id: b for b in service.mailboxes(db=db, integration=integration)}
    return render(
        request,
        "integrations/existing_mail.html",
        status_code,
        nav="integrations",
        item=integration,
        values=values,
        errors=errors or [],
        fields=fields or {},
        folders=rows,
        folder_names={
            fs.id: folder_name(fs.folder_key, boxes.get(fs.mailbox_id)) for fs, _, _ in rows
        },
        running=backfill_pending(db, integration.id),
        rules_ready=any(c.rules for c in service.categories(db=db, integration=integration)),
        today=today.isoformat(),
    )


@router.get("/integrations/{integration_id}/existing-mail")
def existing_mail_page(
    request: Request,
    integration_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
) -> Response:
    found = _finished(db, caller, integration_id)
    if isinstance(found, Response):
        return found
    return _render_existing_mail(request, db, found)


@router.post("/integrations/{integration_id}/existing-mail")
def start_existing_mail(
    request: Request,
    integration_id: str,
    caller: Annotated[Caller, Depends(current_caller)],
    db: DbSession,
    csrf_token: Field = "",
    since: Field = "",
    forward_history: Field = "",
) -> Response:
    """Apply the categories to mail already in the folders, since a date: resumable (a cursor
    per folder), with progress, and exactly once (the ledger), however often it is run."""
    check_csrf(request, csrf_token)
    found = _finished(db, caller, integration_id)
    if isinstance(found, Response):
        return found
    integration = found
    from postroom.sync.backfill import BackfillRunning, start_backfill

    typed = {"since": since, "forward_history": _flag(forward_history)}
    try:
        plan = wizard.parse_backfill(
            "since", since, _flag(forward_history), today=datetime.now(UTC).date()
        )
        day = date.fromisoformat(plan["since"])
        queued = start_backfill(db, integration.id, datetime.combine(day, datetime.min.time(), UTC))
    except wizard.StepError as exc:
        return _render_existing_mail(
            request,
            db,
            integration,
            form=typed,
            errors=exc.errors,
            fields=exc.fields,
            status_code=400,
        )
    except BackfillRunning:
        message = (
            "Existing mail is still being processed. Start the next run when this one is done."
        )
        return _render_existing_mail(
            request, db, integration, form=typed, errors=[message], status_code=409
        )
    service.record_existing_mail_run(
        db=db, integration=integration, since=day, forward_history=plan["forward_history"]
    )
    db.commit()
    from anyio import from_thread

    from postroom.sync.jobs import defer_backfill

    try:
        for sync_id, mailbox_id in queued:
            from_thread.run(defer_backfill, request.app.state.runtime, sync_id, mailbox_id)
    except Exception:  # saved anyway: the reconcile queues unfinished backfills each minute
        log.warning("integration %s: could not queue existing mail now", integration.id)
    return RedirectResponse(f"/integrations/{integration.id}/existing-mail", status_code=303)
