"""Tiny data and configs shared by the sharding and multi-process tests."""

from __future__ import annotations

import numpy as np

from jaxlm.data import shards

BOS, EOS = 1, 2
VOCAB = 256


def write_tiny_shards(out_dir: str, *, num_docs: int = 120, seed: int = 0) -> str:
  """A shard directory of random documents (some tokens with loss weight 0 or 2);
  returns the train split dir."""
  rng = np.random.default_rng(seed)
  with shards.ShardDirWriter(out_dir, vocab_size=VOCAB, bos_id=BOS, eos_id=EOS,
                             shard_tokens=1000) as writer:
    for split in ("train", "val"):
      for _ in range(num_docs if split == "train" else 8):
        body = rng.integers(3, VOCAB, rng.integers(5, 60))
        doc = np.concatenate([[BOS], body, [EOS]])
        writer.add(split, doc, loss_weights=rng.choice([0, 1, 1, 1, 2], doc.size))
  return f"{out_dir}/train"


def random_batch(rng, rows: int, seq_len: int) -> dict[str, np.ndarray]:
  """A packed batch: two documents per row, a few masked and upweighted targets."""
  inputs = rng.integers(0, VOCAB, (rows, seq_len)).astype(np.int32)
  cut = rng.integers(1, seq_len, rows)
  col = np.arange(seq_len)[None, :]
  second = col >= cut[:, None]
  return {
      "inputs": inputs,
      "targets": rng.integers(0, VOCAB, (rows, seq_len)).astype(np.int32),
      "loss_weights": rng.choice([0.0, 1.0, 1.0, 2.0], (rows, seq_len)).astype(np.float32),
      "segment_ids": (1 + second).astype(np.int32),
      "positions": np.where(second, col - cut[:, None], col).astype(np.int32),
  }
