"""Tiny shard directories and configs for the training-loop tests."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlm.data.shards import ShardDirWriter

VOCAB = 256
BOS, EOS = 1, 2
SEQ_LEN = 32

TINY_MODEL = dict(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=2, n_kv_heads=1,
                  head_dim=16, mlp_dim=64, max_seq_len=SEQ_LEN, attention="xla",
                  compute_dtype="float32", remat="none", scan_layers=True)


def write_shards(out_dir: str, num_train_docs: int = 120, num_val_docs: int = 24,
                 doc_lengths: tuple[int, int] = (10, 50)) -> str:
  """A shard dir with train/ and val/, two sources and non-trivial loss weights.

  Source 'chat' documents mask their first half (weight 0) and upweight the rest (2),
  like SFT prompts and answers; source 'web' documents are all weight 1.
  """
  rng = np.random.default_rng(0)
  with ShardDirWriter(out_dir, vocab_size=VOCAB, bos_id=BOS, eos_id=EOS,
                      shard_tokens=1500) as writer:
    for split, count in (("train", num_train_docs), ("val", num_val_docs)):
      for i in range(count):
        length = int(rng.integers(*doc_lengths))
        # Learnable structure: arithmetic progressions of tokens.
        start, stride = int(rng.integers(3, 200)), int(rng.integers(1, 5))
        body = [(start + stride * j) % (VOCAB - 3) + 3 for j in range(length)]
        tokens = [BOS, *body, EOS]
        if i % 3 == 0:
          half = len(tokens) // 2
          weights = [0] * half + [2] * (len(tokens) - half)
          writer.add(split, tokens, loss_weights=weights, source="chat")
        else:
          writer.add(split, tokens, source="web")
  return out_dir


def tiny_config(phase_module, workdir: str, shard_dir: str, **overrides):
  """A phase config shrunk to the test model, reading `shard_dir`."""
  config = phase_module.get_config("tiny")
  config.model.update(TINY_MODEL)
  config.workdir = workdir
  config.train_dir = os.path.join(shard_dir, "train")
  config.val_dir = os.path.join(shard_dir, "val")
  config.init_from = ""
  config.final_dir = ""
  config.seq_len = SEQ_LEN
  config.micro_batch_size = 2
  config.grad_accum_steps = 2
  config.total_opt_steps = 6
  config.val_every_opt = 3
  config.checkpoint_every_opt = 100
  config.log_every = 1
  config.val_batches = 2
  config.val_batch_size = 2
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 2
  config.optimizer.learning_rate = 3e-3
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split(".")
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config


# ----------------------------------------------------------------------------------
# Comparing two computations that are equal in exact arithmetic.
#
# XLA may sum in a different order on another CPU (AMD EPYC vs Intel Xeon with AVX-512/AMX),
# on another mesh or with another micro batching, so equal quantities come out equal only up
# to float32 rounding. Summing n float32 terms in another order changes the sum by at most
# about n * eps * (size of the terms), eps = 2**-23 ~ 1.19e-7 (the textbook bound for
# recursive summation; the usual error is ~sqrt(n) times smaller). The tests use that bound
# with n = the number of tokens the loss and every gradient element are summed over. It is
# tight: the bugs these tests exist for (a micro batch averaged instead of summed, a wrong
# shard of the batch, a missing all-reduce) change losses and gradients by percents, ~1e3
# times more.

F32_EPS = float(np.finfo(np.float32).eps)


def reorder_tolerance(num_terms: int) -> float:
  """Relative tolerance for a float32 sum of `num_terms` terms computed in another order."""
  return num_terms * F32_EPS


def record_gradients() -> optax.GradientTransformation:
  """An optax stage that passes the gradient on unchanged and keeps it as its state.

  `optax.chain(record_gradients(), optimizer)` behaves like `optimizer`, and after
  `jaxlm.train.train_step` the state's opt_state[0] holds exactly the gradient that step
  computed (summed over micro batches, divided by the batch's total weight, unclipped):
  tests compare gradients directly instead of params after AdamW, whose normalised update
  g / (|g| + eps) turns a 1e-16 difference in a near-zero gradient into a step of size lr.
  """
  return optax.GradientTransformation(
      init=lambda params: jax.tree.map(jnp.zeros_like, params),
      update=lambda grads, state, params=None: (grads, grads))


def assert_gradients_close(actual, expected, num_terms: int, what: str = "gradient"):
  """Every leaf within reorder_tolerance(num_terms) of that leaf's largest |gradient|.

  The scale is the leaf's largest element, not each element: an element that is a sum of
  cancelling contributions is small, but its rounding error is the size of its terms.
  """
  tol = reorder_tolerance(num_terms)
  flat_expected = jax.tree_util.tree_flatten_with_path(jax.device_get(expected))[0]
  flat_actual = jax.tree.leaves(jax.device_get(actual))
  assert len(flat_expected) == len(flat_actual)
  for (path, want), got in zip(flat_expected, flat_actual):
    want, got = np.asarray(want), np.asarray(got)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max(),
                               err_msg=f"{what} {jax.tree_util.keystr(path)}")
