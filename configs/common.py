"""Shared config: every key the trainer reads, with its default and meaning.

Phase configs (configs/phase*.py) start from `get_base_config()` and change only what
the phase is about. Any key can be overridden on the command line:

  python -m jaxlm.main --config=configs/phase2_5.py --config.total_opt_steps=100

The top-level names `train_dir`, `val_dir`, `init_from`, `total_opt_steps` and
`val_every_opt` are the flag names of the earlier PyTorch stack, kept on purpose.
"""

from __future__ import annotations

import ml_collections

from jaxlm import model as model_lib

# A model that trains on a CPU in seconds (the `tiny` config argument).
MODEL_TINY = dict(
    vocab_size=32000,  # the real tokenizer's vocabulary, so tiny runs read the real shards
    d_model=64,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    head_dim=16,
    mlp_dim=128,
)


def get_base_config() -> ml_collections.ConfigDict:
  """All trainer keys with their defaults (a phase config then overrides some)."""
  c = ml_collections.ConfigDict()

  # --- Where things are.
  c.workdir = "workdirs/default"  # checkpoints (latest/, best/), metrics.jsonl, tensorboard/
  c.train_dir = ""  # split dir of training shards, e.g. data/shards/phase2_5_mixed/train
  c.val_dir = ""  # split dir of validation shards ('' = no validation)
  # Params-only start: an Orbax checkpoint (step dir, CheckpointManager root such as
  # workdirs/phase2_5/best, or a final tag such as models/phase2_final). Optimizer
  # state, step and LR schedule start fresh. Ignored when workdir/latest exists (resume).
  c.init_from = ""
  c.final_dir = ""  # where the final params tag goes at the end ('' = don't write one)
  c.tokenizer = ""  # optional sentencepiece model; its vocab size is checked against the model

  # --- How long, how often.
  c.total_opt_steps = 1000  # optimizer steps (one step = grad_accum_steps micro batches)
  c.val_every_opt = 100  # validate (and maybe save best) every this many optimizer steps
  c.checkpoint_every_opt = 100  # save workdir/latest every this many optimizer steps
  c.keep_latest = 2  # how many latest/ checkpoints Orbax keeps
  # End this run after this many optimizer steps (0 = run to total_opt_steps). The LR
  # schedule still spans total_opt_steps; rerun the same command to continue. Useful
  # for time-limited jobs.
  c.stop_after_opt_steps = 0
  c.log_every = 10  # write metrics / log line every this many optimizer steps

  # --- Batch shape. Tokens per optimizer step = seq_len * micro_batch_size * grad_accum_steps.
  c.seq_len = 2048
  c.micro_batch_size = 8  # sequences per forward/backward pass (memory knob)
  c.grad_accum_steps = 1  # micro batches summed into one optimizer step
  c.val_batches = 20  # number of fixed validation batches
  c.val_batch_size = 8  # sequences per validation batch

  c.seed = 0  # params init, data order
  c.nonfinite_policy = "skip"  # non-finite loss/grads: 'skip' the update (counted) | 'stop'
  # At each validation also run jaxlm.eval.run_cheap_suites(params, model_config, config)
  # (if that module exists); its numbers go to metrics.jsonl / TensorBoard.
  c.eval_during_training = False
  # What that check runs: a passkey probe per (length, depth), `samples` per cell.
  c.eval = ml_collections.ConfigDict()
  c.eval.lengths = ()  # prompt lengths in tokens; () = 512 (when < seq_len) and seq_len
  c.eval.depths = (0.0, 0.5, 1.0)  # needle depths in [0, 1]
  c.eval.samples = 2
  c.tensorboard = True  # write workdir/tensorboard event files

  # --- Optimizer: AdamW, warmup then cosine or warmup-stable-decay, global-norm clipping.
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 3e-4  # peak learning rate
  c.optimizer.warmup_steps = 100  # linear warmup from 0 (optimizer steps)
  c.optimizer.schedule = "cosine"  # 'cosine' | 'wsd' (warmup, constant, then linear decay)
  c.optimizer.decay_fraction = 0.2  # wsd only: final fraction of steps spent decaying
  c.optimizer.min_lr_ratio = 0.1  # final LR = min_lr_ratio * learning_rate
  c.optimizer.weight_decay = 0.1  # decoupled; never applied to norm scales or biases
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.95
  c.optimizer.eps = 1e-8
  c.optimizer.grad_clip = 1.0  # clip by global norm (0 = off)

  # Model keys, defaults and meanings live in one place: jaxlm/model.py default_config().
  c.model = model_lib.default_config()

  # --- Data reader (jaxlm.input_pipeline).
  c.data = ml_collections.ConfigDict()
  # Optional mixture instead of train_dir: {name: (split_dir, weight)} mixed by Grain.
  c.data.sources = ml_collections.ConfigDict()
  c.data.num_workers = 0  # Grain worker processes (0 = read in the main process)
  c.data.prefetch = 2  # batches Grain prepares ahead

  # --- Device mesh (jax.sharding); -1 = all remaining devices.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = 1
  c.mesh.fsdp = -1
  c.mesh.tensor = 1
  return c


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses a config argument like 'tiny' or 'tiny,steps=5' (big_vision style).

  Bare words become True; `key=value` pairs are typed after their default.
  """
  values = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, sep, value = item.partition("=")
    if key not in values:
      raise ValueError(f"Unknown config argument {key!r}; valid: {sorted(values)}")
    if not sep:
      values[key] = True
    elif isinstance(values[key], bool):
      values[key] = value.lower() in ("1", "true", "yes")
    else:
      values[key] = type(values[key])(value)
  return ml_collections.ConfigDict(values)


def make_tiny(c: ml_collections.ConfigDict, phase: str) -> ml_collections.ConfigDict:
  """Shrinks a phase config so it runs on a CPU in seconds (same data dirs, tiny model)."""
  c.model.update(MODEL_TINY)
  c.model.compute_dtype = "float32"  # CPUs are slow at bf16
  c.model.remat = "none"
  c.seq_len = min(c.seq_len, 128)
  c.model.max_seq_len = c.seq_len
  c.micro_batch_size = 2
  c.grad_accum_steps = 2
  c.total_opt_steps = 20
  c.val_every_opt = 10
  c.checkpoint_every_opt = 10
  c.log_every = 5
  c.val_batches = 2
  c.val_batch_size = 2
  c.optimizer.warmup_steps = 2
  c.optimizer.learning_rate = 1e-3
  c.workdir = f"workdirs/tiny/{phase}"
  c.mesh.fsdp = 1  # one device, even where several (or forced CPU host devices) exist
  if c.final_dir:
    c.final_dir = c.final_dir.replace("models/", "models/tiny/", 1)
  if c.init_from:
    c.init_from = (c.init_from.replace("models/", "models/tiny/", 1)
                   .replace("workdirs/", "workdirs/tiny/", 1))
  return c
