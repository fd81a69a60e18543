"""BANKING77, 40 of 77 intents configured, the ``e5+minilm`` recipe
(``ClassifierConfig.with_two_encoders``) with the product's nearest-example check
(``ClassifierConfig.nearest_quantile``, ``Prediction.nearest_fit``): which bar keeps configured
mail within 1.5 points of the recipe without any open-set check? Validation split of the
*train* split only, as ``banking77_nearest.py``: per draw a seeded 75 % to learn (configured
intents only, plus each intent's name as its description) and 25 % to validate (all intents).

One fit per draw: a prediction carries ``nearest_fit`` and ``fit``, so every bar is read off
the same predictions. Run from the checkout:
``PYTHONPATH=.:src python docs/research/open-set/banking77_pair_nearest.py`` (uses the
benchmark's embedding cache when it is filled).
"""

from __future__ import annotations

import sys

import numpy as np

from benchmarks.bench_classify import descriptions, load_banking77, make_examples
from benchmarks.cache import install_embedding_cache
from postroom.classify import NONE_OF_THESE, Classifier, ClassifierConfig, Prediction
from postroom.learning.models import DEFAULT_THRESHOLD

BARS = (0.0, 0.01, 0.02, 0.03, 0.05, 0.1)


def filed(p: Prediction, score_bar: float, nearest_bar: float) -> str | None:
    if p.category in (None, NONE_OF_THESE) or p.confidence < DEFAULT_THRESHOLD:
        return None
    if p.fit is not None and p.fit < score_bar:
        return None
    if p.nearest_fit is not None and p.nearest_fit < nearest_bar:
        return None
    return p.category


install_embedding_cache()
train, _ = load_banking77()  # the test split is not read
intents = sorted({i.category for i in train})
draws = [int(a) for a in sys.argv[1:]] or [0, 1, 2]
maker = Classifier(ClassifierConfig.with_two_encoders())
examples = make_examples(maker, train)
rows = []
for draw in draws:
    configured = set(np.random.default_rng(draw).permutation(intents)[:40])
    rng = np.random.default_rng(1000 + draw)
    learn = rng.random(len(train)) < 0.75
    chosen = [examples[i] for i, it in enumerate(train) if learn[i] and it.category in configured]
    chosen += descriptions(maker, sorted(configured))
    val = [i for i, it in enumerate(train) if not learn[i]]
    config = ClassifierConfig.with_two_encoders(seed=draw, nearest_quantile=0.01)
    model = Classifier(config).fit(chosen)
    predictions = model.predict_examples([examples[i] for i in val])
    for score_bar in (0.0, 0.05):
        for bar in BARS:
            right = other = n_in = n_out = 0
            for i, p in zip(val, predictions, strict=True):
                category = filed(p, score_bar, bar)
                if train[i].category in configured:
                    n_in += 1
                    right += category == train[i].category
                else:
                    n_out += 1
                    other += category is not None
            rows.append((draw, score_bar, bar, right / n_in, other / n_out))
            print(
                f"draw {draw} score bar {score_bar:.2f} nearest bar {bar:.2f}: "
                f"right {right / n_in:.3f} other {other / n_out:.3f}",
                flush=True,
            )
print("\nmean over draws")
for score_bar in (0.0, 0.05):
    for bar in BARS:
        sel = [r for r in rows if r[1] == score_bar and r[2] == bar]
        print(
            f"score bar {score_bar:.2f} nearest bar {bar:.2f}: "
            f"right {np.mean([r[3] for r in sel]):.3f} other {np.mean([r[4] for r in sel]):.3f}"
        )
