"""Prints what a shard directory (or one split of it) holds, and decodes a sample.

  python -m data_pipeline.inspect data/shards/phase2_5_mixed [--tokenizer tok.model]

Per split: tokens, shards, documents, tokens and share per source, loss-weight coverage (the
fraction of tokens with weight > 0, and of those with weight > 1), then the first
--sample_tokens tokens decoded with the tokenizer recorded in meta.json (or --tokenizer; its
sha256 must match the recorded one).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from jaxlm.data import shards


def split_dirs(path: str) -> list[str]:
  if os.path.exists(os.path.join(path, shards.META_FILE)):
    return [path]
  found = [os.path.join(path, s) for s in sorted(os.listdir(path))
           if os.path.exists(os.path.join(path, s, shards.META_FILE))] if os.path.isdir(path) else []
  if not found:
    raise FileNotFoundError(f"{path} is neither a split directory nor a shard directory "
                            f"(no {shards.META_FILE} in it or its subdirectories)")
  return found


def split_stats(sd: shards.SplitDir) -> dict:
  """Counts from the data itself (not only meta.json), one shard at a time."""
  names = sd.sources
  per_source = np.zeros(max(1, len(names)), np.int64)
  weighted = upweighted = 0
  for i, tokens in enumerate(sd.shards):
    if sd.source_ids[i] is not None:
      per_source += np.bincount(sd.source_ids[i], minlength=per_source.size)[:per_source.size]
    else:
      per_source[0] += tokens.size
    if sd.weights[i] is not None:
      weighted += int(np.count_nonzero(sd.weights[i]))
      upweighted += int(np.count_nonzero(sd.weights[i] > 1))
    else:
      weighted += tokens.size
  marker = sd.bos_id if sd.bos_id is not None else sd.eos_id
  documents = (sum(int(np.count_nonzero(t == marker)) for t in sd.shards)
               if marker is not None else None)
  return {"tokens": sd.num_tokens, "shards": len(sd.shards), "documents": documents,
          "per_source": dict(zip(names or ["(unknown)"], per_source.tolist())),
          "weighted": weighted / sd.num_tokens, "upweighted": upweighted / sd.num_tokens}


def load_sample_tokenizer(sd: shards.SplitDir, tokenizer_path: str | None):
  from jaxlm.data.tokenizer import load_tokenizer  # sentencepiece only when decoding
  if tokenizer_path:
    sd.check_tokenizer(tokenizer_path)
    return load_tokenizer(tokenizer_path)
  recorded = sd.meta.get("tokenizer")
  if recorded and os.path.exists(recorded["path"]):
    sd.check_tokenizer(recorded["path"])
    return load_tokenizer(recorded["path"])
  return None


def inspect(path: str, tokenizer_path: str | None = None, sample_tokens: int = 200,
            out=print) -> dict[str, dict]:
  results = {}
  for split_dir in split_dirs(path):
    sd = shards.SplitDir(split_dir)
    stats = split_stats(sd)
    results[os.path.basename(split_dir)] = stats
    meta = sd.meta
    tok = meta.get("tokenizer") or {}
    out(f"{split_dir}")
    out(f"  tokens {stats['tokens']:,}  shards {stats['shards']}  documents "
        f"{stats['documents'] if stats['documents'] is not None else 'unknown (no BOS/EOS)'}")
    out(f"  vocab_size {meta.get('vocab_size')}  dtype {meta.get('token_dtype')}  bos "
        f"{meta.get('bos_id')}  eos {meta.get('eos_id')}  tokenizer "
        f"{tok.get('path', 'unknown')} {tok.get('sha256', '')[:12]}")
    for name, n in stats["per_source"].items():
      out(f"  source {name:24s} {n:>14,d} tokens  share {n / stats['tokens']:.4f}")
    out(f"  loss weight > 0 on {stats['weighted']:.2%} of tokens, > 1 on {stats['upweighted']:.2%}")
    sample = sd.read(0, min(sample_tokens, sd.num_tokens))["tokens"]
    tokenizer = load_sample_tokenizer(sd, tokenizer_path)
    if tokenizer is None:
      out(f"  first tokens (no tokenizer to decode with): {sample[:50].tolist()}")
    else:
      out(f"  sample: {tokenizer.decode(sample)!r}")
  return results


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("dir", help="a shard directory (train/, val/) or one split directory")
  parser.add_argument("--tokenizer", help="decode with this model (default: meta.json's)")
  parser.add_argument("--sample_tokens", type=int, default=200)
  args = parser.parse_args(argv)
  try:
    inspect(args.dir, args.tokenizer, args.sample_tokens)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")


if __name__ == "__main__":
  main()
