"""The activity view explains an email that fit no category (issue 17, decision 0010).

The plan is the one :func:`~postroom.processing.decide.decide` makes with a real classifier
for an off-topic email; the page a person sees names the nearest category and the numbers.
"""

from __future__ import annotations

from datetime import timedelta

import httpx

from m365sim.state import EmulatorState
from postroom.classify import Classifier, ClassifierConfig
from postroom.learning.service import ModelAdapter
from postroom.processing.decide import decide
from tests.classify.mail import dataset
from tests.classify.test_open_set import CATEGORIES, OFF_TOPIC, processing_view
from tests.postroom.conftest import Postroom
from tests.postroom.test_activity import INVOICE_PLAN, add_entry
from tests.postroom.test_editor import finished


def test_activity_says_an_email_fit_no_category_and_names_the_nearest(
    web: httpx.Client, postroom: Postroom, sim: EmulatorState
) -> None:
    classifier = Classifier(ClassifierConfig())
    views, categories = zip(*dataset(20, seed=1), strict=True)
    classifier.fit(classifier.make_examples(views, categories, "user_example"))
    plan = decide(processing_view(OFF_TOPIC[3]), CATEGORIES, classifier=ModelAdapter(classifier))
    assert plan.category is None and plan.decided_by == "model"
    nearest = plan.reasons[0].split(":")[2]

    org, base = finished(web, postroom, sim)
    lunch = org.deliver(org.alice, subject="Team lunch on Friday")
    invoice = org.deliver(org.alice, subject="Invoice 4711")
    add_entry(postroom, lunch.immutable_id, plan=plan.to_json(), age=timedelta(minutes=1))
    add_entry(postroom, invoice.immutable_id, plan=INVOICE_PLAN, actions=["label", "move"])

    page = web.get(f"{base}/activity")
    assert page.status_code == 200
    body = page.text
    assert f"fits no category: nearest is {nearest}, more like it than 0% of its examples" in body
    assert "(at least 5% needed)" in body
    row = body[body.index("Team lunch on Friday") :]
    row = row[: row.index("</tr>")]
    assert "learned model (fits no category" in row and "→" not in row
    assert "none of the categories" not in body
