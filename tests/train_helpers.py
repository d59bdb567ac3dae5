"""Tiny shard directories and configs for the training-loop tests."""

from __future__ import annotations

import os

import numpy as np

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
