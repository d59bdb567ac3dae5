"""Transformer behaviour: layouts, document masking, decoding, losses, RoPE variants."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm import model as M


def tiny(**overrides):
  base = dict(vocab_size=61, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, mlp_dim=48,
              max_seq_len=32, compute_dtype="float32", attention="xla",
              attention_block_size=8, init_std=0.3)
  return M.model_config({**base, **overrides})


def tokens(b=2, t=12, vocab=61, seed=0):
  return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, (b, t)), jnp.int32)


def init(cfg, seed=0):
  return jax.jit(M.Transformer(cfg).init)(jax.random.PRNGKey(seed), tokens())["params"]


def apply(cfg, variables, *args, **kwargs):
  """Jitted model.apply (eager apply re-traces the scanned layers op by op: slow)."""
  static = tuple(sorted(kwargs))
  fn = jax.jit(lambda v, *a, **kw: M.Transformer(cfg).apply(v, *a, **kw),
               static_argnames=static)
  return fn(variables, *args, **kwargs)


@pytest.mark.parametrize("tie", [True, False])
def test_param_layout_counts_and_logical_axes(tie):
  cfg = tiny(tie_embeddings=tie)
  params = init(cfg)
  assert params["layers"]["attn"]["q_proj"]["kernel"].shape == (2, 32, 4, 8)
  assert params["layers"]["attn"]["k_proj"]["kernel"].shape == (2, 32, 2, 8)
  assert ("lm_head" in params) == (not tie)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  total = sum(x.size for x in jax.tree.leaves(params))
  assert M.count_params(cfg, non_embedding=False) == total
  embedding = 61 * 32 * (1 if tie else 2)
  assert M.count_params(cfg, non_embedding=True) == total - embedding
  axes = M.param_logical_axes(params)
  assert axes["layers"]["attn"]["o_proj"]["kernel"] == ("layers", "heads", "head_dim", "embed")
  jax.tree.map(lambda a, p: len(a) == p.ndim or pytest.fail(f"{a} vs {p.shape}"), axes,
               params, is_leaf=lambda x: isinstance(x, tuple))


def test_flops_per_token_formula():
  cfg = tiny()
  n = M.count_params(cfg) + 32 * 61
  assert M.flops_per_token(cfg, 100) == 6 * n + 12 * 2 * 4 * 8 * 100


def test_scanned_and_unrolled_layers_agree():
  cfg = tiny()
  params = init(cfg)
  x = tokens()
  scanned = apply(cfg, {"params": params}, x)
  unrolled_cfg = tiny(scan_layers=False)
  unrolled_params = M.unstack_layers(params)
  assert set(M.param_logical_axes(unrolled_params)) >= {"layers_0", "layers_1"}
  unrolled = apply(unrolled_cfg, {"params": unrolled_params}, x)
  np.testing.assert_allclose(scanned, unrolled, atol=1e-5)
  restacked = M.stack_layers(unrolled_params)
  jax.tree.map(np.testing.assert_array_equal, restacked, params)


def test_packed_documents_match_separate_documents():
  """With cross_document_attention=False a packed row equals running each doc alone."""
  x = tokens(b=1, t=12)
  seg = jnp.asarray([[1] * 6 + [2] * 6], jnp.int32)
  pos = jnp.asarray([list(range(6)) * 2], jnp.int32)
  separate_docs = x.reshape(2, 6)  # the two documents as two rows of their own
  for backend in ("xla", "blockwise"):
    cfg = tiny(attention=backend, cross_document_attention=False)
    params = init(cfg)
    packed = apply(cfg, {"params": params}, x, pos, seg)
    separate = apply(cfg, {"params": params}, separate_docs)
    np.testing.assert_allclose(packed.reshape(separate.shape), separate, atol=1e-4,
                               err_msg=backend)
    # cross_document_attention=True ignores the segment ids (attends across docs).
    crossing = apply(tiny(attention=backend), {"params": params}, x, pos, seg)
    assert not np.allclose(crossing[0, 6:], separate[1], atol=1e-3)


def test_backends_agree_inside_model_with_gradients():
  x = tokens(t=20)
  seg = jnp.asarray(np.sort(np.random.default_rng(1).integers(1, 4, (2, 20)), 1), jnp.int32)

  def loss(params, backend):
    cfg = tiny(attention=backend, cross_document_attention=False)
    logits = M.Transformer(cfg).apply({"params": params}, x, None, seg)
    return M.cross_entropy_loss(logits, x)[0]

  params = init(tiny())
  grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  lx, gx = grad(params, "xla")
  lb, gb = grad(params, "blockwise")
  np.testing.assert_allclose(lx, lb, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-3), gx, gb)


def test_remat_does_not_change_gradients():
  x = tokens()
  params = init(tiny())

  def grad(cfg):
    loss = lambda p: M.cross_entropy_loss(M.Transformer(cfg).apply({"params": p}, x), x)[0]
    return jax.jit(jax.grad(loss))(params)

  g0 = grad(tiny())
  for remat in ("save_matmuls", "full"):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4),
                 g0, grad(tiny(remat=remat)))


def test_bfloat16_compute_with_float32_params_and_logits():
  cfg = tiny(compute_dtype="bfloat16", attention="auto")
  params = init(cfg)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  logits = apply(cfg, {"params": params}, tokens())
  ref = apply(tiny(), {"params": params}, tokens())
  assert logits.dtype == jnp.float32
  assert np.abs(np.asarray(logits) - np.asarray(ref)).max() < 0.1 * np.abs(ref).max()


def test_lm_head_matrix_is_the_tied_embedding():
  params = init(tiny(tie_embeddings=True))
  np.testing.assert_array_equal(M.lm_head_matrix(params, tiny(tie_embeddings=True)),
                                params["embed"]["embedding"].T)


def test_chunked_loss_matches_full_logits_loss_and_gradients():
  for tie in (False,):  # untied: gradients reach both the head and the embedding
    cfg = tiny(tie_embeddings=tie)
    params = init(cfg)
    x, y = tokens(t=13), tokens(t=13, seed=3)
    w = jnp.asarray(np.random.default_rng(2).integers(0, 3, (2, 13)), jnp.float32)
    model = M.Transformer(cfg)

    def full(params):
      return M.cross_entropy_loss(model.apply({"params": params}, x), y, w)[0]

    def chunked(params):
      hidden = model.apply({"params": params}, x, return_hidden=True)
      return M.chunked_cross_entropy_loss(hidden, M.lm_head_matrix(params, cfg), y, w,
                                          chunk_size=4)[0]

    loss_full, grad_full = jax.jit(jax.value_and_grad(full))(params)
    loss_chunked, grad_chunked = jax.jit(jax.value_and_grad(chunked))(params)
    np.testing.assert_allclose(loss_full, loss_chunked, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-4),
                 grad_full, grad_chunked)


def test_weighted_mean_is_weighted():
  nll = jnp.asarray([[1.0, 2.0, 3.0]])
  w = jnp.asarray([[0.0, 1.0, 3.0]])
  loss, total = M.weighted_mean(nll, w)
  assert float(total) == 4.0
  np.testing.assert_allclose(loss, (2.0 + 9.0) / 4.0)
  logits = jnp.asarray([[[0.0, np.log(3.0)]]])
  np.testing.assert_allclose(M.cross_entropy_loss(logits, jnp.asarray([[1]]))[0],
                             -np.log(0.75), rtol=1e-6)


def greedy_full(cfg, params, prompt, steps):
  """Greedy decoding by recomputing the whole forward pass for every new token.

  The sequence lives in a fixed-size buffer (one compile); causality means the logits
  at position n-1 only see tokens 0..n-1, so the unfilled tail does not matter.
  """
  b, t = prompt.shape
  forward = jax.jit(lambda p, x: M.Transformer(cfg).apply({"params": p}, x))
  seq = np.zeros((b, t + steps), np.int32)
  seq[:, :t] = prompt
  for n in range(t, t + steps):
    seq[:, n] = np.argmax(forward(params, jnp.asarray(seq))[:, n - 1], -1)
  return seq[:, t:]


@pytest.mark.parametrize("scan_layers", [True, False])
def test_greedy_decode_with_cache_matches_full_recompute(scan_layers):
  cfg = tiny(scan_layers=scan_layers, attention="blockwise")
  model = M.Transformer(cfg)
  params = init(tiny())
  if not scan_layers:
    params = M.unstack_layers(params)
  prompt = tokens(t=6, seed=5)
  expected = greedy_full(cfg, params, prompt, steps=8)
  assert len(np.unique(expected)) > 2  # a degenerate repeat would prove little

  traces = []

  def decode_step(p, c, t):
    traces.append(t.shape)  # runs only while tracing: counts compilations
    return model.apply({"params": p, "cache": c}, t, decode=True, mutable=["cache"])

  step = jax.jit(decode_step)
  cache = M.init_cache(cfg, batch_size=2, max_len=20)
  logits, state = step(params, cache, prompt)
  out = [jnp.argmax(logits[:, -1], -1)]
  for _ in range(7):
    logits, state = step(params, state["cache"], out[-1][:, None].astype(jnp.int32))
    out.append(jnp.argmax(logits[:, -1], -1))
  np.testing.assert_array_equal(np.stack(out, 1), expected)
  assert int(state["cache"]["index"]) == 6 + 7
  assert traces == [(2, 6), (2, 1)]  # one compile for prefill, one for all T=1 steps


def test_decode_left_padded_prompt_matches_unpadded():
  cfg = tiny()
  params = init(cfg)
  prompt = tokens(b=1, t=5, seed=7)
  padded = jnp.concatenate([jnp.zeros((1, 3), jnp.int32), prompt], axis=1)
  seg = jnp.asarray([[0, 0, 0, 1, 1, 1, 1, 1]], jnp.int32)
  pos = jnp.asarray([[0, 0, 0, 0, 1, 2, 3, 4]], jnp.int32)
  logits, state = apply(cfg, {"params": params, "cache": M.init_cache(cfg, 1, 16)},
                        padded, pos, seg, decode=True, mutable="cache")
  expected = apply(cfg, {"params": params}, prompt)
  np.testing.assert_allclose(logits[:, 3:], expected, atol=1e-4)
  nxt = jnp.asarray([[3]], jnp.int32)
  step_logits, _ = apply(cfg, {"params": params, "cache": state["cache"]}, nxt,
                         jnp.asarray([[5]]), jnp.asarray([[1]]), decode=True,
                         mutable="cache")
  full = apply(cfg, {"params": params}, jnp.concatenate([prompt, nxt], axis=1))
  np.testing.assert_allclose(step_logits[:, 0], full[:, -1], atol=1e-4)


def test_rope_scalings():
  base = tiny(rope_theta=1000.0)
  inv, mag = M.rope_frequencies(base)
  assert mag == 1.0
  inv_lin, _ = M.rope_frequencies(tiny(rope_theta=1000.0, rope_scaling="linear",
                                       rope_scaling_factor=4.0))
  np.testing.assert_allclose(inv_lin, inv / 4, rtol=1e-6)
  inv_ntk, _ = M.rope_frequencies(tiny(rope_theta=1000.0, rope_scaling="ntk",
                                       rope_scaling_factor=4.0))
  np.testing.assert_allclose(inv_ntk, M.rope_frequencies(
      tiny(rope_theta=1000.0 * 4.0 ** (8 / 6)))[0], rtol=1e-6)
  inv_yarn, mag_yarn = M.rope_frequencies(tiny(rope_theta=1000.0, rope_scaling="yarn",
                                               rope_scaling_factor=4.0,
                                               rope_original_max_len=16))
  # Highest frequency kept, lowest interpolated, the magnitude grows with the factor.
  np.testing.assert_allclose(inv_yarn[0], inv[0], rtol=1e-6)
  np.testing.assert_allclose(inv_yarn[-1], inv[-1] / 4, rtol=1e-6)
  assert mag_yarn > 1.0
  with pytest.raises(ValueError, match="rope_scaling"):
    M.Transformer(tiny(rope_scaling="dynamic")).init(jax.random.PRNGKey(0), tokens())


def test_rope_is_relative():
  """q.k after RoPE depends only on the position difference."""
  cfg = tiny()
  rng = np.random.default_rng(0)
  q = jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32)
  k = jnp.asarray(rng.normal(size=(1, 1, 1, 8)), jnp.float32)
  def score(pq, pk):
    return float(jnp.sum(M.apply_rope(q, jnp.asarray([[pq]]), cfg)
                         * M.apply_rope(k, jnp.asarray([[pk]]), cfg)))
  np.testing.assert_allclose(score(7, 3), score(104, 100), rtol=1e-4)
  assert abs(score(7, 3) - score(7, 4)) > 1e-4


def test_bad_config_values_are_named():
  with pytest.raises(ValueError, match="not_a_key"):
    M.model_config({"not_a_key": 1})
  with pytest.raises(ValueError, match="n_kv_heads"):
    M.Transformer(tiny(n_kv_heads=3)).init(jax.random.PRNGKey(0), tokens())
  with pytest.raises(ValueError, match="remat"):
    M.Transformer(tiny(remat="sometimes")).init(jax.random.PRNGKey(0), tokens())
