"""jaxlm's train step against Hugging Face Llama + torch.compile at the same shapes.

    python -m experiments.bench_vs_torch                      # ~130M and ~370M, B=2, T=8192
    python -m experiments.bench_vs_torch --sizes=370m --steps=20 --out-dir=$OUT/vs_torch
    python -m experiments.bench_vs_torch --small              # tiny shapes, runs on a CPU

One run measures both sides on the same machine, one after the other, so their ratio
is meaningful:
  1. jaxlm: `python -m jaxlm.bench --json` in a subprocess (the real jitted train step
     and optimizer on random tokens). A subprocess, so JAX's GPU memory pool is gone
     before PyTorch starts.
  2. PyTorch, in this process: transformers' LlamaForCausalLM with
     attn_implementation='sdpa', float32 master weights, bf16 autocast, torch.compile,
     fused AdamW and global-norm clipping at 1.0 (the same optimizer work as jaxlm's).

Shapes (untied embeddings, multi-head attention, head_dim 64, vocab 32000):
  130m: d_model 768, 12 layers, 12 heads, SwiGLU width 2048   (134M params)
  370m: d_model 1024, 24 layers, 16 heads, SwiGLU width 2816  (374M params)
  small: d_model 64, 2 layers, 4 heads, width 128, T=128      (CPU check only)

FLOPs are counted the same way for both sides, by jaxlm.model.flops_per_token:
  6 * (N_non_embedding + d_model * vocab) + 12 * n_layers * n_heads * head_dim * T
per token (the PaLM appendix-B count: forward + backward of every matmul weight including
the output head, plus the attention score/value matmuls counted as if not causal). The
table also shows MFU with the attention term halved for causality,
  6 * (N_non_embedding + d_model * vocab) + 6 * n_layers * n_heads * head_dim * T,
which is the convention of the reference figures in experiments/PERFORMANCE.md.
MFU is against the device's dense bf16 peak (jaxlm.metrics; H100/H200: 989 TFLOP/s).

With --small on a CPU: float32 instead of bf16 autocast (CPUs are slow at bf16, and
jaxlm's tiny config computes in float32 too), and if torch.compile fails (it needs a C++
compiler for inductor on CPU) the eager model is timed and the table says so.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

import ml_collections

SIZES = {
    "130m": dict(d_model=768, n_layers=12, n_heads=12, n_kv_heads=12, head_dim=64,
                 mlp_dim=2048),
    "370m": dict(d_model=1024, n_layers=24, n_heads=16, n_kv_heads=16, head_dim=64,
                 mlp_dim=2816),
    "small": dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=16,
                  mlp_dim=128),
}
VOCAB = 32000
ROPE_THETA = 10_000.0
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def model_config(size: str, seq_len: int) -> ml_collections.ConfigDict:
  from jaxlm import model as model_lib
  return model_lib.model_config(dict(
      SIZES[size], vocab_size=VOCAB, tie_embeddings=False, max_seq_len=seq_len,
      rope_theta=ROPE_THETA))


def flop_counts(size: str, seq_len: int) -> tuple[float, float]:
  """(FLOPs per token as jaxlm counts them, the same with causal-halved attention)."""
  from jaxlm import bench
  return bench.flop_counts(model_config(size, seq_len), seq_len)


# --------------------------------------------------------------------------- jaxlm side


def jaxlm_overrides(size: str, batch: int, seq_len: int, small: bool,
                    cudnn: bool) -> list[str]:
  """`--config.*` flags that make configs/phase2_5.py match the PyTorch model."""
  flags = [f"--config.model.{k}={v}" for k, v in SIZES[size].items()]
  flags += [
      f"--config.model.vocab_size={VOCAB}",
      "--config.model.tie_embeddings=False",
      f"--config.model.rope_theta={ROPE_THETA}",
      f"--config.model.max_seq_len={seq_len}",
      f"--config.seq_len={seq_len}",
      f"--config.micro_batch_size={batch}",
      "--config.grad_accum_steps=1",
      "--config.model.remat=none",
      f"--config.model.compute_dtype={'float32' if small else 'bfloat16'}",
  ]
  if cudnn:
    # HF's SDPA path attends across the whole window (no packed-document mask); let
    # jaxlm do the same so both use one fused causal kernel.
    flags.append("--config.model.cross_document_attention=True")
  return flags


def run_jaxlm(size, batch, seq_len, steps, warmup, small, cudnn, extra) -> dict:
  cmd = [sys.executable, "-m", "jaxlm.bench", "--config=configs/phase2_5.py",
         *jaxlm_overrides(size, batch, seq_len, small, cudnn), *extra,
         f"--steps={steps}", f"--warmup={warmup}", "--json"]
  print("+", " ".join(cmd), flush=True)
  proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
  if proc.returncode != 0:
    sys.stderr.write(proc.stderr[-4000:])
    raise RuntimeError(f"jaxlm.bench failed with exit code {proc.returncode} for size "
                       f"{size}: {proc.stderr.strip().splitlines()[-1:] or ''}")
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if not lines:
    raise RuntimeError(f"jaxlm.bench printed no JSON line; stdout was:\n{proc.stdout}")
  return json.loads(lines[-1])


# --------------------------------------------------------------------------- PyTorch side


def run_torch(size, batch, seq_len, steps, warmup, small, compile_model=True) -> dict:
  import torch
  import transformers

  cuda = torch.cuda.is_available()
  device = torch.device("cuda" if cuda else "cpu")
  shape = SIZES[size]
  hf_config = transformers.LlamaConfig(
      vocab_size=VOCAB, hidden_size=shape["d_model"], intermediate_size=shape["mlp_dim"],
      num_hidden_layers=shape["n_layers"], num_attention_heads=shape["n_heads"],
      num_key_value_heads=shape["n_kv_heads"], head_dim=shape["head_dim"],
      max_position_embeddings=seq_len, rms_norm_eps=1e-5, tie_word_embeddings=False,
      rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA},
      use_cache=False)
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM._from_config(
      hf_config, attn_implementation="sdpa", dtype=torch.float32).to(device)
  model.train()
  # fused=True is the single-kernel CUDA/CPU implementation; same hyperparameters as jaxlm.
  optimizer = torch.optim.AdamW(model.parameters(), lr=1.5e-4, betas=(0.9, 0.95), eps=1e-8,
                                weight_decay=0.1, fused=True)
  use_bf16 = not small
  compiled, compile_error = False, None
  forward = model
  if compile_model:
    forward = torch.compile(model)
    compiled = True

  generator = torch.Generator().manual_seed(0)
  tokens = torch.randint(0, VOCAB, (batch, seq_len), generator=generator).to(device)

  def step(fwd):
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
      loss = fwd(input_ids=tokens, labels=tokens).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss

  def synced(fwd):
    start = time.perf_counter()
    loss = step(fwd)
    if cuda:
      torch.cuda.synchronize()
    loss = float(loss.detach())
    return time.perf_counter() - start, loss

  if cuda:
    torch.cuda.reset_peak_memory_stats()
  start = time.perf_counter()
  try:
    first, loss = synced(forward)
  except Exception as err:  # inductor needs a working C++/Triton toolchain
    if not compiled:
      raise
    compile_error = f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
    print(f"torch.compile failed, timing the eager model instead: {compile_error}",
          file=sys.stderr)
    forward, compiled = model, False
    optimizer.zero_grad(set_to_none=True)
    first, loss = synced(forward)
  compile_s = time.perf_counter() - start
  for _ in range(max(warmup - 1, 0)):
    synced(forward)
  times = [synced(forward)[0] for _ in range(steps)]
  step_s = statistics.median(times)
  result = dict(
      framework="torch", size=size, batch=batch, seq_len=seq_len,
      device=torch.cuda.get_device_name() if cuda else "cpu",
      compiled=compiled, compile_error=compile_error, bf16_autocast=use_bf16,
      attn_implementation=model.config._attn_implementation,
      params=sum(p.numel() for p in model.parameters()),
      step_time_s=step_s, first_step_s=first, compile_time_s=compile_s - step_s,
      tokens_per_s=batch * seq_len / step_s, loss=loss, steps=steps,
      peak_memory_bytes=torch.cuda.max_memory_allocated() if cuda else None)
  del model, optimizer, forward
  if cuda:
    torch.cuda.empty_cache()
  return result


# --------------------------------------------------------------------------- report


def add_flops(result: dict, flops: float, flops_causal: float) -> dict:
  from jaxlm import metrics
  kind = result.get("device_kind") or result.get("device") or "cpu"
  peak = metrics.peak_flops_per_device(kind)
  tflops = result["tokens_per_s"] * flops / 1e12
  result.update(
      flops_per_token=flops, flops_per_token_causal=flops_causal, model_tflops=tflops,
      peak_tflops=peak / 1e12 if peak else None,
      mfu=tflops * 1e12 / peak if peak else None,
      mfu_causal=result["tokens_per_s"] * flops_causal / peak if peak else None)
  return result


def table(rows: list[dict]) -> str:
  def pct(x):
    return "n/a" if x is None else f"{100 * x:.1f}%"
  header = (f"{'size':6} {'framework':22} {'tokens/s':>10} {'TFLOP/s':>8} {'MFU':>7} "
            f"{'MFU(causal)':>11} {'step ms':>8} {'ratio':>6}")
  lines = [header, "-" * len(header)]
  by_size: dict[str, dict[str, dict]] = {}
  for r in rows:
    by_size.setdefault(r["size"], {})[r["framework"]] = r
  for r in rows:
    torch_row = by_size[r["size"]].get("torch")
    ratio = (r["tokens_per_s"] / torch_row["tokens_per_s"]) if torch_row else math.nan
    name = r["framework"]
    if name == "torch":
      name = "HF Llama " + ("torch.compile" if r["compiled"] else "eager")
    else:
      name = f"jaxlm ({r.get('attention', '?')})"
    lines.append(
        f"{r['size']:6} {name:22} {r['tokens_per_s']:10.0f} {r['model_tflops']:8.2f} "
        f"{pct(r['mfu']):>7} {pct(r['mfu_causal']):>11} {1000 * r['step_time_s']:8.1f} "
        f"{ratio:6.2f}")
  return "\n".join(lines)


def write_atomic(path: str, text: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", default="130m,370m",
                      help=f"comma-separated, from {sorted(SIZES)}")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--seq-len", type=int, default=8192)
  parser.add_argument("--steps", type=int, default=10, help="timed steps per framework")
  parser.add_argument("--warmup", type=int, default=3, help="untimed steps (incl. compile)")
  parser.add_argument("--small", action="store_true",
                      help="tiny shapes (size 'small', B=2, T=128), float32: a CPU check")
  parser.add_argument("--no-compile", action="store_true", help="time eager PyTorch")
  parser.add_argument("--no-cudnn", action="store_true",
                      help="keep jaxlm's packed-document attention mask (phase2_5 default)")
  parser.add_argument("--frameworks", default="jaxlm,torch")
  parser.add_argument("--jax-flag", action="append", default=[],
                      help="extra flag for jaxlm.bench, e.g. --jax-flag=--config.model.attention=xla")
  parser.add_argument("--out-dir", default="", help="write results.json and table.txt here")
  args = parser.parse_args(argv)

  if args.small:
    sizes, seq_len = ["small"], min(args.seq_len, 128)
  else:
    sizes, seq_len = [s.strip() for s in args.sizes.split(",") if s.strip()], args.seq_len
  for s in sizes:
    if s not in SIZES:
      parser.error(f"--sizes: unknown size {s!r}; choose from {sorted(SIZES)}")
  frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
  for f in frameworks:
    if f not in ("jaxlm", "torch"):
      parser.error(f"--frameworks: unknown framework {f!r}; choose jaxlm and/or torch")
  # The parent only counts FLOPs with JAX; never let it claim GPU memory.
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

  def report(rows):
    text = table(rows)
    notes = [f"B={args.batch} T={seq_len} vocab={VOCAB}; ratio = tokens/s over HF Llama's."]
    if args.small:
      notes.append("--small: float32 on both sides, tiny model: checks the script, "
                   "says nothing about GPU speed.")
    for r in rows:
      if r.get("compile_error"):
        notes.append(f"torch.compile failed ({r['compile_error']}); eager model timed.")
    text = text + "\n" + "\n".join(notes)
    if args.out_dir:  # after every row, so a run cut short keeps what it measured
      write_atomic(os.path.join(args.out_dir, "results.json"), json.dumps(rows, indent=1))
      write_atomic(os.path.join(args.out_dir, "table.txt"), text + "\n")
    return text

  rows = []
  for size in sizes:
    flops, flops_causal = flop_counts(size, seq_len)
    if "jaxlm" in frameworks:
      r = run_jaxlm(size, args.batch, seq_len, args.steps, args.warmup, args.small,
                    not args.no_cudnn, args.jax_flag)
      r.update(framework="jaxlm", size=size)
      rows.append(add_flops(r, flops, flops_causal))
      report(rows)
      print(f"jaxlm {size}: {r['tokens_per_s']:.0f} tokens/s", flush=True)
    if "torch" in frameworks:
      r = run_torch(size, args.batch, seq_len, args.steps, args.warmup, args.small,
                    compile_model=not args.no_compile)
      rows.append(add_flops(r, flops, flops_causal))
      report(rows)
      print(f"torch {size}: {r['tokens_per_s']:.0f} tokens/s", flush=True)
  print(report(rows))
  return 0


if __name__ == "__main__":
  sys.exit(main())
