"""Decode speed: jaxlm's KV-cache sampler against transformers' generate, same weights.

    python -m experiments.bench_decode                       # phase2_5 model, batch 1 and 8
    python -m experiments.bench_decode --prompt_len 1024 --new_tokens 512 --out bench.json
    python -m experiments.bench_decode --small               # tiny shapes, runs on a CPU

Both sides decode greedily from the same random weights (the default phase2_5 model of
configs/phase2_5.py, ~349M params; jaxlm.convert.params_to_hf_state_dict gives the
transformers copy), at batch 1 and 8, a prompt of --prompt_len random tokens and exactly
--new_tokens new ones (no stop token, so every run does the same work). Timed: the whole
call (prefill + decode), after one warm-up call at the same shapes (jaxlm compiles there),
median of --repeats; tokens/s = batch * new_tokens / seconds.

  jaxlm:         jaxlm.sample.generate: one jitted prefill + lax.while_loop decode, bf16
                 compute (the phase config's compute_dtype), float32 params.
  transformers:  LlamaForCausalLM.generate(do_sample=False) with sdpa attention and its
                 default dynamic KV cache, weights cast to bf16 on GPU.

GPU figures are pending (this was written and checked on a CPU with --small; the
numbers on an H100 go into experiments/PERFORMANCE.md once measured).
JAX is told not to preallocate GPU memory so PyTorch can run in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position

from configs import phase2_5  # pylint: disable=wrong-import-position
from jaxlm import model as model_lib  # pylint: disable=wrong-import-position
from jaxlm import sample  # pylint: disable=wrong-import-position

SMALL = dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16,
             mlp_dim=128, max_seq_len=256, compute_dtype="float32", attention="xla")


def _model_config(small: bool):
  model = phase2_5.get_config().model
  config = model_lib.model_config({k: v for k, v in model.to_dict().items()
                                   if k in model_lib.default_config()})
  if small:
    config.update(SMALL)
  return config


def _time(fn, repeats: int) -> float:
  fn()  # warm-up: compilation (jaxlm) / allocator and kernel caches (torch)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def bench_jaxlm(params, config, prompts, new_tokens, repeats):
  def run():
    out = sample.generate(params, config, prompts, new_tokens)
    assert all(len(o) == new_tokens for o in out)
  return _time(run, repeats)


def bench_transformers(params, config, prompts, new_tokens, repeats):
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  from jaxlm import convert  # pylint: disable=import-outside-toplevel
  state, hf_config = convert.params_to_hf_state_dict(jax.device_get(params), config)
  hf_config = {**hf_config, "bos_token_id": None, "eos_token_id": None, "pad_token_id": None}
  device = "cuda" if torch.cuda.is_available() else "cpu"
  dtype = torch.bfloat16 if device == "cuda" else torch.float32
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**hf_config))
  model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
  model = model.to(device=device, dtype=dtype).eval()
  input_ids = torch.tensor(prompts, device=device)

  def run():
    with torch.no_grad():
      out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                           max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           do_sample=False)
    if device == "cuda":
      torch.cuda.synchronize()
    assert out.shape[1] == input_ids.shape[1] + new_tokens
  seconds = _time(run, repeats)
  del model
  if device == "cuda":
    torch.cuda.empty_cache()
  return seconds


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--small", action="store_true", help="tiny shapes (CPU check)")
  parser.add_argument("--batch_sizes", default="1,8")
  parser.add_argument("--prompt_len", type=int, default=None, help="default 512 (small: 16)")
  parser.add_argument("--new_tokens", type=int, default=None, help="default 256 (small: 8)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--skip_transformers", action="store_true")
  parser.add_argument("--out", default="", help="also write the results as JSON here")
  args = parser.parse_args(argv)
  prompt_len = args.prompt_len or (16 if args.small else 512)
  new_tokens = args.new_tokens or (8 if args.small else 256)

  config = _model_config(args.small)
  params = model_lib.init_params(config, jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  rows = []
  device = jax.devices()[0].device_kind
  print(f"device: {device}; model: {model_lib.count_params(config, False) / 1e6:.1f}M params, "
        f"compute {config.compute_dtype}; prompt {prompt_len}, new tokens {new_tokens}")
  for batch in [int(b) for b in args.batch_sizes.split(",")]:
    prompts = rng.integers(4, config.vocab_size, (batch, prompt_len)).tolist()
    row = {"batch": batch, "prompt_len": prompt_len, "new_tokens": new_tokens,
           "jaxlm_s": bench_jaxlm(params, config, prompts, new_tokens, args.repeats)}
    if not args.skip_transformers:
      try:
        row["transformers_s"] = bench_transformers(params, config, prompts, new_tokens,
                                                   args.repeats)
      except ImportError as e:
        print(f"transformers side skipped: {e}", file=sys.stderr)
    for side in ("jaxlm", "transformers"):
      if f"{side}_s" in row:
        row[f"{side}_tokens_per_s"] = batch * new_tokens / row[f"{side}_s"]
    rows.append(row)

  print(f"{'batch':>6}{'jaxlm tok/s':>16}{'transformers tok/s':>22}{'ratio':>8}")
  for row in rows:
    hf = row.get("transformers_tokens_per_s")
    print(f"{row['batch']:>6}{row['jaxlm_tokens_per_s']:>16.1f}"
          + (f"{hf:>22.1f}{row['jaxlm_tokens_per_s'] / hf:>8.2f}" if hf else f"{'-':>22}"))
  if args.out:
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
      json.dump({"device": device, "small": args.small, "rows": rows}, f, indent=1)
    os.replace(tmp, args.out)
  return rows


if __name__ == "__main__":
  main()
