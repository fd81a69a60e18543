"""Conversation keys, the conversation token in the features, and the conversation memory."""

from __future__ import annotations

from postroom.classify import (
    Classifier,
    ConversationMemory,
    Prediction,
    Remembered,
    conversation_hash,
    conversation_key,
    from_conversation,
    hash_message,
)
from postroom.classify.conversations import CONVERSATION_TRUST
from postroom.classify.features import CONVERSATION_OFFSET, SPARSE_DIMENSION
from postroom.processing.view import MessageView


def test_conversation_key_prefers_the_id_and_normalizes_subjects() -> None:
    assert conversation_key(MessageView(subject="Re: x", conversation_id="AAQk=")) == "id:AAQk="
    same = [
        "Invoice 42",
        "RE: Invoice 42",
        "Re: AW: invoice   42",
        "Antw: Invoice 42",
        "Doorst: FW: Invoice 42",
        "Re[2]: Invoice 42",
    ]
    assert {conversation_key(MessageView(subject=s)) for s in same} == {"subject:invoice 42"}
    assert conversation_key(MessageView(subject="  ")) == ""
    assert conversation_key(MessageView(subject="Re: ")) == ""
    assert conversation_key(MessageView(subject="Invoice 43")) != "subject:invoice 42"


def test_the_conversation_is_one_hashed_token_in_its_own_block() -> None:
    features = hash_message(MessageView(subject="Re: Invoice 42", body_text="hello"))
    block = features.indices[features.indices >= CONVERSATION_OFFSET]
    assert block.size == 1 and block[0] < SPARSE_DIMENSION
    reply = hash_message(MessageView(subject="RE: invoice 42", body_text="bye"))
    assert reply.indices[reply.indices >= CONVERSATION_OFFSET].tolist() == block.tolist()
    no_subject = hash_message(MessageView(body_text="hello"))
    assert not (no_subject.indices >= CONVERSATION_OFFSET).any()


def test_a_learned_conversation_pulls_its_replies() -> None:
    classifier = Classifier()
    views = [
        MessageView(subject="Printer broken", body_text="The printer is broken, please help."),
        MessageView(subject="Laptop", body_text="My laptop does not start, please help."),
        MessageView(subject="Quote", body_text="Please send a quote for 20 licenses."),
        MessageView(subject="Pricing", body_text="What does the yearly subscription cost?"),
    ]
    classifier.fit(
        classifier.make_examples(views, ["Support", "Support", "Sales", "Sales"], "user_example")
    )
    question = MessageView(subject="Project Zeta", body_text="Please help, it does not start.")
    assert classifier.predict(question).category == "Support"
    classifier.learn(
        classifier.make_example(
            MessageView(subject="Project Zeta", body_text="Kick-off next week."),
            "Sales",
            "correction",
        )
    )
    reply = MessageView(subject="RE: Project Zeta", body_text="Please help, it does not start.")
    assert classifier.predict(reply).category == "Sales"


def test_memory_remembers_the_last_category_and_forgets_the_oldest() -> None:
    memory = ConversationMemory(secret=b"k", capacity=2)
    first = MessageView(subject="Order 1")
    memory.remember(first, "Sales")
    assert memory.recall(MessageView(subject="RE: order 1")) == Remembered("Sales")
    memory.remember(MessageView(subject="Re: Order 1"), "Support", by_person=True)  # corrected
    assert memory.recall(first) == Remembered("Support", by_person=True)
    memory.remember(first, "Support")  # the model agrees with the person: still the person's
    assert memory.recall(first) == Remembered("Support", by_person=True)
    memory.remember(first, "Sales")  # a rule or the model moved it on: no longer the person's
    assert memory.recall(first) == Remembered("Sales")
    memory.remember(MessageView(subject="Order 2"), "Sales")
    memory.remember(MessageView(subject="Order 3"), "Sales")
    assert len(memory) == 2 and memory.recall(first) is None
    memory.remember(MessageView(), "Sales")  # no conversation: nothing to remember
    assert len(memory) == 2


def test_hashes_are_keyed_and_the_memory_wins_only_for_known_categories() -> None:
    view = MessageView(subject="Order 1")
    assert conversation_hash(view, b"a") != conversation_hash(view, b"b")
    assert len(conversation_hash(view, b"a") or b"") == 16
    assert conversation_hash(MessageView(), b"a") is None
    model = Prediction(category="Support", confidence=0.7, scores={"Support": 0.7, "Sales": 0.3})
    known = ("Support", "Sales")
    assert from_conversation(model, None) is model
    assert from_conversation(model, Remembered("Deleted", by_person=True), known=known) is model
    taken = from_conversation(model, Remembered("Sales"), known=known)
    assert (taken.category, taken.confidence, taken.stage) == ("Sales", 0.95, "conversation")
    assert taken.scores == model.scores


def test_a_sure_model_is_not_overruled_by_its_own_earlier_decision_but_by_a_person() -> None:
    """A conversation the model filed is followed only while the model is unsure (its mistake
    must not spread through the thread); one a person corrected (or a rule filed) always."""
    sure = Prediction(category="Support", confidence=0.93, scores={"Support": 0.93, "Sales": 0.07})
    assert CONVERSATION_TRUST <= 0.93
    assert from_conversation(sure, Remembered("Sales"), known=("Support", "Sales")) is sure
    by_person = from_conversation(sure, Remembered("Sales", by_person=True))
    assert (by_person.category, by_person.stage) == ("Sales", "conversation")
    nothing = Prediction(category=None, confidence=0.0)
    assert from_conversation(nothing, Remembered("Sales")).category == "Sales"


def test_decisions_are_kept_once_per_message_bounded_and_replaced_by_corrections() -> None:
    from postroom.classify import ClassifierConfig

    classifier = Classifier(ClassifierConfig(max_decisions=2))
    views = [
        MessageView(subject="Printer broken", body_text="The printer is broken, please help."),
        MessageView(subject="Quote", body_text="Please send a quote for 20 licenses."),
    ]
    classifier.fit(classifier.make_examples(views, ["Support", "Sales"], "user_example"))
    mail = [MessageView(subject=f"Mail {n}", body_text=f"printer help {n}") for n in range(4)]
    for n, view in enumerate(mail, start=1):
        example = classifier.make_example(view, "Support", "decision", key=n)
        assert classifier.observe(example, minimum=0)
    again = classifier.make_example(mail[3], "Support", "decision", key=4)
    assert not classifier.observe(again, minimum=0)
    decisions = [e.key for e in classifier.examples if e.origin == "decision"]
    assert decisions == [3, 4]  # at most max_decisions, the oldest dropped first
    classifier.learn(classifier.make_example(mail[3], "Sales", "correction", key=4))
    assert [(e.key, e.origin, e.category) for e in classifier.examples if e.key] == [
        (3, "decision", "Support"),
        (4, "correction", "Sales"),
    ]
    assert (classifier.labelled("Sales"), classifier.labelled("Support")) == (2, 1)
    rebuilt = Classifier.from_state(classifier.to_state())
    assert [e.key for e in rebuilt.examples] == [e.key for e in classifier.examples]
    try:
        classifier.observe(classifier.make_example(mail[0], "Support", "correction"), minimum=0)
    except ValueError:
        pass
    else:
        raise AssertionError("observe() must refuse examples that are not decisions")


def test_decisions_wait_for_a_retrain_and_for_enough_examples_from_people() -> None:
    """A model that has seen little must not teach itself its own (confident) mistakes: a
    decision is only kept in a category with ``minimum`` examples from people, and it changes
    nothing before the next retrain (no update step)."""
    classifier = Classifier()
    views = [
        MessageView(subject=f"Printer {n}", body_text=f"The printer is broken again {n}.")
        for n in range(3)
    ] + [MessageView(subject=f"Quote {n}", body_text=f"Please send a quote {n}.") for n in range(3)]
    classifier.fit(classifier.make_examples(views, ["Support"] * 3 + ["Sales"] * 3, "user_example"))
    assert classifier.labelled("Support") == 3
    probe = MessageView(subject="Zorblax", body_text="zorblax zorblax quote please")
    before = classifier.predict(probe)
    decision = classifier.make_example(probe, "Support", "decision", key=7)
    assert not classifier.observe(decision, minimum=4)  # too few examples from people
    assert not any(e.origin == "decision" for e in classifier.examples)
    unknown = classifier.make_example(probe, "Billing", "decision", key=8)
    assert not classifier.observe(unknown, minimum=0)  # not a category of this model
    assert classifier.observe(decision, minimum=3)
    assert classifier.predict(probe) == before  # kept for the retrain, no step now
    classifier.retrain()
    assert classifier.predict(probe).scores["Support"] > before.scores["Support"]
