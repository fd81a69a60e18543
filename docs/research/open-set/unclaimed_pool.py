import pickle
import sys

sys.path.insert(0, "/work/main")
from dataclasses import replace

import numpy as np
from benchmarks.bench_classify import make_examples

from postroom.classify import NONE_OF_THESE, Classifier, ClassifierConfig

train, test = pickle.load(open("/tmp/L/20ng.pkl", "rb"))
groups = sorted({i.category for i in train})
draw = int(sys.argv[1]) if len(sys.argv) > 1 else 0
configured = set(np.random.default_rng(draw).permutation(groups)[:10])
rng = np.random.default_rng(100 + draw)
part = rng.random(len(train))
lab = [it for it, p in zip(train, part) if p < 0.5 and it.category in configured]
pool = [it for it, p in zip(train, part) if 0.5 <= p < 0.75]
val = [it for it, p in zip(train, part) if p >= 0.75]
val_in = [it for it in val if it.category in configured]
val_out = [it for it in val if it.category not in configured]
c = Classifier(ClassifierConfig(seed=0))
ex = make_examples(c, lab)
c.fit(ex)
exin = make_examples(c, val_in)
exout = make_examples(c, val_out)
expool = make_examples(c, pool)
classes = c._fast.classes
yi = np.array([classes.index(it.category) for it in val_in])
P0 = c.predict_examples(exin)
Q0 = c.predict_examples(exout)
pp = c.predict_examples(expool)
ci = np.array([p.confidence for p in P0])
ki = np.array([classes.index(p.category) for p in P0])
co = np.array([p.confidence for p in Q0])
print(f"closed {np.mean((ci >= 0.6) & (ki == yi)):.3f} {np.mean(co >= 0.6):.3f}")


def other_model(others):
    c2 = Classifier(ClassifierConfig(seed=0))
    c2.fit([*ex, *[replace(e, category=NONE_OF_THESE) for e in others]])
    P = c2.predict_examples(exin)
    Q = c2.predict_examples(exout)
    oi = np.array([p.scores.get(NONE_OF_THESE, 0) for p in P])
    oo = np.array([q.scores.get(NONE_OF_THESE, 0) for q in Q])
    fi2 = np.array([p.category != NONE_OF_THESE and p.confidence >= 0.6 for p in P])
    ki2 = np.array([classes.index(p.category) if p.category else -1 for p in P])
    fo2 = np.array([p.category != NONE_OF_THESE and p.confidence >= 0.6 for p in Q])
    return oi, oo, fi2, ki2, fo2, c2


variants = {
    "oracle": [e for e, it in zip(expool, pool) if it.category not in configured],
    "unclaimed0.6": [e for e, p in zip(expool, pp) if p.confidence < 0.6],
    "unclaimed0.9": [e for e, p in zip(expool, pp) if p.confidence < 0.9],
}
for name, others in variants.items():
    oi, oo, fi2, ki2, fo2, c2 = other_model(others)
    print(
        f"{name} n={len(others)} argmax-rule: {np.mean(fi2 & (ki2 == yi)):.3f} {np.mean(fo2):.3f}"
    )
    for v in [0.3, 0.5, 0.7, 0.8, 0.9, 0.95]:
        fi = (ci >= 0.6) & (oi < v)
        fo = (co >= 0.6) & (oo < v)
        print(f"   veto>={v}: {np.mean(fi & (ki == yi)):.3f} {np.mean(fo):.3f}", flush=True)
