"""Times causal attention forward+backward per backend and checks bf16 agreement.

    python -m experiments.bench_attention            # GPU: B=2, 12 heads, T=8192, bf16
    python -m experiments.bench_attention --small    # tiny shapes, runs on CPU

For each head_dim it times jax.grad of sum(attention(q, k, v) * cotangent) w.r.t. q, k, v
for every backend usable on this machine, including raw
jax.nn.dot_product_attention(implementation='cudnn') so the jaxlm 'cudnn' wrapper can be
compared with it directly. TFLOP/s counts causal work only: forward 2 matmuls of
2*B*N*T*T*H/2 FLOPs, backward 2.5x forward (the FlashAttention-2 convention), i.e.
fwd+bwd = 3.5 * 2 * B*N*T^2*H.

Agreement: every backend's bf16 output and gradients are compared with the xla backend
run in float32 on the same (bf16-rounded) inputs; the xla backend in bf16 is listed too,
so its error is the yardstick for "as accurate as bf16 allows".
"""
from __future__ import annotations

import json
import time

import argparse

import jax
import jax.numpy as jnp

from jaxlm import attention



def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description="Attention backends at 8k: time and agreement.")
  parser.add_argument("--small", action="store_true",
                      help="tiny shapes so the script runs on CPU in seconds")
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--heads", type=int, default=12, help="query heads")
  parser.add_argument("--kv_heads", type=int, default=12, help="key/value heads (GQA when < heads)")
  parser.add_argument("--head_dims", default="64,128", help="head dimensions to time")
  parser.add_argument("--seq_len", type=int, default=8192, help="sequence length for timing")
  parser.add_argument("--agreement_lens", default="2048,8192",
                      help="sequence lengths for agreement")
  parser.add_argument("--block_size", type=int, default=512, help="blockwise attention block")
  parser.add_argument("--iters", type=int, default=10, help="timed iterations after a warm-up")
  parser.add_argument("--json_out", default="", help="optional path for the results as JSON")
  return parser.parse_args(argv)


def backends(block_size: int):
  """name -> attention function(q, k, v) for every backend usable here."""
  fns = {
      "xla": lambda q, k, v: attention.xla_attention(q, k, v),
      "blockwise": lambda q, k, v: attention.blockwise_attention(
          q, k, v, block_size=block_size),
  }
  if attention.cudnn_supports(jnp.zeros((1, 1, 1, 64), jnp.bfloat16)):
    fns["cudnn"] = lambda q, k, v: attention.cudnn_attention(q, k, v)
    fns["cudnn_raw"] = lambda q, k, v: jax.nn.dot_product_attention(
        q, k, v, is_causal=True, implementation="cudnn")
  if jax.default_backend() == "tpu":
    fns["splash"] = lambda q, k, v: attention.splash_attention(q, k, v)
  return fns


def inputs(b, t, n, kv, h, dtype, seed=0):
  keys = jax.random.split(jax.random.PRNGKey(seed), 4)
  q = jax.random.normal(keys[0], (b, t, n, h), jnp.float32).astype(dtype)
  k = jax.random.normal(keys[1], (b, t, kv, h), jnp.float32).astype(dtype)
  v = jax.random.normal(keys[2], (b, t, kv, h), jnp.float32).astype(dtype)
  ct = jax.random.normal(keys[3], (b, t, n, h), jnp.float32).astype(dtype)
  return q, k, v, ct


def forward_backward(fn):
  def run(q, k, v, ct):
    out, vjp = jax.vjp(fn, q, k, v)
    return (out, *vjp(ct))
  return jax.jit(run)


def causal_flops(b, t, n, h):
  return 3.5 * 2 * b * n * t * t * h


def time_backend(fn, args, iters):
  step = forward_backward(fn)
  jax.block_until_ready(step(*args))  # compile + warm up
  start = time.perf_counter()
  for _ in range(iters):
    result = step(*args)
  jax.block_until_ready(result)
  return (time.perf_counter() - start) / iters


def agreement(fns, b, t, n, kv, h):
  q, k, v, ct = inputs(b, t, n, kv, h, jnp.bfloat16, seed=1)
  ref = forward_backward(fns["xla"])(*(x.astype(jnp.float32) for x in (q, k, v, ct)))
  rows = []
  for name, fn in fns.items():
    try:
      got = forward_backward(fn)(q, k, v, ct)
    except Exception as e:  # e.g. xla running out of memory at 8k: report, keep going
      rows.append(dict(backend=name, seq_len=t, head_dim=h, error=type(e).__name__))
      continue
    errs = {label: float(jnp.max(jnp.abs(g.astype(jnp.float32) - r)))
            for label, g, r in zip(("out", "dq", "dk", "dv"), got, ref)}
    scale = float(jnp.max(jnp.abs(ref[0])))
    rows.append(dict(backend=name, seq_len=t, head_dim=h, max_abs_err=errs,
                     out_rel_err=errs["out"] / scale))
  return rows


def main(argv=None):
  flags = parse_args(argv)
  block_size = flags.block_size
  if flags.small:
    b, n, kv, t, head_dims, agree_lens, iters = 1, 2, 1, 512, [16, 32], [128, 512], 3
    block_size = min(block_size, 128)  # several blocks even at T=512
  else:
    b, n, kv, t = flags.batch, flags.heads, flags.kv_heads, flags.seq_len
    head_dims = [int(h) for h in flags.head_dims.split(",")]
    agree_lens, iters = [int(x) for x in flags.agreement_lens.split(",")], flags.iters
  device = jax.devices()[0]
  print(f"device: {device.platform} {device.device_kind}  jax {jax.__version__}")
  print(f"shapes: B={b} heads={n} kv_heads={kv} T={t} bf16 causal; "
        f"blockwise block={block_size}")
  fns = backends(block_size)
  results = {"device": f"{device.platform} {device.device_kind}", "timing": [],
             "agreement": []}

  print(f"\n{'backend':<11}{'head_dim':>9}{'ms fwd+bwd':>12}{'TFLOP/s':>10}")
  for h in head_dims:
    args = inputs(b, t, n, kv, h, jnp.bfloat16)
    for name, fn in fns.items():
      try:
        seconds = time_backend(fn, args, iters)
      except Exception as e:
        print(f"{name:<11}{h:>9}   failed: {type(e).__name__}: {str(e)[:80]}")
        results["timing"].append(dict(backend=name, head_dim=h, error=type(e).__name__))
        continue
      tflops = causal_flops(b, t, n, h) / seconds / 1e12
      print(f"{name:<11}{h:>9}{seconds * 1e3:>12.2f}{tflops:>10.3f}")
      results["timing"].append(dict(backend=name, head_dim=h, seq_len=t, ms=seconds * 1e3,
                                    tflops=tflops))

  print(f"\nbf16 agreement vs xla float32 (max abs error; out relative error)")
  for t_agree in agree_lens:
    for h in head_dims:
      for row in agreement(fns, b, t_agree, n, kv, h):
        results["agreement"].append(row)
        if "error" in row:
          print(f"  T={t_agree:<6}h={h:<4}{row['backend']:<11}failed: {row['error']}")
          continue
        e = row["max_abs_err"]
        print(f"  T={t_agree:<6}h={h:<4}{row['backend']:<11}out {e['out']:.2e} "
              f"dq {e['dq']:.2e} dk {e['dk']:.2e} dv {e['dv']:.2e} "
              f"(rel {row['out_rel_err']:.2e})")
  if flags.json_out:
    with open(flags.json_out, "w") as f:
      json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
