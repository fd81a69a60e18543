"""The nearest-example open-set check of the two-encoder recipe
(``ClassifierConfig.nearest_quantile``, ``docs/decisions/0016-nearest-example.md``): an email
whose chosen category's most similar example is further from it than nearly all of that
category's examples are from their own nearest one fits no category."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from postroom.classify import Classifier, ClassifierConfig, dump_state, load_state
from postroom.classify.config import TWO_ENCODER_NEAREST
from postroom.classify.head import MIN_NEAREST_EXAMPLES, NEAREST_LEVELS, nearest_quantiles
from postroom.learning.service import ModelAdapter, classifier_config
from postroom.processing.decide import Prediction, decide, fits_none_words
from postroom.processing.view import MessageView
from postroom.settings import Settings
from tests.classify.mail import dataset, email, view
from tests.classify.test_open_set import CATEGORIES, OFF_TOPIC, processing_view, trained

BAR = 0.05
ONLY_NEAREST = ClassifierConfig.with_two_encoders(nearest_quantile=BAR, open_set_quantile=0.0)


@pytest.fixture(scope="module")
def nearest() -> Classifier:
    return trained(ONLY_NEAREST, per_category=20)


def test_the_quantiles_are_of_each_examples_nearest_other_example() -> None:
    keys = np.array(
        [[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1], [0.96, 0.28], [-1, 0], [0, -1]], np.float32
    )
    labels = np.array([0, 0, 0, 0, 0, 1, 1], np.int64)
    table = nearest_quantiles(keys, labels, 2, seed=0)
    # nearest other example of each of class 0's five, by cosine: 0.96, 0.96, 0.96, 0.8, 0.96
    assert table[0][0] == pytest.approx(0.8) and table[0][-1] == pytest.approx(0.96)
    assert table.shape == (2, NEAREST_LEVELS.size)
    assert np.isnan(table[1]).all()  # fewer than MIN_NEAREST_EXAMPLES: no bar
    assert MIN_NEAREST_EXAMPLES == 5


def test_off_topic_mail_fits_no_category_by_its_nearest_example(nearest: Classifier) -> None:
    adapter = ModelAdapter(nearest)
    for number, message in enumerate(OFF_TOPIC):
        prediction = nearest.predict(message)
        assert prediction.nearest_fit is not None and prediction.nearest_fit < BAR
        assert not prediction.fits and prediction.nearest_bar == BAR
        plan = decide(processing_view(message, number), CATEGORIES, classifier=adapter)
        assert plan.category is None and plan.folder is None and not plan.add_categories
        (reason,) = plan.reasons
        assert reason.startswith(f"model:fits-none-nearest:{prediction.category}:")
        assert reason.endswith(f"<{BAR:.2f}")
        words = fits_none_words(plan.reasons)
        assert words is not None and words.startswith(
            f"fits no category: nearest is {prediction.category}, as close to one of its"
        )


def test_mail_of_the_categories_still_fits_and_is_filed(nearest: Classifier) -> None:
    adapter = ModelAdapter(nearest)
    held_out = dataset(6, seed=9)
    predictions = [nearest.predict(v) for v, _ in held_out]
    assert all(p.nearest_fit is not None for p in predictions)  # the fast stage's too
    assert np.mean([p.fits for p in predictions]) >= 0.9
    filed = [
        decide(processing_view(v, n), CATEGORIES, classifier=adapter).category == category
        for n, (v, category) in enumerate(held_out)
    ]
    assert np.mean(filed) >= 0.9


def test_a_page_stored_examples_and_one_email_at_a_time_agree(nearest: Classifier) -> None:
    held_out = dataset(2, seed=19)
    views = [v for v, _ in held_out] + OFF_TOPIC
    together = nearest.predict_many(views)
    assert together == [nearest.predict(v) for v in views]
    examples = nearest.make_examples(views, ["Invoices"] * len(views), "seed")
    assert nearest.predict_examples(examples) == together
    assert {p.stage for p in together} >= {"fast"}  # sure emails were checked as well


def test_the_bars_are_kept_in_the_state_and_a_state_from_before_has_none(
    nearest: Classifier,
) -> None:
    restored = Classifier.from_state(load_state(dump_state(nearest.to_state())))
    assert restored.predict_many(OFF_TOPIC) == nearest.predict_many(OFF_TOPIC)
    state = {k: v for k, v in nearest.to_state().items() if not k.startswith("nearest_")}
    old = Classifier.from_state(state)
    assert all(p.nearest_fit is None for p in old.predict_many(OFF_TOPIC))


def test_a_category_learned_since_the_fit_is_not_checked(nearest: Classifier) -> None:
    twin = nearest.copy()
    returns = view(
        "Return order 123456", "Customer", "c@example.com", "I want to return order 123456."
    )
    twin.learn(twin.make_example(returns, "Returns", "correction"))
    prediction = twin.predict(replace(returns, subject="Return order 654321"))
    assert prediction.category == "Returns"
    assert prediction.nearest_fit is None and prediction.fits
    assert twin.predict(email("Invoices", "en", 0, random.Random(3))).fits


def test_off_unless_chosen_and_only_for_the_two_encoder_recipe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert ClassifierConfig().nearest_quantile == 0.0
    assert ClassifierConfig.with_embeddings().nearest_quantile == 0.0
    assert ClassifierConfig.with_two_encoders().nearest_quantile == 0.0  # (its cost: 0016)
    chosen = ClassifierConfig.recipe("e5+minilm", open_set="nearest")
    assert chosen.nearest_quantile == TWO_ENCODER_NEAREST and chosen.open_set_quantile == 0.0
    assert chosen.slow_embedder == "e5+minilm"
    for name in ("none", "e5"):
        with pytest.raises(ValueError, match="e5\\+minilm"):
            ClassifierConfig.recipe(name, open_set="nearest")  # type: ignore[arg-type]
    monkeypatch.setenv("POSTROOM_CLASSIFIER_OPEN_SET", "nearest")
    monkeypatch.setenv("POSTROOM_CLASSIFIER_EMBEDDER", "e5")
    with pytest.raises(ValueError, match="POSTROOM_CLASSIFIER_EMBEDDER=e5\\+minilm"):
        Settings()
    monkeypatch.setenv("POSTROOM_CLASSIFIER_EMBEDDER", "e5+minilm")
    assert classifier_config(Settings()) == chosen
    monkeypatch.setenv("POSTROOM_CLASSIFIER_OPEN_SET", "energy")
    with pytest.raises(ValueError):
        Settings()
    plain = trained(ClassifierConfig.with_two_encoders(), per_category=5)
    assert all(p.nearest_fit is None for p in plain.predict_many(OFF_TOPIC))


def test_decide_says_which_check_failed() -> None:
    message = processing_view(MessageView(subject="Lunch?", body_text="Shall we have lunch?"))

    class Fixed:
        def __init__(self, prediction: Prediction) -> None:
            self.prediction = prediction

        def predict(self, _: MessageView) -> Prediction:
            return self.prediction

    far = Prediction(
        "Invoices", 0.97, stage="fast", fits=False, fit=0.4, fit_bar=0.05,
        nearest_fit=0.004, nearest_bar=0.02,
    )  # fmt: skip
    plan = decide(message, CATEGORIES, classifier=Fixed(far))
    assert plan.reasons == ("model:fits-none-nearest:Invoices:0.00<0.02",)
    assert fits_none_words(plan.reasons) == (
        "fits no category: nearest is Invoices, as close to one of its examples as only 0% of "
        "them are to another (at least 2% needed)"
    )
    both = replace(far, fit=0.01)  # the score's check failed as well: that one is named
    assert decide(message, CATEGORIES, classifier=Fixed(both)).reasons == (
        "model:fits-none:Invoices:0.01<0.05",
    )
