"""Shared data/feature helpers for the BANKING77 recipe search (replicates model.py features)."""
import sys, csv, numpy as np
sys.path.insert(0, "/tmp/exp/b77s4")
from scipy import sparse
from postroom.classify.features import hash_messages, stack, WORD_BUCKETS
from postroom.processing.view import MessageView  # run with PYTHONPATH=src
D = "/tmp/exp/b77/"

def rows(f):
    return list(csv.DictReader(open(f"/work/shared/data/banking77/{f}", encoding="utf-8", newline="")))
tr, te = rows("train.csv"), rows("test.csv")
texts = [r["text"] for r in tr] + [r["text"] for r in te]
NTR = len(tr)
classes = sorted({r["category"] for r in tr})
y_all = np.array([classes.index(r["category"]) for r in tr + te])

def counts():
    import os
    p = D + "counts_all.npz"
    if os.path.exists(p):
        return sparse.load_npz(p).tocsr()
    C = stack(hash_messages([MessageView(body_text=t) for t in texts])).tocsr()
    sparse.save_npz(p, C); return C

def ngram_rows(C, fit_idx, idx_list):
    """IDF from rows fit_idx (smooth, +1), per-block (word/char) L2, / sqrt2 — as model._rows."""
    F = C[fit_idx]
    cols, freq = np.unique(F.indices, return_counts=True)
    n = len(fit_idx)
    idf_full = np.full(C.shape[1], np.log(1 + n) + 1.0, np.float32)
    idf_full[cols] = np.log((1 + n) / (1 + freq)) + 1.0
    out = []
    for idx in idx_list:
        W = C[idx].astype(np.float32).tocsr(); W.data = W.data * idf_full[W.indices]
        row_of = np.repeat(np.arange(W.shape[0]), np.diff(W.indptr))
        isw = W.indices < WORD_BUCKETS; sq = W.data.astype(np.float64) ** 2
        wn = np.sqrt(np.bincount(row_of, sq * isw, minlength=W.shape[0]))
        cn = np.sqrt(np.bincount(row_of, sq * ~isw, minlength=W.shape[0]))
        nr = np.where(isw, wn[row_of], cn[row_of])
        W.data = (W.data / np.maximum(nr, 1e-12) / np.sqrt(2.0)).astype(np.float32)
        out.append(W)
    # restrict to columns seen in fit (as model does: unknown columns score 0)
    keep = cols
    return [W[:, keep] for W in out]

def center_block(E, fit_idx, idx_list, w):
    c = E[fit_idx].mean(0)
    res = []
    for idx in idx_list:
        R = E[idx] - c; R = R / np.maximum(np.linalg.norm(R, axis=1, keepdims=True), 1e-6)
        res.append((w * R).astype(np.float32))
    return res

def val_split(seed=0, frac=0.2):
    rng = np.random.default_rng(seed); ytr = y_all[:NTR]
    fit, val = [], []
    for k in range(len(classes)):
        m = rng.permutation(np.flatnonzero(ytr == k)); nv = int(round(frac * m.size))
        val += m[:nv].tolist(); fit += m[nv:].tolist()
    return np.sort(fit), np.sort(val)

def few(idx, per, seed):
    """Same as bench few_shot, restricted to index set idx (ordered by train order)."""
    rng = np.random.default_rng(seed); out = []
    for k in range(len(classes)):
        mem = [i for i in idx if y_all[i] == k]
        out += sorted(rng.choice(mem, size=per, replace=False).tolist())
    return np.array(out)
