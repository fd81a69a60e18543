import time, numpy as np, csv
from minilm import MiniLM, embed_batched
rows = lambda f: list(csv.DictReader(open(f"/work/shared/data/banking77/{f}")))
tr, te = rows("train.csv"), rows("test.csv")
texts = [r["text"] for r in tr] + [r["text"] for r in te]
names = [n.replace("_", " ") for n in sorted({r["category"] for r in tr})]
m = MiniLM()
a = embed_batched(m, texts[:5]); b = m.embed(texts[:5], layers=True); print("batched==single", np.abs(a - b).max(), flush=True)
np.save("ml_names.npy", embed_batched(m, names))
t = time.time(); A = embed_batched(m, texts); print("minilm all", time.time() - t, flush=True)
np.save("ml_all.npy", A.astype(np.float16)); print("done")
