"""Tiny shard directories for the data tests."""

from __future__ import annotations

import hashlib
import os

import ml_collections
import numpy as np

from jaxlm.data import shards

BOS, EOS = 2, 3


def random_documents(rng, num_docs, vocab_size=1000, min_len=3, max_len=40):
  """Documents BOS ... EOS with body ids in [4, vocab_size)."""
  docs = []
  for _ in range(num_docs):
    body = rng.integers(4, vocab_size, rng.integers(min_len, max_len))
    docs.append(np.concatenate([[BOS], body, [EOS]]).astype(np.int64))
  return docs


def write_shard_dir(out_dir, docs_by_split, *, vocab_size=1000, source="default",
                    shard_tokens=500, weights=False, tokenizer_path=None):
  """Writes a shard dir; returns {split: concatenated tokens}."""
  streams = {}
  with shards.ShardDirWriter(out_dir, vocab_size=vocab_size, bos_id=BOS, eos_id=EOS,
                             shard_tokens=shard_tokens, splits=tuple(docs_by_split),
                             tokenizer_path=tokenizer_path) as w:
    for split, docs in docs_by_split.items():
      for i, doc in enumerate(docs):
        lw = (np.arange(doc.size) % 3) if weights else None
        w.add(split, doc, loss_weights=lw, source=source)
      streams[split] = np.concatenate(docs)
  return streams


def tree_digest(path):
  """sha256 of every file under `path` (relative name -> digest)."""
  out = {}
  for root, _, files in os.walk(path):
    for f in files:
      full = os.path.join(root, f)
      with open(full, "rb") as fh:
        out[os.path.relpath(full, path)] = hashlib.sha256(fh.read()).hexdigest()
  return out


def data_config(train_dir="", val_dir="", *, seq_len=16, micro_batch_size=2, grad_accum_steps=2,
                seed=0, sources=None, num_workers=0, prefetch=2, val_batches=3,
                val_batch_size=2):
  c = ml_collections.ConfigDict()
  c.train_dir, c.val_dir = train_dir, val_dir
  c.seq_len, c.micro_batch_size, c.grad_accum_steps = seq_len, micro_batch_size, grad_accum_steps
  c.val_batches, c.val_batch_size, c.seed = val_batches, val_batch_size, seed
  c.data = ml_collections.ConfigDict()
  c.data.sources = ml_collections.ConfigDict(sources or {})
  c.data.num_workers, c.data.prefetch = num_workers, prefetch
  return c


def stdlib_texts(n=4):
  """A few Python stdlib source files: realistic, always-present tokenizer training text."""
  import json as json_module
  import os as os_module
  import textwrap
  import argparse as argparse_module
  import inspect as inspect_module
  modules = [json_module.decoder, textwrap, argparse_module, inspect_module]
  return [m.__file__ for m in modules[:n]]


def train_tiny_tokenizer(directory, vocab_size=400, files=None):
  from data_pipeline.tokenizer import train_tokenizer
  return train_tokenizer(files or stdlib_texts(), vocab_size,
                         os.path.join(str(directory), f"tok{vocab_size}"), max_chars=400_000)
