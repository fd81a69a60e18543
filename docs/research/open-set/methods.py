import pickle
import sys
import time

sys.path.insert(0, "/work/main")
import numpy as np
from benchmarks.bench_classify import make_examples

from postroom.classify import NONE_OF_THESE, Classifier, ClassifierConfig

train, test = pickle.load(open("/tmp/L/20ng.pkl", "rb"))
groups = sorted({i.category for i in train})
draw = int(sys.argv[1]) if len(sys.argv) > 1 else 0
configured = set(np.random.default_rng(draw).permutation(groups)[:10])
rng = np.random.default_rng(100 + draw)
part = rng.random(len(train))
# labelled: configured groups, part<0.5; pool: all groups 0.5..0.75; validation: all >=0.75
lab = [it for it, p in zip(train, part) if p < 0.5 and it.category in configured]
pool = [it for it, p in zip(train, part) if 0.5 <= p < 0.75]
val = [it for it, p in zip(train, part) if p >= 0.75]
val_in = [it for it in val if it.category in configured]
val_out = [it for it in val if it.category not in configured]
t = time.time()
c = Classifier(ClassifierConfig(seed=0))
ex = make_examples(c, lab)
c.fit(ex)
exin = make_examples(c, val_in)
exout = make_examples(c, val_out)
expool = make_examples(c, pool)
print("fit+hash", time.time() - t, flush=True)
h = c._fast
classes = h.classes
T = h.temperature
yi = np.array([classes.index(it.category) for it in val_in])


def raw(exs):
    return h.scores(c._rows(exs, slow=False))


si, so = raw(exin), raw(exout)


def report(name, filed_in, pred_in, filed_out):
    right = np.mean(filed_in & (pred_in == yi))
    out = np.mean(filed_out)
    print(f"{name:40s} configured filed right {right:.3f}  other filed {out:.3f}", flush=True)


def soft(s):
    z = s * T
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


pi, po = soft(si), soft(so)
report("closed", pi.max(1) >= 0.6, pi.argmax(1), po.max(1) >= 0.6)
# nearest example cosine
Xl = c._rows(ex, slow=False)
Xi = c._rows(exin, slow=False)
Xo = c._rows(exout, slow=False)
yl = np.array([classes.index(e.category) for e in ex])


def nearest(X):
    S = (X @ Xl.T).toarray()
    best = np.zeros((X.shape[0], len(classes)))
    for k in range(len(classes)):
        best[:, k] = S[:, yl == k].max(1)
    return best


ni, no = nearest(Xi), nearest(Xo)
# LOO nearest within own class for training
S = (Xl @ Xl.T).toarray()
np.fill_diagonal(S, -1)
loo = np.array([S[j, yl == yl[j]].max() for j in range(len(yl))])
for q in [0.02, 0.05, 0.1, 0.2, 0.3]:
    thr = np.array([np.quantile(loo[yl == k], q) for k in range(len(classes))])
    ki, ko = pi.argmax(1), po.argmax(1)
    fi = (pi.max(1) >= 0.6) & (ni[np.arange(len(ki)), ki] >= thr[ki])
    fo = (po.max(1) >= 0.6) & (no[np.arange(len(ko)), ko] >= thr[ko])
    report(f"nearest q={q}", fi, ki, fo)
print("val nearest in med", np.median(ni.max(1)), "out med", np.median(no.max(1)))
# pool other class
pp = soft(raw(expool))
for tau in [0.0, 0.3, 0.6, 0.9, 1.01]:
    keep = [e for e, p in zip(expool, pp) if p.max() < tau] if tau > 0 else []
    from dataclasses import replace

    others = [replace(e, category=NONE_OF_THESE) for e in keep]
    c2 = Classifier(ClassifierConfig(seed=0))
    c2.fit([*ex, *others])
    P = c2.predict_examples(exin)
    Q = c2.predict_examples(exout)
    fi = np.array([p.category != NONE_OF_THESE and p.confidence >= 0.6 for p in P])
    ki = np.array(
        [classes.index(p.category) if p.category in classes and p.category else -1 for p in P]
    )
    fo = np.array([p.category != NONE_OF_THESE and p.confidence >= 0.6 for p in Q])
    report(
        f"pool tau={tau} n={len(others)} (from cfg {sum(1 for e, p in zip(pool, pp) if p.max() < tau and e.category in configured)})",
        fi,
        ki,
        fo,
    )
