"""Learning that learns (issue 19, items 13 and 14): a category taken off in Outlook is "none
of these", and corrections made while the model is off are kept and used once it turns on.

End to end against m365sim over HTTPS and a real PostgreSQL: Alice changes her mail *through
Graph* with her own delegated token (as Outlook would), Postroom sees it through delta. The
integration is the one :func:`tests.postroom.test_sync.setup_personal` makes (Invoices by rule
→ Finance/Invoices) with the Support and Sales categories of ``test_learning``.
"""

from __future__ import annotations

import re

import httpx
import numpy as np
from sqlalchemy import func, select

from m365sim.state import EmulatorState
from postroom.classify import NONE_OF_THESE, Classifier, dump_state, load_state
from postroom.integrations.models import Category
from postroom.learning import corrections
from postroom.learning import service as learning
from postroom.learning.models import LearningEvent, ModelUpdate
from postroom.processing.decide import Prediction, decide
from postroom.processing.plan import CategoryConfig
from postroom.processing.view import Address, MessageView
from postroom.sync.models import FolderSync
from tests.helpers import Org
from tests.postroom.conftest import Postroom
from tests.postroom.test_learning import (
    SALES,
    SUPPORT,
    _add_categories,
    _deliver_and_sync,
    _integration_id,
    _plan,
    _train,
)
from tests.postroom.test_sync import folder_of, setup_personal, wait_for_jobs
from tests.postroom.webtools import post_form

OFF = (
    "The learned model is off: it needs examples for at least two categories. "
    "Corrections are kept and used once it turns on."
)
PRINTER = (
    "Zanzibar printer refurbished, the Quixotic toner drum is broken and shows error 51. "
    "Please help us fix it."
)


class Outlook:
    """Alice's own Graph calls (delegated token, immutable ids), as Outlook makes them."""

    def __init__(self, http: httpx.Client, org: Org) -> None:
        self.http = http
        self.headers = {
            "Authorization": f"Bearer {org.token(org.alice)}",
            "Prefer": 'IdType="ImmutableId"',
        }

    def set_categories(self, message_id: str, categories: list[str]) -> None:
        done = self.http.patch(
            f"/v1.0/me/messages/{message_id}", json={"categories": categories}, headers=self.headers
        )
        assert done.status_code == 200, done.text

    def move(self, message_id: str, destination: str) -> None:
        done = self.http.post(
            f"/v1.0/me/messages/{message_id}/move",
            json={"destinationId": destination},
            headers=self.headers,
        )
        assert done.status_code == 201, done.text
        assert done.json()["id"] == message_id  # immutable


def _synced(postroom: Postroom) -> None:
    assert wait_for_jobs(postroom) >= 1, "the change did not notify"
    postroom.drain()


def _events(postroom: Postroom) -> list[tuple[str, str, str | None, str | None]]:
    with postroom.database.session() as db:
        return [
            (e.kind, e.category, e.predicted, e.decided_by)
            for e in db.scalars(select(LearningEvent).where(LearningEvent.kind != "example"))
        ]


def _text(html: str) -> str:
    """A page's text as a person reads it (tags out, whitespace folded)."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


# ---------------------------------------------------------------------- item 13
def test_taking_the_category_off_and_moving_back_to_the_inbox_is_learned_as_none_of_these(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, http: httpx.Client
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    integration_id = _integration_id(base)
    _add_categories(postroom, integration_id, support_folder="Support")
    postroom.drain()
    _train(postroom, integration_id)
    outlook = Outlook(http, org)

    first = _deliver_and_sync(postroom, org, subject="Zanzibar printer", body=PRINTER)
    given = _plan(postroom, first)
    assert (given["category"], given["decided_by"]) == ("Support", "model")
    assert folder_of(org.alice, first) == "Support"
    with postroom.database.session() as db:
        version = learning.state_row(db, integration_id).version

    # Alice says "not Support": she takes the category off and moves the email back to the
    # Inbox — the natural correction in Outlook, and no other category is chosen.
    outlook.set_categories(first, [])
    outlook.move(first, "inbox")
    _synced(postroom)

    plan = _plan(postroom, first)
    assert plan["corrected_to"] == NONE_OF_THESE and plan["category"] == "Support"
    assert _events(postroom) == [("rejection", "Support", "Support", "model")]
    with postroom.database.session() as db:
        row = learning.state_row(db, integration_id)
        assert row.version == version + 1  # one update step, learned at once
        update = db.scalar(select(ModelUpdate))
        assert update is not None and update.category == NONE_OF_THESE
    # Nothing is done to her mail: it stays where she put it, as she left it.
    assert folder_of(org.alice, first) == "Inbox"
    assert org.alice.mailbox.messages[first].categories == []
    # Learned once, however often the message comes by again.
    outlook.set_categories(first, ["Personal"])  # her own category: no other feedback
    _synced(postroom)
    assert len(_events(postroom)) == 1

    # The next similar email is not given Support with the confidence the model had.
    second = _deliver_and_sync(
        postroom,
        org,
        subject="Zanzibar printer",
        body=PRINTER.replace("error 51", "error 52"),
    )
    after = _plan(postroom, second)
    assert after["category"] != "Support" or float(after["confidence"]) < given["confidence"]  # type: ignore[arg-type]
    # Here the model is sure it is none of the categories: the email is left alone.
    assert after["category"] is None and after["decided_by"] == "model", after
    assert any(str(r).startswith("model:none-of-these:") for r in after["reasons"])  # type: ignore[union-attr]
    assert org.alice.mailbox.messages[second].categories == []
    assert folder_of(org.alice, second) == "Inbox"
    assert "learned model (none of the categories)" in web.get(f"{base}/activity").text

    # The Model page counts it as a correction, not as kept.
    page = _text(web.get(f"{base}/model").text)
    assert "0% of the last 1 model decisions were kept by people" in page, page
    assert "Support None of these 1" in page  # the confusion: the model said, people chose
    assert "None of these (a category taken off) 0 1 0" in page  # what it learned from
    assert [d for d in sim.store.deletions if d.mailbox_id == org.alice.id] == []


def test_a_category_taken_off_filed_mail_is_learned_where_it_lies(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, http: httpx.Client
) -> None:
    """In a watched category folder, taking Postroom's category off (the email stays in the
    folder) is "none of these" too; a mere read or a move by Postroom itself is not."""
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    integration_id = _integration_id(base)
    _add_categories(postroom, integration_id, support_folder="Support", sales_folder="Sales")
    postroom.drain()
    _train(postroom, integration_id)
    outlook = Outlook(http, org)
    filed = _deliver_and_sync(postroom, org, subject="Printer error", body=SUPPORT[0])
    kept = _deliver_and_sync(postroom, org, subject="Laptop", body=SUPPORT[1])
    assert folder_of(org.alice, filed) == folder_of(org.alice, kept) == "Support"
    postroom.drain()  # the watched folder's own notifications: Postroom's moves teach nothing
    outlook.http.patch(
        f"/v1.0/me/messages/{kept}", json={"isRead": True}, headers=outlook.headers
    ).raise_for_status()
    _synced(postroom)
    assert _events(postroom) == []

    outlook.set_categories(filed, [])
    _synced(postroom)
    assert _plan(postroom, filed)["corrected_to"] == NONE_OF_THESE
    assert _events(postroom) == [("rejection", "Support", "Support", "model")]
    assert folder_of(org.alice, filed) == "Support"  # left where she keeps it
    # ... and moving it back to the Inbox afterwards is the same feedback: not learned twice.
    outlook.move(filed, "inbox")
    _synced(postroom)
    assert len(_events(postroom)) == 1
    assert "None of these (a category taken off) 0 1 0" in _text(web.get(f"{base}/model").text)


def test_detect_rejection_is_pure_and_strict() -> None:
    def view(*categories: str, folder: str | None = "inbox-id") -> MessageView:
        return MessageView(
            id="m",
            internet_message_id="<m@x>",
            subject="",
            sender=Address("", ""),
            categories=categories,
            folder_id=folder,
        )

    configured = ["Support", "Sales"]
    filed = {
        "category": "Support",
        "decided_by": "model",
        "add_categories": ["Support"],
        "folder": "Help/Support",
    }
    done = ["label", "folder", "move"]
    rejected = corrections.Correction("Support", NONE_OF_THESE, "model")
    assert rejected.rejected
    # taken off, nothing else chosen
    assert corrections.detect_rejection(filed, view(), configured, actions=done) == rejected
    assert (
        corrections.detect_rejection(filed, view("Personal"), configured, actions=done) == rejected
    )
    # still on, or another category chosen (detect_correction's case), or both: no
    assert corrections.detect_rejection(filed, view("support"), configured, actions=done) is None
    assert corrections.detect_rejection(filed, view("Sales"), configured, actions=done) is None
    # a label that never made it (the step failed) was not taken off by anyone
    assert corrections.detect_rejection(filed, view(), configured, actions=["move"]) is None
    # rules are rejectable; needs-review and "no match" are not
    rule = {**filed, "decided_by": "rule"}
    assert corrections.detect_rejection(rule, view(), configured, actions=done) == (
        corrections.Correction("Support", NONE_OF_THESE, "rule")
    )
    review = {"category": "Needs review", "decided_by": "needs_review"}
    assert corrections.detect_rejection(review, view(), configured, actions=["label"]) is None
    assert (
        corrections.detect_rejection(
            {"category": None, "decided_by": "none"}, view(), configured, actions=[]
        )
        is None
    )
    # once only
    noted = {**filed, "corrected_to": NONE_OF_THESE}
    assert corrections.detect_rejection(noted, view(), configured, actions=done) is None

    # moved back: out of its category folder into the folder Postroom processes
    def back(plan: dict[str, object], actions: list[str], here: MessageView) -> bool:
        return corrections.moved_back(
            plan, actions, folder_key="inbox", folder_id="inbox-id", view=here
        )

    assert back(filed, done, view("Support"))
    assert (
        corrections.detect_rejection(
            filed, view("Support"), configured, actions=done, moved_back=True
        )
        == rejected
    )
    assert not back(filed, ["label", "folder"], view("Support"))  # the move never happened
    assert not back(filed, done, view("Support", folder="other-id"))  # it lies elsewhere
    assert not back({**filed, "folder": None}, done, view("Support"))  # nothing was filed
    assert not back({**filed, "folder": " INBOX "}, done, view("Support"))  # filed right here
    # After a correction to Sales by moving it into Sales' folder, taking the wrong Support
    # off is tidying up; moving it back to the Inbox is "none of these".
    moved = {**filed, "corrected_to": "Sales"}
    assert corrections.detect_rejection(moved, view(), configured, actions=done) is None
    assert corrections.detect_rejection(
        moved, view(), configured, actions=done, moved_back=True
    ) == (corrections.Correction("Sales", NONE_OF_THESE, "model"))
    assert (
        corrections.detect_rejection(
            moved, view("Sales"), configured, actions=done, moved_back=True
        )
        is None
    )


def test_none_of_these_is_a_class_of_its_own_and_leaves_other_models_as_they_were() -> None:
    views = {
        "Support": [MessageView(body_text=t) for t in SUPPORT],
        "Sales": [MessageView(body_text=t) for t in SALES],
    }
    classifier = Classifier()
    classifier.fit(
        classifier.make_examples(
            [v for vs in views.values() for v in vs],
            [c for c, vs in views.items() for _ in vs],
            "user_example",
        )
    )
    probe = MessageView(subject="Zanzibar printer", body_text=PRINTER)
    untouched = Classifier.from_state(load_state(dump_state(classifier.to_state())))
    before = classifier.predict(probe)
    assert before.category == "Support"

    classifier.learn(classifier.make_example(probe, NONE_OF_THESE, "correction", key=7))
    after = classifier.predict(probe)
    assert after.category == NONE_OF_THESE and after.confidence > 0.5
    assert after.scores["Support"] < before.scores["Support"]
    assert classifier.categories == ("Sales", "Support")  # never a category to give
    assert classifier.labelled_categories() == ("Sales", "Support")
    assert classifier.predict(MessageView(body_text=SALES[0])).category == "Sales"
    # A later correction of the same email to a category replaces the "none of these".
    twin = classifier.copy()
    twin.learn(twin.make_example(probe, "Sales", "correction", key=7))
    assert [e.category for e in twin.examples if e.key == 7] == ["Sales"]
    # Kept through the stored state and a retrain (a class of its own in the fit).
    restored = Classifier.from_state(load_state(dump_state(twin.to_state())))
    assert restored.categories == ("Sales", "Support")
    retrained = Classifier.from_state(load_state(dump_state(classifier.to_state()))).retrain()
    assert retrained.predict(probe).category == NONE_OF_THESE
    # A model that learned no "none of these" predicts exactly as before.
    assert untouched.predict(probe) == before
    state, again = untouched.to_state(), Classifier.from_state(untouched.to_state()).to_state()
    assert sorted(state) == sorted(again)
    assert all(
        np.array_equal(np.asarray(state[k]), np.asarray(again[k])) for k in state if k != "config"
    )

    # decide(): "none of these" at or above the threshold leaves the email alone.
    class Sure:
        def __init__(self, confidence: float) -> None:
            self.confidence = confidence

        def predict(self, view: MessageView) -> Prediction:
            return Prediction(NONE_OF_THESE, self.confidence)

    email = MessageView(id="m", internet_message_id="<m@x>", subject="", sender=None)
    categories = [CategoryConfig(name="Support", folder="Support")]
    plan = decide(email, categories, classifier=Sure(0.8), threshold=0.6)
    assert (plan.category, plan.decided_by, plan.folder, plan.empty) == (None, "model", None, True)
    assert plan.reasons == ("model:none-of-these:0.80>=0.60",)
    unsure = decide(email, categories, classifier=Sure(0.4), threshold=0.6)
    assert unsure.decided_by == "needs_review" and unsure.reasons[0] == "model:0.40<0.60"


# ---------------------------------------------------------------------- item 14
def test_corrections_while_the_model_is_off_are_kept_and_used_once_it_turns_on(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState, http: httpx.Client
) -> None:
    org = postroom.org(sim)
    base = setup_personal(web, postroom, org)
    integration_id = _integration_id(base)
    _add_categories(postroom, integration_id, support_folder=None)  # no examples: model off
    postroom.drain()
    outlook = Outlook(http, org)

    # The pages say plainly that the model is off, and why.
    for path in ("/model", "/categories"):
        page = _text(web.get(f"{base}{path}").text)
        assert f"{OFF} No category has examples yet." in page, (path, page)
        assert "being retrained" not in page

    # Rules file the mail meanwhile; Alice corrects a filed email in its folder: Sales.
    body = "We would like to order 40 Quibbit licenses for the Ostrava office, please confirm."
    invoice = _deliver_and_sync(postroom, org, subject="Invoice for Quibbit licenses", body=body)
    assert folder_of(org.alice, invoice) == "Invoices"
    with postroom.database.session() as db:
        watched = db.scalars(select(FolderSync.folder_key).where(FolderSync.watch.is_(True)))
        assert list(watched) == ["watch:Finance/Invoices"]
    outlook.set_categories(invoice, ["Sales"])
    _synced(postroom)
    assert _plan(postroom, invoice)["corrected_to"] == "Sales"
    assert _events(postroom) == [("correction", "Sales", None, "rule")]
    with postroom.database.session() as db:
        assert learning.load_model(db, integration_id) is None  # still off: kept, not used yet
    page = _text(web.get(f"{base}/model").text)
    assert f"{OFF} So far only Sales has examples." in page
    assert "Sales 0 1 0" in page  # the correction is kept

    # Examples for Support in the editor: the notice does not claim a retrain of a model that
    # is off; the page says it turns on once the rebuild is done.
    with postroom.database.session() as db:
        support = db.scalar(select(Category).where(Category.name == "Support"))
        assert support is not None
    saved = post_form(
        web,
        f"{base}/categories?edit={support.id}",
        f"{base}/categories",
        {
            "action": "save",
            "category_id": support.id,
            "name": "Support",
            "color": "preset1",
            "mode": "all",
            "examples": "\n\n".join(SUPPORT),
        },
    )
    assert saved.status_code == 303, saved.text[:2000]
    page = _text(web.get(saved.headers["location"]).text)
    assert "Saved “Support”." in page and "being retrained" not in page
    assert (
        "The learned model is off for now: Support and Sales have examples, so it turns on "
        "once the rebuild in the background is done." in page
    )
    postroom.drain()  # the refit

    with postroom.database.session() as db:
        loaded = learning.load_model(db, integration_id)
        assert loaded is not None  # on
        kept = [e for e in loaded.classifier.examples if e.origin == "correction"]
        assert [e.category for e in kept] == ["Sales"]
    for path in ("/model", "/categories"):
        assert "The learned model is off" not in web.get(f"{base}{path}").text
    page = _text(web.get(f"{base}/model").text)
    assert "The model decides emails that no rule matches." in page
    assert "Sales 0 1 0" in page and "Support 4 0 0" in page
    # Now that it is on, saving a category does retrain it, and the editor says so.
    saved = post_form(
        web,
        f"{base}/categories?edit={support.id}",
        f"{base}/categories",
        {
            "action": "save",
            "category_id": support.id,
            "name": "Support",
            "color": "preset1",
            "mode": "all",
            "description": "Broken printers and laptops",
            "examples": "\n\n".join(SUPPORT),
        },
    )
    listing = web.get(saved.headers["location"]).text
    assert "Saved “Support”. The learned model is being retrained in the background." in listing
    postroom.drain()

    # Used: an email like the corrected one (no rule matches it) is Sales.
    quibbit = _deliver_and_sync(
        postroom,
        org,
        subject="Quibbit licenses",
        body="We would like to order 25 Quibbit licenses for the Ostrava office, please confirm.",
    )
    plan = _plan(postroom, quibbit)
    assert (plan["category"], plan["decided_by"]) == ("Sales", "model"), plan
    with postroom.database.session() as db:
        assert db.scalar(select(func.count()).select_from(LearningEvent)) >= 2
    assert [d for d in sim.store.deletions if d.mailbox_id == org.alice.id] == []
