"""The linear head: one-vs-rest scores over hashed features and embeddings, its fitting,
temperature calibration, the k-nearest-neighbour vote and the out-of-fold quantiles the
open-set check reads (``docs/decisions/0010-open-set.md``). Numbers in, numbers out."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from scipy import sparse  # type: ignore[import-untyped]
from sklearn.exceptions import ConvergenceWarning  # type: ignore[import-untyped]
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]
from sklearn.svm import LinearSVC  # type: ignore[import-untyped]

from postroom.classify.config import Head
from postroom.classify.features import (
    Float32Array,
)
from postroom.processing.decide import NONE_OF_THESE

CALIBRATION_EXAMPLES = 1_500
"""At most this many examples (a seeded, per-category sample) are used to fit the temperature."""
_DEFAULT_TEMPERATURE = 4.0
FIT_LEVELS = np.linspace(0.0, 1.0, 21)
"""Levels at which a class's out-of-fold scores are kept (every 5 %): what
:attr:`Prediction.fit` is read from. 21 numbers per category, no text."""
MIN_FIT_SCORES = 8
"""A class with fewer out-of-fold scores of its own takes the quantiles of all classes'."""
_CALIBRATION_FOLDS = 3
_TEMPERATURES = np.geomspace(0.5, 60.0, 48)


@dataclass(slots=True)
class LinearHead:
    """One-vs-rest linear scores over the feature columns seen in training or learning.

    ``columns[j]`` is the feature id of weight column ``j`` (unique, in the order they were
    first seen); ``weights`` may have spare zero columns beyond ``len(columns)`` so that a
    correction bringing new features rarely reallocates (capacity doubles)."""

    classes: list[str]
    columns: npt.NDArray[np.int64]
    weights: Float32Array  # (classes, capacity >= len(columns))
    bias: Float32Array  # (classes,)
    temperature: float
    fit_quantiles: Float32Array | None = None
    """(classes, len(FIT_LEVELS)): quantiles of each class's own out-of-fold scores at the last
    fit; a NaN row for a class without them (added since, or "none of these")."""
    _position: npt.NDArray[np.int32] | None = field(default=None, repr=False)

    def _positions(self, width: int) -> npt.NDArray[np.int32]:
        """Feature id → weight column (-1 for unknown), for ids below ``width`` at least."""
        known = int(self.columns.max()) + 1 if self.columns.size else 0
        if self._position is None or self._position.size < max(width, known):
            position = np.full(max(width, known), -1, np.int32)
            position[self.columns] = np.arange(self.columns.size, dtype=np.int32)
            self._position = position
        return self._position

    def project(self, rows: sparse.csr_matrix) -> sparse.csr_matrix:
        """``rows`` as weight columns (unknown features dropped: they score zero)."""
        position = self._positions(rows.shape[1])[rows.indices]
        keep = position >= 0
        row_of = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
        indptr = np.zeros(rows.shape[0] + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(np.bincount(row_of[keep], minlength=rows.shape[0]))
        return sparse.csr_matrix(
            (rows.data[keep], position[keep], indptr),
            shape=(rows.shape[0], self.weights.shape[1]),
        )

    def scores(self, rows: sparse.csr_matrix) -> Float32Array:
        """Scores over the weight columns the rows touch only: ``rows @ weights.T`` would have
        scipy copy the whole transposed matrix on every call (17 ms for a 20-category 20NG model,
        45 ms once corrections had doubled its capacity; a few ms this way)."""
        projected = self.project(rows)
        touched, compact = np.unique(projected.indices, return_inverse=True)
        narrow = sparse.csr_matrix(
            (projected.data, compact.ravel(), projected.indptr),
            shape=(rows.shape[0], touched.size),
        )
        return np.asarray(narrow @ self.weights[:, touched].T, dtype=np.float32) + self.bias

    def copy(self) -> LinearHead:
        """An independent head: a step on the copy leaves this one as it was."""
        return LinearHead(
            list(self.classes),
            self.columns.copy(),
            self.weights.copy(),
            self.bias.copy(),
            self.temperature,
            None if self.fit_quantiles is None else self.fit_quantiles.copy(),
            None if self._position is None else self._position.copy(),
        )

    def fit_of(self, row: int, score: float) -> float | None:
        """Share of class ``row``'s own examples that scored lower than ``score`` (linear
        between the stored quantiles); None when that class has none."""
        if self.fit_quantiles is None or row >= self.fit_quantiles.shape[0]:
            return None
        return share_below(self.fit_quantiles[row], FIT_LEVELS, score)

    def probabilities(self, scores: Float32Array) -> Float32Array:
        return softmax(scores, self.temperature)

    def used_weights(self) -> Float32Array:
        return self.weights[:, : self.columns.size]

    def add_category(self, category: str) -> None:
        self.classes.append(category)
        self.weights = np.vstack([self.weights, np.zeros((1, self.weights.shape[1]), np.float32)])
        start = float(np.mean(self.bias)) if self.bias.size else -1.0
        if category == NONE_OF_THESE:
            # No evidence for "none of these" except the example's own features: it starts
            # where the PA step puts every other class on that email (at most -1), so that
            # mail unlike it keeps its category and confidence.
            start = min(start, -1.0, float(np.min(self.bias)) if self.bias.size else -1.0)
        self.bias = np.append(self.bias, np.float32(start)).astype(np.float32)
        if self.fit_quantiles is not None:
            unknown = np.full((1, self.fit_quantiles.shape[1]), np.nan, np.float32)
            self.fit_quantiles = np.vstack([self.fit_quantiles, unknown])

    def _add_columns(self, features: npt.NDArray[np.int64], width: int) -> None:
        position = self._positions(width)
        new = np.unique(features[position[features] < 0])
        if not new.size:
            return
        used = self.columns.size
        if used + new.size > self.weights.shape[1]:
            capacity = max(2 * self.weights.shape[1], used + new.size, 1024)
            grown = np.zeros((self.weights.shape[0], capacity), np.float32)
            grown[:, :used] = self.weights[:, :used]
            self.weights = grown
        self.columns = np.concatenate([self.columns, new.astype(np.int64)])
        position[new] = np.arange(used, used + new.size, dtype=np.int32)

    def passive_aggressive_step(self, row: sparse.csr_matrix, category: str, cap: float) -> None:
        """One PA-I step per one-vs-rest problem towards ``category`` for a single row.

        Biases stay as trained: moving them would shift the scores of *every* email.
        """
        self._add_columns(row.indices.astype(np.int64), row.shape[1])
        projected = self.project(row)
        values = projected.data.astype(np.float32)
        positions = projected.indices
        scores = (self.weights[:, positions] @ values) + self.bias
        signs = np.where(np.array(self.classes) == category, 1.0, -1.0).astype(np.float32)
        losses = np.maximum(0.0, 1.0 - signs * scores)
        steps = np.minimum(cap, losses / max(float(values @ values), 1e-6)) * signs
        self.weights[:, positions] += steps[:, None].astype(np.float32) * values[None, :]


def project_columns(rows: sparse.csr_matrix, columns: npt.NDArray[np.int64]) -> sparse.csr_matrix:
    indices = rows.indices.astype(np.int64)
    positions = np.searchsorted(columns, indices)
    positions[positions == columns.size] = 0
    keep = columns[positions] == indices if columns.size else np.zeros(indices.size, bool)
    row_of = np.repeat(np.arange(rows.shape[0]), np.diff(rows.indptr))
    indptr = np.zeros(rows.shape[0] + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(np.bincount(row_of[keep], minlength=rows.shape[0]))
    return sparse.csr_matrix(
        (rows.data[keep], positions[keep], indptr), shape=(rows.shape[0], columns.size)
    )


def softmax(scores: Float32Array, temperature: float) -> Float32Array:
    scaled = scores.astype(np.float64) * temperature
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    probabilities: Float32Array = (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)
    return probabilities


def fit_linear(
    rows: sparse.csr_matrix,
    labels: npt.NDArray[np.int64],
    classes: int,
    *,
    head: Head,
    c: float,
    seed: int,
    balanced: bool = False,
) -> tuple[Float32Array, Float32Array]:
    """Weights ``(classes, columns)`` and biases of one-vs-rest linear SVMs (liblinear, seeded)
    or of a multinomial logistic regression (lbfgs: deterministic, no sampling)."""
    present = np.unique(labels)
    weights = np.zeros((classes, rows.shape[1]), np.float32)
    bias = np.full(classes, -1.0, np.float32)
    if present.size < 2:
        if present.size == 1:
            bias[present[0]] = 1.0
        return weights, bias
    weight = "balanced" if balanced else None
    if head == "logistic":
        model = LogisticRegression(C=c, max_iter=300, class_weight=weight)
    else:
        model = LinearSVC(C=c, random_state=seed, dual=True, max_iter=2_000, class_weight=weight)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(rows, labels)
    coef = np.asarray(model.coef_, np.float32)
    intercept = np.asarray(model.intercept_, np.float32)
    if present.size == 2:  # one row for two classes; a logistic logit is split symmetrically
        half = np.float32(0.5 if head == "logistic" else 1.0)
        coef = np.vstack([-coef[0], coef[0]]) * half
        intercept = np.array([-intercept[0], intercept[0]], np.float32) * half
    weights[present] = coef
    bias[present] = intercept
    return weights, bias


Fit = Callable[[sparse.csr_matrix, npt.NDArray[np.int64]], tuple[Float32Array, Float32Array]]
Blend = Callable[[Float32Array, npt.NDArray[np.bool_], npt.NDArray[np.bool_]], Float32Array]
"""Final scores of held-out rows from their head scores, given which rows are training and
which held out (the nearest-neighbour vote may only use the training ones)."""


def zscored(scores: Float32Array) -> Float32Array:
    spread = scores.std(axis=-1, keepdims=True)
    out: Float32Array = (
        (scores - scores.mean(axis=-1, keepdims=True)) / np.maximum(spread, 1e-6)
    ).astype(np.float32)
    return out


def share_below(
    quantiles: Float32Array, levels: npt.NDArray[np.float64], value: float
) -> float | None:
    """The share (0–1) of a sample that lies below ``value``, read linearly between its
    ``quantiles`` at ``levels``; None when the quantiles are unknown (NaN)."""
    if np.isnan(quantiles).any():
        return None
    if value <= quantiles[0]:
        return 0.0
    if value >= quantiles[-1]:
        return 1.0
    # Equal quantiles (ties): side="right" takes the highest level among them.
    upper = int(np.searchsorted(quantiles, value, side="right"))
    low, high = quantiles[upper - 1], quantiles[upper]
    share = (value - low) / (high - low) if high > low else 1.0
    return float(levels[upper - 1] + share * (levels[upper] - levels[upper - 1]))


NEAREST_LEVELS = np.array(
    [0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0], np.float64
)
"""Levels at which a class's nearest-example similarities are kept (finer at the low end,
where the open-set bar sits): what :attr:`Prediction.nearest_fit` is read from."""
MIN_NEAREST_EXAMPLES = 5
"""A class with fewer examples has no nearest-example bar: the check leaves its mail alone."""
NEAREST_SAMPLE = 1_000
"""At most this many examples of a class (seeded) are asked for their nearest neighbour."""


def nearest_quantiles(
    keys: Float32Array, labels: npt.NDArray[np.int64], classes: int, seed: int
) -> Float32Array:
    """(classes, len(NEAREST_LEVELS)): for each class, quantiles of how similar each of its
    examples is to the most similar *other* example of the class (unit ``keys``, so cosine);
    a NaN row for a class with fewer than :data:`MIN_NEAREST_EXAMPLES`."""
    out = np.full((classes, NEAREST_LEVELS.size), np.nan, np.float32)
    rng = np.random.default_rng(seed)
    for row in range(classes):
        members = np.flatnonzero(labels == row)
        if members.size < MIN_NEAREST_EXAMPLES:
            continue
        asked = members
        if members.size > NEAREST_SAMPLE:
            asked = np.sort(rng.choice(members, NEAREST_SAMPLE, replace=False))
        similarity = keys[asked] @ keys[members].T
        similarity[np.arange(asked.size), np.searchsorted(members, asked)] = -np.inf
        out[row] = np.quantile(similarity.max(axis=1), NEAREST_LEVELS).astype(np.float32)
    return out


def knn_vote(
    queries: Float32Array,
    memory: Float32Array,
    labels: npt.NDArray[np.int64],
    classes: int,
    neighbours: int,
    temperature: float,
) -> Float32Array:
    """log of each class's share of a similarity-weighted vote of the nearest examples."""
    votes = np.zeros((queries.shape[0], classes), np.float64)
    k = min(neighbours, memory.shape[0] - 1)
    if k < 1:
        return votes.astype(np.float32)
    # One product per email: a matrix product over several emails may round differently
    # from the same email alone, and predict_many() must equal predict() one by one.
    similarity = np.vstack([memory @ query for query in queries])
    top = np.argpartition(-similarity, k, axis=1)[:, :k]
    weight = np.exp((np.take_along_axis(similarity, top, 1) - 1.0) / temperature)
    rows = np.repeat(np.arange(queries.shape[0]), k)
    np.add.at(votes, (rows, labels[top].ravel()), weight.ravel())
    votes /= np.maximum(votes.sum(axis=1, keepdims=True), 1e-300)
    logs: Float32Array = np.log(votes + 1e-4).astype(np.float32)
    return logs


def fit_temperature(
    rows: sparse.csr_matrix,
    labels: npt.NDArray[np.int64],
    classes: int,
    fit: Fit,
    seed: int,
    blend: Blend | None = None,
    no_fit: int | None = None,
) -> tuple[float, Float32Array | None]:
    """Softmax temperature minimizing the log loss of out-of-fold scores, and the quantiles
    (:data:`FIT_LEVELS`) of each class's out-of-fold scores for its own examples (class
    ``no_fit``, "none of these", gets none: it is what fits nothing).

    The temperature is fitted on a sample (:data:`CALIBRATION_EXAMPLES`). The quantiles need
    folds trained on (nearly) all examples: fold models trained on the sample score their
    held-out examples lower than the full model scores new mail, and the bar would sit too
    low (20NG, 10 groups configured: 61 % instead of 35 % of other mail filed at q = 0.1,
    validation split). When the sample left examples out, a second pass over all of them
    gives the quantiles (three more fits, in the background retrain)."""
    rng = np.random.default_rng(seed)
    chosen: list[npt.NDArray[np.int64]] = []
    per_category = max(_CALIBRATION_FOLDS, CALIBRATION_EXAMPLES // max(classes, 1))
    for label in range(classes):
        members = np.flatnonzero(labels == label)
        if members.size >= 2:
            chosen.append(np.sort(rng.permutation(members)[:per_category]))
    if len(chosen) < 2:
        return _DEFAULT_TEMPERATURE, None
    folds = np.full(labels.size, -1, np.int64)
    for members in chosen:
        folds[members] = rng.permutation(members.size) % _CALIBRATION_FOLDS
    scored = out_of_fold(rows, labels, folds, fit, blend)
    if scored is None:
        return _DEFAULT_TEMPERATURE, None
    scores, answers = scored
    losses = [
        -np.mean(np.log(softmax(scores, t)[np.arange(answers.size), answers] + 1e-9))
        for t in _TEMPERATURES
    ]
    temperature = float(_TEMPERATURES[int(np.argmin(losses))])
    eligible = np.bincount(labels, minlength=classes)[labels] >= 2
    if np.sum(folds >= 0) < np.sum(eligible):
        everything = np.full(labels.size, -1, np.int64)
        for label in range(classes):
            members = np.flatnonzero(labels == label)
            if members.size >= 2:
                everything[members] = rng.permutation(members.size) % _CALIBRATION_FOLDS
        scored = out_of_fold(rows, labels, everything, fit, blend) or scored
        scores, answers = scored
    own = scores[np.arange(answers.size), answers]
    return temperature, fit_quantiles(own, answers, classes, no_fit)


def out_of_fold(
    rows: sparse.csr_matrix,
    labels: npt.NDArray[np.int64],
    folds: npt.NDArray[np.int64],
    fit: Fit,
    blend: Blend | None,
) -> tuple[Float32Array, npt.NDArray[np.int64]] | None:
    """Scores of each row in a fold (``folds`` ≥ 0) from a model fitted on the other folds,
    and the rows' labels; None when no fold could be scored."""
    in_sample = folds >= 0
    scored: list[Float32Array] = []
    truth: list[npt.NDArray[np.int64]] = []
    for fold in range(_CALIBRATION_FOLDS):
        held_out = folds == fold
        training = in_sample & ~held_out
        if not held_out.any() or np.unique(labels[training]).size < 2:
            continue
        weights, bias = fit(rows[training], labels[training])
        scores = np.asarray(rows[held_out] @ weights.T, np.float32) + bias
        scored.append(scores if blend is None else blend(scores, training, held_out))
        truth.append(labels[held_out])
    if not scored:
        return None
    return np.vstack(scored), np.concatenate(truth)


def fit_quantiles(
    own: Float32Array, answers: npt.NDArray[np.int64], classes: int, no_fit: int | None
) -> Float32Array:
    """Per class, quantiles of the out-of-fold scores its own examples got; classes with few
    take those of all classes (but "none of these"), and NaN where there is nothing."""
    regular = answers != no_fit if no_fit is not None else np.ones(answers.size, bool)
    out = np.full((classes, FIT_LEVELS.size), np.nan, np.float32)
    if not regular.any():
        return out
    pooled = np.quantile(own[regular], FIT_LEVELS).astype(np.float32)
    for label in range(classes):
        if label == no_fit:
            continue
        mine = own[answers == label]
        out[label] = np.quantile(mine, FIT_LEVELS) if mine.size >= MIN_FIT_SCORES else pooled
    return out
