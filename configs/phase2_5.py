"""Phase 2.5 config: the 8k-context bridge (see get_config)."""

from configs import common


def get_config(arg=None):
  r"""Phase 2.5: the 8k-context bridge between phase 2 (2k) and phase 3.

  Purpose: teach the phase-2 model to use 8192-token contexts before refinement, on
  ~1B tokens of a pre-mixed shard set (data/shards/phase2_5_mixed) that is about
    50% phase-2 replay (keeps the 2k skills),
    25% tool-protocol documents (chat + tool-call format),
    25% long-context documents with hard long-range dependencies.
  Starts from models/phase2_final with params only: optimizer state and LR schedule are
  reset (the phase-2 schedule had decayed to its floor).

  Command:
    python -m jaxlm.main --config=configs/phase2_5.py
    python -m jaxlm.main --config=configs/phase2_5.py:tiny   # CPU smoke run, <1 min
                                                             # (after phase2.py:tiny)

  Expected: 2000 optimizer steps of 1 x 64 x 8192 = 524k tokens (~1.05B tokens). Val loss
  jumps at step 0 (new RoPE base, longer context), recovers within ~200 steps, and ends a
  little below phase 2's final val loss on the replay part. Best checkpoint in
  workdirs/phase2_5/best/best_step_XXXX (phase 3 starts from it); final params in
  models/phase2_5_final. Time (estimate, not measured): ~4.3 GFLOP/token -> ~3.2 h on one H100
  at 40% MFU. Micro batch 1, full remat and bf16 compute are meant to fit a 16 GB GPU
  (~5.6 GB of params + AdamW state, the rest activations; not measured yet).
  """
  args = common.parse_arg(arg, tiny=False)
  c = common.get_base_config()
  c.workdir = "workdirs/phase2_5"
  c.train_dir = "data/shards/phase2_5_mixed/train"
  c.val_dir = "data/shards/phase2_5_mixed/val"
  c.init_from = "models/phase2_final"
  c.final_dir = "models/phase2_5_final"

  c.seq_len = 8192
  c.model.max_seq_len = 8192
  # RoPE base 10k -> 500k instead of position interpolation. Measured on an H100: a 12M
  # model bridged from 2k with params-only init and 200 steps at 8k reached 94-100%
  # passkey retrieval at 1k-8k with theta 500k, while linear interpolation x4
  # collapsed to 0%. Only shapes must match the init checkpoint, so the base may change.
  c.model.rope_theta = 500_000.0
  c.model.rope_scaling = "none"
  c.model.rope_original_max_len = 2048

  # Memory for 16 GB at 8k: one sequence per pass, full remat, bf16 activations.
  c.micro_batch_size = 1
  c.grad_accum_steps = 64
  c.model.remat = "full"
  c.model.compute_dtype = "bfloat16"

  c.total_opt_steps = 2000
  c.val_every_opt = 200
  c.checkpoint_every_opt = 200
  c.val_batches = 16
  c.val_batch_size = 1

  c.optimizer.learning_rate = 1.5e-4
  c.optimizer.warmup_steps = 100
  c.optimizer.schedule = "cosine"
  c.optimizer.min_lr_ratio = 0.1

  if args.tiny:
    common.make_tiny(c, "phase2_5")
  return c
