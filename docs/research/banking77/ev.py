"""Evaluate recipes. usage: python ev.py MODE REGIMES 'recipe-json' ...
recipe: {"blocks": [["e5q", 2.0], ...], "ngram": 1.0, "head": "svc"|"lr", "C": 1.0, "knn": [["e5q", 0.5]], "names": true, "aug": 0}"""
import sys, json
from h import *
MODE, REG = sys.argv[1], sys.argv[2]; recipes = [json.loads(a) for a in sys.argv[3:]]
pool, ev = splits(MODE); yv = y_all[ev]
shots = [None if r == "full" else int(r) for r in REG.split(",")]
cache = {}
def B(n):
    if n not in cache: cache[n] = block(n)
    return cache[n]
res = {}
t0 = time.time()
for reg, draw, base in regimes(pool, shots):
    for R in recipes:
        sh = np.concatenate([base, NID]) if R.get("names", True) else base; ys = yX[sh]
        parts_s, parts_v = [], []
        if R.get("ngram", 1.0):
            Xs, Xv = ngram_rows(CX, sh, [sh, ev]); parts_s.append(R.get("ngram", 1.0) * Xs); parts_v.append(R.get("ngram", 1.0) * Xv)
        for n, w in R["blocks"]:
            Es, Ev = centred(B(n), sh, [sh, ev]); parts_s.append(sparse.csr_matrix(w * Es)); parts_v.append(sparse.csr_matrix(w * Ev))
        Xs, Xv = sparse.hstack(parts_s, format="csr"), sparse.hstack(parts_v, format="csr")
        t = time.time()
        if R.get("head", "svc") == "svc":
            m = LinearSVC(C=R.get("C", 1.0), random_state=0, max_iter=2000, class_weight=R.get("cw")).fit(Xs, ys)
        else:
            m = LogisticRegression(C=R.get("C", 10.0), max_iter=300, solver=R.get("solver", "lbfgs")).fit(Xs, ys)
        s = m.decision_function(Xv); ft = time.time() - t
        key = json.dumps(R, separators=(",", ":"))
        res.setdefault(f"{reg} {key}", []).append((s.argmax(1) == yv).mean())
        for kn, lam in R.get("knn", []):
            Es, Ev = centred(B(kn), sh, [sh, ev]); nb = knn(Es, ys, Ev)
            sc = z(s) + lam * z(np.log(nb + 1e-4))
            res.setdefault(f"{reg} {key} +knn({kn},{lam})", []).append((sc.argmax(1) == yv).mean())
        print(f"  {reg} {draw} fit {ft:.1f}s {key}", file=sys.stderr, flush=True)
report(res, f"/tmp/exp/b77s4/ev_{MODE}.log")
print(f"total {time.time() - t0:.0f}s")
