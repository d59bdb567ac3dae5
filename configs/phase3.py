"""Phase 3 config: refinement at 8k context (see get_config)."""

from configs import common


def get_config(arg=None):
  r"""Phase 3: refinement at 8k context, from phase 2.5's best checkpoint.

  Purpose: the last ~0.5B tokens: sharpen long-context use and the chat / tool format,
  on a pre-mixed shard set (data/shards/phase3_mixed) of
    phase1 0.10, phase2 0.15, long-context 0.50, SFT conversations 0.25.
  Starts params-only from phase 2.5's best val checkpoint (workdirs/phase2_5/best; the
  only step kept there), with a fresh optimizer and schedule.

  Command:
    python -m jaxlm.main --config=configs/phase3.py
    python -m jaxlm.main --config=configs/phase3.py:tiny   # CPU smoke run, <1 min
                                                         # (after phase2_5.py:tiny)

  Expected: 1000 optimizer steps of 1 x 64 x 8192 = 524k tokens (~0.52B tokens); val loss
  drops fastest on the SFT part (its format is new), little on replay. Final params in
  models/phase3_final. Time (estimate, not measured): ~4.3 GFLOP/token -> ~1.6 h on one
  H100 at 40% MFU.
  """
  args = common.parse_arg(arg, tiny=False)
  c = common.get_base_config()
  c.workdir = "workdirs/phase3"
  c.train_dir = "data/shards/phase3_mixed/train"
  c.val_dir = "data/shards/phase3_mixed/val"
  c.init_from = "workdirs/phase2_5/best"
  c.final_dir = "models/phase3_final"

  c.seq_len = 8192
  c.model.max_seq_len = 8192
  c.model.rope_theta = 500_000.0  # as phase 2.5 (see configs/phase2_5.py)
  c.model.rope_original_max_len = 2048
  # Pretraining documents and SFT conversations are packed together into 8k windows.
  # Attention stays inside each document (cross_document_attention=False): a
  # conversation must not condition on an unrelated neighbour, which it never will at
  # inference time, and pretraining documents lose nothing by it.
  c.model.cross_document_attention = False

  c.micro_batch_size = 1
  c.grad_accum_steps = 64
  c.model.remat = "full"
  c.model.compute_dtype = "bfloat16"

  c.total_opt_steps = 1000
  c.val_every_opt = 100
  c.checkpoint_every_opt = 100
  c.val_batches = 16
  c.val_batch_size = 1

  c.optimizer.learning_rate = 5e-5
  c.optimizer.warmup_steps = 50
  c.optimizer.schedule = "cosine"
  c.optimizer.min_lr_ratio = 0.1

  if args.tiny:
    common.make_tiny(c, "phase3")
  return c
