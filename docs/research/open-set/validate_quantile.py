"""Choose ``open_set_quantile`` on a date-ordered validation split of the *train* splits.

20 Newsgroups: per draw (0, 1, 2; the configured half as in ``benchmarks/bench_openset.py``)
the model learns from the first 75 % (article order) of the configured groups' train mail and
is validated on the last 25 % of every group's train mail. BANKING77 (no dates): a seeded 25 %
of the train split. Prints configured-filed-right and other-filed shares per quantile.
Run: ``PYTHONPATH=. python docs/research/open-set/validate_quantile.py [20ng|banking77]``.
"""

import sys

import numpy as np
from benchmarks.bench_classify import descriptions, load_20ng, load_banking77, make_examples
from benchmarks.bench_openset import filed

from postroom.classify import Classifier, ClassifierConfig

QUANTILES = (0.0, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2)
part = sys.argv[1] if len(sys.argv) > 1 else "20ng"
if part == "20ng":
    train, _ = load_20ng()
    late = np.array([item.order >= 0.75 for item in train])
    configured_count, described = 10, False
else:
    train, _ = load_banking77()
    late = np.random.default_rng(7).random(len(train)) >= 0.75
    configured_count, described = 40, True
maker = Classifier(ClassifierConfig())
examples = make_examples(maker, train)
categories = sorted({item.category for item in train})
table = {q: [] for q in QUANTILES}
for draw in (0, 1, 2):
    configured = set(np.random.default_rng(draw).permutation(categories)[:configured_count])
    chosen = [e for e, v in zip(examples, late) if not v and e.category in configured]
    if described:
        chosen += descriptions(maker, sorted(configured))
    model = Classifier(ClassifierConfig(seed=draw)).fit(chosen)
    inside = [e for e, v in zip(examples, late) if v and e.category in configured]
    outside = [e for e, v in zip(examples, late) if v and e.category not in configured]
    pin, pout = model.predict_examples(inside), model.predict_examples(outside)
    for q in QUANTILES:
        right = np.mean([filed(p, 0.6, q) == e.category for p, e in zip(pin, inside)])
        other = np.mean([filed(p, 0.6, q) is not None for p in pout])
        table[q].append((right, other))
        print(
            f"draw {draw} q={q:.3f}: configured filed right {right:.3f}, other filed {other:.3f}",
            flush=True,
        )
for q, rows in table.items():
    right, other = np.mean(rows, axis=0)
    print(f"mean q={q:.3f}: configured filed right {right:.3f}, other filed {other:.3f}")
