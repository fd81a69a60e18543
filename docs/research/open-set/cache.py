import pickle
import time

from benchmarks.bench_classify import load_20ng, load_banking77

t = time.time()
tr, te = load_20ng()
print("20ng", len(tr), len(te), time.time() - t)
pickle.dump((tr, te), open("/tmp/L/20ng.pkl", "wb"))
tr, te = load_banking77()
pickle.dump((tr, te), open("/tmp/L/b77.pkl", "wb"))
print("done", time.time() - t)
