"""Attention backends against a float64 numpy reference (outputs and gradients)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm import attention


def reference(q, k, v, segment_ids, d_out):
  """float64 causal GQA attention and its analytic gradients for loss = sum(out * d_out)."""
  q, k, v, d_out = (np.asarray(x, np.float64) for x in (q, k, v, d_out))
  b, t, n, h = q.shape
  groups = n // k.shape[2]
  kr, vr = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
  scale = 1.0 / np.sqrt(h)
  s = np.einsum("btnh,bsnh->bnts", q, kr) * scale
  allowed = np.tril(np.ones((t, t), bool))[None, None]
  if segment_ids is not None:
    seg = np.asarray(segment_ids)
    allowed = allowed & (seg[:, :, None] == seg[:, None, :])[:, None]
  s = np.where(allowed, s, -np.inf)
  p = np.exp(s - s.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  out = np.einsum("bnts,bsnh->btnh", p, vr)
  dp = np.einsum("btnh,bsnh->bnts", d_out, vr)
  ds = p * (dp - (dp * p).sum(-1, keepdims=True))
  dq = np.einsum("bnts,bsnh->btnh", ds, kr) * scale
  dk = np.einsum("bnts,btnh->bsnh", ds, q) * scale
  dv = np.einsum("bnts,btnh->bsnh", p, d_out)
  fold = lambda x: x.reshape(b, t, k.shape[2], groups, h).sum(3)  # sum over query groups
  return out, (dq, fold(dk), fold(dv))


def random_inputs(b=2, t=37, n=4, kv=2, h=8, seed=0):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(b, t, n, h)).astype(np.float32)
  k = rng.normal(size=(b, t, kv, h)).astype(np.float32)
  v = rng.normal(size=(b, t, kv, h)).astype(np.float32)
  d_out = rng.normal(size=(b, t, n, h)).astype(np.float32)
  # Sorted ids -> contiguous packed documents; row 0 starts with padding (id 0).
  seg = np.sort(rng.integers(0, 4, size=(b, t)), axis=1).astype(np.int32)
  return q, k, v, d_out, seg


@pytest.mark.parametrize("implementation,block_size", [
    ("xla", None), ("blockwise", 8), ("blockwise", 64)])
@pytest.mark.parametrize("use_segments", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2])
def test_matches_float64_reference(implementation, block_size, use_segments, kv_heads):
  q, k, v, d_out, seg = random_inputs(kv=kv_heads)
  seg = seg if use_segments else None
  kwargs = {"implementation": implementation}
  if block_size:
    kwargs["block_size"] = block_size

  def f(q, k, v):
    return attention.attend(q, k, v, None if seg is None else jnp.asarray(seg), **kwargs)

  out, vjp = jax.vjp(jax.jit(f), q, k, v)
  grads = vjp(jnp.asarray(d_out))
  ref_out, ref_grads = reference(q, k, v, seg, d_out)
  np.testing.assert_allclose(out, ref_out, atol=2e-5, rtol=1e-4)
  for name, g, rg in zip("qkv", grads, ref_grads):
    np.testing.assert_allclose(g, rg, atol=5e-5, rtol=1e-4, err_msg=f"d{name}")


def test_segment_ids_actually_mask():
  q, k, v, _, seg = random_inputs()
  with_seg = attention.blockwise_attention(q, k, v, jnp.asarray(seg), block_size=8)
  without = attention.blockwise_attention(q, k, v, None, block_size=8)
  assert not np.allclose(with_seg, without)


def test_blockwise_bfloat16_close_to_xla():
  q, k, v, _, seg = random_inputs(t=64)
  q, k, v = (jnp.asarray(x, jnp.bfloat16) for x in (q, k, v))
  a = attention.blockwise_attention(q, k, v, jnp.asarray(seg), block_size=16)
  b = attention.xla_attention(q, k, v, jnp.asarray(seg))
  assert a.dtype == jnp.bfloat16
  # Both round twice to bfloat16 (unit roundoff u = 2**-8) around float32 arithmetic: the
  # probabilities before the PV matmul (the output moves by <= u * max|v|) and the output
  # (<= u * |out|). Rounding at different places, they differ by at most twice that: a
  # fixed atol=3e-2 was under 2 bfloat16 ulps for outputs in [2, 4), a last-bit
  # difference away from failing on a CPU that accumulates the bfloat16 dots in another
  # order. A masking or block-combination bug is off by O(|v|).
  u = 2.0 ** -8
  np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=2 * u,
                             atol=2 * u * float(jnp.abs(v.astype(jnp.float32)).max()))


def test_masked_attention_matches_causal_when_mask_is_causal():
  q, k, v, d_out, seg = random_inputs()
  t = q.shape[1]
  mask = np.tril(np.ones((t, t), bool))[None] & (seg[:, :, None] == seg[:, None, :])
  out = attention.masked_attention(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v),
                                   jnp.asarray(mask))
  np.testing.assert_allclose(out, reference(q, k, v, seg, d_out)[0], atol=2e-5, rtol=1e-4)


def test_cudnn_refuses_a_non_gpu_backend():
  q, k, v, _, seg = random_inputs(t=16)
  if jax.default_backend() != "gpu":
    for segments in (None, jnp.asarray(seg)):
      with pytest.raises(ValueError, match="NVIDIA GPU"):
        attention.attend(q, k, v, segments, implementation="cudnn")


def test_document_mask_does_not_change_the_backend_auto_picks():
  """cuDNN keeps documents apart through a mask, so phase3's masking keeps the fast path."""
  from jaxlm import bench, model as model_lib  # pylint: disable=import-outside-toplevel
  q = jnp.zeros((1, 16, 4, 64), jnp.bfloat16)
  masked = model_lib.model_config({"compute_dtype": "bfloat16",
                                   "cross_document_attention": False})
  packed = model_lib.model_config({"compute_dtype": "bfloat16",
                                   "cross_document_attention": True})
  assert bench.attention_backend(masked, 16) == bench.attention_backend(packed, 16)
  assert bench.attention_backend(masked, 16) == attention.select_implementation("auto", q)
  if jax.default_backend() == "cpu":
    assert attention.select_implementation("auto", q) == "blockwise"


def test_segment_mask_is_same_document_only():
  seg = jnp.asarray([[0, 0, 1, 1, 1, 2]])
  mask = np.asarray(attention.segment_mask(seg))
  assert mask.shape == (1, 1, 6, 6)
  expected = np.asarray(seg)[0][:, None] == np.asarray(seg)[0][None, :]
  np.testing.assert_array_equal(mask[0, 0], expected)


def test_unknown_implementation_and_bad_shapes_raise():
  q, k, v, _, _ = random_inputs(t=8)
  with pytest.raises(ValueError, match="flash3"):
    attention.attend(q, k, v, implementation="flash3")
  with pytest.raises(ValueError, match="multiple of kv heads"):
    attention.attend(q[:, :, :3], k, v, implementation="xla")
  if jax.default_backend() != "tpu":
    with pytest.raises(ValueError, match="TPU"):
      attention.attend(q, k, v, implementation="splash")


def test_blockwise_8k_memory_is_linear_in_length():
  b, t, n, kv, h = 1, 8192, 2, 1, 32
  q = jax.ShapeDtypeStruct((b, t, n, h), jnp.float32)
  k = jax.ShapeDtypeStruct((b, t, kv, h), jnp.float32)
  seg = jax.ShapeDtypeStruct((b, t), jnp.int32)

  def loss(q, k, v, seg):
    return jnp.sum(attention.blockwise_attention(q, k, v, seg, block_size=512) ** 2)

  compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, k, seg).compile()
  stats = compiled.memory_analysis()
  if stats is None:
    pytest.skip("this backend reports no memory analysis")
  full_scores = b * n * t * t * 4
  print(f"blockwise 8k fwd+bwd temp bytes: {stats.temp_size_in_bytes} "
        f"(T x T scores: {full_scores})")
  assert stats.temp_size_in_bytes < full_scores / 4, (stats.temp_size_in_bytes, full_scores)
