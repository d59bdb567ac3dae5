r"""Training-step speed: tokens/s, TFLOP/s, MFU, step time, compile time, peak memory.

    python -m jaxlm.bench --config=configs/phase2_5.py [--config.KEY=VALUE ...] \
        [--steps=N] [--warmup=W] [--json] [--out=results.json] [--profile_dir=DIR]
    python -m jaxlm.bench --config=configs/phase2_5.py:tiny --steps=3 --json   # CPU check

Runs the REAL optimizer step of jaxlm.train (`build_program(config).train_step`: the
jitted step of the training loop, state donated, same optax optimizer) on random tokens
already on the device, so what is measured is the step alone: no input pipeline, no
logging, no checkpoints. One "step" is one optimizer step of
micro_batch_size x grad_accum_steps sequences of seq_len tokens.

Method: the step is lowered and compiled ahead of time (that wall time is the compile
time), then run `warmup` times untimed and `steps` times timed, each call waited for
with jax.block_until_ready so the time is device time, not dispatch time. The step time
is the median. Peak memory is the device allocator's peak (`peak_bytes_in_use`; not
available on CPU); XLA's own estimate of the step's buffers is printed beside it.

FLOPs per token come from jaxlm.model.flops_per_token (PaLM appendix B: 6 x matmul
params including the output head, plus 12 x layers x heads x head_dim x seq_len for
attention, not halved for causality). `mfu_causal` halves that attention term instead,
which is the convention of the reference figures in experiments/PERFORMANCE.md. MFU is
against the dense bf16 peak of the device kind (jaxlm.metrics table; H100: 989 TFLOP/s;
CPU: n/a).

--profile_dir writes a jax.profiler trace of 3 extra steps (after the timed ones, so
profiling never slows the figures); open it with TensorBoard's profile plugin or
Perfetto (ui.perfetto.dev, the *.trace.json.gz file).
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from ml_collections import config_flags

from jaxlm import attention as attention_lib
from jaxlm import metrics as metrics_lib
from jaxlm import model as model_lib
from jaxlm import train as train_lib

_FLAGS = {}


def define_flags():
  # Defined only when run as a command: importing this module next to jaxlm.main (which
  # defines --config too) must not clash.
  _FLAGS["config"] = config_flags.DEFINE_config_file(
      "config", None, "Phase config, e.g. configs/phase2_5.py or configs/phase2_5.py:tiny.")
  _FLAGS["steps"] = flags.DEFINE_integer("steps", 10, "Timed optimizer steps.")
  _FLAGS["warmup"] = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
  _FLAGS["json"] = flags.DEFINE_bool("json", False, "Print one JSON object instead of a report.")
  _FLAGS["out"] = flags.DEFINE_string("out", "", "Also write the JSON object to this file.")
  _FLAGS["profile_dir"] = flags.DEFINE_string(
      "profile_dir", "", "Write a jax.profiler trace of 3 extra steps here.")


def random_batch(config, vocab_size: int, seed: int = 0) -> dict[str, np.ndarray]:
  """A batch dict like the input pipeline's: one document per row, all tokens weighted."""
  rows = config.micro_batch_size * config.grad_accum_steps
  t = config.seq_len
  rng = np.random.default_rng(seed)
  tokens = rng.integers(0, vocab_size, size=(rows, t + 1), dtype=np.int32)
  return {
      "inputs": tokens[:, :-1],
      "targets": tokens[:, 1:],
      "loss_weights": np.ones((rows, t), np.float32),
      "segment_ids": np.ones((rows, t), np.int32),
      "positions": np.broadcast_to(np.arange(t, dtype=np.int32), (rows, t)).copy(),
      "source_ids": np.zeros((rows, t), np.int32),
  }


def attention_backend(model_config, seq_len: int) -> str:
  """The backend 'auto' (or the configured name) resolves to for this model's step."""
  q = jax.ShapeDtypeStruct((1, seq_len, model_config.n_heads, model_lib.head_dim(model_config)),
                           jnp.dtype(model_config.compute_dtype))
  return attention_lib.select_implementation(model_config.attention, q)


def flop_counts(model_config, seq_len: int) -> tuple[float, float]:
  """(FLOPs per token as jaxlm.model counts them, the same with causal-halved attention)."""
  return (model_lib.flops_per_token(model_config, seq_len),
          model_lib.flops_per_token(model_config, seq_len, causal=True))


def peak_memory_bytes() -> int | None:
  """Largest allocator peak over the local devices, or None where JAX has no stats (CPU)."""
  peaks = []
  for device in jax.local_devices():
    try:
      stats = device.memory_stats()
    except Exception:  # some backends raise instead of returning None
      stats = None
    if stats and "peak_bytes_in_use" in stats:
      peaks.append(int(stats["peak_bytes_in_use"]))
  return max(peaks) if peaks else None


def compiled_memory(compiled) -> dict[str, int | None]:
  """XLA's buffer sizes for the compiled step (an estimate that also works on CPU)."""
  try:
    analysis = compiled.memory_analysis()
  except Exception:
    analysis = None
  names = ("argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes",
           "temp_size_in_bytes")
  return {n.replace("_size_in", ""): (int(getattr(analysis, n)) if analysis is not None
                                      and hasattr(analysis, n) else None) for n in names}


def benchmark(config, steps: int, warmup: int, profile_dir: str = "") -> dict:
  """Times the training step of `config`; returns the figures as a flat dict."""
  if steps < 1 or warmup < 0:
    raise ValueError(f"--steps must be >= 1 and --warmup >= 0; got {steps}, {warmup}")
  if config.seq_len > config.model.max_seq_len:
    raise ValueError(f"config.seq_len={config.seq_len} is longer than "
                     f"config.model.max_seq_len={config.model.max_seq_len}")
  model_config = model_lib.model_config(config.model)
  # The training loop's own jitted functions: same model, optimizer and donation.
  program = train_lib.build_program(config)
  state = program.init(jax.random.PRNGKey(config.seed))
  accum = int(config.grad_accum_steps)
  host_batch = random_batch(config, model_config.vocab_size)
  # Laid out on the config's mesh, as the training loop does (one device or many).
  batch = program.shard_batch(host_batch, train_lib.TRAIN_FIELDS, accum)
  jax.block_until_ready((state, batch))

  start = time.perf_counter()
  lowered = program.train_step.lower(state, batch)
  lower_s = time.perf_counter() - start
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start

  losses = []
  for _ in range(warmup):
    state, metrics = compiled(state, batch)
    losses.append(metrics["loss"])
  jax.block_until_ready(state)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
    losses.append(metrics["loss"])
  if profile_dir:
    with jax.profiler.trace(profile_dir):
      for _ in range(3):
        state, metrics = compiled(state, batch)
      jax.block_until_ready(state)
  losses = [float(x) for x in jax.device_get(losses)]
  if not all(np.isfinite(losses)):
    raise FloatingPointError(f"non-finite training loss in the benchmark: {losses}")

  # The devices the step actually ran on (the params' devices), not every visible one.
  used = jax.tree.leaves(state["params"])[0].sharding.device_set
  device = min(used, key=lambda d: d.id)
  n_devices = len(used)
  tokens_per_step = config.seq_len * config.micro_batch_size * accum
  step_s = statistics.median(times)
  tokens_per_s = tokens_per_step / step_s
  flops, flops_causal = flop_counts(model_config, config.seq_len)
  peak = metrics_lib.peak_flops_per_device(device.device_kind)
  peak_total = peak * n_devices if peak else None
  return {
      "backend": jax.default_backend(),
      "device_kind": device.device_kind,
      "num_devices": n_devices,
      "jax_version": jax.__version__,
      "params": int(sum(x.size for x in jax.tree.leaves(state["params"]))),
      "params_non_embedding": model_lib.count_params(model_config, non_embedding=True),
      "d_model": model_config.d_model,
      "n_layers": model_config.n_layers,
      "seq_len": config.seq_len,
      "micro_batch_size": config.micro_batch_size,
      "grad_accum_steps": accum,
      "tokens_per_step": tokens_per_step,
      "compute_dtype": model_config.compute_dtype,
      "remat": model_config.remat,
      "scan_layers": bool(model_config.scan_layers),
      "attention": attention_backend(model_config, config.seq_len),
      "steps": steps,
      "warmup": warmup,
      "step_time_s": step_s,
      "step_time_min_s": min(times),
      "step_time_mean_s": statistics.fmean(times),
      "tokens_per_s": tokens_per_s,
      "flops_per_token": flops,
      "model_tflops": tokens_per_s * flops / 1e12,
      "peak_tflops": peak_total / 1e12 if peak_total else None,
      "mfu": tokens_per_s * flops / peak_total if peak_total else None,
      "flops_per_token_causal": flops_causal,
      "mfu_causal": tokens_per_s * flops_causal / peak_total if peak_total else None,
      "lower_time_s": lower_s,
      "compile_time_s": compile_s,
      "peak_memory_bytes": peak_memory_bytes(),
      "compiled_memory": compiled_memory(compiled),
      "loss_first": losses[0],
      "loss_last": losses[-1],
      "profile_dir": profile_dir or None,
  }


def _gib(x):
  return "n/a" if x is None else f"{x / 2**30:.2f} GiB"


def report(r: dict) -> str:
  """The human-readable form of `benchmark`'s result."""
  pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"
  mem = r["compiled_memory"]
  xla_total = None
  if mem["argument_bytes"] is not None and mem["temp_bytes"] is not None:
    xla_total = (mem["argument_bytes"] + mem["temp_bytes"] + (mem["output_bytes"] or 0)
                 - (mem["alias_bytes"] or 0))
  return "\n".join([
      f"device      {r['num_devices']} x {r['device_kind']} ({r['backend']}, jax "
      f"{r['jax_version']})",
      f"model       {r['params'] / 1e6:.1f}M params, d_model {r['d_model']}, "
      f"{r['n_layers']} layers, {r['compute_dtype']}, remat {r['remat']}, "
      f"scan_layers {r['scan_layers']}, attention {r['attention']}",
      f"batch       {r['micro_batch_size']} x {r['grad_accum_steps']} x {r['seq_len']} = "
      f"{r['tokens_per_step']} tokens per step",
      f"step time   {1000 * r['step_time_s']:.1f} ms median of {r['steps']} "
      f"(min {1000 * r['step_time_min_s']:.1f} ms)",
      f"tokens/s    {r['tokens_per_s']:,.0f}",
      f"TFLOP/s     {r['model_tflops']:.2f} ({r['flops_per_token'] / 1e9:.3f} GFLOP/token)",
      f"MFU         {pct(r['mfu'])} (causal-halved attention: {pct(r['mfu_causal'])}) "
      f"of {r['peak_tflops'] or 'n/a'} TFLOP/s",
      f"compile     {r['compile_time_s']:.1f} s (tracing and lowering {r['lower_time_s']:.1f} s)",
      f"memory      peak {_gib(r['peak_memory_bytes'])}; XLA estimate {_gib(xla_total)} "
      f"(temp {_gib(mem['temp_bytes'])}, arguments {_gib(mem['argument_bytes'])})",
      f"loss        {r['loss_first']:.3f} -> {r['loss_last']:.3f}",
  ])


def write_json_atomic(path: str, obj) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, f".{os.path.basename(path)}.tmp")
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=1)
    f.write("\n")
  os.replace(tmp, path)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _FLAGS["config"].value is None:
    raise app.UsageError("--config is required, e.g. --config=configs/phase2_5.py")
  try:
    result = benchmark(_FLAGS["config"].value, _FLAGS["steps"].value,
                       _FLAGS["warmup"].value, _FLAGS["profile_dir"].value)
  except (ValueError, FloatingPointError) as err:
    sys.exit(f"jaxlm.bench: {err}")
  result["config"] = flags.FLAGS["config"].config_filename if hasattr(
      flags.FLAGS["config"], "config_filename") else None
  if _FLAGS["out"].value:
    write_json_atomic(_FLAGS["out"].value, result)
  if _FLAGS["json"].value:
    print(json.dumps(result), flush=True)
  else:
    print(report(result), flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
