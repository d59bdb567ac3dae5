"""A Llama-style decoder-only transformer in Flax linen, read top to bottom like the paper.

    RMSNorm -> RoPE -> Attention (grouped-query, pluggable backend) -> MLP (SwiGLU)
    -> Block (pre-norm residual) -> Transformer (embed, scanned blocks, final norm, head)

API
---
Transformer(config.model)
    __call__(tokens[B,T] int32, positions=None, segment_ids=None, decode=False,
             return_hidden=False)
  * positions=None means arange(T) (or, when decoding, cache_index + arange(T)).
  * segment_ids=None means no document masking. Document masking (a token never attends
    across a packed-document boundary) is applied only when segment_ids is given AND
    config.cross_document_attention is False; with cross_document_attention=True the
    segment ids are ignored. Pass per-document `positions` from the batch in that case.
  * returns float32 logits [B,T,V] (matmul in compute dtype, float32 accumulation), or,
    with return_hidden=True, the final-normed hidden states [B,T,D] in compute dtype,
    to be fed to `token_nll` with `lm_head_matrix(params, config)` for a chunked loss.
  * decode=True reads/writes the 'cache' collection (call with mutable=['cache']).

Decoding with a KV cache (one compiled function for prefill, one for single steps):
    cache = init_cache(config.model, batch_size, max_len)
    logits, vars = model.apply({'params': p, 'cache': cache}, prompt, decode=True,
                               mutable=['cache'])            # prefill, T > 1
    logits, vars = model.apply({'params': p, 'cache': vars['cache']}, next_tok[:, None],
                               decode=True, mutable=['cache'])  # T == 1 steps
  The cache holds per-layer keys/values [L,B,S,K,H], the segment id of every cached
  slot [B,S] and a scalar write index. While decoding, `segment_ids` (default all ones)
  lets a sampler left-pad prompts: padding gets segment 0 and the prompt 1, and it
  passes `positions` so the prompt starts at 0. All rows advance together.

Losses (softmax always in float32; loss = sum(w * nll) / sum(w)):
    token_nll_from_logits(logits, targets) -> nll [B,T] float32
    token_nll(hidden, head, targets, chunk_size=1024) -> nll [B,T] float32
        never materialises the full [B,T,V] logits (rematerialised per chunk).
    cross_entropy_loss(logits, targets, loss_weights=None) -> (loss, total_weight)
    chunked_cross_entropy_loss(hidden, head, targets, loss_weights=None, chunk_size=1024)
        -> (loss, total_weight)
    weighted_mean(nll, loss_weights=None) -> (loss, total_weight)
    lm_head_matrix(params, config) -> [D,V] (the embedding transposed when tied)

Parameters (plain arrays; with scan_layers=True every leaf under 'layers' has a leading
layer axis; with scan_layers=False the blocks are 'layers_0', 'layers_1', ...):
    embed/embedding [V,D]
    layers/attn_norm/scale [L,D]       layers/mlp_norm/scale [L,D]
    layers/attn/{q_proj}/kernel [L,D,N,H]   layers/attn/{k_proj,v_proj}/kernel [L,D,K,H]
    layers/attn/o_proj/kernel [L,N,H,D]
    layers/mlp/{gate_proj,up_proj}/kernel [L,D,F]   layers/mlp/down_proj/kernel [L,F,D]
    final_norm/scale [D]               lm_head/kernel [D,V] (only when untied)
  `param_logical_axes(params)` maps each leaf to a tuple of logical axis names from
  ('layers', 'vocab', 'embed', 'heads', 'kv_heads', 'head_dim', 'mlp').
  `stack_layers` / `unstack_layers` convert between the two layer layouts.

Accounting:
    count_params(config, non_embedding=True)
    flops_per_token(config, seq_len, causal=False): training FLOPs per token (forward +
        backward), following the PaLM appendix-B formula  6 * N + 12 * L * n_heads *
        head_dim * T; attention counted as if dense (the usual MFU convention) unless
        causal=True, which halves the attention term. N counts every weight that takes part in a matmul per token: the
        non-embedding parameters plus the LM head (D*V, counted even when tied, since
        the head matmul is real compute); the embedding lookup is free.

Config keys: `default_config()` below, each with its default and meaning.
"""
from __future__ import annotations

import math
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlm import attention as attention_lib

def default_config() -> ml_collections.ConfigDict:
  """`config.model`: every key the network reads, with its default and meaning.

  This is the one place model defaults live: configs/common.py, sampling, conversion and
  the README refer here. The defaults are the phases' ~349M model (untied embeddings):
  per layer attention 1024 x (1024 + 2*512 + 1024) = 3.1M and SwiGLU 3 x 1024 x 2816 =
  8.7M; x24 layers = 283M, plus 2 x 32000 x 1024 embedding and head = 66M. All phases
  share these shapes so that each phase can init_from the previous one.
  """
  m = ml_collections.ConfigDict()
  m.vocab_size = 32000  # must equal the tokenizer's (and the shards' meta.json) vocab size
  m.d_model = 1024  # residual stream width
  m.n_layers = 24
  m.n_heads = 16  # query heads
  m.n_kv_heads = 8  # key/value heads (grouped-query attention; = n_heads for plain MHA)
  m.head_dim = 0  # per-head width; 0 = d_model // n_heads (64 for the default model)
  m.mlp_dim = 2816  # SwiGLU hidden width (~8/3 d_model, rounded to a multiple of 256)
  m.max_seq_len = 2048  # longest sequence the model is built for (phases set = seq_len)
  m.rope_theta = 10_000.0  # RoPE base frequency; phase2_5 raises it to 500k for 8k context
  m.rope_scaling = "none"  # 'none' | 'linear' | 'ntk' | 'yarn' (context extension schemes)
  m.rope_scaling_factor = 1.0  # extension factor for linear / ntk / yarn
  m.rope_original_max_len = 2048  # context length the RoPE base was trained at
  m.tie_embeddings = False  # share the input embedding with the output projection
  m.norm_eps = 1e-5  # RMSNorm epsilon
  m.param_dtype = "float32"  # master weights (optimizer updates stay in float32)
  # Activations / matmuls. Recorded with every checkpoint, so sampling computes as the
  # model was trained (a float32 HF import samples in float32); --compute_dtype overrides.
  m.compute_dtype = "bfloat16"
  # Attention backend (jaxlm/attention.py): 'auto' | 'cudnn' | 'xla' | 'blockwise' |
  # 'splash'. 'auto' picks cudnn flash attention on NVIDIA GPUs when it can (bf16,
  # head_dim <= 128), else the pure-JAX blockwise kernel.
  m.attention = "auto"
  m.attention_block_size = 512  # key/value block of the blockwise kernel
  # Activation checkpointing per layer: 'none' | 'save_matmuls' | 'full' (least memory).
  m.remat = "none"
  m.scan_layers = True  # nn.scan over layers: one compiled layer, fast compiles
  # Attend across document boundaries inside a packed window? True (GPT-style packing)
  # keeps positions 0..T-1 over the whole window and runs cudnn without a mask (H200, 8k:
  # 2.5 ms vs 4.2 ms with the document mask, experiments/ATTENTION.md).
  # False masks attention to the current document (batch segment_ids) and restarts
  # positions at each document; phase 3 uses it for its SFT conversations.
  m.cross_document_attention = True
  m.init_std = 0.02  # normal init std (o_proj/down_proj further scaled by 1/sqrt(2 n_layers))
  return m


ROPE_SCALINGS = ("none", "linear", "ntk", "yarn")
REMAT_POLICIES = ("none", "save_matmuls", "full")


def model_config(overrides: dict | ml_collections.ConfigDict | None = None):
  """A complete model ConfigDict: `default_config()` updated with `overrides`.

  Unknown keys are refused; a checkpoint written before a key existed gets its default.
  """
  config = default_config()
  overrides = dict(overrides or {})
  unknown = sorted(set(overrides) - set(config))
  if unknown:
    raise ValueError(f"unknown model config keys {unknown}; known: {sorted(config)}")
  config.update(overrides)
  return config


def head_dim(config) -> int:
  return int(config.head_dim) or int(config.d_model) // int(
      config.n_heads)


def _dtype(config, key):
  return jnp.dtype(config[key])


def _validate(config):
  if config.rope_scaling not in ROPE_SCALINGS:
    raise ValueError(f"config.model.rope_scaling={config.rope_scaling!r}; "
                     f"expected one of {ROPE_SCALINGS}")
  if config.remat not in REMAT_POLICIES:
    raise ValueError(f"config.model.remat={config.remat!r}; expected one of "
                     f"{REMAT_POLICIES}")
  if config.attention not in attention_lib.IMPLEMENTATIONS:
    raise ValueError(f"config.model.attention={config.attention!r}; expected "
                     f"one of {attention_lib.IMPLEMENTATIONS}")
  if config.n_heads % config.n_kv_heads:
    raise ValueError(f"config.model.n_heads={config.n_heads} is not a multiple "
                     f"of n_kv_heads={config.n_kv_heads}")
  if head_dim(config) % 2:
    raise ValueError(f"head_dim={head_dim(config)} must be even for RoPE")


def _init(config, scale=1.0):
  return nn.initializers.normal(stddev=float(config.init_std) * scale)


# --------------------------------------------------------------------------- RMSNorm


class RMSNorm(nn.Module):
  config: Any

  @nn.compact
  def __call__(self, x):
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],),
                       _dtype(self.config, "param_dtype"))
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True)
                              + self.config.norm_eps)
    # Like HF Llama: normalise in float32, scale after casting back.
    return scale.astype(_dtype(self.config, "compute_dtype")) * x32.astype(
        _dtype(self.config, "compute_dtype"))


# --------------------------------------------------------------------------- RoPE


def rope_frequencies(config) -> tuple[np.ndarray, float]:
  """Inverse frequencies [head_dim/2] and the cos/sin magnitude (YaRN's attention factor).

  'linear' divides positions by the factor (here: the frequencies), 'ntk' raises the
  base by factor**(d/(d-2)), 'yarn' blends interpolated and original frequencies per
  dimension by how many rotations it makes within rope_original_max_len.
  Raising the base alone is just a larger rope_theta with rope_scaling='none'.
  """
  dim = head_dim(config)
  base = float(config.rope_theta)
  kind = config.rope_scaling
  factor = float(config.rope_scaling_factor)
  exponents = np.arange(0, dim, 2, dtype=np.float64) / dim
  if kind == "ntk":
    base = base * factor ** (dim / (dim - 2))
  inv_freq = 1.0 / base**exponents
  magnitude = 1.0
  if kind == "linear":
    inv_freq = inv_freq / factor
  elif kind == "yarn":
    original = float(config.rope_original_max_len)
    # Dimension index whose wavelength completes `rotations` turns over the original length.
    def dim_for(rotations):
      return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))
    low = max(math.floor(dim_for(32.0)), 0)
    high = min(math.ceil(dim_for(1.0)), dim - 1)
    if low == high:
      high += 0.001
    ramp = np.clip((np.arange(dim // 2) - low) / (high - low), 0.0, 1.0)
    keep_original = 1.0 - ramp  # fast-rotating dims extrapolate, slow ones interpolate
    inv_freq = inv_freq / factor * ramp + inv_freq * keep_original
    magnitude = 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0
  elif kind not in ("none", "ntk"):
    raise ValueError(f"config.model.rope_scaling={kind!r}; expected one of {ROPE_SCALINGS}")
  return inv_freq.astype(np.float32), magnitude


def apply_rope(x, positions, config):
  """Rotates x [B,T,N,H] by positions [B,T] (HF "rotate_half" layout: pairs (i, i+H/2))."""
  inv_freq, magnitude = rope_frequencies(config)
  angles = positions[..., None].astype(jnp.float32) * jnp.asarray(inv_freq)  # [B,T,H/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(angles) * magnitude, jnp.sin(angles) * magnitude
  x32 = x.astype(jnp.float32)
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
  return (x32 * cos + rotated * sin).astype(x.dtype)


# --------------------------------------------------------------------------- Attention


def _dense(config, features, name, axis=-1, init_scale=1.0):
  return nn.DenseGeneral(features, axis=axis, use_bias=False, name=name,
                         dtype=_dtype(config, "compute_dtype"),
                         param_dtype=_dtype(config, "param_dtype"),
                         kernel_init=_init(config, init_scale))


class Attention(nn.Module):
  config: Any
  decode: bool = False
  cache_len: int = 0

  @nn.compact
  def __call__(self, x, positions, segment_ids, decode_mask, cache_index):
    cfg = self.config
    n, kv, h = cfg.n_heads, cfg.n_kv_heads, head_dim(cfg)
    residual_scale = 1.0 / math.sqrt(2 * cfg.n_layers)
    q = _dense(cfg, (n, h), "q_proj")(x)
    k = _dense(cfg, (kv, h), "k_proj")(x)
    v = _dense(cfg, (kv, h), "v_proj")(x)
    q, k = apply_rope(q, positions, cfg), apply_rope(k, positions, cfg)

    if self.decode:
      b = x.shape[0]
      shape = (b, self.cache_len, kv, h)
      cached_k = self.variable("cache", "key", jnp.zeros, shape, k.dtype)
      cached_v = self.variable("cache", "value", jnp.zeros, shape, v.dtype)
      start = (0, cache_index, 0, 0)
      cached_k.value = jax.lax.dynamic_update_slice(cached_k.value, k, start)
      cached_v.value = jax.lax.dynamic_update_slice(cached_v.value, v, start)
      out = attention_lib.masked_attention(q, cached_k.value, cached_v.value, decode_mask)
    else:
      out = attention_lib.attend(q, k, v, segment_ids,
                                 implementation=cfg.attention,
                                 block_size=cfg.attention_block_size)
    return _dense(cfg, x.shape[-1], "o_proj", axis=(-2, -1), init_scale=residual_scale)(out)


# --------------------------------------------------------------------------- MLP


class MLP(nn.Module):
  config: Any

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    f = cfg.mlp_dim
    gate = _dense(cfg, f, "gate_proj")(x)
    up = _dense(cfg, f, "up_proj")(x)
    residual_scale = 1.0 / math.sqrt(2 * cfg.n_layers)
    return _dense(cfg, x.shape[-1], "down_proj", init_scale=residual_scale)(
        nn.silu(gate) * up)


# --------------------------------------------------------------------------- Block


class Block(nn.Module):
  """Pre-norm residual block. Returns (x, None) so it can be the body of nn.scan."""
  config: Any
  decode: bool = False
  cache_len: int = 0

  @nn.compact
  def __call__(self, x, positions, segment_ids, decode_mask, cache_index):
    attn = Attention(self.config, self.decode, self.cache_len, name="attn")
    x = x + attn(RMSNorm(self.config, name="attn_norm")(x), positions, segment_ids,
                 decode_mask, cache_index)
    x = x + MLP(self.config, name="mlp")(RMSNorm(self.config, name="mlp_norm")(x))
    return x, None


def _remat(block_cls, config, scanned):
  policy = config.remat
  if policy == "none":
    return block_cls
  saveable = (jax.checkpoint_policies.dots_with_no_batch_dims_saveable
              if policy == "save_matmuls" else jax.checkpoint_policies.nothing_saveable)
  # Under scan every iteration is a separate computation already, so CSE is harmless.
  return nn.remat(block_cls, policy=saveable, prevent_cse=not scanned)


# --------------------------------------------------------------------------- Transformer


class LMHead(nn.Module):
  config: Any

  @nn.compact
  def __call__(self, x):
    cfg = self.config
    kernel = self.param("kernel", _init(cfg), (x.shape[-1], cfg.vocab_size),
                        _dtype(cfg, "param_dtype"))
    return jnp.einsum("btd,dv->btv", x, kernel.astype(x.dtype),
                      preferred_element_type=jnp.float32)


class Transformer(nn.Module):
  config: Any
  cache_len: int | None = None  # KV cache length when creating a cache; default max_seq_len

  @nn.compact
  def __call__(self, tokens, positions=None, segment_ids=None, decode=False,
               return_hidden=False):
    cfg = self.config
    _validate(cfg)
    b, t = tokens.shape
    cd = _dtype(cfg, "compute_dtype")
    embed = nn.Embed(cfg.vocab_size, cfg.d_model, name="embed",
                     embedding_init=_init(cfg), dtype=cd,
                     param_dtype=_dtype(cfg, "param_dtype"))
    x = embed(tokens).astype(cd)

    decode_mask = cache_index = None
    if decode:
      cache_len = int(self.cache_len or cfg.max_seq_len)
      index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
      slot_segments = self.variable("cache", "segment_ids", jnp.ones, (b, cache_len),
                                    jnp.int32)
      cache_len = slot_segments.value.shape[1]
      cache_index = index.value
      if segment_ids is None:
        segment_ids = jnp.ones((b, t), jnp.int32)
      if positions is None:
        positions = jnp.broadcast_to(cache_index + jnp.arange(t), (b, t))
      slot_segments.value = jax.lax.dynamic_update_slice(
          slot_segments.value, segment_ids.astype(jnp.int32), (0, cache_index))
      query_slot = cache_index + jnp.arange(t)
      visible = jnp.arange(cache_len)[None, :] <= query_slot[:, None]  # [T,S]
      same_doc = segment_ids[:, :, None] == slot_segments.value[:, None, :]
      decode_mask = visible[None] & same_doc
      index.value = cache_index + t
    else:
      cache_len = 0
      if positions is None:
        positions = jnp.broadcast_to(jnp.arange(t), (b, t))
      if cfg.cross_document_attention:
        segment_ids = None

    scanned = bool(cfg.scan_layers)
    block_cls = Block if decode else _remat(Block, cfg, scanned)
    if scanned:
      layers = nn.scan(block_cls, variable_axes={"params": 0, "cache": 0},
                       split_rngs={"params": True}, in_axes=(nn.broadcast,) * 4,
                       length=cfg.n_layers)
      x, _ = layers(cfg, decode, cache_len, name="layers")(
          x, positions, segment_ids, decode_mask, cache_index)
    else:
      for i in range(cfg.n_layers):
        x, _ = block_cls(cfg, decode, cache_len, name=f"layers_{i}")(
            x, positions, segment_ids, decode_mask, cache_index)

    x = RMSNorm(cfg, name="final_norm")(x)
    if return_hidden and not self.is_initializing():
      return x
    if cfg.tie_embeddings:
      return jnp.einsum("btd,vd->btv", x, embed.embedding.astype(cd),
                        preferred_element_type=jnp.float32)
    return LMHead(cfg, name="lm_head")(x)


def init_params(config, rng, seq_len: int = 8):
  """Float params for `config` (shapes do not depend on seq_len)."""
  tokens = jnp.zeros((1, seq_len), jnp.int32)
  return Transformer(config).init(rng, tokens)["params"]


def init_cache(config, batch_size: int, max_len: int | None = None):
  """An empty KV cache for `batch_size` rows and `max_len` slots (default max_seq_len)."""
  model = Transformer(config, cache_len=max_len or config.max_seq_len)
  shapes = jax.eval_shape(
      lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((batch_size, 1), jnp.int32),
                         decode=True))["cache"]
  cache = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  # Unwritten slots must not match any real query's segment: use -1.
  cache["segment_ids"] = jnp.full(cache["segment_ids"].shape, -1, jnp.int32)
  return cache


# --------------------------------------------------------------------------- losses


def lm_head_matrix(params, config):
  """The [D, V] output projection (embedding transposed when embeddings are tied)."""
  if config.tie_embeddings:
    return params["embed"]["embedding"].T
  return params["lm_head"]["kernel"]


def token_nll_from_logits(logits, targets):
  """Per-token negative log-likelihood [B,T], softmax in float32."""
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target_logit = jnp.take_along_axis(logits, targets[..., None].astype(jnp.int32),
                                     axis=-1)[..., 0]
  return log_z - target_logit


@jax.custom_vjp
def _chunk_nll(h, head, targets):
  """NLL of one sequence chunk: h [B,C,D] (compute dtype), head [D,V] (param dtype)."""
  logits = jnp.einsum("bcd,dv->bcv", h, head.astype(h.dtype),
                      preferred_element_type=jnp.float32)
  return token_nll_from_logits(logits, targets)


def _chunk_nll_fwd(h, head, targets):
  # Nothing of size V is kept: the backward pass recomputes this chunk's logits.
  return _chunk_nll(h, head, targets), (h, head, targets)


def _chunk_nll_bwd(residuals, g):
  h, head, targets = residuals
  head_c = head.astype(h.dtype)
  logits = jnp.einsum("bcd,dv->bcv", h, head_c, preferred_element_type=jnp.float32)
  # d nll / d logits = softmax - onehot, formed in float32, then handed to the two
  # backward matmuls in the compute dtype (bf16 matmuls at full tensor-core rate).
  d_logits = (jax.nn.softmax(logits, axis=-1)
              - jax.nn.one_hot(targets, logits.shape[-1], dtype=jnp.float32)) * g[..., None]
  d_logits = d_logits.astype(h.dtype)
  d_h = jnp.einsum("bcv,dv->bcd", d_logits, head_c, preferred_element_type=jnp.float32)
  # The head's gradient is accumulated over chunks in the param dtype (float32).
  d_head = jnp.einsum("bcd,bcv->dv", h, d_logits, preferred_element_type=jnp.float32)
  return d_h.astype(h.dtype), d_head.astype(head.dtype), None


_chunk_nll.defvjp(_chunk_nll_fwd, _chunk_nll_bwd)


def token_nll(hidden, head, targets, chunk_size: int = 1024):
  """Per-token NLL [B,T] from final hidden [B,T,D] and head [D,V], chunked over T.

  Each chunk's float32 logits [B,chunk,V] exist only inside that chunk, forward and
  backward (the backward recomputes them), so the full [B,T,V] logits never exist.
  """
  b, t, d = hidden.shape
  chunk = int(min(chunk_size, t))
  padded = -(-t // chunk) * chunk
  if padded != t:
    hidden = jnp.pad(hidden, [(0, 0), (0, padded - t), (0, 0)])
    targets = jnp.pad(targets, [(0, 0), (0, padded - t)])
  hidden_chunks = hidden.reshape(b, padded // chunk, chunk, d).swapaxes(0, 1)
  target_chunks = targets.reshape(b, padded // chunk, chunk).swapaxes(0, 1).astype(jnp.int32)
  nll = jax.lax.map(lambda args: _chunk_nll(args[0], head, args[1]),
                    (hidden_chunks, target_chunks))
  return nll.swapaxes(0, 1).reshape(b, padded)[:, :t]


def weighted_mean(nll, loss_weights=None):
  """(sum(w * nll) / sum(w), sum(w)); an all-zero weight batch gives loss 0."""
  w = jnp.ones_like(nll) if loss_weights is None else loss_weights.astype(jnp.float32)
  total = jnp.sum(w)
  return jnp.sum(w * nll) / jnp.maximum(total, 1e-8), total


def cross_entropy_loss(logits, targets, loss_weights=None):
  """Weighted mean token cross-entropy from logits: (loss, total_weight)."""
  return weighted_mean(token_nll_from_logits(logits, targets), loss_weights)


def chunked_cross_entropy_loss(hidden, head, targets, loss_weights=None,
                               chunk_size: int = 1024):
  """Weighted mean token cross-entropy from hidden states: (loss, total_weight)."""
  return weighted_mean(token_nll(hidden, head, targets, chunk_size), loss_weights)


# --------------------------------------------------------------------------- accounting


def count_params(config, non_embedding: bool = True) -> int:
  """Parameter count; non_embedding excludes the embedding table and an untied LM head."""
  d, L = config.d_model, config.n_layers
  n, kv, h, f = config.n_heads, config.n_kv_heads, head_dim(config), config.mlp_dim
  per_layer = d * n * h * 2 + d * kv * h * 2 + 3 * d * f + 2 * d
  body = L * per_layer + d  # + final norm
  if non_embedding:
    return int(body)
  v = config.vocab_size
  return int(body + v * d * (1 if config.tie_embeddings else 2))


def flops_per_token(config, seq_len: int, causal: bool = False) -> float:
  """Training FLOPs per token: 6 * (N_non_embedding + D*V) + 12 * L * n_heads * head_dim * T.

  The one FLOPs formula of the project (trainer MFU, bench, experiments). PaLM appendix-B
  convention: by default attention is counted as if dense (the usual MFU convention);
  `causal=True` halves the attention term, counting only the work a causal kernel does
  (the convention of the reference throughput figures).
  """
  n = count_params(config, non_embedding=True) + config.d_model * config.vocab_size
  attn = 12 * config.n_layers * config.n_heads * head_dim(config) * seq_len
  return float(6 * n + (attn / 2 if causal else attn))


# --------------------------------------------------------------------------- layouts

_LOGICAL_AXES = {
    ("embed", "embedding"): ("vocab", "embed"),
    ("attn", "q_proj", "kernel"): ("embed", "heads", "head_dim"),
    ("attn", "k_proj", "kernel"): ("embed", "kv_heads", "head_dim"),
    ("attn", "v_proj", "kernel"): ("embed", "kv_heads", "head_dim"),
    ("attn", "o_proj", "kernel"): ("heads", "head_dim", "embed"),
    ("mlp", "gate_proj", "kernel"): ("embed", "mlp"),
    ("mlp", "up_proj", "kernel"): ("embed", "mlp"),
    ("mlp", "down_proj", "kernel"): ("mlp", "embed"),
    ("attn_norm", "scale"): ("embed",),
    ("mlp_norm", "scale"): ("embed",),
    ("final_norm", "scale"): ("embed",),
    ("lm_head", "kernel"): ("embed", "vocab"),
}


def param_logical_axes(params):
  """A pytree like `params` whose leaves are tuples of logical axis names."""
  def axes(path, leaf):
    keys = tuple(getattr(p, "key", str(p)) for p in path)
    in_layers = bool(keys) and re.fullmatch(r"layers(_\d+)?", keys[0])
    names = _LOGICAL_AXES.get(keys[1:] if in_layers else keys)
    if names is None:
      raise ValueError(f"no logical axes known for parameter {'/'.join(keys)}")
    if in_layers and keys[0] == "layers":
      names = ("layers",) + names
    if len(names) != np.ndim(leaf):
      raise ValueError(f"parameter {'/'.join(keys)} has shape {np.shape(leaf)}, "
                       f"expected axes {names}")
    return names
  return jax.tree_util.tree_map_with_path(axes, params)


def unstack_layers(params):
  """Scanned layout (params['layers'] with a leading axis) -> 'layers_0', 'layers_1', ..."""
  params = dict(params)
  layers = params.pop("layers")
  n = jax.tree.leaves(layers)[0].shape[0]
  for i in range(n):
    params[f"layers_{i}"] = jax.tree.map(lambda x: x[i], layers)
  return params


def stack_layers(params):
  """'layers_0', 'layers_1', ... -> scanned layout with a leading layer axis."""
  params = dict(params)
  names = sorted((k for k in params if re.fullmatch(r"layers_\d+", k)),
                 key=lambda k: int(k.split("_")[1]))
  blocks = [params.pop(k) for k in names]
  params["layers"] = jax.tree.map(lambda *xs: jnp.stack(xs), *blocks)
  return params
