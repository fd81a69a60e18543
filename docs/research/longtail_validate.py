"""Long-tailed folders: variants of the default recipe on *validation* draws (issue 17).

Zipf subsamples (``benchmarks/bench_longtail.py``'s curve) of the **train** split only, seeds
10-12 (the benchmark uses 0-2 over train and test), tested on the rest of the train split.
Run: ``PYTHONPATH=. python docs/research/longtail_validate.py [20ng|banking77]``.
"""

import sys
from dataclasses import replace

import numpy as np

from benchmarks.bench_classify import load_20ng, load_banking77, make_examples
from benchmarks.bench_longtail import baseline_predictions, macro_f1, split, zipf_sizes
from postroom.classify import Classifier, ClassifierConfig

part = sys.argv[1] if len(sys.argv) > 1 else "20ng"
items = (load_20ng() if part == "20ng" else load_banking77())[0]
VARIANTS = {
    "default": ClassifierConfig(),
    "balanced": ClassifierConfig(balanced=True),
    "c1": ClassifierConfig(svm_c=1.0),
    "balanced_c1": ClassifierConfig(balanced=True, svm_c=1.0),
}
examples = make_examples(Classifier(ClassifierConfig()), items)
folders = sorted({i.category for i in items})
available = [sum(i.category == f for i in items) for f in folders]
rows = {}
for draw in (10, 11, 12):
    rng = np.random.default_rng(draw)
    sizes = dict(zip(folders, zipf_sizes(available, rng)))
    for variant, chosen in (("zipf", sizes), ("5shot", dict.fromkeys(folders, 5))):
        train, test = split(items, chosen, rng)
        truth = [items[i].category for i in test]
        base = baseline_predictions([items[i] for i in train], [items[i] for i in test])
        found = {"baseline": (np.mean([p == t for p, t in zip(base, truth)]), macro_f1(truth, base))}
        for name, config in VARIANTS.items():
            model = Classifier(replace(config, seed=draw)).fit([examples[i] for i in train])
            pred = [p.category for p in model.predict_examples([examples[i] for i in test])]
            found[name] = (np.mean([p == t for p, t in zip(pred, truth)]), macro_f1(truth, pred))
        for name, (acc, f1) in found.items():
            rows.setdefault((variant, name), []).append((acc, f1))
            print(f"{part} {variant} draw {draw} {name}: accuracy {acc:.4f} macro-F1 {f1:.4f}", flush=True)
for (variant, name), values in rows.items():
    acc, f1 = np.mean(values, axis=0)
    print(f"MEAN {part} {variant} {name}: accuracy {acc:.4f} macro-F1 {f1:.4f}")
