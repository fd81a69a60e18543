"""The model's update log on a real PostgreSQL: a correction appends one small row instead of
rewriting the state; every worker rebuilds the same model from snapshot + updates, whether it
starts cold or from the version it already holds; a snapshot folds the updates in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.orm import Session

from postroom import db as db_module
from postroom.accounts.models import Workspace
from postroom.classify import Classifier, ClassifierConfig
from postroom.db import Database
from postroom.integrations.models import Integration
from postroom.learning import corrections
from postroom.learning import service as learning
from postroom.learning.models import ModelState, ModelUpdate, PendingExample
from postroom.processing.view import Address, MessageView
from postroom.settings import Settings

SUPPORT = [
    "My printer is broken and shows an error. Please help me fix it.",
    "The laptop does not start any more, can support take a look?",
    "Mijn printer is kapot en geeft een foutmelding. Kunnen jullie helpen?",
]
SALES = [
    "Could you send me a quote for 50 licenses? We would like to know the price.",
    "We are interested in buying your product, what does the yearly subscription cost?",
    "Kunt u mij een offerte sturen voor 50 licenties? Wat is de prijs?",
]
CONFIG = ClassifierConfig()  # the default: n-grams only (POSTROOM_CLASSIFIER_EMBEDDER unset)
KEY_SECRET = b"message-key-secret-for-the-tests"
PROBES = [
    "The printer shows an error again",
    "What is the price of a subscription?",
    "Quixotic toner quote for the drum",
    "Zanzibar invoice reminder",
]


TYPED = [("Support", t) for t in SUPPORT] + [("Sales", t) for t in SALES]


def _trained_integration(db: Session, workspace_id: str) -> str:
    integration = Integration(workspace_id=workspace_id, kind="personal")
    db.add(integration)
    db.flush()
    learning.train_from_examples(db, integration_id=integration.id, examples=TYPED, config=CONFIG)
    return integration.id


def _view(n: int, subject: str, body: str) -> MessageView:
    return MessageView(
        id=f"m{n}",
        internet_message_id=f"<m{n}@contoso.test>",
        subject=subject,
        sender=Address("Someone", "someone@contoso.test"),
        body_text=body,
    )


@pytest.fixture
def integration_id(clean_db: Database) -> Iterator[str]:
    learning._cache.clear()
    with clean_db.session() as db:
        workspace = Workspace(name="Acme")
        db.add(workspace)
        db.flush()
        integration_id = _trained_integration(db, workspace.id)
    yield integration_id
    learning._cache.clear()


def _correct(
    db_: Database,
    integration_id: str,
    n: int,
    subject: str,
    category: str,
    *,
    view: MessageView | None = None,
    lock_timeout: str | None = None,
) -> int:
    """A correction as a sync worker records it; with ``lock_timeout`` it fails rather than
    waits that long for the model row lock."""
    with db_.session() as db:
        if lock_timeout:
            db.execute(text(f"SET LOCAL lock_timeout = '{lock_timeout}'"))
        return learning.record_correction(
            db,
            integration_id=integration_id,
            entry_id="no-such-entry",
            view=view or _view(n, subject, f"{subject}. Kind regards, someone"),
            correction=corrections.Correction("Support", category, "model"),
            config=CONFIG,
            key_secret=KEY_SECRET,
        )


def _scores(classifier: Classifier) -> np.ndarray:
    predictions = classifier.predict_many([MessageView(body_text=p) for p in PROBES])
    return np.array([[p.scores[c] for c in sorted(p.scores)] for p in predictions])


def _during_next_fit(monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[], object]) -> None:
    """Run ``meanwhile`` (another person, another process) once, just before the next fit."""
    original = Classifier.fit

    def fit(self: Classifier, examples: Any) -> Classifier:
        monkeypatch.setattr(Classifier, "fit", original)
        meanwhile()
        return original(self, examples)

    monkeypatch.setattr(Classifier, "fit", fit)


def _loaded(db_: Database, integration_id: str) -> Classifier:
    with db_.session() as db:
        loaded = learning.load_model(db, integration_id)
        assert loaded is not None
        return loaded.classifier


def test_a_correction_appends_an_update_and_every_worker_rebuilds_the_same_model(
    clean_db: Database, integration_id: str
) -> None:
    with clean_db.session() as db:
        row = db.get(ModelState, integration_id)
        assert row is not None
        snapshot, snapshot_version = row.state, row.snapshot_version
        assert snapshot is not None and row.version == snapshot_version
    warm = _loaded(clean_db, integration_id)  # this worker holds the snapshot's model

    versions = [
        _correct(clean_db, integration_id, 1, "Quixotic toner quote for the drum", "Sales"),
        _correct(clean_db, integration_id, 2, "Zanzibar invoice reminder", "Sales"),
        _correct(clean_db, integration_id, 3, "Zanzibar invoice reminder again", "Support"),
    ]
    assert versions == [snapshot_version + 1, snapshot_version + 2, snapshot_version + 3]
    with clean_db.session() as db:
        row = db.get(ModelState, integration_id)
        assert row is not None
        assert row.state == snapshot and row.snapshot_version == snapshot_version  # not rewritten
        updates = list(db.scalars(select(ModelUpdate).order_by(ModelUpdate.version)))
        assert [u.version for u in updates] == versions
        assert [u.category for u in updates] == ["Sales", "Sales", "Support"]
        assert max(len(u.example) for u in updates) < 20_000  # a few kB, not the model

    # The worker that held the snapshot learns only the three updates...
    incremental = _loaded(clean_db, integration_id)
    assert incremental is not warm
    assert _scores(warm).tolist() != _scores(incremental).tolist()
    # ...and a cold worker (empty cache) replays them onto the snapshot: the same model.
    learning._cache.clear()
    cold = _loaded(clean_db, integration_id)
    assert cold is not incremental
    np.testing.assert_array_equal(_scores(cold), _scores(incremental))
    assert [e.origin for e in cold.examples].count("correction") == 3
    quote = cold.predict_many([_classify("Quixotic toner quote for the drum")])[0]
    assert quote.category == "Sales"

    # A retrain writes a snapshot that includes them, and the log is emptied.
    with clean_db.session() as db:
        learning.train_from_examples(db, integration_id=integration_id, config=CONFIG)
    with clean_db.session() as db:
        row = db.get(ModelState, integration_id)
        assert row is not None and row.snapshot_version == row.version == versions[-1] + 1
        assert db.scalar(select(func.count()).select_from(ModelUpdate)) == 0
    retrained = _loaded(clean_db, integration_id)
    assert [e.origin for e in retrained.examples].count("correction") == 3


def test_a_worker_reading_while_a_snapshot_is_written_reads_again(
    clean_db: Database, integration_id: str
) -> None:
    _correct(clean_db, integration_id, 1, "Quixotic toner quote for the drum", "Sales")
    learning._cache.clear()
    with clean_db.session() as reader:
        stale = reader.scalars(
            select(ModelState).where(ModelState.integration_id == integration_id)
        ).one()
        assert stale.snapshot_version < stale.version  # one update to replay
        # Meanwhile another worker retrains: a new snapshot, the update folded in and deleted.
        with clean_db.session() as writer:
            learning.train_from_examples(writer, integration_id=integration_id, config=CONFIG)
        learning._cache.clear()  # (the writer had rebuilt version 2 in this process on the way)
        classifier = learning._rebuild(reader, stale)
        assert classifier is not None
        assert stale.snapshot_version == stale.version  # it read the row again
        assert [e.origin for e in classifier.examples].count("correction") == 1


def test_corrections_during_a_fold_retrain_neither_wait_nor_get_lost(
    clean_db: Database, integration_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    subjects = [f"Zanzibar invoice reminder number {n}" for n in range(20)]
    for n, subject in enumerate(subjects):
        _correct(clean_db, integration_id, n, subject, "Sales")
    with clean_db.session() as db:
        row = db.get(ModelState, integration_id)
        assert row is not None and row.retrain_due  # 20 corrections: a retrain is due

    during: list[int] = []
    original = Classifier.retrain

    def retrain_while_a_person_corrects(self: Classifier) -> Classifier:
        fitted = original(self)
        # Another worker learns a correction while the fold is fitting. It must not wait for
        # the fold (the old fold held the model row lock for the whole fit).
        view = _view(99, "Quixotic toner quote", "Quixotic toner quote for the drum")
        during.append(
            _correct(clean_db, integration_id, 99, "", "Sales", view=view, lock_timeout="5s")
        )
        return fitted

    monkeypatch.setattr(Classifier, "retrain", retrain_while_a_person_corrects)
    with clean_db.session() as db:
        learning.fold(
            db,
            integration_id=integration_id,
            config=CONFIG,
            settled_before=datetime.now(UTC),
        )
    with clean_db.session() as db:
        row = db.get(ModelState, integration_id)
        assert row is not None and during
        assert row.snapshot_version == row.version == during[0] + 1
        assert not row.retrain_due
        assert db.scalar(select(func.count()).select_from(ModelUpdate)) == 0
    learning._cache.clear()
    folded = _loaded(clean_db, integration_id)
    assert [e.origin for e in folded.examples].count("correction") == 21
    assert folded._learned_since_fit == 1  # the fit saw 20; the one during it came on top
    assert folded.predict(_classify("Quixotic toner quote")).category == "Sales"


def test_a_fold_overtaken_by_a_retrain_changes_nothing(
    clean_db: Database, integration_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for n in range(20):
        _correct(clean_db, integration_id, n, f"Zanzibar invoice reminder number {n}", "Sales")
    original = Classifier.retrain

    def retrain_while_someone_saves_the_editor(self: Classifier) -> Classifier:
        fitted = original(self)
        monkeypatch.setattr(Classifier, "retrain", original)
        with clean_db.session() as db:  # the Retrain button, meanwhile: a new snapshot
            learning.train_from_examples(db, integration_id=integration_id, config=CONFIG)
        return fitted

    monkeypatch.setattr(Classifier, "retrain", retrain_while_someone_saves_the_editor)
    with clean_db.session() as db:
        snapshot_version = learning.state_row(db, integration_id).version + 1
        learned = learning.fold(
            db, integration_id=integration_id, config=CONFIG, settled_before=datetime.now(UTC)
        )
    assert learned == 0
    with clean_db.session() as db:
        row = db.get(ModelState, integration_id)
        assert row is not None and row.version == row.snapshot_version == snapshot_version


def test_switching_the_embedder_off_keeps_corrections_and_on_says_what_is_lost(
    clean_db: Database, integration_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    cascade = ClassifierConfig.with_embeddings()

    def train(config: ClassifierConfig) -> Classifier:
        with clean_db.session() as db:
            return learning.train_from_examples(
                db,
                integration_id=integration_id,
                examples=TYPED,
                config=config,
            )

    assert train(cascade).config.slow_embedder == "e5"
    _correct(clean_db, integration_id, 1, "Quixotic toner quote for the drum", "Sales")
    # POSTROOM_CLASSIFIER_EMBEDDER=e5 -> none: the correction's hashed features carry over.
    plain = train(CONFIG)
    assert plain.config.slow_embedder is None
    assert [e.origin for e in plain.examples].count("correction") == 1
    assert all(e.slow_embedding is None for e in plain.examples)
    assert plain.predict(_classify("Quixotic toner quote for the drum")).category == "Sales"
    # none -> e5: it has no e5 vector (that would need the email): left out, and logged.
    with caplog.at_level("WARNING", logger="postroom.learning.service"):
        again = train(cascade)
    assert [e.origin for e in again.examples].count("correction") == 0
    assert "1 corrections were made without the embeddings" in caplog.text


def test_two_encoders_learn_through_the_update_log_and_hand_their_e5_half_to_e5(
    clean_db: Database, integration_id: str
) -> None:
    """POSTROOM_CLASSIFIER_EMBEDDER=e5+minilm end to end through the product's learning path."""
    two = learning.classifier_config(Settings(classifier_embedder="e5+minilm"))
    assert two == ClassifierConfig.with_two_encoders()
    with clean_db.session() as db:
        learning.train_from_examples(db, integration_id=integration_id, examples=TYPED, config=two)
    warm = _loaded(clean_db, integration_id)
    assert warm.config.slow_embedder == "e5+minilm"
    with clean_db.session() as db:
        learning.record_correction(
            db,
            integration_id=integration_id,
            entry_id="no-such-entry",
            view=_view(1, "Quixotic toner quote for the drum", "Quixotic toner. Regards"),
            correction=corrections.Correction("Support", "Sales", "model"),
            config=two,
            key_secret=KEY_SECRET,
        )
    incremental = _loaded(clean_db, integration_id)
    learning._cache.clear()
    cold = _loaded(clean_db, integration_id)  # snapshot + replayed update: the same model
    np.testing.assert_array_equal(_scores(cold), _scores(incremental))
    (correction,) = [e for e in cold.examples if e.origin == "correction"]
    assert correction.slow_embedding is not None and correction.slow_embedding.shape == (768,)

    with clean_db.session() as db:  # e5+minilm -> e5: the correction keeps its e5 half
        e5 = learning.train_from_examples(
            db,
            integration_id=integration_id,
            examples=TYPED,
            config=ClassifierConfig.with_embeddings(),
        )
    (kept,) = [e for e in e5.examples if e.origin == "correction"]
    assert kept.slow_embedding is not None
    np.testing.assert_array_equal(kept.slow_embedding, correction.slow_embedding[:384])
    assert e5.predict(_classify("Quixotic toner quote for the drum")).category == "Sales"


def test_a_refit_asked_for_while_one_runs_is_not_lost(
    clean_db: Database, integration_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with clean_db.session() as db:
        assert not learning.refit(db, integration_id=integration_id, config=CONFIG)  # none asked
        learning.request_refit(db, integration_id=integration_id)
    with clean_db.session() as db:
        assert learning.integrations_to_refit(db) == [integration_id]  # the reconcile's list

    def a_person_saves_again() -> None:
        with clean_db.session() as db:  # the editor, meanwhile (its examples came too late)
            learning.request_refit(db, integration_id=integration_id, reset=True)

    _during_next_fit(monkeypatch, a_person_saves_again)
    with clean_db.session() as db:
        assert learning.refit(db, integration_id=integration_id, config=CONFIG)
    with clean_db.session() as db:
        row = db.get(ModelState, integration_id)
        assert row is not None and row.refit_requested_at is not None and row.reset_requested_at
        assert learning.integrations_to_refit(db) == [integration_id]
        assert learning.refit(db, integration_id=integration_id, config=CONFIG)
    with clean_db.session() as db:
        row = db.get(ModelState, integration_id)
        assert row is not None and row.refit_requested_at is None and not row.reset_requested_at
        assert learning.integrations_to_refit(db) == []


def test_a_warm_worker_reads_no_snapshot_to_decide_or_to_learn_a_correction(
    clean_db: Database, integration_id: str
) -> None:
    _loaded(clean_db, integration_id)  # warm: this worker holds the current version
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(clean_db.engine, "before_cursor_execute", seen)
    try:
        _loaded(clean_db, integration_id)
        _correct(clean_db, integration_id, 1, "Quixotic toner quote for the drum", "Sales")
        _loaded(clean_db, integration_id)  # one version behind: learns the one update
    finally:
        event.remove(clean_db.engine, "before_cursor_execute", seen)
    assert statements and not [s for s in statements if "model_states.state" in s]


def test_a_process_keeps_a_bounded_number_of_models(
    clean_db: Database, integration_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(learning, "MAX_CACHED_MODELS", 2)
    learning._cache.clear()
    with clean_db.session() as db:
        workspace = db.scalars(select(Workspace)).first()
        assert workspace is not None
        others = [_trained_integration(db, workspace.id) for _ in range(2)]
    for name in [integration_id, *others, others[0]]:
        _loaded(clean_db, name)
    assert [i for i, _ in learning._cache] == [others[1], others[0]]  # least recent went first


def test_a_stale_reader_does_not_evict_the_newer_model_from_the_cache(
    clean_db: Database, integration_id: str
) -> None:
    with clean_db.session() as reader:
        stale = reader.scalars(
            select(ModelState).where(ModelState.integration_id == integration_id)
        ).one()
        newer = _correct(clean_db, integration_id, 1, "Quixotic toner quote", "Sales")
        _loaded(clean_db, integration_id)  # this process now holds the newer version
        learning._cache.pop((integration_id, stale.version), None)
        assert learning._rebuild(reader, stale) is not None
    assert [v for i, v in learning._cache if i == integration_id] == [newer]


def test_a_downgrade_below_0007_refuses_while_corrections_are_only_in_the_log(
    clean_db: Database, integration_id: str
) -> None:
    from alembic import command
    from alembic.config import Config

    _correct(clean_db, integration_id, 1, "Quixotic toner quote", "Sales")
    config = Config()
    config.set_main_option("script_location", str(Path(db_module.__file__).parent / "migrations"))
    with clean_db.engine.connect() as connection:
        config.attributes["connection"] = connection
        with pytest.raises(RuntimeError, match="1 corrections are only in model_updates"):
            command.downgrade(config, "0006")
        connection.rollback()
    with clean_db.session() as db:  # nothing was dropped
        assert db.scalar(select(func.count()).select_from(ModelUpdate)) == 1


# ---------------------------------------------------------------- found in review (session 4)
def test_a_reset_does_not_block_a_correction_of_a_pending_decision(
    clean_db: Database, integration_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reset used to delete the pending decisions before its (unlocked) fit: a correction of
    one of them then waited for the whole fit and the two deadlocked."""
    view = _view(7, "Zanzibar invoice reminder", "Zanzibar invoice reminder. Kind regards")
    with clean_db.session() as db:
        loaded = learning.load_model(db, integration_id)
        assert loaded is not None
        learning.record_decision(
            db,
            integration_id=integration_id,
            classifier=loaded.classifier,
            view=view,
            category="Support",
            key_secret=KEY_SECRET,
        )
        learning.request_refit(db, integration_id=integration_id, reset=True)
    during: list[int] = []
    _during_next_fit(
        monkeypatch,
        lambda: during.append(
            _correct(clean_db, integration_id, 7, "", "Sales", view=view, lock_timeout="5s")
        ),
    )
    with clean_db.session() as db:
        assert learning.refit(db, integration_id=integration_id, config=CONFIG)
    assert during
    with clean_db.session() as db:
        assert db.scalar(select(func.count()).select_from(PendingExample)) == 0
        row = db.get(ModelState, integration_id)
        assert row is not None and row.reset_requested_at is None
        assert row.snapshot_version == row.version == during[0] + 1


def test_a_retrain_asked_for_during_a_reset_stays_a_retrain(
    clean_db: Database, integration_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with clean_db.session() as db:
        learning.request_refit(db, integration_id=integration_id, reset=True)

    def the_editor_saves() -> None:
        with clean_db.session() as db:
            learning.request_refit(db, integration_id=integration_id)

    _during_next_fit(monkeypatch, the_editor_saves)
    with clean_db.session() as db:
        assert learning.refit(db, integration_id=integration_id, config=CONFIG)
    with clean_db.session() as db:
        row = db.get(ModelState, integration_id)
        assert row is not None and row.refit_requested_at is not None  # run again...
        assert row.reset_requested_at is None  # ...as a retrain


def test_an_overtaken_refit_starts_again_without_holding_the_lock_while_fitting(
    clean_db: Database, integration_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = Classifier.fit
    calls: list[str] = []

    def fit(self: Classifier, examples: Any) -> Classifier:
        calls.append("fit")
        if len(calls) == 1:  # another snapshot meanwhile (the fit of it is call 2)
            with clean_db.session() as db:
                learning.train_from_examples(
                    db, integration_id=integration_id, config=CONFIG, lock_first=True
                )
        elif len(calls) == 3:  # the refit's second attempt: a correction must not wait
            _correct(clean_db, integration_id, 3, "Quixotic toner quote for the drum", "Sales")
            calls.append("corrected")
        return original(self, examples)

    with clean_db.session() as db:
        learning.request_refit(db, integration_id=integration_id)
    monkeypatch.setattr(Classifier, "fit", fit)
    with clean_db.session() as db:
        db.execute(text("SET lock_timeout = '5s'"))
        assert learning.refit(db, integration_id=integration_id, config=CONFIG)
    assert "corrected" in calls
    learning._cache.clear()
    with clean_db.session() as db:  # (no categories configured here: corrections only)
        rebuilt = learning._rebuild(db, learning.state_row(db, integration_id))
        assert rebuilt is not None
        assert [e.origin for e in rebuilt.examples].count("correction") == 1


def test_a_refit_under_another_embedder_keeps_what_it_can_of_corrections_made_meanwhile(
    clean_db: Database, integration_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cascade = ClassifierConfig.with_embeddings()
    with clean_db.session() as db:
        learning.train_from_examples(
            db, integration_id=integration_id, examples=TYPED, config=cascade
        )
    _during_next_fit(
        monkeypatch,
        lambda: _correct(clean_db, integration_id, 5, "Quixotic toner quote for the drum", "Sales"),
    )
    with clean_db.session() as db:  # POSTROOM_CLASSIFIER_EMBEDDER e5 -> none, then a refit
        plain = learning.train_from_examples(
            db, integration_id=integration_id, examples=TYPED, config=CONFIG
        )
    assert plain.config.slow_embedder is None
    assert [e.origin for e in plain.examples].count("correction") == 1


def test_a_snapshot_committed_before_the_deferred_state_is_read_is_not_mislabelled(
    clean_db: Database, integration_id: str
) -> None:
    learning._cache.clear()
    with clean_db.session() as reader:
        stale = reader.scalars(
            select(ModelState).where(ModelState.integration_id == integration_id)
        ).one()
        read_at = stale.version
        assert stale.snapshot_version == read_at
        _correct(clean_db, integration_id, 1, "Quixotic toner quote for the drum", "Sales")
        with clean_db.session() as writer:
            learning.train_from_examples(writer, integration_id=integration_id, config=CONFIG)
        learning._cache.clear()
        classifier = learning._rebuild(reader, stale)
        assert classifier is not None
        corrections = [e.origin for e in classifier.examples].count("correction")
        assert stale.version == read_at + 2 and corrections == 1  # read again: the new one


def _classify(text: str) -> MessageView:
    return MessageView(subject=text, body_text=f"{text}. Kind regards, someone")
