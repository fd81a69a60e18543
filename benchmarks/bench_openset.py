"""Open set: mail that fits none of the configured categories must not be filed.

A real mailbox is configured for a few categories and receives much else. Two set-ups, each
with the product's default recipe (``ClassifierConfig()``: hashed n-grams, linear SVM) and its
default threshold (:data:`~postroom.learning.models.DEFAULT_THRESHOLD`):

* **20 Newsgroups, 10 of 20 configured.** Which 10: a seeded permutation, draws 0, 1, 2; the
  figures are the mean of the three draws. The model is trained on the configured groups'
  whole train split; the test split of all 20 groups arrives.
* **BANKING77, 40 of 77 intents configured** (seeded draws 0, 1, 2 as well), trained on those
  intents' train split plus each intent's name as its description (as the product trains on
  what a person types in the editor); the test split of all 77 arrives.

An email is *filed* when :func:`postroom.processing.decide.decide` would file it: the model's
category, confidence at or above the threshold, and (with the open-set method) the email fits
that category (``Prediction.fits``, see ``docs/decisions/0010-open-set.md``).

BANKING77 is measured a second time with the ``e5+minilm`` recipe and the nearest-example
open-set check (``POSTROOM_CLASSIFIER_OPEN_SET=nearest``, ``ClassifierConfig.nearest_quantile``,
decision 0016): keys ``classify.banking77_pair_``.

Keys (``classify.`` for 20 Newsgroups, ``classify.banking77_`` for BANKING77):

* ``open_unconfigured_filed_share`` — share of the unconfigured groups' mail that is filed
  (target ≤ 0.10); ``open_unconfigured_filed_share_closed`` the same model without the
  open-set check (``_closed``: no check at all), in the same run.
* ``open_configured_accuracy`` — share of the configured groups' mail filed into its own
  category; ``open_configured_accuracy_closed`` the same model without the check (target: at
  most 1.5 points lower with it).
* ``open_fits_none_share`` — share of all arriving mail the check leaves alone.

The stricter settings of ``open_set_quantile`` are read off the same predictions (a
prediction carries its ``fit``) and logged, not written: the default was chosen on
validation splits of the train split (``docs/research/open-set.md``), never on these.

Run alone: ``python -m benchmarks.bench_openset`` (or ``20ng`` / ``banking77``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from benchmarks.bench_classify import (
    BANKING77,
    TWENTY_NEWSGROUPS,
    Labelled,
    descriptions,
    load_20ng,
    load_banking77,
    log,
    make_examples,
)
from postroom.classify import NONE_OF_THESE, Classifier, ClassifierConfig, Example, Prediction

DRAWS = (0, 1, 2)
LOGGED_QUANTILES = (0.0, 0.05, 0.1, 0.2, 0.3)
LOGGED_NEAREST_BARS = (0.01, 0.02, 0.03, 0.05, 0.1, 0.2)


def filed(prediction: Prediction, threshold: float, quantile: float | None) -> str | None:
    """The category ``decide`` would file the email into (None: not filed). ``quantile``
    None: the model's own open-set setting; 0: the check off."""
    fits = (
        prediction.fits
        if quantile is None
        else prediction.fit is None or prediction.fit >= quantile
    )
    return filed_closed(prediction, threshold) if fits else None


def filed_closed(prediction: Prediction, threshold: float) -> str | None:
    """The category ``decide`` would file the email into without any open-set check."""
    if prediction.category in (None, NONE_OF_THESE) or prediction.confidence < threshold:
        return None
    return prediction.category


def open_set_figures(
    classifier: Classifier,
    inside: Sequence[Example],
    outside: Sequence[Example],
    threshold: float,
) -> dict[str, float]:
    """The figures of one draw (see the module docstring), keys without prefix."""
    inside_predictions = classifier.predict_examples(inside)
    outside_predictions = classifier.predict_examples(outside)
    out: dict[str, float] = {}
    for suffix, closed in (("", False), ("_closed", True)):

        def chosen(p: Prediction, closed: bool = closed) -> str | None:
            return filed_closed(p, threshold) if closed else filed(p, threshold, None)

        right = [chosen(p) == e.category for p, e in zip(inside_predictions, inside, strict=True)]
        wrong = [chosen(p) is not None for p in outside_predictions]
        out[f"open_configured_accuracy{suffix}"] = float(np.mean(right))
        out[f"open_unconfigured_filed_share{suffix}"] = float(np.mean(wrong))
    every = [*inside_predictions, *outside_predictions]
    out["open_fits_none_share"] = float(np.mean([not p.fits for p in every]))
    for quantile in LOGGED_QUANTILES:
        right = [
            filed(p, threshold, quantile) == e.category
            for p, e in zip(inside_predictions, inside, strict=True)
        ]
        wrong = [filed(p, threshold, quantile) is not None for p in outside_predictions]
        log(
            f"   open_set_quantile {quantile:.2f}: configured filed right "
            f"{np.mean(right):.3f}, unconfigured filed {np.mean(wrong):.3f}"
        )
    if any(p.nearest_fit is not None for p in every):
        for bar in LOGGED_NEAREST_BARS:

            def near(p: Prediction, bar: float = bar) -> str | None:
                category = filed_closed(p, threshold)
                return None if p.nearest_fit is not None and p.nearest_fit < bar else category

            right = [near(p) == e.category for p, e in zip(inside_predictions, inside, strict=True)]
            wrong = [near(p) is not None for p in outside_predictions]
            log(
                f"   nearest_quantile {bar:.2f} alone: configured filed right "
                f"{np.mean(right):.3f}, unconfigured filed {np.mean(wrong):.3f}"
            )
    return out


def nearest_recipe(**overrides: Any) -> ClassifierConfig:
    """``POSTROOM_CLASSIFIER_EMBEDDER=e5+minilm`` with ``POSTROOM_CLASSIFIER_OPEN_SET=nearest``."""
    return ClassifierConfig.recipe("e5+minilm", open_set="nearest", **overrides)


def run_draws(
    name: str,
    train: list[Labelled],
    test: list[Labelled],
    configured_count: int,
    *,
    described: bool,
    recipe: Callable[..., ClassifierConfig] = ClassifierConfig,
) -> dict[str, float]:
    """Mean figures over :data:`DRAWS` for one data set, with one recipe (the default: the
    product's default recipe)."""
    from postroom.learning.models import DEFAULT_THRESHOLD

    maker = Classifier(recipe())
    train_examples = make_examples(maker, train)
    test_examples = make_examples(maker, test)
    categories = sorted({item.category for item in train})
    draws: list[dict[str, float]] = []
    for draw in DRAWS:
        configured = set(np.random.default_rng(draw).permutation(categories)[:configured_count])
        chosen = [e for e in train_examples if e.category in configured]
        if described:
            chosen += descriptions(maker, sorted(configured))
        classifier = Classifier(recipe(seed=draw)).fit(chosen)
        inside = [e for e in test_examples if e.category in configured]
        outside = [e for e in test_examples if e.category not in configured]
        log(f"{name} draw {draw}: {len(inside)} configured, {len(outside)} other test emails")
        figures = open_set_figures(classifier, inside, outside, DEFAULT_THRESHOLD)
        log(f"{name} draw {draw}: {figures}")
        draws.append(figures)
    return {key: float(np.mean([d[key] for d in draws])) for key in draws[0]}


def main(parts: Sequence[str] = ("20ng", "banking77")) -> dict[str, float]:
    from benchmarks.cache import install_embedding_cache, memoized
    from benchmarks.results_file import merge_results

    results: dict[str, float] = {}
    started = time.perf_counter()
    install_embedding_cache()
    if "20ng" in parts:

        def twenty() -> dict[str, float]:
            train, test = load_20ng()
            found = run_draws("20NG", train, test, 10, described=False)
            return {f"classify.{key}": value for key, value in found.items()}

        results.update(memoized("openset-20ng", [TWENTY_NEWSGROUPS], twenty))
        merge_results(results)
    if "banking77" in parts:

        def banking() -> dict[str, float]:
            train, test = load_banking77()
            found = run_draws("BANKING77", train, test, 40, described=True)
            return {f"classify.banking77_{key}": value for key, value in found.items()}

        results.update(memoized("openset-banking77", [BANKING77], banking))
        merge_results(results)

        def banking_pair() -> dict[str, float]:
            train, test = load_banking77()
            found = run_draws(
                "BANKING77 e5+minilm",
                train,
                test,
                40,
                described=True,
                recipe=nearest_recipe,
            )
            return {f"classify.banking77_pair_{key}": value for key, value in found.items()}

        results.update(memoized("openset-banking77-pair", [BANKING77], banking_pair))
    results["classify.open_part_seconds"] = time.perf_counter() - started
    merge_results(results)
    return results


if __name__ == "__main__":
    for key, value in sorted(main(sys.argv[1:] or ("20ng", "banking77")).items()):
        print(f"{key} = {value:.4f}")
    sys.exit(0)
