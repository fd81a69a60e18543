"""The Model page: what the learned classifier knows, how well it agrees with people — overall,
per category it decided, and as a confusion matrix drawn as SVG
(:mod:`postroom.learning.confusion_svg`) — and its settings (threshold, needs-review
category), with Retrain and Reset for managers.

Thin views (STYLE rule 8): parse, call :mod:`postroom.learning.service`, render. Everything
shown is counts and category names; no email text.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from postroom.classify.summary import TOO_FEW, ModelSummary
from postroom.integrations.web import load_integration
from postroom.learning import confusion_svg
from postroom.learning import service as learning
from postroom.web.deps import DbSession, current_caller, render
from postroom.web.security import Caller, check_csrf

router = APIRouter()
log = logging.getLogger(__name__)
CallerDep = Annotated[Caller, Depends(current_caller)]

NOTICES = {
    "settings": "Saved the review settings.",
    "retrained": "Retraining the model on your examples and every correction, in the background.",
    "reset": "Resetting the model in the background: corrections and learned decisions are "
    "forgotten, your examples are kept.",
}


def defer_refit_from_thread(request: Request, integration_id: str) -> None:
    """Queue the refit that :func:`~postroom.learning.service.request_refit` asked for (from a
    request's worker thread, after the commit; should the queue miss it, the reconcile
    queues it within a minute)."""
    from anyio import from_thread

    from postroom.sync.jobs import defer_refit

    try:
        from_thread.run(defer_refit, request.app.state.runtime, integration_id)
    except Exception:  # the request is saved; the reconcile queues the refit instead
        log.warning("integration %s: could not queue the refit now", integration_id, exc_info=True)


RECIPES = {
    "none": "hashed word and character n-grams",
    "e5": "n-grams, then the multilingual e5 encoder for the emails they are unsure of",
    "e5+minilm": "n-grams and WordLlama, then the e5 and MiniLM encoders and a vote of the "
    "nearest examples for the emails they are unsure of",
}
"""What each ``POSTROOM_CLASSIFIER_EMBEDDER`` recipe reads, in words (the Model page)."""

OPEN_SET_WORDS = {
    "score": "when it scores lower for its nearest category than nearly all of that "
    "category's own examples",
    "nearest": "when no example of its nearest category is about as close to it as those "
    "examples are to one another",
}
"""How each ``POSTROOM_CLASSIFIER_OPEN_SET`` check tells mail that fits no category, in words."""


OFF_WHY = (
    "The learned model is off: it needs examples for at least two categories. "
    "Corrections are kept and used once it turns on."
)
"""Why the model is off, in the words the Model page and the category editor use."""


def status_words(status: learning.ModelStatus) -> str | None:
    """What to say about a model that does not decide (None when it does)."""
    if status.on:
        return None
    if status.turns_on:
        names = " and ".join(", ".join(status.with_examples).rsplit(", ", 1))
        when = (
            "once the rebuild in the background is done"
            if status.rebuilding
            else "at the next Retrain"
        )
        return f"The learned model is off for now: {names} have examples, so it turns on {when}."
    if status.with_examples:
        return f"{OFF_WHY} So far only {status.with_examples[0]} has examples."
    return f"{OFF_WHY} No category has examples yet."


def percent(part: int, whole: int) -> str:
    """``92%``, rounded, but never 100% while one was changed nor 0% while one was kept."""
    share = round(100 * part / whole)
    if part < whole:
        share = min(share, 99)
    if part > 0:
        share = max(share, 1)
    return f"{share}%"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _accuracy(summary: ModelSummary) -> dict[str, Any]:
    """The page's accuracy figures: the overall share, a row per category the model decided
    (its share, or too few to tell, and the counts it rests on), and the confusion matrix."""
    rows = []
    for c in summary.by_category:
        rests_on = f"{_plural(c.decided, 'decision')}, {c.corrected} corrected"
        if c.to_none:
            rests_on += f" ({c.to_none} to none of these)"
        rows.append(
            {
                "category": confusion_svg.NO_CATEGORY_LABEL if c.category is None else c.category,
                "percent": percent(c.kept, c.decided) if c.accuracy is not None else None,
                "rests_on": rests_on,
                "decided": c.decided,
                "kept": c.kept,
                "corrected": c.corrected,
            }
        )
    matrix = confusion_svg.build(summary.outcome_counts)
    kept = sum(c.kept for c in summary.by_category)  # (the same outcomes as recent_accuracy)
    return {
        "overall": percent(kept, summary.recent_outcomes) if summary.recent_outcomes else None,
        "per_category": rows,
        "too_few": TOO_FEW,
        "matrix": matrix,
        "matrix_svg": confusion_svg.confusion_svg(matrix),
        "drawn_top": confusion_svg.TOP,
    }


def _learning_settings(request: Request, db: Session, integration_id: str) -> dict[str, Any]:
    settings = request.app.state.settings
    loaded = learning.load_model(db, integration_id)
    built = (loaded.classifier.config.slow_embedder or "none") if loaded else None
    built_open_set = (
        ("nearest" if loaded.classifier.config.nearest_quantile > 0 else "score")
        if loaded
        else None
    )
    status = learning.model_status(db, integration_id)
    return {
        "open_set_words": OPEN_SET_WORDS.get(built_open_set) if built_open_set else None,
        "open_set_configured": OPEN_SET_WORDS[settings.classifier_open_set]
        if built_open_set and built_open_set != settings.classifier_open_set
        else None,
        "active": loaded is not None,
        "off_words": status_words(status),
        "turns_on": status.turns_on,
        "built_with": RECIPES.get(built) if built else None,
        "configured": RECIPES[settings.classifier_embedder]
        if built and built != settings.classifier_embedder
        else None,
        "learn_decisions": settings.learn_from_decisions,
        "learn_minutes": max(1, round(settings.learn_after_seconds / 60)),
        "learn_minimum": settings.learn_minimum_examples,
    }


@router.get("/integrations/{integration_id}/model")
def model_page(request: Request, integration_id: str, caller: CallerDep, db: DbSession) -> Response:
    integration = load_integration(db, caller, integration_id)
    summary, state = learning.model_summary(db, integration.id)
    done = request.query_params.get("done") or ""
    return render(
        request,
        "integrations/model.html",
        nav="integrations",
        item=integration,
        summary=summary,
        state=state,
        notice=NOTICES.get(done),
        errors=[],
        **_accuracy(summary),
        **_learning_settings(request, db, integration.id),
    )


@router.post("/integrations/{integration_id}/model")
def model_submit(
    request: Request,
    integration_id: str,
    caller: CallerDep,
    db: DbSession,
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    action: Annotated[str, Form(max_length=20)] = "settings",
    threshold: Annotated[str, Form(max_length=20)] = "",
    needs_review: Annotated[str, Form(max_length=255)] = "",
) -> Response:
    check_csrf(request, csrf_token)
    caller.require_manager()
    integration = load_integration(db, caller, integration_id)
    if action in ("retrain", "reset"):
        learning.request_refit(db, integration_id=integration.id, reset=action == "reset")
        db.commit()
        defer_refit_from_thread(request, integration.id)
        done = "retrained" if action == "retrain" else "reset"
    elif action == "settings":
        try:
            value = float(threshold)
        except ValueError:
            value = -1.0
        if not 0.0 <= value <= 1.0:
            summary, state = learning.model_summary(db, integration.id)
            return render(
                request,
                "integrations/model.html",
                400,
                nav="integrations",
                item=integration,
                summary=summary,
                state=state,
                notice=None,
                errors=["The threshold is a number between 0 and 1, such as 0.6."],
                **_accuracy(summary),
                **_learning_settings(request, db, integration.id),
            )
        learning.set_review_settings(
            db,
            integration_id=integration.id,
            threshold=value,
            needs_review=needs_review.strip() or None,
        )
        done = "settings"
    else:
        raise HTTPException(400)
    return RedirectResponse(f"/integrations/{integration.id}/model?done={done}", status_code=303)
