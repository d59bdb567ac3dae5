"""Throughput of the four data builders with 1 and 2 worker processes.

  python -m experiments.bench_builders [--tokenizer T.model] [--longctx_tokens 8000000]

Each builder runs as its own command (python -m data_pipeline.X) into a temporary directory;
the table shows wall-clock tokens/s (process start to exit, setup included) and the
builder's own steady figure from its report (after setup such as loading filler text). With
no --tokenizer, a 16k-piece BPE tokenizer is trained on stdlib sources first (cached in
--work_dir). The SFT input is a JSON-lines file of chat records made from stdlib docstrings.
The bar for the long-context builder: 400M tokens in under an hour, i.e. >= 111K tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from data_pipeline import text_sources
from data_pipeline.tokenizer import train_tokenizer


def ensure_tokenizer(work_dir: str, vocab: int) -> str:
  path = os.path.join(work_dir, f"bench_tok{vocab}.model")
  if not os.path.exists(path):
    corpus = text_sources.load_corpus(6_000_000)
    train_tokenizer(None, vocab, path[:-len(".model")],
                    sentences=corpus.prose + corpus.code)
  return path


def ensure_chat_jsonl(work_dir: str, rows: int = 40_000) -> str:
  path = os.path.join(work_dir, "bench_chat.jsonl")
  if not os.path.exists(path):
    prose = text_sources.load_corpus(2_000_000).prose
    with open(path, "w") as f:
      for i in range(rows):
        doc = prose[i % len(prose)]
        first = doc.split("\n")[0][:120]
        f.write(json.dumps({"messages": [
            {"role": "user", "content": f"Explain this in more detail: {first}"},
            {"role": "assistant", "content": doc},
            {"role": "user", "content": "Thanks. Summarise it in one line."},
            {"role": "assistant", "content": first}]}) + "\n")
  return path


def run(module: str, args: list[str], out_dir: str) -> dict:
  cmd = [sys.executable, "-m", f"data_pipeline.{module}", "--out_dir", out_dir, "--overwrite",
         "--quiet", *args]
  start = time.time()
  proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
  wall = time.time() - start
  if proc.returncode:
    raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
  with open(os.path.join(out_dir, "report.json")) as f:
    report = json.load(f)
  tokens = sum(report["tokens"].values())
  return {"tokens": tokens, "wall_s": wall, "wall_tok_s": tokens / wall,
          "steady_tok_s": report["tokens_per_second"]}


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--tokenizer", default=None)
  p.add_argument("--vocab_size", type=int, default=16000)
  p.add_argument("--work_dir", default=os.path.join(tempfile.gettempdir(), "jaxlm_bench_builders"))
  p.add_argument("--longctx_tokens", type=int, default=8_000_000)
  p.add_argument("--tool_tokens", type=int, default=3_000_000)
  p.add_argument("--code_tokens", type=int, default=4_000_000)
  p.add_argument("--sft_tokens", type=int, default=4_000_000)
  p.add_argument("--workers", default="1,2")
  args = p.parse_args()
  os.makedirs(args.work_dir, exist_ok=True)
  tok = args.tokenizer or ensure_tokenizer(args.work_dir, args.vocab_size)
  chat = ensure_chat_jsonl(args.work_dir)
  stdlib = text_sources.stdlib_root()
  cases = {
      "longctx_hard": ["--target_train_tokens", str(args.longctx_tokens),
                       "--target_val_tokens", "0", "--eval_examples", "0", "--answer_weight", "3"],
      "tool_synth": ["--target_train_tokens", str(args.tool_tokens), "--target_val_tokens", "0",
                     "--eval_examples", "0"],
      "code_stream": ["--input", stdlib, "--target_train_tokens", str(args.code_tokens)],
      "sft": ["--source", f"chat={chat}", "--target_train_tokens", str(args.sft_tokens)],
  }
  print(f"# {platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, python "
        f"{platform.python_version()}, tokenizer {os.path.basename(tok)}, "
        f"{time.strftime('%Y-%m-%d %H:%M')}")
  print(f"{'builder':<14} {'workers':>7} {'tokens':>11} {'wall s':>8} {'wall tok/s':>11} "
        f"{'steady tok/s':>13}")
  for module, extra in cases.items():
    for workers in [int(w) for w in args.workers.split(",")]:
      out = os.path.join(args.work_dir, f"out_{module}_{workers}")
      r = run(module, ["--tokenizer", tok, "--num_workers", str(workers), *extra], out)
      print(f"{module:<14} {workers:>7} {r['tokens']:>11,} {r['wall_s']:>8.1f} "
            f"{r['wall_tok_s']:>11,.0f} {r['steady_tok_s']:>13,.0f}", flush=True)


if __name__ == "__main__":
  main()
