"""Mixes several shard directories into one, by weight, in whole blocks.

  python -m data_pipeline.interleave --out_dir data/shards/phase2_5_mixed \
      --target_train_tokens 2000000000 --target_val_tokens 4000000 \
      --source longctx=data/shards/longctx:0.4 --source reasoning=data/shards/reasoning:0.6

Each source is a shard directory (with train/ and val/). A split of a source is cut into blocks of
--block_tokens consecutive tokens (the tail shorter than a block is not used); the output is made
of whole blocks, so a builder that lays out its long examples in block-sized pieces never has one
cut. Per split, the number of output blocks is target / block_tokens (rounded), shared between
sources in proportion to their weights (largest remainder). Which blocks a source contributes
is a seeded permutation of its blocks; the order of the output spreads every source evenly
(source i's k-th block goes to position (k + u_i) / n_i, u_i a seeded offset), so any stretch of
the output holds the sources close to their shares. Same seed, same inputs: same output.

Provenance: meta["sources"] lists the source names and the per-token `.sources.u8` sidecar says
which one each token came from; loss-weight sidecars are carried over. A source that is too
small for its share stops the run (naming it and the missing tokens) unless --allow_repeat, which
reuses its blocks (a fresh permutation per pass). All sources must record the same tokenizer
(or none) and vocabulary.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys

import numpy as np

from jaxlm.data import shards

SPLITS = ("train", "val")


@dataclasses.dataclass
class Source:
  name: str
  directory: str
  weight: float


def parse_source_flag(text: str) -> Source:
  """NAME=DIR:WEIGHT (the weight after the last colon, so DIR may contain colons)."""
  name, sep, rest = text.partition("=")
  directory, colon, weight = rest.rpartition(":")
  if not sep or not colon or not name or not directory:
    raise ValueError(f"--source {text!r}: expected NAME=DIR:WEIGHT")
  try:
    value = float(weight)
  except ValueError:
    raise ValueError(f"--source {text!r}: weight {weight!r} is not a number") from None
  return Source(name, directory, value)


def validate_sources(sources: list[Source]) -> None:
  if not sources:
    raise ValueError("give at least one --source NAME=DIR:WEIGHT")
  names = [s.name for s in sources]
  for s in sources:
    if names.count(s.name) > 1:
      raise ValueError(f"source name {s.name!r} is given twice")
    if not math.isfinite(s.weight) or s.weight <= 0:
      raise ValueError(f"source {s.name!r}: weight {s.weight!r} is not a positive number")
  if len(sources) > 255:
    raise ValueError("at most 255 sources")


def open_splits(sources: list[Source], splits) -> dict[str, list[shards.SplitDir]]:
  """Opens every source's splits and checks that they agree on tokenizer, vocab and BOS/EOS."""
  opened = {split: [] for split in splits}
  for s in sources:
    for split in splits:
      path = os.path.join(s.directory, split)
      try:
        opened[split].append(shards.SplitDir(path))
      except (ValueError, FileNotFoundError) as e:
        raise type(e)(f"source {s.name!r}: {e}") from None
  first_known = {}
  for split in splits:
    for s, sd in zip(sources, opened[split]):
      meta = sd.meta
      for key, value in (("tokenizer sha256", (meta.get("tokenizer") or {}).get("sha256")),
                         ("vocab_size", meta.get("vocab_size")),
                         ("bos_id", meta.get("bos_id")), ("eos_id", meta.get("eos_id"))):
        if value is None or (key == "vocab_size" and (meta.get("builder") or {}).get(
            "vocab_size_inferred")):
          continue  # unknown (e.g. imported without a tokenizer) fits anything
        if key not in first_known:
          first_known[key] = (value, f"{s.name} ({sd.path})")
        elif first_known[key][0] != value:
          other_value, other = first_known[key]
          raise ValueError(f"sources disagree on {key}: {other} has {other_value}, "
                           f"{s.name} ({sd.path}) has {value}")
  return opened


def allocate_blocks(total: int, weights: list[float]) -> list[int]:
  """Splits `total` blocks in proportion to weights (largest remainder, ties by order)."""
  w = np.asarray(weights, float) / sum(weights)
  exact = w * total
  counts = np.floor(exact).astype(int)
  order = np.argsort(-(exact - counts), kind="stable")
  counts[order[: total - counts.sum()]] += 1
  return counts.tolist()


def block_schedule(counts: list[int], available: list[int], rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
  """(source index, block index) of every output block, in output order."""
  src, blk, key = [], [], []
  for i, (n, have) in enumerate(zip(counts, available)):
    if n == 0:
      continue
    passes = -(-n // have)  # > 1 only with --allow_repeat
    blocks = np.concatenate([rng.permutation(have) for _ in range(passes)])[:n]
    src.append(np.full(n, i))
    blk.append(blocks)
    key.append((np.arange(n) + rng.random()) / n)
  if not src:
    return np.zeros(0, int), np.zeros(0, int)
  src, blk, key = map(np.concatenate, (src, blk, key))
  order = np.argsort(key, kind="stable")
  return src[order], blk[order]


def interleave(sources: list[Source], out_dir: str, *, target_tokens: dict[str, int],
               block_tokens: int = 8192, seed: int = 0, allow_repeat: bool = False,
               overwrite: bool = False, shard_tokens: int = shards.DEFAULT_SHARD_TOKENS,
               log=print) -> dict[str, dict[str, int]]:
  """Writes the mixed shard directory; returns {split: {source: tokens}}."""
  validate_sources(sources)
  if block_tokens <= 0:
    raise ValueError(f"--block_tokens must be positive, got {block_tokens}")
  splits = [s for s in SPLITS if target_tokens.get(s, 0) > 0]
  if "train" not in splits:
    raise ValueError("--target_train_tokens must be positive")
  if os.path.exists(out_dir) and not overwrite:
    raise FileExistsError(f"{os.path.abspath(out_dir)} already exists; pass --overwrite")
  opened = open_splits(sources, splits)
  weights = [s.weight for s in sources]

  plans = {}
  for split_index, split in enumerate(splits):
    num_blocks = max(1, round(target_tokens[split] / block_tokens))
    counts = allocate_blocks(num_blocks, weights)
    available = [sd.num_tokens // block_tokens for sd in opened[split]]
    for s, n, have, sd in zip(sources, counts, available, opened[split]):
      if n > have and (not allow_repeat or have == 0):
        raise ValueError(
            f"source {s.name!r} ({sd.path}) is too small for its {split} share: needs {n} "
            f"blocks = {n * block_tokens} tokens, has {have * block_tokens} in whole blocks "
            f"({(n - have) * block_tokens} tokens missing)"
            + ("" if have == 0 else "; pass --allow_repeat to reuse its blocks"))
    rng = np.random.default_rng([seed, split_index])
    plans[split] = block_schedule(counts, available, rng)

  first = opened["train"]
  tokenizer = next((sd.meta["tokenizer"] for sd in first if sd.meta.get("tokenizer")), None)
  recorded_vocab = [sd.meta["vocab_size"] for split in splits for sd in opened[split]]
  vocab_size = max(recorded_vocab)
  bos_id = next((sd.bos_id for sd in first if sd.bos_id is not None), None)
  eos_id = next((sd.eos_id for sd in first if sd.eos_id is not None), None)
  marker = bos_id if bos_id is not None else eos_id
  builder = {"tool": "data_pipeline.interleave", "seed": seed, "block_tokens": block_tokens,
             "allow_repeat": allow_repeat, "target_tokens": dict(target_tokens),
             "inputs": {s.name: {"dir": os.path.abspath(s.directory), "weight": s.weight}
                        for s in sources}}
  with shards.ShardDirWriter(out_dir, vocab_size=vocab_size, tokenizer=tokenizer, bos_id=bos_id,
                             eos_id=eos_id, splits=splits, shard_tokens=shard_tokens,
                             sources=[s.name for s in sources], builder=builder,
                             overwrite=overwrite) as writer:
    for split in splits:
      src_idx, blk_idx = plans[split]
      for i, b in zip(src_idx.tolist(), blk_idx.tolist()):
        sd = opened[split][i]
        block = sd.read(b * block_tokens, block_tokens)
        has_weights = sd.meta.get("has_loss_weights")
        tokens = block["tokens"]
        docs = int(np.count_nonzero(tokens == marker)) if marker is not None else 0
        writer.add(split, tokens, loss_weights=block["loss_weights"] if has_weights else None,
                   source=sources[i].name, documents=docs)
    report = {split: writer.tokens_per_source(split) for split in splits}
  for split in splits:
    total = sum(report[split].values())
    log(f"{split}: {total} tokens (target {target_tokens[split]})")
    for s in sources:
      n = report[split].get(s.name, 0)
      log(f"  {s.name:20s} {n:>14d} tokens  share {n / total:.4f}  "
          f"(weight {s.weight / sum(weights):.4f})")
  return report


def main(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=__doc__.split("\n\n", 2)[2])
  parser.add_argument("--out_dir", required=True)
  parser.add_argument("--target_train_tokens", type=int, required=True)
  parser.add_argument("--target_val_tokens", type=int, required=True, help="0 = no val split")
  parser.add_argument("--source", action="append", default=[], metavar="NAME=DIR:WEIGHT",
                      help="a shard directory with train/ and val/, and its weight (repeat)")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--block_tokens", type=int, default=8192)
  parser.add_argument("--shard_tokens", type=int, default=shards.DEFAULT_SHARD_TOKENS)
  parser.add_argument("--allow_repeat", action="store_true",
                      help="reuse a source's blocks when it is smaller than its share")
  parser.add_argument("--overwrite", action="store_true")
  args = parser.parse_args(argv)
  try:
    sources = [parse_source_flag(s) for s in args.source]
    interleave(sources, args.out_dir,
               target_tokens={"train": args.target_train_tokens, "val": args.target_val_tokens},
               block_tokens=args.block_tokens, seed=args.seed, allow_repeat=args.allow_repeat,
               overwrite=args.overwrite, shard_tokens=args.shard_tokens)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  main()
