"""BANKING77, 40 of 77 intents configured: does the nearest configured example in sentence
space (e5+minilm, the vectors the cascade recipe computes anyway) tell "none of these" apart
better than the default recipe's score quantile? Validation split of the *train* split only:
per intent, a seeded 75 % to learn (configured intents only) and 25 % to validate (all).

Run from the checkout: ``PYTHONPATH=.:src python docs/research/open-set/banking77_nearest.py``
(uses the benchmark's embedding cache when it is filled; ~6 minutes cold).
"""

from __future__ import annotations

import sys

import numpy as np

from benchmarks.bench_classify import load_banking77, make_examples
from benchmarks.bench_openset import filed
from benchmarks.cache import install_embedding_cache
from postroom.classify import Classifier, ClassifierConfig
from postroom.learning.models import DEFAULT_THRESHOLD

install_embedding_cache()
train, _ = load_banking77()  # the test split is not read
intents = sorted({i.category for i in train})
draws = [int(a) for a in sys.argv[1:]] or [0, 1, 2]
pair = Classifier(ClassifierConfig.with_two_encoders())
vectors = np.vstack([e.slow_embedding for e in make_examples(pair, train)])  # type: ignore[misc]
hashed = make_examples(Classifier(ClassifierConfig()), train)
rows = []
for draw in draws:
    configured = set(np.random.default_rng(draw).permutation(intents)[:40])
    rng = np.random.default_rng(1000 + draw)
    learn = rng.random(len(train)) < 0.75
    fit_idx = [i for i, it in enumerate(train) if learn[i] and it.category in configured]
    val_idx = [i for i, it in enumerate(train) if not learn[i]]
    model = Classifier(ClassifierConfig(seed=draw)).fit([hashed[i] for i in fit_idx])
    preds = model.predict_examples([hashed[i] for i in val_idx])
    memory = vectors[fit_idx]
    labels = np.array([train[i].category for i in fit_idx])
    # per intent: quantiles of each example's similarity to its nearest other example
    sims = memory @ memory.T
    np.fill_diagonal(sims, -1.0)
    own = {c: np.max(sims[np.ix_(labels == c, labels == c)], axis=1) for c in configured}
    val_sims = vectors[val_idx] @ memory.T
    for q in (0.0, 0.02, 0.05, 0.1, 0.2):
        bars = {c: float(np.quantile(v, q)) for c, v in own.items()}
        for method in ("quantile", "nearest", "both"):
            right = other = 0
            n_in = n_out = 0
            for k, (i, p) in enumerate(zip(val_idx, preds, strict=True)):
                category = filed(p, DEFAULT_THRESHOLD, 0.0 if method == "nearest" else None)
                if category is not None and method != "quantile" and q > 0:
                    nearest = float(np.max(val_sims[k][labels == category]))
                    if nearest < bars[category]:
                        category = None
                if train[i].category in configured:
                    n_in += 1
                    right += category == train[i].category
                else:
                    n_out += 1
                    other += category is not None
            rows.append((draw, q, method, right / n_in, other / n_out))
            print(f"draw {draw} q={q:.2f} {method:8s} right {right / n_in:.3f} "
                  f"other {other / n_out:.3f}", flush=True)
print("\nmean over draws")
for q in (0.0, 0.02, 0.05, 0.1, 0.2):
    for method in ("quantile", "nearest", "both"):
        sel = [r for r in rows if r[1] == q and r[2] == method]
        print(f"q={q:.2f} {method:8s} right {np.mean([r[3] for r in sel]):.3f} "
              f"other {np.mean([r[4] for r in sel]):.3f}")
