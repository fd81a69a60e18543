"""A sync page's emails are guessed by the model together (issue 17: ``mps_cascade_10shot``).

The encoders cost less per email in one call, so the first email of a page that reaches the
model runs :meth:`Classifier.predict_many` on every email of the page the model may decide;
each decision is still the one the email gets alone. Emails a rule decides, drafts and our own
label's echo are not guessed.
"""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import pytest
from sqlalchemy.orm import Session

from m365sim.state import EmulatorState
from postroom.classify import Classifier, ClassifierConfig
from postroom.learning import service as learning
from postroom.learning.service import ModelAdapter, PagePredictions
from postroom.processing.decide import Prediction, decide
from postroom.processing.view import MessageView
from tests.classify.mail import dataset
from tests.classify.test_open_set import CATEGORIES, processing_view
from tests.postroom.conftest import Postroom
from tests.postroom.test_learning import (
    SALES,
    SUPPORT,
    _add_categories,
    _integration_id,
    _plan,
    _train,
)
from tests.postroom.test_sync import folder_of, setup_personal, wait_for_jobs


@pytest.fixture(scope="module")
def trained() -> Classifier:
    classifier = Classifier(ClassifierConfig())
    views, categories = zip(*dataset(20, seed=3), strict=True)
    return classifier.fit(classifier.make_examples(views, categories, "user_example"))


def _page(count: int, seed: int) -> list[MessageView]:
    views = [view for view, _ in dataset(count, seed=seed)][:count]
    return [processing_view(view, seed * 100 + i) for i, view in enumerate(views)]


class Counting:
    """Counts the classifier's calls (and the views each got)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.many: list[int] = []
        self.single = 0
        many, single = Classifier.predict_many, Classifier.predict

        def predict_many(model: Classifier, views: Sequence[MessageView]) -> list[Prediction]:
            self.many.append(len(views))
            return many(model, views)

        def predict(model: Classifier, view: MessageView) -> Prediction:
            self.single += 1
            return single(model, view)

        monkeypatch.setattr(Classifier, "predict_many", predict_many)
        monkeypatch.setattr(Classifier, "predict", predict)


def test_a_page_is_guessed_in_one_call_and_each_guess_is_the_one_it_gets_alone(
    trained: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = _page(12, seed=5)
    alone = [trained.predict(view) for view in page]
    counting = Counting(monkeypatch)
    predictions = PagePredictions(trained, lambda: page)
    adapter = ModelAdapter(trained, page=predictions)
    together = [predictions.predict(view) for view in reversed(page)][::-1]
    assert together == alone
    assert counting.many == [12] and counting.single == 0 and predictions.batches == 1
    plans = [decide(view, CATEGORIES, classifier=adapter) for view in page]
    assert plans == [decide(view, CATEGORIES, classifier=ModelAdapter(trained)) for view in page]
    assert counting.many == [12, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]  # (the one-by-one plans)


def test_an_email_not_on_the_page_or_changed_since_is_guessed_alone(
    trained: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    page = _page(4, seed=6)
    counting = Counting(monkeypatch)
    predictions = PagePredictions(trained, lambda: page)
    other = _page(1, seed=7)[0]
    assert predictions.predict(other) == Classifier.predict(trained, other)
    assert counting.many[0] == 5  # the page and the email asked about
    changed = MessageView(id=page[0].id, subject="Lunch on Friday?", body_text="At noon.")
    counting.single = 0
    assert predictions.predict(changed) == trained.predict(changed)
    assert counting.single == 2  # (one by the test) - not the page's stale guess
    assert predictions.batches == 1


def test_no_page_means_one_email_at_a_time(
    trained: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting = Counting(monkeypatch)
    view = _page(1, seed=8)[0]
    predictions = PagePredictions(trained)
    assert predictions.predict(view) == Classifier.predict(trained, view)
    assert predictions.batches == 0 and counting.single == 2  # (one by the test)
    other = Classifier(ClassifierConfig())
    assert ModelAdapter(other, page=predictions).page is None  # another model's page: unused


def test_a_sync_page_asks_the_model_once_for_its_emails_and_not_for_rule_mail(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, monkeypatch: pytest.MonkeyPatch
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    integration_id = _integration_id(base)
    _add_categories(postroom, integration_id, support_folder="Support")
    postroom.drain()
    _train(postroom, integration_id)
    counting = Counting(monkeypatch)
    loads: list[str] = []
    load_model = learning.load_model

    def counted(db: Session, integration_id: str) -> learning.LoadedModel | None:
        loads.append(integration_id)
        return load_model(db, integration_id)

    monkeypatch.setattr(learning, "load_model", counted)

    emails = {
        "Printer error": (SUPPORT[0], "Support"),
        "Laptop kapot": (SUPPORT[3], "Support"),
        "Quote please": (SALES[0], "Sales"),
        "Offerte": (SALES[2], "Sales"),
        "Invoice 12 for the printer": ("My printer is broken.", None),  # a rule files it
    }
    ids = {
        subject: org.deliver(org.alice, sender="someone@contoso.test", subject=subject, body=body)
        for subject, (body, _) in emails.items()
    }
    # Filed by the person before Postroom got to it: left alone, so not guessed either.
    own = org.deliver(
        org.alice,
        sender="someone@contoso.test",
        subject="Offer",
        body=SALES[3],
        categories=["Personal"],
    )
    assert wait_for_jobs(postroom) >= 1
    postroom.drain()

    assert org.alice.mailbox.messages[own.immutable_id].categories == ["Personal"]
    for subject, (_, category) in emails.items():
        plan = _plan(postroom, ids[subject].immutable_id)
        if category is None:
            assert plan["decided_by"] == "rule"
            assert folder_of(org.alice, ids[subject].immutable_id) == "Invoices"
        else:
            assert (plan["category"], plan["decided_by"]) == (category, "model"), subject
    assert counting.many == [4] and counting.single == 0  # one call for the page's four
    # The model is read once per page (PageModel): the page of new mail and the page our own
    # labels come back on - not once for each of the six emails.
    assert set(loads) == {integration_id} and len(loads) <= 2, loads

    # Our own labels come back through delta: nothing is guessed again.
    org.deliver(org.alice, sender="someone@contoso.test", subject="Quote", body=SALES[1])
    assert wait_for_jobs(postroom) >= 1
    postroom.drain()
    assert counting.many[1:] == [1], counting.many  # the new email alone (a page of one)
    assert counting.single == 1


def test_a_page_that_cannot_be_listed_still_gets_each_email_guessed(
    trained: Classifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page is a shortcut: a failure listing it (a neighbour Graph sent malformed, the
    ledger query) must not fail the email in hand."""

    def broken() -> list[MessageView]:
        raise ValueError("a neighbour's receivedDateTime")

    view = _page(1, seed=9)[0]
    predictions = PagePredictions(trained, broken)
    assert predictions.predict(view) == trained.predict(view)
    assert predictions.batches == 0
