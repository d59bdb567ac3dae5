"""Causal self-attention backends with one calling convention.

    out = attend(q, k, v, segment_ids=None, implementation="auto", block_size=512)

q is [B, T, N, H]; k and v are [B, T, K, H] with N a multiple of K (grouped-query
attention: query heads n*G .. n*G+G-1 share kv head n). Attention is always causal.
When `segment_ids` [B, T] is given, a token only attends to earlier tokens with the
same id (packed documents stay separate); None means no document masking.

Backends:
  cudnn      jax.nn.dot_product_attention(implementation="cudnn"): fused flash attention
             on NVIDIA GPUs. Packed documents are kept apart by passing the public API a
             boolean [B, 1, T, T] same-document mask (it has no segment ids); on an H200 at
             8k that costs 4.2 ms against 2.5 ms without a mask, and blockwise takes 22 ms
             (experiments/ATTENTION.md).
  xla        jax.nn.dot_product_attention(implementation="xla"): materialises the
             [T, T] scores; simplest reference, fine for short sequences.
  blockwise  pure JAX flash attention: online softmax over key/value blocks, blocks
             above the diagonal are skipped, and a custom VJP recomputes the scores
             block by block, so forward and backward memory are O(T). Runs anywhere.
  splash     Pallas splash attention (TPU only), with SegmentIds for packing.
  auto       splash on TPU; on NVIDIA GPU cudnn when it can honour the request
             (bf16/fp16, head_dim <= 128 and a multiple of 8), otherwise blockwise.

`masked_attention` is the small explicit-mask path used for KV-cache decoding, where
queries sit at an offset inside a longer cache.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

IMPLEMENTATIONS = ("cudnn", "xla", "blockwise", "splash", "auto")


def _check_shapes(q, k, v):
  if q.ndim != 4 or k.ndim != 4 or v.shape != k.shape:
    raise ValueError(
        f"attention expects q [B,T,N,H] and k, v [B,S,K,H]; got q {q.shape}, "
        f"k {k.shape}, v {v.shape}")
  if q.shape[2] % k.shape[2]:
    raise ValueError(f"query heads ({q.shape[2]}) must be a multiple of kv heads "
                     f"({k.shape[2]})")


def _on_nvidia_gpu() -> bool:
  if jax.default_backend() != "gpu":
    return False
  device = jax.devices()[0]
  try:  # "cuda ..." vs "rocm ..." on AMD, where cuDNN does not exist
    return "cuda" in device.client.platform_version.lower()
  except AttributeError:
    return "nvidia" in device.device_kind.lower()


def cudnn_supports(q) -> bool:
  """Whether the cudnn backend can run this call (with or without a document mask)."""
  head_dim = q.shape[-1]
  return (_on_nvidia_gpu() and q.dtype in (jnp.bfloat16, jnp.float16)
          and head_dim <= 128 and head_dim % 8 == 0)


def select_implementation(name: str, q) -> str:
  """Resolves 'auto' to a concrete backend for these inputs."""
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"config.model.attention={name!r}; expected one of {IMPLEMENTATIONS}")
  if name != "auto":
    return name
  if jax.default_backend() == "tpu":
    return "splash"
  if cudnn_supports(q):
    return "cudnn"
  return "blockwise"


def attend(q, k, v, segment_ids=None, *, implementation="auto", block_size=512):
  """Causal attention of q [B,T,N,H] over k, v [B,T,K,H]; returns [B,T,N,H]."""
  _check_shapes(q, k, v)
  impl = select_implementation(implementation, q)
  if impl == "cudnn":
    return cudnn_attention(q, k, v, segment_ids)
  if impl == "xla":
    return xla_attention(q, k, v, segment_ids)
  if impl == "blockwise":
    return blockwise_attention(q, k, v, segment_ids, block_size=block_size)
  return splash_attention(q, k, v, segment_ids)


# --------------------------------------------------------------------------- cudnn / xla


def segment_mask(segment_ids):
  """[B, 1, T, T] True where query and key are in the same document (causality is separate)."""
  return (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]


def cudnn_attention(q, k, v, segment_ids=None):
  if not _on_nvidia_gpu():
    raise ValueError(
        f"attention='cudnn' needs an NVIDIA GPU, but JAX's backend is "
        f"{jax.default_backend()!r}; use attention='auto', 'xla' or 'blockwise'.")
  mask = None if segment_ids is None else segment_mask(segment_ids)
  return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True,
                                      implementation="cudnn")


def xla_attention(q, k, v, segment_ids=None):
  mask = None if segment_ids is None else segment_mask(segment_ids)
  return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=True,
                                      implementation="xla")


def masked_attention(q, k, v, mask):
  """Attention with an explicit boolean mask [B, T, S] (True = may attend).

  Used for decoding against a KV cache. Softmax in float32.
  """
  _check_shapes(q, k, v)
  b, t, n, h = q.shape
  kv_heads = k.shape[2]
  qg = q.reshape(b, t, kv_heads, n // kv_heads, h)
  scores = jnp.einsum("btkgh,bskh->bkgts", qg, k,
                      preferred_element_type=jnp.float32) / np.sqrt(h)
  scores = jnp.where(mask[:, None, None], scores, -jnp.inf)
  probs = jax.nn.softmax(scores, axis=-1)
  out = jnp.einsum("bkgts,bskh->btkgh", probs.astype(v.dtype), v,
                   preferred_element_type=jnp.float32)
  return out.reshape(b, t, n, h).astype(q.dtype)


# --------------------------------------------------------------------------- splash (TPU)


def splash_attention(q, k, v, segment_ids=None):
  if jax.default_backend() != "tpu":
    raise ValueError(f"attention='splash' needs a TPU, but JAX's backend is "
                     f"{jax.default_backend()!r}; use 'auto', 'xla' or 'blockwise'.")
  # Imported lazily: the Pallas TPU kernels are only importable/usable on TPU hosts.
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as sk
  from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as sm

  b, t, n, h = q.shape
  groups = n // k.shape[2]
  k = jnp.repeat(k, groups, axis=2)
  v = jnp.repeat(v, groups, axis=2)
  mask = sm.MultiHeadMask([sm.CausalMask((t, t)) for _ in range(n)])
  kernel = sk.make_splash_mha(mask, head_shards=1, q_seq_shards=1)
  # Splash does not scale the logits itself.
  q = q * jnp.asarray(1.0 / np.sqrt(h), q.dtype)
  to_nth = lambda x: jnp.swapaxes(x, 1, 2)  # [B,T,N,H] -> [B,N,T,H]
  if segment_ids is None:
    out = jax.vmap(kernel)(to_nth(q), to_nth(k), to_nth(v))
  else:
    def one(qb, kb, vb, sb):
      return kernel(qb, kb, vb, segment_ids=sk.SegmentIds(q=sb, kv=sb))
    out = jax.vmap(one)(to_nth(q), to_nth(k), to_nth(v), segment_ids)
  return to_nth(out)


# --------------------------------------------------------------------------- blockwise


def blockwise_attention(q, k, v, segment_ids=None, *, block_size=512):
  """Flash-style causal attention in pure JAX with O(T) memory (forward and backward).

  T is padded up to a multiple of the block size; padded keys lie after every real
  query so causality already hides them, and padded queries are sliced away.
  """
  _check_shapes(q, k, v)
  b, t, n, h = q.shape
  if k.shape[1] != t:
    raise ValueError(f"blockwise attention is self-attention: q has {t} positions, "
                     f"k has {k.shape[1]}")
  block = int(min(block_size, t))
  if block <= 0:
    raise ValueError(f"attention_block_size must be positive, got {block_size}")
  padded = -(-t // block) * block
  if segment_ids is None:
    segment_ids = jnp.zeros((b, t), jnp.int32)
  segment_ids = segment_ids.astype(jnp.int32)
  if padded != t:
    pad = [(0, 0), (0, padded - t), (0, 0), (0, 0)]
    q, k, v = (jnp.pad(x, pad) for x in (q, k, v))
    segment_ids = jnp.pad(segment_ids, [(0, 0), (0, padded - t)], constant_values=-1)
  out = _flash(q, k, v, segment_ids, block)
  return out[:, :t]


def _to_blocks(q, k, v, kv_heads):
  """[B,T,N,H] -> q [B,K,G,T,H]; k, v [B,K,T,H] (heads first, time next to head_dim)."""
  b, t, n, h = q.shape
  qg = q.reshape(b, t, kv_heads, n // kv_heads, h).transpose(0, 2, 3, 1, 4)
  return qg, k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)


def _block_mask(seg, i, j, block):
  """Mask [B,1,1,bq,bk] for query block i against key block j (causal + same segment)."""
  q_pos = i * block + jnp.arange(block)
  k_pos = j * block + jnp.arange(block)
  q_seg = jax.lax.dynamic_slice_in_dim(seg, i * block, block, axis=1)
  k_seg = jax.lax.dynamic_slice_in_dim(seg, j * block, block, axis=1)
  causal = q_pos[:, None] >= k_pos[None, :]
  same = q_seg[:, :, None] == k_seg[:, None, :]
  return (causal[None] & same)[:, None, None]


def _slice(x, j, block, axis):
  return jax.lax.dynamic_slice_in_dim(x, j * block, block, axis=axis)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(q, k, v, segment_ids, block):
  return _flash_forward(q, k, v, segment_ids, block)[0]


def _flash_forward(q, k, v, seg, block):
  b, t, n, h = q.shape
  kv_heads = k.shape[2]
  scale = 1.0 / np.sqrt(h)
  qg, kt, vt = _to_blocks(q, k, v, kv_heads)
  num_blocks = t // block

  def query_block(i):
    qi = _slice(qg, i, block, axis=3)  # [B,K,G,bq,H]
    stats_shape = qi.shape[:-1]

    def kv_step(j, carry):
      m, l, acc = carry
      kj, vj = _slice(kt, j, block, axis=2), _slice(vt, j, block, axis=2)
      s = jnp.einsum("bkgqh,bksh->bkgqs", qi, kj,
                     preferred_element_type=jnp.float32) * scale
      s = jnp.where(_block_mask(seg, i, j, block), s, -jnp.inf)
      m_new = jnp.maximum(m, s.max(-1))
      # Rows with nothing visible yet keep m = -inf; shift by 0 so exp gives 0, not NaN.
      m_safe = jnp.where(jnp.isfinite(m_new), m_new, 0.0)
      p = jnp.exp(s - m_safe[..., None])
      correction = jnp.exp(m - m_safe)
      l = l * correction + p.sum(-1)
      acc = acc * correction[..., None] + jnp.einsum(
          "bkgqs,bksh->bkgqh", p.astype(vj.dtype), vj, preferred_element_type=jnp.float32)
      return m_new, l, acc

    init = (jnp.full(stats_shape, -jnp.inf, jnp.float32),
            jnp.zeros(stats_shape, jnp.float32),
            jnp.zeros(qi.shape, jnp.float32))
    # Causal: key blocks after the diagonal are never visible, so stop at block i.
    m, l, acc = jax.lax.fori_loop(0, i + 1, kv_step, init)
    out = acc / l[..., None]
    lse = m + jnp.log(l)
    return out.astype(q.dtype), lse

  out, lse = jax.lax.map(query_block, jnp.arange(num_blocks))
  # out: [nb,B,K,G,bq,H] -> [B,T,N,H]; lse: [nb,B,K,G,bq] -> [B,K,G,T]
  out = out.transpose(1, 0, 4, 2, 3, 5).reshape(b, t, n, h)
  lse = lse.transpose(1, 2, 3, 0, 4).reshape(b, kv_heads, n // kv_heads, t)
  return out, lse


def _flash_fwd(q, k, v, segment_ids, block):
  out, lse = _flash_forward(q, k, v, segment_ids, block)
  return out, (q, k, v, segment_ids, out, lse)


def _flash_bwd(block, residuals, d_out):
  q, k, v, seg, out, lse = residuals
  b, t, n, h = q.shape
  kv_heads = k.shape[2]
  scale = 1.0 / np.sqrt(h)
  num_blocks = t // block
  qg, kt, vt = _to_blocks(q, k, v, kv_heads)
  dog = _to_blocks(d_out, k, v, kv_heads)[0]
  og = _to_blocks(out, k, v, kv_heads)[0]
  # delta_i = sum_h dO_ih * O_ih  (the softmax-Jacobian correction term), [B,K,G,T]
  delta = jnp.sum(dog.astype(jnp.float32) * og.astype(jnp.float32), axis=-1)

  def key_block(dq, j):
    kj, vj = _slice(kt, j, block, axis=2), _slice(vt, j, block, axis=2)

    def q_step(i, carry):
      dq, dk, dv = carry
      qi = _slice(qg, i, block, axis=3)
      doi = _slice(dog, i, block, axis=3)
      s = jnp.einsum("bkgqh,bksh->bkgqs", qi, kj,
                     preferred_element_type=jnp.float32) * scale
      p = jnp.exp(s - _slice(lse, i, block, axis=3)[..., None])
      p = jnp.where(_block_mask(seg, i, j, block), p, 0.0)
      dv = dv + jnp.einsum("bkgqs,bkgqh->bksh", p.astype(doi.dtype), doi,
                           preferred_element_type=jnp.float32)
      dp = jnp.einsum("bkgqh,bksh->bkgqs", doi, vj, preferred_element_type=jnp.float32)
      ds = p * (dp - _slice(delta, i, block, axis=3)[..., None]) * scale
      dk = dk + jnp.einsum("bkgqs,bkgqh->bksh", ds.astype(qi.dtype), qi,
                           preferred_element_type=jnp.float32)
      dqi = jnp.einsum("bkgqs,bksh->bkgqh", ds.astype(kj.dtype), kj,
                       preferred_element_type=jnp.float32)
      dq = jax.lax.dynamic_update_slice_in_dim(
          dq, _slice(dq, i, block, axis=3) + dqi, i * block, axis=3)
      return dq, dk, dv

    zeros = jnp.zeros(kj.shape, jnp.float32)
    # Causal: only query blocks at or after the diagonal see key block j.
    dq, dk, dv = jax.lax.fori_loop(j, num_blocks, q_step, (dq, zeros, zeros))
    return dq, (dk, dv)

  dq, (dk, dv) = jax.lax.scan(key_block, jnp.zeros(qg.shape, jnp.float32),
                              jnp.arange(num_blocks))
  dq = dq.transpose(0, 3, 1, 2, 4).reshape(b, t, n, h).astype(q.dtype)
  # dk: [nb,B,K,bk,H] -> [B,T,K,H]
  dk = dk.transpose(1, 0, 3, 2, 4).reshape(b, t, kv_heads, h).astype(k.dtype)
  dv = dv.transpose(1, 0, 3, 2, 4).reshape(b, t, kv_heads, h).astype(v.dtype)
  d_seg = np.zeros(seg.shape, jax.dtypes.float0)
  return dq, dk, dv, d_seg


_flash.defvjp(_flash_fwd, _flash_bwd)
