"""Cascade analysis: fast head (LR C=10 over [n-grams | wordllama], no transformer) answers when its max
probability >= thr, else the slow head. Slow heads: R* (e5+MiniLM) and an English-only variant (MiniLM, no e5).
usage: python cascade.py MODE"""
import sys
from h import *
MODE = sys.argv[1]; pool, ev = splits(MODE); yv = y_all[ev]
Bk = {n: block(n) for n in ["e5q", "ml:6", "wl", "e5q+ml:6"]}
def scores(sh, blocks, knn_name, lam=0.5, C=10):
    ys = yX[sh]; Xs, Xv = ngram_rows(CX, sh, [sh, ev]); ps, pv = [Xs], [Xv]
    for n, w in blocks:
        Es, Ev = centred(Bk[n], sh, [sh, ev]); ps.append(sparse.csr_matrix(w * Es)); pv.append(sparse.csr_matrix(w * Ev))
    m = LogisticRegression(C=C, max_iter=300).fit(sparse.hstack(ps, format="csr"), ys)
    s = m.decision_function(sparse.hstack(pv, format="csr")); p = m.predict_proba(sparse.hstack(pv, format="csr"))
    if knn_name:
        Es, Ev = centred(Bk[knn_name], sh, [sh, ev]); s = z(s) + lam * z(np.log(knn(Es, ys, Ev) + 1e-4))
    return s, p
THR = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
res = {}
for reg, d, base in regimes(pool, [None, 10]):
    sh = np.concatenate([base, NID])
    _, pf = scores(sh, [["wl", 1.0]], None)
    s1, _ = scores(sh, [["e5q", 2.0], ["ml:6", 3.0], ["wl", 1.0]], "e5q+ml:6")
    s2, _ = scores(sh, [["ml:6", 3.0], ["wl", 1.0]], "ml:6")
    okf = pf.argmax(1) == yv; ok1 = s1.argmax(1) == yv; ok2 = s2.argmax(1) == yv
    res.setdefault(f"{reg} fast only [ngram|wl] LR", []).append(okf.mean())
    res.setdefault(f"{reg} R* always slow", []).append(ok1.mean())
    res.setdefault(f"{reg} MiniLM-only slow (no e5), always slow", []).append(ok2.mean())
    for t in THR:
        u = pf.max(1) < t
        res.setdefault(f"{reg} cascade thr={t} R*", []).append(np.where(u, ok1, okf).mean())
        res.setdefault(f"{reg} cascade thr={t} MiniLM-only", []).append(np.where(u, ok2, okf).mean())
        res.setdefault(f"{reg} cascade thr={t} slow fraction", []).append(u.mean())
    print(reg, d, flush=True)
report(res, f"/tmp/exp/b77s4/cascade_{MODE}.log")
