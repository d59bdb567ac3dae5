"""Device probe: cuDNN attention with a document mask (segment ids as a boolean mask)."""
import json, os, sys, time
import numpy as np, jax, jax.numpy as jnp
out = os.environ.get("OUT", "/tmp/out")
res = {}

def seg_ids(b, t, rng, docs=6):
  s = np.zeros((b, t), np.int32)
  for i in range(b):
    cuts = np.sort(rng.choice(np.arange(1, t), docs - 1, replace=False))
    s[i] = np.searchsorted(cuts, np.arange(t), side="right")
  return jnp.asarray(s)

def mask_of(seg):
  return (seg[:, :, None] == seg[:, None, :])[:, None]

def attn(impl, q, k, v, seg):
  return jax.nn.dot_product_attention(q, k, v, mask=mask_of(seg), is_causal=True, implementation=impl)

rng = np.random.default_rng(0)
# agreement at 2k, fwd + grads, against xla in float32
B, T, N, K, H = 2, 2048, 8, 4, 64
q, k, v = (jnp.asarray(rng.standard_normal((B, T, n, H)), jnp.bfloat16) for n in (N, K, K))
seg = seg_ids(B, T, rng)
def loss(impl, q, k, v):
  o = attn(impl, q, k, v, seg)
  return jnp.sum(o.astype(jnp.float32) * jnp.cos(jnp.arange(o.size).reshape(o.shape) * 0.01))
ref = jax.grad(lambda q, k, v: loss("xla", q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32)), argnums=(0, 1, 2))(q, k, v)
got = jax.grad(lambda q, k, v: loss("cudnn", q, k, v), argnums=(0, 1, 2))(q, k, v)
o_ref = attn("xla", q.astype(jnp.float32), k.astype(jnp.float32), v.astype(jnp.float32), seg)
o_got = attn("cudnn", q, k, v, seg).astype(jnp.float32)
res["agreement_2k"] = {"out_max_abs": float(jnp.max(jnp.abs(o_ref - o_got))),
  "out_ref_max": float(jnp.max(jnp.abs(o_ref))),
  **{f"d{n}_max_abs": float(jnp.max(jnp.abs(a - b.astype(jnp.float32)))) for n, a, b in zip("qkv", ref, got)},
  **{f"d{n}_ref_max": float(jnp.max(jnp.abs(a))) for n, a in zip("qkv", ref)}}
print(res, flush=True)
# timing at 8k B2 H12 D64 (the brief's shape), fwd+bwd
B, T, N, K, H = 2, 8192, 12, 12, 64
q, k, v = (jnp.asarray(rng.standard_normal((B, T, n, H)), jnp.bfloat16) for n in (N, K, K))
seg = seg_ids(B, T, rng)
from jaxlm import attention as A
def timed(name, fn):
  g = jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32)), argnums=(0, 1, 2)))
  r = g(q, k, v); jax.block_until_ready(r)
  ts = []
  for _ in range(10):
    t0 = time.perf_counter(); jax.block_until_ready(g(q, k, v)); ts.append(time.perf_counter() - t0)
  res[name + "_ms"] = 1000 * float(np.median(ts)); print(name, res[name + "_ms"], flush=True)
timed("cudnn_causal_nomask", lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn"))
timed("cudnn_segment_mask", lambda q, k, v: attn("cudnn", q, k, v, seg))
timed("blockwise_segments", lambda q, k, v: A.attend(q, k, v, seg, implementation="blockwise"))
timed("xla_segment_mask", lambda q, k, v: attn("xla", q, k, v, seg))
json.dump(res, open(os.path.join(out, "cudnn_mask.json"), "w"), indent=1)
