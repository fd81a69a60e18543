"""Long-tailed folders with a test set that is long-tailed too (as a 70/30 split of a real
mailbox is): is class weighting still better there? Train split of 20NG only, seeds 10-12.
Run: ``PYTHONPATH=. python docs/research/longtail_zipf_test.py``."""

from dataclasses import replace

import numpy as np

from benchmarks.bench_classify import load_20ng, make_examples
from benchmarks.bench_longtail import baseline_predictions, macro_f1, zipf_sizes
from postroom.classify import Classifier, ClassifierConfig

train, _ = load_20ng()
items = train
examples = make_examples(Classifier(ClassifierConfig()), items)
folders = sorted({i.category for i in items})
available = [sum(i.category == f for i in items) for f in folders]
for draw in (10, 11, 12):
    rng = np.random.default_rng(draw)
    sizes = dict(zip(folders, zipf_sizes(available, rng)))
    tr, te = [], []
    for f in folders:
        members = rng.permutation([i for i, it in enumerate(items) if it.category == f])
        n = sizes[f]
        tr += members[:n].tolist()
        te += members[n : n + max(2, round(n * 3 / 7))].tolist()
    truth = [items[i].category for i in te]
    base = baseline_predictions([items[i] for i in tr], [items[i] for i in te])
    out = {"baseline": (np.mean([p == t for p, t in zip(base, truth)]), macro_f1(truth, base))}
    for name, cfg in (("default", ClassifierConfig()), ("balanced", ClassifierConfig(balanced=True))):
        m = Classifier(replace(cfg, seed=draw)).fit([examples[i] for i in tr])
        pred = [p.category for p in m.predict_examples([examples[i] for i in te])]
        out[name] = (np.mean([p == t for p, t in zip(pred, truth)]), macro_f1(truth, pred))
    print(draw, len(tr), len(te), {k: (round(a, 4), round(f, 4)) for k, (a, f) in out.items()}, flush=True)
