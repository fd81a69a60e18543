"""Open set: mail that fits no category is not filed, and small models are not sure of it.

See ``docs/decisions/0010-open-set.md``. The figures on 20 Newsgroups and BANKING77 are in
``benchmarks/bench_openset.py``; these tests pin the behaviour on small synthetic mailboxes.
"""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from postroom.classify import Classifier, ClassifierConfig, dump_state, load_state
from postroom.learning.service import ModelAdapter
from postroom.processing.decide import Prediction, decide, fits_none_words
from postroom.processing.plan import CategoryConfig
from postroom.processing.view import MessageView
from tests.classify.mail import TEMPLATES, dataset, email, view

OFF_TOPIC = [
    view(
        "Team lunch on Friday",
        "Piet",
        "piet@example.com",
        "Hi all, shall we have lunch at the Italian place on Friday at noon? Let me know.",
    ),
    view(
        "Re: holiday photos",
        "Anna",
        "anna@example.org",
        "Here are the pictures from our trip to the mountains; the kids loved the lake.",
    ),
    view(
        "Vergadering dinsdag",
        "Kees",
        "kees@voorbeeld.nl",
        "Zullen we de vergadering van dinsdag verplaatsen naar woensdagmiddag?",
    ),
    view(
        "Your password will expire",
        "IT desk",
        "it@example.com",
        "Your network password expires in 5 days. Change it via the self-service portal.",
    ),
]
CATEGORIES = [CategoryConfig(name=name, folder=f"Filed/{name}") for name in sorted(TEMPLATES)]


def trained(config: ClassifierConfig, per_category: int, seed: int = 1) -> Classifier:
    classifier = Classifier(config)
    views, categories = zip(*dataset(per_category, seed=seed), strict=True)
    return classifier.fit(classifier.make_examples(views, categories, "user_example"))


def processing_view(message: MessageView, number: int = 1) -> MessageView:
    return replace(message, id=f"m{number}", internet_message_id=f"<m{number}@test>")


@pytest.fixture(scope="module")
def e5_four_shot() -> Classifier:
    return trained(ClassifierConfig.with_embeddings(), per_category=4)


@pytest.fixture(scope="module")
def twenty_shot() -> Classifier:
    return trained(ClassifierConfig(), per_category=20)


def test_small_models_are_no_longer_sure_of_off_topic_mail(e5_four_shot: Classifier) -> None:
    """4 examples per category (the e5 recipe): off-topic mail got 0.91-1.00 before."""
    before = Classifier(replace(e5_four_shot.config, small_category_prior=0.0))
    before.fit(e5_four_shot.examples)
    assert min(p.confidence for p in before.predict_many(OFF_TOPIC)) >= 0.9  # what was seen

    shrunk = e5_four_shot.predict_many(OFF_TOPIC)
    assert max(p.confidence for p in shrunk) < 0.8  # weight 4 / (4 + 2): at most 0.75
    assert all(sum(p.scores.values()) == pytest.approx(1.0, abs=1e-4) for p in shrunk)
    # The categories are still told apart: held-out mail of them keeps its category.
    held_out = dataset(4, seed=7)
    predictions = e5_four_shot.predict_many([view for view, _ in held_out])
    right = [p.category == c for p, (_, c) in zip(predictions, held_out, strict=True)]
    assert np.mean(right) >= 0.9


def test_the_shrinkage_fades_as_categories_get_examples(twenty_shot: Classifier) -> None:
    held_out = dataset(4, seed=7)
    predictions = twenty_shot.predict_many([view for view, _ in held_out])
    assert np.median([p.confidence for p in predictions]) >= 0.85
    assert all(p.category == c for p, (_, c) in zip(predictions, held_out, strict=True))


@pytest.mark.parametrize("fixture", ["e5_four_shot", "twenty_shot"])
def test_off_topic_mail_fits_no_category_and_is_left_alone(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    classifier: Classifier = request.getfixturevalue(fixture)
    adapter = ModelAdapter(classifier)
    for number, message in enumerate(OFF_TOPIC):
        prediction = classifier.predict(message)
        assert not prediction.fits, message.subject
        assert prediction.fit is not None and prediction.fit < 0.05
        assert prediction.category in TEMPLATES  # the nearest category is still named
        plan = decide(processing_view(message, number), CATEGORIES, classifier=adapter)
        assert plan.category is None and plan.folder is None and not plan.add_categories
        assert plan.decided_by == "model"
        (reason,) = plan.reasons
        assert reason.startswith(f"model:fits-none:{prediction.category}:")
        assert reason.endswith("<0.05")


def test_mail_of_the_categories_still_fits_and_is_filed(twenty_shot: Classifier) -> None:
    adapter = ModelAdapter(twenty_shot)
    held_out = dataset(6, seed=9)
    fits = [twenty_shot.predict(view).fits for view, _ in held_out]
    assert np.mean(fits) >= 0.9
    filed = [
        decide(processing_view(view, n), CATEGORIES, classifier=adapter).category == category
        for n, (view, category) in enumerate(held_out)
    ]
    assert np.mean(filed) >= 0.9


def test_the_check_can_be_turned_off() -> None:
    classifier = trained(ClassifierConfig(open_set_quantile=0.0), per_category=20)
    assert all(p.fits for p in classifier.predict_many(OFF_TOPIC))


def test_the_fit_is_kept_in_the_state_and_unknown_for_a_category_learned_since(
    twenty_shot: Classifier,
) -> None:
    restored = Classifier.from_state(load_state(dump_state(twenty_shot.to_state())))
    assert restored.predict_many(OFF_TOPIC) == twenty_shot.predict_many(OFF_TOPIC)

    twin = twenty_shot.copy()
    rng = random.Random(3)
    returns = view(
        "Return order 123456", "Customer", "c@example.com", "I want to return order 123456."
    )
    twin.learn(twin.make_example(returns, "Returns", "correction"))
    prediction = twin.predict(replace(returns, subject="Return order 654321"))
    assert prediction.category == "Returns"
    assert prediction.fit is None and prediction.fits  # no out-of-fold scores until a refit
    assert twin.predict(email("Invoices", "en", 0, rng)).fits
    assert twenty_shot.predict(returns).category != "Returns"  # the original is unchanged


def test_a_state_from_before_the_open_set_check_predicts_as_before(
    twenty_shot: Classifier,
) -> None:
    state = {k: v for k, v in twenty_shot.to_state().items() if "fit_quantiles" not in k}
    old = Classifier.from_state(state)
    assert all(p.fits and p.fit is None for p in old.predict_many(OFF_TOPIC))


def test_decide_names_the_nearest_category_and_a_conversation_still_wins() -> None:
    view = processing_view(OFF_TOPIC[0])

    class Unfit:
        def __init__(self, via: str | None = None) -> None:
            self.via = via

        def predict(self, _: MessageView) -> Prediction:
            stage = "conversation" if self.via else "fast"
            return Prediction("Invoices", 0.97, stage=stage, fits=False, fit=0.034, fit_bar=0.1)

    plan = decide(view, CATEGORIES, classifier=Unfit())
    assert (plan.category, plan.decided_by, plan.reasons) == (
        None,
        "model",
        ("model:fits-none:Invoices:0.03<0.10",),
    )
    assert fits_none_words(plan.reasons) == (
        "fits no category: nearest is Invoices, more like it than 3% of its examples "
        "(at least 10% needed)"
    )
    assert fits_none_words(("model:Invoices:0.97>=0.60",)) is None
    followed = decide(view, CATEGORIES, classifier=Unfit(via="conversation"))
    assert followed.category == "Invoices"  # a conversation a person filed is followed
