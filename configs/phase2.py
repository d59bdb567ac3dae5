"""Phase 2 config: the reasoning core at 2k context (see get_config)."""

from configs import common


def get_config(arg=None):
  r"""Phase 2: the "reasoning core" at 2k context, continuing from phase 1.

  Purpose: continue pretraining on the reasoning-heavy mixture (math, code, structured
  text) while the context is still short and steps are cheap. Starts params-only from
  models/phase1_final (fresh optimizer and LR schedule).

  Command:
    python -m jaxlm.main --config=configs/phase2.py
    python -m jaxlm.main --config=configs/phase2.py:tiny   # CPU smoke run, <1 min
                                                           # (after phase1.py:tiny)

  Expected: 4000 optimizer steps of 524k tokens (~2.1B tokens); val loss on the phase2
  val split drops quickly in the first few hundred steps as the mixture shifts, then
  flattens. Time (estimate, not measured): ~2.5 GFLOP/token -> ~3.7 h on one H100
  at 40% MFU.
  Writes workdirs/phase2/... and models/phase2_final, which phase2_5 starts from.
  """
  args = common.parse_arg(arg, tiny=False)
  c = common.get_base_config()
  c.workdir = "workdirs/phase2"
  c.train_dir = "data/shards/phase2/train"
  c.val_dir = "data/shards/phase2/val"
  c.init_from = "models/phase1_final"
  c.final_dir = "models/phase2_final"

  c.seq_len = 2048
  c.model.max_seq_len = 2048
  c.micro_batch_size = 8
  c.grad_accum_steps = 32
  # Full remat keeps 8 x 2048 activations small enough for a 16 GB GPU; on a big GPU
  # --config.model.remat=none (or save_matmuls) is faster.
  c.model.remat = "full"
  c.total_opt_steps = 4000
  c.val_every_opt = 250
  c.checkpoint_every_opt = 250

  c.optimizer.learning_rate = 2e-4
  c.optimizer.warmup_steps = 200
  # Warmup-stable-decay: the constant stretch lets us branch off later checkpoints.
  c.optimizer.schedule = "wsd"
  c.optimizer.decay_fraction = 0.2
  c.optimizer.min_lr_ratio = 0.1

  if args.tiny:
    common.make_tiny(c, "phase2")
  return c
