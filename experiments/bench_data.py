"""Throughput of the data path: the Grain reader and the interleaver.

  python -m experiments.bench_data [--dir SHARD_DIR] [--tokens 200000000] [--batches 300]

Without --dir it writes a synthetic shard directory (random ids, 8k-vocab, documents of ~1k
tokens between BOS/EOS, loss weights) of --tokens tokens in a temp dir and removes it after.
Reader: tokens/s of make_train_iterator at seq_len 8192, batch 8, with 0 (in-process), 1 and 2
Grain workers. Interleaver: tokens/min mixing the directory with itself (two sources, 3:1)
into --tokens * 3/4 train tokens.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import ml_collections
import numpy as np

from data_pipeline import interleave
from jaxlm.data import shards
from jaxlm import input_pipeline

BOS, EOS, VOCAB = 2, 3, 8192


def write_synthetic(out_dir: str, num_tokens: int, seed: int = 0) -> None:
  rng = np.random.default_rng(seed)
  chunk = 10_000_000
  with shards.ShardDirWriter(out_dir, vocab_size=VOCAB, bos_id=BOS, eos_id=EOS,
                             sources=["synthetic"]) as w:
    for split, total in (("train", num_tokens), ("val", max(chunk // 10, num_tokens // 100))):
      done = 0
      while done < total:
        n = min(chunk, total - done)
        tokens = rng.integers(4, VOCAB, n, dtype=np.uint16)
        starts = np.flatnonzero(rng.random(n) < 1 / 1000)
        tokens[starts] = BOS
        tokens[starts[1:] - 1] = EOS
        weights = (rng.random(n) < 0.9).astype(np.uint8)
        w.add(split, tokens, loss_weights=weights, source="synthetic", documents=starts.size)
        done += n


def reader_config(train_dir: str, num_workers: int) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.train_dir, c.val_dir = train_dir, ""
  c.seq_len, c.micro_batch_size, c.grad_accum_steps, c.seed = 8192, 8, 1, 0
  c.val_batches, c.val_batch_size = 1, 8
  c.data = ml_collections.ConfigDict()
  c.data.sources = ml_collections.ConfigDict()
  c.data.num_workers, c.data.prefetch = num_workers, 4
  return c


def bench_reader(train_dir: str, num_workers: int, batches: int) -> float:
  it = input_pipeline.make_train_iterator(reader_config(train_dir, num_workers), vocab_size=VOCAB)
  for _ in range(10):  # start-up (worker processes, first reads) is not throughput
    next(it)
  start = time.perf_counter()
  tokens = 0
  for _ in range(batches):
    tokens += next(it)["inputs"].size
  elapsed = time.perf_counter() - start
  if hasattr(it, "close"):
    it.close()
  return tokens / elapsed


def bench_interleave(shard_dir: str, out_dir: str, target: int) -> tuple[float, float]:
  sources = [interleave.Source("a", shard_dir, 3.0), interleave.Source("b", shard_dir, 1.0)]
  start = time.perf_counter()
  report = interleave.interleave(sources, out_dir, target_tokens={"train": target, "val": 0},
                                 seed=0, log=lambda _: None)
  elapsed = time.perf_counter() - start
  written = sum(report["train"].values())
  return written / elapsed * 60, elapsed


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dir", help="an existing shard directory (default: synthetic)")
  parser.add_argument("--tokens", type=int, default=200_000_000)
  parser.add_argument("--batches", type=int, default=300)
  parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
  args = parser.parse_args(argv)
  tmp = tempfile.mkdtemp(prefix="bench_data-")
  try:
    shard_dir = args.dir
    if not shard_dir:
      shard_dir = os.path.join(tmp, "synthetic")
      start = time.perf_counter()
      write_synthetic(shard_dir, args.tokens)
      print(f"wrote {args.tokens:,} synthetic tokens in {time.perf_counter() - start:.1f}s")
    train_dir = os.path.join(shard_dir, "train")
    num_tokens = shards.SplitDir(train_dir).num_tokens
    print(f"reader: {train_dir} ({num_tokens:,} tokens), seq_len 8192, batch 8, "
          f"{args.batches} batches")
    for workers in args.workers:
      rate = bench_reader(train_dir, workers, args.batches)
      print(f"  workers={workers}: {rate / 1e6:.1f}M tokens/s")
    target = num_tokens * 3 // 4
    rate, elapsed = bench_interleave(shard_dir, os.path.join(tmp, "mixed"), target)
    print(f"interleaver: {target:,} tokens in {elapsed:.1f}s = {rate / 1e6:.0f}M tokens/min")
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
  main()
