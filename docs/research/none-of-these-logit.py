import sys
sys.path.insert(0, "/work/main")
import numpy as np
from benchmarks.bench_classify import load_20ng, make_examples, few_shot, SEED
from postroom.classify import Classifier, ClassifierConfig
train, test = load_20ng()
groups = sorted({i.category for i in train})
configured = set(np.random.default_rng(SEED).permutation(groups)[:10])
rng = np.random.default_rng(1)
val_mask = rng.random(len(train)) < 0.25
fit_items = [it for it, v in zip(train, val_mask) if not v and it.category in configured]
val_in = [it for it, v in zip(train, val_mask) if v and it.category in configured]
val_out = [it for it, v in zip(train, val_mask) if v and it.category not in configured]
def raw(c, items):
    ex = make_examples(c, items)
    h = c._fast
    return h.scores(c._rows(ex, slow=False)), h.temperature, h.classes
for name, chosen in (("5shot", [fit_items[i] for i in few_shot(fit_items, 5, SEED)]), ("full", fit_items)):
    c = Classifier(ClassifierConfig(seed=SEED)); c.fit(make_examples(c, chosen))
    si, T, classes = raw(c, val_in); so, _, _ = raw(c, val_out)
    yi = np.array([classes.index(it.category) for it in val_in])
    print(name, "T", T, "top score in: median %.2f, out: median %.2f" % (np.median(si.max(1)), np.median(so.max(1))))
    for none in [None, -0.5, -0.25, 0.0, 0.25, 0.5]:
        def probs(s):
            z = s * T
            if none is not None: z = np.hstack([z, np.full((len(s), 1), none * T)])
            z = z - z.max(1, keepdims=True); e = np.exp(z); return e / e.sum(1, keepdims=True)
        pi, po = probs(si), probs(so)
        k = len(classes)
        right = np.mean((pi[:, :k].max(1) >= 0.6) & (pi[:, :k].argmax(1) == yi))
        filed_out = np.mean(po[:, :k].max(1) >= 0.6)
        print(f"  none={none}: configured filed right {right:.3f}, other filed {filed_out:.3f}")

print("--- none logit at a quantile of out-of-fold true-class scores")
from postroom.classify.head import fit_linear as _fit_linear, project_columns as _project
for name, chosen in (("5shot", [fit_items[i] for i in few_shot(fit_items, 5, SEED)]), ("full", fit_items)):
    c = Classifier(ClassifierConfig(seed=SEED)); ex = make_examples(c, chosen); c.fit(ex)
    rows = c._rows(c.examples, slow=False)
    cols = np.unique(rows.indices).astype(np.int64); X = _project(rows, cols)
    classes = c._fast.classes
    y = np.array([classes.index(e.category) for e in c.examples])
    folds = np.random.default_rng(0).permutation(len(y)) % 3
    oof = np.zeros(len(y))
    for f in range(3):
        w, b = _fit_linear(X[folds != f], y[folds != f], len(classes), head="svm", c=0.5, seed=0)
        s = np.asarray(X[folds == f] @ w.T) + b
        oof[folds == f] = s[np.arange(s.shape[0]), y[folds == f]]
    si, T, _ = raw(c, val_in); so, _, _ = raw(c, val_out)
    yi = np.array([classes.index(it.category) for it in val_in])
    for q in [None, 0.02, 0.05, 0.1, 0.2]:
        none = None if q is None else float(np.quantile(oof, q))
        def probs(s):
            z = s * T
            if none is not None: z = np.hstack([z, np.full((len(s), 1), none * T)])
            z = z - z.max(1, keepdims=True); e = np.exp(z); return e / e.sum(1, keepdims=True)
        pi, po = probs(si), probs(so); k = len(classes)
        right = np.mean((pi[:, :k].max(1) >= 0.6) & (pi[:, :k].argmax(1) == yi))
        filed_out = np.mean(po[:, :k].max(1) >= 0.6)
        print(f"  {name} q={q} none={none}: configured filed right {right:.3f}, other filed {filed_out:.3f}")
