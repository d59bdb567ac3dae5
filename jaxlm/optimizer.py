"""AdamW with warmup + cosine / warmup-stable-decay, clipping and a weight-decay mask."""

from __future__ import annotations

import jax
import optax

# Param names that never get weight decay: norm scales and biases. Matched by name,
# not by rank, because scan_layers stacks a 1-D norm scale into a 2-D [layers, d] array.
_NO_DECAY_NAMES = ("bias", "scale")


def make_schedule(opt_config, total_steps: int) -> optax.Schedule:
  """Learning rate per optimizer step: linear warmup, then cosine or WSD decay.

  Warmup starts at peak / (warmup_steps + 1) rather than 0, so the first step
  already learns (as in nanoGPT).
  """
  peak = opt_config.learning_rate
  floor = peak * opt_config.min_lr_ratio
  warmup = min(opt_config.warmup_steps, max(total_steps - 1, 0))
  start = peak / (warmup + 1)
  if opt_config.schedule == "cosine":
    return optax.warmup_cosine_decay_schedule(
        init_value=start, peak_value=peak, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1), end_value=floor)
  if opt_config.schedule == "wsd":
    decay = max(1, int(round(opt_config.decay_fraction * total_steps)))
    stable = max(0, total_steps - warmup - decay)
    return optax.join_schedules(
        [optax.linear_schedule(start, peak, max(warmup, 1)),
         optax.constant_schedule(peak),
         optax.linear_schedule(peak, floor, decay)],
        boundaries=[warmup, warmup + stable])
  raise ValueError(
      f"config.optimizer.schedule={opt_config.schedule!r}; valid: 'cosine', 'wsd'")


def decay_mask(params):
  """True for params that get weight decay (everything but norm scales and biases)."""
  def wants_decay(path, _):
    names = [str(getattr(k, "key", getattr(k, "name", k))).lower() for k in path]
    return not (names[-1] in _NO_DECAY_NAMES or any("norm" in n for n in names))
  return jax.tree_util.tree_map_with_path(wants_decay, params)


def applied_steps(opt_state):
  """Updates the optimizer has applied: its schedule's own step count.

  A step skipped as non-finite keeps the old optimizer state, so this (not the loop's step
  counter) is where the learning-rate schedule stands.
  """
  counts = [s.count for s in jax.tree.leaves(
      opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByScheduleState))
            if isinstance(s, optax.ScaleByScheduleState)]
  if len(counts) != 1:
    raise ValueError(f"expected one learning-rate schedule in the optimizer state, "
                     f"found {len(counts)}")
  return counts[0]


def make_optimizer(opt_config, total_steps: int) -> tuple[optax.GradientTransformation,
                                                          optax.Schedule]:
  """Returns (optimizer, schedule). One `update` call = one optimizer step."""
  schedule = make_schedule(opt_config, total_steps)
  parts = []
  if opt_config.grad_clip and opt_config.grad_clip > 0:
    parts.append(optax.clip_by_global_norm(opt_config.grad_clip))
  parts.append(optax.adamw(
      learning_rate=schedule, b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.eps,
      weight_decay=opt_config.weight_decay, mask=decay_mask))
  return optax.chain(*parts), schedule
