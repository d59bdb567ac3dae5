"""Brings token files you already have into a split directory.

  python -m data_pipeline.import_bin --input 'fineweb_train_*.bin' --out_dir data/shards/fw \
      --split train --vocab_size 50257 --eos_id 50256

Accepts llm.c shards (magic 20240520 / uint16 or 20240801 / uint32, checked) and nanoGPT's raw
uint16 `train.bin` / `val.bin` (no header: recognised by the absence of an llm.c magic).
Several files or globs are concatenated in the order given (globs sorted).

The result is `out_dir/<split>/` (shards + meta.json), written atomically: the split appears
complete or not at all, and an existing split is replaced only with --overwrite. Other splits
already in out_dir are kept, but must agree on tokenizer and vocabulary.

Without --tokenizer the split records tokenizer null (unknown); the reader still serves it and
checks every id against the model's vocab size. GPT-2 tokenised data (nanoGPT, llm.c) has no BOS
and separates documents with <|endoftext|>: pass --eos_id 50256 so that documents are told apart.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import sys

import numpy as np

from jaxlm.data import shards

CHUNK_TOKENS = 1 << 26  # copy at most this many tokens at a time (bounded memory on huge files)


def expand_inputs(patterns: list[str]) -> list[str]:
  files = []
  for pattern in patterns:
    matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    if not matches:
      raise FileNotFoundError(f"--input {pattern} matches no file")
    for path in matches:
      if not os.path.isfile(path):
        raise FileNotFoundError(f"input {path} does not exist")
    files.extend(matches)
  return files


def read_tokens(path: str) -> tuple[np.ndarray, str]:
  """(tokens memmap, kind): an llm.c shard if it starts with a known magic, else raw uint16."""
  with open(path, "rb") as f:
    head = np.frombuffer(f.read(4), dtype=np.int32)
  if head.size and int(head[0]) in (shards.MAGIC_UINT16, shards.MAGIC_UINT32):
    return shards.read_bin(path), "llm.c"  # validates version and size, naming the file
  return shards.read_raw_uint16(path), "nanogpt-raw"


def _chunks(tokens: np.ndarray):
  for start in range(0, tokens.size, CHUNK_TOKENS):
    yield tokens[start: start + CHUNK_TOKENS]


def _check_existing_splits(out_dir: str, split: str, tokenizer: dict | None, vocab_size: int):
  """Another split of the same shard dir must have been made with the same tokenizer/vocab."""
  if not os.path.isdir(out_dir):
    return
  for other in sorted(os.listdir(out_dir)):
    meta_path = os.path.join(out_dir, other, shards.META_FILE)
    if other == split or not os.path.exists(meta_path):
      continue
    meta = shards.load_meta(os.path.join(out_dir, other))
    recorded = (meta.get("tokenizer") or {}).get("sha256")
    if tokenizer and recorded and recorded != tokenizer["sha256"]:
      raise ValueError(f"tokenizer {tokenizer['path']} (sha256 {tokenizer['sha256'][:12]}…) "
                       f"differs from the one {meta_path} records ({recorded[:12]}…)")
    if meta.get("vocab_size") not in (None, vocab_size):
      raise ValueError(f"vocab_size {vocab_size} differs from {meta['vocab_size']} in {meta_path}")


def import_bins(inputs: list[str], out_dir: str, *, split: str = "train",
                tokenizer_path: str | None = None, vocab_size: int | None = None,
                eos_id: int | None = None, bos_id: int | None = None, source: str = "imported",
                shard_tokens: int = shards.DEFAULT_SHARD_TOKENS, overwrite: bool = False) -> dict:
  """Writes out_dir/<split>; returns its meta.json contents."""
  files = expand_inputs(inputs)
  out_dir = os.path.abspath(out_dir)
  final = os.path.join(out_dir, split)
  if os.path.exists(final) and not overwrite:
    raise FileExistsError(f"{final} already exists; pass --overwrite to replace it")
  tokenizer = None
  if tokenizer_path:
    from jaxlm.data.tokenizer import load_tokenizer  # sentencepiece only when needed
    tok = load_tokenizer(tokenizer_path)
    if vocab_size is not None and vocab_size != tok.vocab_size:
      raise ValueError(f"--vocab_size {vocab_size} differs from tokenizer {tokenizer_path}'s "
                       f"{tok.vocab_size}")
    vocab_size = tok.vocab_size
    tokenizer = {"path": tok.path, "sha256": tok.sha256}
    bos_id = tok.bos_id if bos_id is None else bos_id
    eos_id = tok.eos_id if eos_id is None else eos_id

  arrays = [read_tokens(f) for f in files]  # validates every header before writing anything
  max_ids = [int(a.max()) if a.size else -1 for a, _ in arrays]
  inferred = vocab_size is None
  if inferred:
    vocab_size = max(max_ids) + 1
  for path, top in zip(files, max_ids):
    if top >= vocab_size:
      raise ValueError(f"{path}: token id {top} >= vocab_size {vocab_size}")
  _check_existing_splits(out_dir, split, tokenizer, vocab_size)

  os.makedirs(out_dir, exist_ok=True)
  staging = os.path.join(out_dir, f".import-{split}.staging")
  shutil.rmtree(staging, ignore_errors=True)  # left by a killed run
  marker = bos_id if bos_id is not None else eos_id
  builder = {"tool": "data_pipeline.import_bin", "inputs": [os.path.abspath(f) for f in files],
             "kinds": [kind for _, kind in arrays], "vocab_size_inferred": inferred}
  try:
    with shards.ShardDirWriter(staging, vocab_size=vocab_size, tokenizer=tokenizer,
                               bos_id=bos_id, eos_id=eos_id, splits=(split,),
                               shard_tokens=shard_tokens, sources=[source],
                               builder=builder) as writer:
      for tokens, _ in arrays:
        for chunk in _chunks(tokens):
          docs = int(np.count_nonzero(chunk == marker)) if marker is not None else 0
          writer.add(split, chunk, source=source, documents=docs)
    shards.atomic_dir_commit(os.path.join(staging, split), final, overwrite)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return shards.load_meta(final)


def main(argv=None):
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 2)[2])
  parser.add_argument("--input", nargs="+", required=True,
                      help="llm.c .bin shards or nanoGPT raw uint16 .bin files; globs allowed")
  parser.add_argument("--out_dir", required=True, help="shard directory; writes OUT_DIR/SPLIT")
  parser.add_argument("--split", default="train", help="train or val (default train)")
  parser.add_argument("--tokenizer", help="SentencePiece model the tokens came from (optional)")
  parser.add_argument("--vocab_size", type=int,
                      help="vocabulary size (default: the tokenizer's, else max id + 1)")
  parser.add_argument("--eos_id", type=int, default=None,
                      help="document separator; 50256 for GPT-2 shards (default: tokenizer's)")
  parser.add_argument("--bos_id", type=int, default=None, help="default: tokenizer's, else none")
  parser.add_argument("--source", default="imported", help="provenance name recorded per token")
  parser.add_argument("--shard_tokens", type=int, default=shards.DEFAULT_SHARD_TOKENS)
  parser.add_argument("--overwrite", action="store_true", help="replace an existing split")
  args = parser.parse_args(argv)
  try:
    meta = import_bins(args.input, args.out_dir, split=args.split, tokenizer_path=args.tokenizer,
                       vocab_size=args.vocab_size, eos_id=args.eos_id, bos_id=args.bos_id,
                       source=args.source, shard_tokens=args.shard_tokens,
                       overwrite=args.overwrite)
  except (ValueError, FileNotFoundError, FileExistsError) as e:
    sys.exit(f"error: {e}")
  summary = {k: meta[k] for k in ("num_tokens", "num_documents", "vocab_size", "token_dtype",
                                  "bos_id", "eos_id", "tokenizer")}
  print(f"wrote {os.path.join(os.path.abspath(args.out_dir), args.split)}: "
        f"{json.dumps(summary)}")
  if meta["builder"]["vocab_size_inferred"]:
    print(f"note: vocab_size {meta['vocab_size']} was inferred from the largest id; pass "
          f"--vocab_size (50257 for GPT-2) to record the real one")


if __name__ == "__main__":
  main()
