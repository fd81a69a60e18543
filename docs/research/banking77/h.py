"""Harness: feature blocks + heads, validation on a seeded 20% stratified holdout of TRAIN (seed 0),
10-shot draws from the remaining 80% with the bench's few_shot procedure (seeds 0..4)."""
import numpy as np, warnings, time
from common import *
from scipy import sparse
from sklearn.svm import LinearSVC
from sklearn.linear_model import LogisticRegression
warnings.filterwarnings("ignore")
K = len(classes); S = "/tmp/exp/b77s4/"
CNT = counts()
names_txt = [c.replace("_", " ") for c in classes]
CN = stack(hash_messages([MessageView(body_text=t) for t in names_txt])).tocsr()
CX = sparse.vstack([CNT, CN], format="csr")
yX = np.concatenate([y_all, np.arange(K)]); NID = np.arange(len(y_all), len(y_all) + K)
def l2(E): return E / np.maximum(np.linalg.norm(E, axis=1, keepdims=True), 1e-9)
def block(name):
    """Dense block for all 13083 texts + 77 names (rows aligned with CX)."""
    if "+" in name:
        return l2(np.hstack([block(n) for n in name.split("+")]))
    if name == "e5q":
        E = np.vstack([np.load("/tmp/exp/b77/e5q_tr.npy"), np.load("/tmp/exp/b77/e5q_te.npy"), np.load("/tmp/exp/b77/names_q.npy")])
    elif name == "wl":
        z = np.load("/tmp/exp/b77_wl.npz"); import sys; sys.path.insert(0, "/work/main/src")
        from postroom.classify.embed import load_embedder
        E = np.vstack([z["tr"], z["te"], load_embedder("wordllama").embed(names_txt)])
    elif name.startswith("lay"):   # lay{q|p}:{i,j,..}  sum of l2-normalised layer means ; 13 = CLS
        tag, ls = name[3], [int(x) for x in name.split(":")[1].split(",")]
        A = np.load(S + f"lay_{tag}_all.npy", mmap_mode="r"); N = np.load(S + f"lay_{tag}_names.npy")
        E = np.vstack([sum(l2(A[:, l].astype(np.float32)) for l in ls), sum(l2(N[:, l].astype(np.float32)) for l in ls)])
    elif name.startswith("ml"):    # ml:{i,..} MiniLM layer means (6 = last, 7 = CLS)
        ls = [int(x) for x in name.split(":")[1].split(",")]
        A = np.load(S + "ml_all.npy"); N = np.load(S + "ml_names.npy")
        E = np.vstack([sum(l2(A[:, l].astype(np.float32)) for l in ls), sum(l2(N[:, l].astype(np.float32)) for l in ls)])
    return l2(E.astype(np.float32))
def centred(E, fit, idx_list):
    c = E[fit].mean(0); return [l2(E[i] - c) for i in idx_list]
def knn(Es, ys, Ev, k=10, T=0.05):
    sim = Ev @ Es.T; k = min(k, len(ys) - 1); top = np.argpartition(-sim, k, axis=1)[:, :k]
    w = np.exp((np.take_along_axis(sim, top, 1) - 1) / T); sc = np.zeros((len(Ev), K))
    np.add.at(sc, (np.repeat(np.arange(len(Ev)), k), ys[top].ravel()), w.ravel())
    return sc / sc.sum(1, keepdims=True)
def z(s): return (s - s.mean(1, keepdims=True)) / s.std(1, keepdims=True)
def splits(mode):
    if mode == "val": return val_split()
    return np.arange(NTR), np.arange(NTR, len(y_all))
def regimes(pool, shots=(None,), draws=5):
    for s in shots:
        if s is None: yield "full", 0, pool
        else:
            for d in range(draws): yield f"{s}shot", d, few(pool, s, d)
def report(res, out=None):
    lines = [f"{k:70s} {np.mean(v):.4f}  {np.round(v, 3) if len(v) > 1 else ''}" for k, v in res.items()]
    print("\n".join(lines), flush=True)
    if out: open(out, "a").write("\n".join(lines) + "\n")
