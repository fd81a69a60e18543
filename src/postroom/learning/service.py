"""An integration's learned classifier: load, train, correct, save — and hand it to ``decide``.

State lives in :class:`~postroom.learning.models.ModelState` as a *snapshot*
(:func:`~postroom.classify.dump_state` bytes, tens of MB for a large model) plus an update log
(:class:`~postroom.learning.models.ModelUpdate`, one row of a few kB per correction since the
snapshot), with a ``version`` that goes up on every change. The model at a version is the
snapshot plus :meth:`~postroom.classify.Classifier.learn` of each later update, in order.
Workers keep rebuilt classifiers in an in-process cache: a sync reads one small row per message
(the snapshot column is deferred), a worker one version behind learns just the new updates
(milliseconds), and only a new snapshot is read whole.

Training:

* :func:`train_from_examples` fits from scratch on what people configured — each category's
  description (origin ``seed``) and its pasted examples (``user_example``) — and keeps the
  corrections already learned (their hashed features are in the stored state); it writes a
  snapshot, as does :func:`fold`; people ask for it through :func:`request_refit` and the
  ``refit_model`` job (:func:`refit`).
* :mod:`postroom.learning.corrections` (pure) says what a person changed in Outlook; a
  category taken off, or a move back to the Inbox, is learned as "none of these"
  (:data:`~postroom.classify.NONE_OF_THESE`, see ``docs/processing.md``).
  Corrections are learned whether the model is on or off (:func:`load_model`): while it is off
  they wait in its state and are used once it turns on (:func:`model_status` says which).
* :func:`record_correction` is the fast path: one :meth:`~postroom.classify.Classifier.learn`
  step (milliseconds) under a row lock, then one update row with ``version + 1`` — not the whole
  state, which took seconds once a model held thousands of examples — so the next similar email
  is decided differently within seconds. The message text is only used in memory to build the
  example; what is stored is numbers and a :class:`~postroom.learning.models.LearningEvent`
  (category names and a hash).

Sessions are short and never held across a Graph call (STYLE rule 6): callers read the message
first, then call these functions with a session.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session

from postroom.accounts.models import new_id
from postroom.classify import (
    OBSERVE_MINIMUM,
    Classifier,
    ClassifierConfig,
    Example,
    ModelSummary,
    Outcome,
    Remembered,
    adapted,
    dump_state,
    example_from_state,
    example_state,
    from_conversation,
    load_state,
    message_number,
    summarize,
)
from postroom.classify import text_view as classify_text_view
from postroom.integrations.models import Category
from postroom.learning.conversations import forget_conversation, remember_conversation
from postroom.learning.corrections import Correction
from postroom.learning.models import (
    DEFAULT_NEEDS_REVIEW,
    DEFAULT_THRESHOLD,
    CategoryExample,
    LearningEvent,
    ModelState,
    ModelUpdate,
    PendingExample,
)
from postroom.processing.decide import Prediction
from postroom.processing.message_keys import lookup_keys, message_key
from postroom.processing.models import LedgerEntry
from postroom.processing.view import MessageView
from postroom.settings import Settings

MAX_EXAMPLES_PER_CATEGORY = 50
MAX_EXAMPLE_CHARS = 5_000

log = logging.getLogger(__name__)

MAX_CACHED_MODELS = 16
"""Classifiers a process keeps (one per integration, least recently used dropped first): a
large model is ~100 MB in memory, and an integration that was deleted is never asked again."""

_cache: OrderedDict[tuple[str, int], Classifier] = OrderedDict()
_cache_lock = threading.Lock()


def classifier_config(settings: Settings) -> ClassifierConfig:
    """The classifier configuration chosen by ``POSTROOM_CLASSIFIER_EMBEDDER`` and
    ``POSTROOM_CLASSIFIER_OPEN_SET``."""
    return ClassifierConfig.recipe(
        settings.classifier_embedder, open_set=settings.classifier_open_set
    )


# ---------------------------------------------------------------------- adapter
def text_view(text: str) -> MessageView:
    """A pasted example as a view: all of it is read as body text (up to
    :data:`MAX_EXAMPLE_CHARS`)."""
    return classify_text_view(text[:MAX_EXAMPLE_CHARS])


class PagePredictions:
    """The model's own guesses for a page of messages, made together.

    The first email of a page the model is asked about runs :meth:`Classifier.predict_many`
    on every view of the page that may be decided (``views``): the encoders cost less per
    email in one call (e5 packs the texts, MiniLM uses every core), and
    :meth:`Classifier.predict_many` gives what :meth:`Classifier.predict` gives one by one.
    The rest of the page is answered from those; a view not among them, or changed since
    (compared whole), is predicted alone. The decision around the guess (conversation memory,
    threshold, fits-none) stays per email in :class:`ModelAdapter` and
    :func:`postroom.processing.decide.decide`."""

    def __init__(
        self, classifier: Classifier, views: Callable[[], Sequence[MessageView]] = tuple
    ) -> None:
        self.classifier = classifier
        self._views = views
        self._done: dict[str, tuple[MessageView, Prediction]] | None = None
        self.batches = 0  # predict_many calls (for tests and metrics)

    def predict(self, view: MessageView) -> Prediction:
        if self._done is None:
            try:
                listed = self._views()
            except Exception as exc:  # the page is a shortcut: this email is guessed all the same
                log.warning("a page's guesses could not be listed (%s)", type(exc).__name__)
                listed = ()
            page = {v.id: v for v in listed if v.id}
            page[view.id] = view
            ordered = list(page.values())
            self._done = {}
            if len(ordered) > 1 and view.id:
                self.batches += 1
                predicted = self.classifier.predict_many(ordered)
                self._done = {v.id: (v, p) for v, p in zip(ordered, predicted, strict=True)}
        found = self._done.get(view.id) if view.id else None
        if found is not None and found[0] == view:
            return found[1]
        return self.classifier.predict(view)


class ModelAdapter:
    """A trained :class:`Classifier` as :func:`postroom.processing.decide.decide` wants it.

    ``remembered`` is where the message's conversation went last (looked up before deciding,
    see :func:`postroom.learning.conversations.recall_conversation`);
    :func:`~postroom.classify.from_conversation` says when it wins over the model's own guess.
    ``page``: the guesses of the message's page, made together (:class:`PagePredictions`)."""

    def __init__(
        self,
        classifier: Classifier,
        remembered: Remembered | None = None,
        page: PagePredictions | None = None,
    ) -> None:
        self.classifier = classifier
        self.remembered = remembered
        self.page = page if page is not None and page.classifier is classifier else None

    def predict(self, view: MessageView) -> Prediction | None:
        guess = self.page.predict(view) if self.page is not None else self.classifier.predict(view)
        prediction = from_conversation(guess, self.remembered, known=self.classifier.categories)
        return None if prediction.category is None else prediction


@dataclass(frozen=True)
class LoadedModel:
    classifier: Classifier
    version: int
    threshold: float
    needs_review: str | None

    @property
    def adapter(self) -> ModelAdapter:
        return ModelAdapter(self.classifier)

    def adapter_for(
        self, remembered: Remembered | None, page: PagePredictions | None = None
    ) -> ModelAdapter:
        return ModelAdapter(self.classifier, remembered, page)


# ---------------------------------------------------------------------- state
def state_row(db: Session, integration_id: str, *, lock: bool = False) -> ModelState:
    """The integration's row, created (untrained, default settings) when missing; safe when
    two workers create it at once (``ON CONFLICT DO NOTHING``)."""
    query = select(ModelState).where(ModelState.integration_id == integration_id)
    row = db.scalars(query.with_for_update() if lock else query).one_or_none()
    if row is not None:
        return row
    db.execute(
        pg_insert(ModelState)
        .values(
            integration_id=integration_id,
            state=None,
            version=0,
            threshold=DEFAULT_THRESHOLD,
            needs_review=DEFAULT_NEEDS_REVIEW,
            updated_at=datetime.now(UTC),
        )
        .on_conflict_do_nothing(index_elements=["integration_id"])
    )
    return db.scalars(query.with_for_update() if lock else query).one()


class _Moved(Exception):
    """A snapshot was written while the updates were read: read the row again."""


def _updates(db: Session, integration_id: str, after: int, upto: int) -> list[ModelUpdate]:
    updates = list(
        db.scalars(
            select(ModelUpdate)
            .where(
                ModelUpdate.integration_id == integration_id,
                ModelUpdate.version > after,
                ModelUpdate.version <= upto,
            )
            .order_by(ModelUpdate.version)
        )
    )
    if [u.version for u in updates] != list(range(after + 1, upto + 1)):
        raise _Moved
    return updates


def _apply(classifier: Classifier, updates: list[ModelUpdate]) -> Classifier:
    """``classifier`` (a private copy) after learning ``updates`` in order. A refit under
    another ``POSTROOM_CLASSIFIER_EMBEDDER`` than the corrections were made with keeps what it
    can of them (see :func:`~postroom.classify.adapted`)."""
    for update in updates:
        made = example_from_state(load_state(update.example), update.category)
        example = adapted(made, classifier.config)
        if example is None:
            log.warning(
                "model update %d lacks the embeddings of the new configuration; left out",
                update.version,
            )
            continue
        classifier.learn(example)
    return classifier


def _rebuild(db: Session, row: ModelState) -> Classifier | None:
    """The classifier at ``row.version``, shared through the cache (only read from it).

    A worker holding an earlier version since the snapshot learns just the updates it has not
    seen (milliseconds each); otherwise the snapshot is read and every update replayed. The
    cache is filled from committed reads only, never by the write paths (a rolled-back
    correction must not be remembered as a version)."""
    for attempt in range(3):
        try:
            return _rebuild_once(db, row)
        except _Moved:
            if attempt == 2:
                raise RuntimeError(
                    f"the model of {row.integration_id} kept changing while it was read"
                ) from None
            db.expire(row)  # every column, the deferred state too, is read again
    return None  # unreachable


def _rebuild_once(db: Session, row: ModelState) -> Classifier | None:
    if row.snapshot_version == 0 and row.version == 0:
        return None
    with _cache_lock:
        cached = _cache.get((row.integration_id, row.version))
        if cached is not None:
            _cache.move_to_end((row.integration_id, row.version))
        older = [v for (i, v) in _cache if i == row.integration_id and v < row.version]
        base_version = max(older) if older else -1
        base = _cache[(row.integration_id, base_version)] if older else None
    if cached is not None:
        return cached
    if base is not None and row.snapshot_version <= base_version:
        updates = _updates(db, row.integration_id, base_version, row.version)
        classifier = _apply(base.copy(), updates)
    else:
        # The snapshot with the version it was written at, in one read: a snapshot committed
        # since the row was read must not pass for the older one.
        state, written_at = db.execute(
            select(ModelState.state, ModelState.snapshot_version).where(
                ModelState.integration_id == row.integration_id
            )
        ).one()
        if written_at != row.snapshot_version:
            raise _Moved
        if state is None:
            return None
        snapshot = Classifier.from_state(load_state(state))
        classifier = _apply(
            snapshot, _updates(db, row.integration_id, row.snapshot_version, row.version)
        )
    with _cache_lock:
        held = [k for k in _cache if k[0] == row.integration_id]
        if all(version < row.version for _, version in held):  # a stale reader keeps the newer
            for old in held:
                del _cache[old]
            _cache[(row.integration_id, row.version)] = classifier
            while len(_cache) > MAX_CACHED_MODELS:
                _cache.popitem(last=False)
    return classifier


def load_model(db: Session, integration_id: str) -> LoadedModel | None:
    """The integration's trained classifier and settings, or None before any training.

    The returned classifier is shared through the cache: only read from it (predict)."""
    row = db.scalars(
        select(ModelState).where(ModelState.integration_id == integration_id)
    ).one_or_none()
    if row is None:
        return None
    classifier = _rebuild(db, row)
    if classifier is None or len(classifier.labelled_categories()) < MODEL_MINIMUM_CATEGORIES:
        # One category cannot be told apart from anything, and descriptions alone are too
        # little: the model is off. Corrections made meanwhile are kept in its state (and
        # learned with a full fit, see Classifier.learn) and used once it turns on.
        return None
    return LoadedModel(classifier, row.version, row.threshold, row.needs_review)


MODEL_MINIMUM_CATEGORIES = 2
"""Categories that need examples from people (typed or corrections) before the model decides."""


@dataclass(frozen=True)
class ModelStatus:
    """Whether the model decides, and what it has: for the Model page and the category editor."""

    on: bool
    with_examples: tuple[str, ...]
    """Configured categories with examples from people: typed in the editor, or corrections
    kept in the model's state (in configured order)."""
    rebuilding: bool
    """A refit was asked for and has not run yet."""

    @property
    def turns_on(self) -> bool:
        """Off now, but what people gave is enough: the (pending) rebuild switches it on."""
        return not self.on and len(self.with_examples) >= MODEL_MINIMUM_CATEGORIES


def model_status(db: Session, integration_id: str) -> ModelStatus:
    """The model's status in words' terms: on, and which categories have examples (reads the
    model state through the cache, like the Model page)."""
    row = db.scalars(
        select(ModelState).where(ModelState.integration_id == integration_id)
    ).one_or_none()
    classifier = _rebuild(db, row) if row is not None else None
    on = classifier is not None and (
        len(classifier.labelled_categories()) >= MODEL_MINIMUM_CATEGORIES
    )
    corrected = (
        {e.category for e in classifier.examples if e.origin == "correction"}
        if classifier is not None and (row is None or row.reset_requested_at is None)
        else set()
    )
    typed = set(
        db.scalars(
            select(Category.name)
            .join(CategoryExample, CategoryExample.category_id == Category.id)
            .where(Category.integration_id == integration_id)
        )
    )
    names = db.scalars(
        select(Category.name)
        .where(Category.integration_id == integration_id)
        .order_by(Category.position)
    )
    return ModelStatus(
        on=on,
        with_examples=tuple(n for n in names if n in typed or n in corrected),
        rebuilding=row is not None and row.refit_requested_at is not None,
    )


def _private_copy(db: Session, row: ModelState, config: ClassifierConfig) -> Classifier:
    """A private classifier to change (never the cached instance)."""
    current = _rebuild(db, row)
    return Classifier(config) if current is None else current.copy()


def _snapshot(db: Session, row: ModelState, classifier: Classifier) -> int:
    """Write the whole state as the new snapshot (seconds for a large model: fits and folds
    only) and drop the updates it includes."""
    row.state = dump_state(classifier.to_state())
    row.version = row.version + 1
    row.snapshot_version = row.version
    row.updated_at = datetime.now(UTC)
    row.retrain_due = classifier.needs_retrain()
    db.execute(delete(ModelUpdate).where(ModelUpdate.integration_id == row.integration_id))
    return row.version


def _append(db: Session, row: ModelState, classifier: Classifier, example: Example) -> int:
    """Record that ``classifier`` (a private copy at ``row.version``) learned ``example``:
    one :class:`ModelUpdate` row, not the whole state."""
    if row.snapshot_version == 0:  # (not row.state: that would read the whole snapshot)
        return _snapshot(db, row, classifier)  # the first model: a snapshot to replay onto
    row.version = row.version + 1
    row.updated_at = datetime.now(UTC)
    row.retrain_due = classifier.needs_retrain()
    db.add(
        ModelUpdate(
            integration_id=row.integration_id,
            version=row.version,
            category=example.category,
            example=dump_state(example_state(example)),
            created_at=row.updated_at,
        )
    )
    return row.version


# ---------------------------------------------------------------------- examples
def split_examples(raw: str) -> list[str]:
    """Examples typed into the editor: one per paragraph (blank line between)."""
    paragraphs = [p.strip() for p in raw.replace("\r\n", "\n").split("\n\n")]
    return [p[:MAX_EXAMPLE_CHARS] for p in paragraphs if p][:MAX_EXAMPLES_PER_CATEGORY]


def examples_of(db: Session, category_id: str) -> list[str]:
    return list(
        db.scalars(
            select(CategoryExample.text)
            .where(CategoryExample.category_id == category_id)
            .order_by(CategoryExample.position)
        )
    )


def set_examples(db: Session, *, integration_id: str, category_id: str, texts: list[str]) -> bool:
    """Replace a category's pasted examples; True when they changed."""
    if examples_of(db, category_id) == texts:
        return False
    for row in db.scalars(
        select(CategoryExample).where(CategoryExample.category_id == category_id)
    ):
        db.delete(row)
    db.flush()
    for position, text in enumerate(texts):
        db.add(
            CategoryExample(
                integration_id=integration_id,
                category_id=category_id,
                text=text,
                position=position,
            )
        )
    db.flush()
    return True


def configured_examples(db: Session, integration_id: str) -> list[tuple[str, str, bool]]:
    """(category, text, is_description) for every category's description and examples."""
    categories = list(
        db.scalars(
            select(Category)
            .where(Category.integration_id == integration_id)
            .order_by(Category.position)
        )
    )
    out: list[tuple[str, str, bool]] = []
    for category in categories:
        if (category.description or "").strip():
            out.append((category.name, category.description.strip(), True))
        out.extend((category.name, text, False) for text in examples_of(db, category.id))
    return out


class RefitOvertaken(Exception):
    """Another snapshot was written while this fit ran: its work is stale (nothing written;
    the model row stays locked until the caller ends the transaction)."""


def train_from_examples(
    db: Session,
    *,
    integration_id: str,
    examples: list[tuple[str, str]] | None = None,
    config: ClassifierConfig,
    keep_corrections: bool = True,
    lock_first: bool = False,
) -> Classifier:
    """Fit from scratch on typed examples ``(category, text)`` — by default the categories'
    descriptions and pasted examples — keeping learned corrections unless told otherwise
    (then pending decisions are forgotten too).

    Like :func:`fold`, the fit runs without the model row lock; then the row is locked and the
    corrections that landed meanwhile are learned on top (for a reset they are forgotten too).
    If another snapshot was written meanwhile, :class:`RefitOvertaken` is raised; with
    ``lock_first`` the lock is held throughout, so that cannot happen. Records one ``example``
    event per typed example (category names only) and writes a snapshot; the row stays locked
    until the caller commits."""
    row = state_row(db, integration_id)
    labelled: list[tuple[str, str, bool]]
    if examples is None:
        labelled = configured_examples(db, integration_id)
    else:
        labelled = [(category, text, False) for category, text in examples]
    made = _typed_examples(Classifier(config), labelled)
    if lock_first:
        _lock(db, row)
    previous = _private_copy(db, row, config)
    started_at = row.version
    learned = _carried_over(previous, config, integration_id) if keep_corrections else []
    classifier = Classifier(config).fit([*made, *learned])
    if not lock_first:
        _lock(db, row)
        if row.snapshot_version > started_at:
            raise RefitOvertaken(integration_id)
        if row.version > started_at and keep_corrections:
            _apply(classifier, _updates(db, integration_id, started_at, row.version))
    if not keep_corrections:  # (under the lock: a correction takes it before these rows)
        db.execute(delete(PendingExample).where(PendingExample.integration_id == integration_id))
    for category, _, seed in labelled:
        if not seed:
            db.add(LearningEvent(integration_id=integration_id, kind="example", category=category))
    _snapshot(db, row, classifier)
    return classifier


def _lock(db: Session, row: ModelState) -> None:
    """Take the model row lock and forget what was read of the row before it."""
    db.execute(
        select(ModelState.integration_id)
        .where(ModelState.integration_id == row.integration_id)
        .with_for_update()
    )
    db.expire(row)


def _typed_examples(classifier: Classifier, labelled: list[tuple[str, str, bool]]) -> list[Example]:
    made = classifier.make_examples(
        [text_view(text) for _, text, _ in labelled],
        [category for category, _, _ in labelled],
        "user_example",
    )
    return [
        replace(e, origin="seed") if seed else e
        for e, (_, _, seed) in zip(made, labelled, strict=True)
    ]


def _carried_over(
    previous: Classifier, config: ClassifierConfig, integration_id: str
) -> list[Example]:
    """The corrections and learned decisions of ``previous``, for a model built with
    ``config``."""
    learned = [e for e in previous.examples if e.origin in ("correction", "decision")]
    if previous.config.same_embeddings(config):
        return learned
    # POSTROOM_CLASSIFIER_EMBEDDER changed: towards fewer encoders the hashed features (and
    # the e5 half of an e5+minilm vector) carry over; towards more they cannot (the vectors
    # would need the email's text).
    converted = [adapted(e, config) for e in learned]
    dropped = sum(
        1
        for new, old in zip(converted, learned, strict=True)
        if new is None and old.origin == "correction"
    )
    if dropped:
        log.warning(
            "integration %s: %d corrections were made without the embeddings the new "
            "POSTROOM_CLASSIFIER_EMBEDDER needs; the refit leaves them out",
            integration_id,
            dropped,
        )
    return [e for e in converted if e is not None]


def request_refit(db: Session, *, integration_id: str, reset: bool = False) -> None:
    """Ask for a refit in the background (the ``refit_model`` job, see :func:`refit`): what
    the editor, Retrain and Reset do, so that a request never waits for a fit (a minute for a
    model that learned thousands of decisions; longer with e5)."""
    row = state_row(db, integration_id, lock=True)
    now = datetime.now(UTC)
    row.refit_requested_at = now
    if reset:
        row.reset_requested_at = now


def refit(db: Session, *, integration_id: str, config: ClassifierConfig) -> bool:
    """Carry out a requested refit (:func:`request_refit`); False when none was asked for.

    A request made while it ran stays asked for, so the job runs again (a Reset asked for
    meanwhile stays a Reset; a Retrain does not turn into one). Overtaken by another snapshot
    it starts again, the third time under the lock throughout."""
    for attempt in range(3):
        row = state_row(db, integration_id)
        asked, reset_asked = row.refit_requested_at, row.reset_requested_at
        if asked is None:
            return False
        try:
            train_from_examples(
                db,
                integration_id=integration_id,
                config=config,
                keep_corrections=reset_asked is None,
                lock_first=attempt == 2,
            )
        except RefitOvertaken:
            db.rollback()  # (releases the lock; nothing was written)
            continue
        # (read under the lock the snapshot was written with)
        if row.refit_requested_at == asked:
            row.refit_requested_at = None
        if reset_asked is not None and row.reset_requested_at == reset_asked:
            row.reset_requested_at = None
        return True
    raise AssertionError("unreachable: the last attempt holds the lock")


def refit_pending(db: Session, integration_id: str) -> bool:
    """Whether a requested refit has not run yet (read only: no row is created)."""
    asked = db.scalar(
        select(ModelState.refit_requested_at).where(ModelState.integration_id == integration_id)
    )
    return asked is not None


def integrations_to_refit(db: Session) -> list[str]:
    return sorted(
        db.scalars(
            select(ModelState.integration_id).where(ModelState.refit_requested_at.is_not(None))
        )
    )


# ---------------------------------------------------------------------- corrections
def record_correction(
    db: Session,
    *,
    integration_id: str,
    entry_id: str,
    view: MessageView,
    correction: Correction,
    config: ClassifierConfig,
    key_secret: bytes,
    conversation_secret: bytes | None = None,
) -> int:
    """Learn ``correction`` from ``view`` (in memory), save the state and mark the ledger row.

    With ``conversation_secret``, the rest of the message's conversation follows the
    correction from now on (a rejection: the conversation is forgotten, so replies no longer
    follow the rejected category). Returns the new model version. The ledger row stays
    ``done``; nothing is done to the mail. Learned whether the model is on or off: while it is
    off the state keeps the example, and it is used when the model turns on.
    """
    row = state_row(db, integration_id, lock=True)
    classifier = _private_copy(db, row, config)
    key, legacy = lookup_keys(view.internet_message_id, key_secret)
    db.execute(
        delete(PendingExample).where(
            PendingExample.integration_id == integration_id,
            PendingExample.message_key.in_((key, legacy)),  # legacy: not rekeyed yet
        )
    )
    example = classifier.make_example(
        view, correction.category, "correction", key=message_number(key)
    )
    classifier.learn(example)  # replaces the decision it corrects, if that was learned already
    version = _append(db, row, classifier, example)
    if conversation_secret is not None and correction.rejected:
        forget_conversation(db, integration_id, view, conversation_secret)
    elif conversation_secret is not None:
        remember_conversation(
            db, integration_id, view, correction.category, conversation_secret, by_person=True
        )
    predicted = correction.previous if correction.decided_by == "model" else None
    db.add(
        LearningEvent(
            integration_id=integration_id,
            # a rejection names the category taken off (no category was chosen)
            kind="rejection" if correction.rejected else "correction",
            category=(correction.previous or "") if correction.rejected else correction.category,
            predicted=predicted,
            decided_by=correction.decided_by,
            message_key=key,
            legacy_key=False,
        )
    )
    entry = db.get(LedgerEntry, entry_id, with_for_update=True)
    if entry is not None:
        entry.plan = {**(entry.plan or {}), "corrected_to": correction.category}
    return version


# ---------------------------------------------------------------------- decisions
def record_decision(
    db: Session,
    *,
    integration_id: str,
    classifier: Classifier,
    view: MessageView,
    category: str,
    key_secret: bytes,
) -> None:
    """Keep a decision as a pending example (hashed features only) until it has stood long
    enough without a correction to be learned (:func:`fold`). Once per message."""
    key = message_key(view.internet_message_id, key_secret)
    example = classifier.make_example(view, category, "decision", key=message_number(key))
    db.execute(
        pg_insert(PendingExample)
        .values(
            id=new_id(),
            integration_id=integration_id,
            message_key=key,
            legacy_key=False,
            category=category,
            features=dump_state(example_state(example)),
            created_at=datetime.now(UTC),
        )
        .on_conflict_do_nothing(index_elements=["integration_id", "message_key"])
    )


def integrations_to_fold(db: Session, settled_before: datetime, *, decisions: bool) -> list[str]:
    """Integrations whose model is due a retrain, and (with ``decisions``) those with
    decisions that stood uncorrected until ``settled_before``."""
    due = select(ModelState.integration_id).where(ModelState.retrain_due)
    if decisions:
        settled = select(PendingExample.integration_id).where(
            PendingExample.created_at <= settled_before
        )
        return sorted(set(db.scalars(due)) | set(db.scalars(settled.distinct())))
    return sorted(db.scalars(due))


FOLD_BATCH = 2_000


def fold(
    db: Session,
    *,
    integration_id: str,
    config: ClassifierConfig,
    settled_before: datetime,
    minimum: int = OBSERVE_MINIMUM,
    decisions: bool = True,
) -> int:
    """Learn the pending decisions that stood uncorrected until ``settled_before`` and retrain
    when enough was learned since the last fit (decisions or corrections).

    Each decision becomes an example (origin ``decision``) that joins the retrain. Decisions
    for categories that no longer exist or have fewer than ``minimum`` examples from people,
    or made under another classifier configuration, are dropped (see
    :meth:`Classifier.observe`); with ``decisions=False`` (learning from decisions turned off)
    all pending ones are. Returns how many were learned.

    The fit (a minute for a large model) runs without any lock, so corrections keep landing
    meanwhile; then the model row is locked, the corrections that arrived during the fit are
    learned on top (:func:`_apply`), and the snapshot is written. If a snapshot was written in
    the meantime (the editor, Retrain, Reset), this fold's work is stale: nothing is changed
    and the next reconcile folds again."""
    row = state_row(db, integration_id)
    pending = list(
        db.execute(
            select(PendingExample.id, PendingExample.category, PendingExample.features)
            .where(
                PendingExample.integration_id == integration_id,
                PendingExample.created_at <= settled_before,
            )
            .order_by(PendingExample.created_at)
            .limit(FOLD_BATCH)
        )
    )
    if not pending and not row.retrain_due:
        return 0
    classifier = _private_copy(db, row, config)
    started_at = row.version  # (after the copy: reading it may have read the row again)
    learned = 0
    for item in pending:
        if not decisions or item.category not in classifier.categories:
            continue
        if not classifier.config.same_embeddings(config):
            continue
        try:
            example = example_from_state(load_state(item.features), item.category)
            learned += int(classifier.observe(example, minimum=minimum))
        except (ValueError, KeyError):
            continue  # written by another configuration or version: not learnable
    retrain = classifier.needs_retrain()
    if retrain:
        classifier.retrain()

    _lock(db, row)  # from here on no correction lands until the snapshot is committed
    if row.snapshot_version > started_at:
        return 0  # refit meanwhile from what people configured: fold again next time
    if row.version > started_at:
        _apply(classifier, _updates(db, integration_id, started_at, row.version))
    db.execute(delete(PendingExample).where(PendingExample.id.in_([item.id for item in pending])))
    if learned or retrain:
        _snapshot(db, row, classifier)
    else:
        row.retrain_due = False
    return learned


# ---------------------------------------------------------------------- the Model page
def outcomes(db: Session, integration_id: str, *, window: int = 200) -> list[Outcome]:
    """Settled model decisions, oldest first: corrected ones disagree, the rest agree."""
    rows = list(
        db.scalars(
            select(LedgerEntry)
            .where(LedgerEntry.integration_id == integration_id, LedgerEntry.state == "done")
            .order_by(LedgerEntry.done_at.desc())
            .limit(window * 4)
        )
    )
    found: list[Outcome] = []
    for entry in rows:
        plan = entry.plan or {}
        if plan.get("decided_by") != "model" or not plan.get("category"):
            continue
        chosen = plan.get("corrected_to")  # (NONE_OF_THESE, "", when it was taken off)
        if chosen is None:
            chosen = plan["category"]
        found.append(Outcome(predicted=plan["category"], chosen=str(chosen)))
        if len(found) >= window:
            break
    return list(reversed(found))


def model_summary(db: Session, integration_id: str) -> tuple[ModelSummary, ModelState]:
    row = state_row(db, integration_id)
    loaded = _rebuild(db, row)
    names = [
        c.name
        for c in db.scalars(select(Category).where(Category.integration_id == integration_id))
    ]
    examples = loaded.examples if loaded is not None else ()
    return summarize(examples, outcomes(db, integration_id), categories=names), row


def set_review_settings(
    db: Session, *, integration_id: str, threshold: float, needs_review: str | None
) -> None:
    row = state_row(db, integration_id, lock=True)
    row.threshold = threshold
    row.needs_review = needs_review
    row.updated_at = datetime.now(UTC)
