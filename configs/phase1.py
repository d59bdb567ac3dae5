"""Phase 1 config: base pretraining at 2k context (see get_config)."""

from configs import common


def get_config(arg=None):
  r"""Phase 1: base pretraining of the ~350M Llama-style model at 2k context.

  Purpose: learn language from scratch on the general pretraining shards. Everything
  later starts from this phase's final params (models/phase1_final).

  Command:
    python -m jaxlm.main --config=configs/phase1.py
    python -m jaxlm.main --config=configs/phase1.py:tiny   # CPU smoke run, <1 min

  Expected: 14000 optimizer steps of 8 x 32 x 2048 = 524k tokens (~7.3B tokens, about
  Chinchilla-optimal for 350M params). Val loss falls steeply for the first ~1k steps, then
  slowly. Time (estimate, not measured): ~2.5 GFLOP/token -> ~13 h on one H100 at 40% MFU.
  Writes workdirs/phase1/{latest,best,metrics.jsonl,tensorboard} and models/phase1_final.
  """
  args = common.parse_arg(arg, tiny=False)
  c = common.get_base_config()
  c.workdir = "workdirs/phase1"
  c.train_dir = "data/shards/phase1/train"
  c.val_dir = "data/shards/phase1/val"
  c.final_dir = "models/phase1_final"

  c.seq_len = 2048
  c.model.max_seq_len = 2048
  c.micro_batch_size = 8
  c.grad_accum_steps = 32
  # Full remat keeps 8 x 2048 activations small enough for a 16 GB GPU; on a big GPU
  # --config.model.remat=none (or save_matmuls) is faster.
  c.model.remat = "full"
  c.total_opt_steps = 14000
  c.val_every_opt = 500
  c.checkpoint_every_opt = 500
  c.log_every = 10

  c.optimizer.learning_rate = 3e-4
  c.optimizer.warmup_steps = 1000
  c.optimizer.schedule = "cosine"
  c.optimizer.min_lr_ratio = 0.1

  if args.tiny:
    common.make_tiny(c, "phase1")
  return c
