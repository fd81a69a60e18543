import pickle
import sys

sys.path.insert(0, "/work/main")
import numpy as np
from benchmarks.bench_classify import few_shot, make_examples

from postroom.classify import Classifier, ClassifierConfig
from postroom.classify.head import fit_linear as _fit_linear, project_columns as _project

train, test = pickle.load(open("/tmp/L/20ng.pkl", "rb"))
groups = sorted({i.category for i in train})
draw = int(sys.argv[1]) if len(sys.argv) > 1 else 0
configured = set(np.random.default_rng(draw).permutation(groups)[:10])
rng = np.random.default_rng(100 + draw)
part = rng.random(len(train))
lab_all = [it for it, p in zip(train, part) if p < 0.5 and it.category in configured]
val = [it for it, p in zip(train, part) if p >= 0.75]
val_in = [it for it in val if it.category in configured]
val_out = [it for it in val if it.category not in configured]
for name, lab in (
    ("full", lab_all),
    ("5shot", [lab_all[i] for i in few_shot(lab_all, 5, draw)]),
    ("20shot", [lab_all[i] for i in few_shot(lab_all, 20, draw)]),
):
    c = Classifier(ClassifierConfig(seed=0))
    ex = make_examples(c, lab)
    c.fit(ex)
    exin = make_examples(c, val_in)
    exout = make_examples(c, val_out)
    h = c._fast
    classes = h.classes
    T = h.temperature
    yi = np.array([classes.index(it.category) for it in val_in])
    si, so = h.scores(c._rows(exin, slow=False)), h.scores(c._rows(exout, slow=False))

    def soft(s):
        z = s * T
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    pi, po = soft(si), soft(so)
    ki, ko = pi.argmax(1), po.argmax(1)
    base_i, base_o = pi.max(1) >= 0.6, po.max(1) >= 0.6
    print(
        f"{name} closed {np.mean(base_i & (ki == yi)):.3f} {np.mean(base_o):.3f}  max-conf in/out med {np.median(pi.max(1)):.2f}/{np.median(po.max(1)):.2f}"
    )
    rows = c._rows(ex, slow=False)
    cols = np.unique(rows.indices).astype(np.int64)
    X = _project(rows, cols)
    y = np.array([classes.index(e.category) for e in ex])
    folds = np.random.default_rng(0).permutation(len(y)) % 3
    oof = np.zeros(len(y))
    oofmax = np.zeros(len(y))
    for f in range(3):
        w, b = _fit_linear(X[folds != f], y[folds != f], len(classes), head="svm", c=0.5, seed=0)
        s = np.asarray(X[folds == f] @ w.T) + b
        oof[folds == f] = s[np.arange(s.shape[0]), y[folds == f]]
    for q in [0.01, 0.02, 0.05, 0.1, 0.2]:
        g = np.quantile(oof, q)
        per = np.array(
            [np.quantile(oof[y == k], q) if np.any(y == k) else g for k in range(len(classes))]
        )
        for lbl, thr_i, thr_o in (("global", g, g), ("per-cat", per[ki], per[ko])):
            fi = base_i & (si[np.arange(len(ki)), ki] >= thr_i)
            fo = base_o & (so[np.arange(len(ko)), ko] >= thr_o)
            print(f"   {lbl} q={q}: {np.mean(fi & (ki == yi)):.3f} {np.mean(fo):.3f}", flush=True)
