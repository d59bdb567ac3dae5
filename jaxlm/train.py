"""The training loop: one jitted optimizer step, validation, checkpoints, metrics.

Read `train_step` first: it is the whole of one optimizer step (gradient accumulation,
weighted loss, clipping and AdamW via optax, non-finite guard). `train_and_evaluate`
wires it to the data, the checkpoints and the logs:

  start    resume workdir/latest if it exists (params, optimizer, step, data position),
           else params from config.init_from (optimizer and schedule fresh), else init.
  loop     batch -> train_step; every log_every: metrics; every val_every_opt:
           validation loss (+ per source), best checkpoint; every checkpoint_every_opt:
           latest checkpoint. SIGTERM/SIGINT save latest and return.
  end      validation, latest checkpoint and the final params tag (config.final_dir).

The host only waits for the device at log, validation and checkpoint steps; otherwise
JAX's asynchronous dispatch lets Grain read the next batch while the device computes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
import time
from typing import Any, NamedTuple

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import tqdm

from jaxlm import checkpoint as ckpt_lib
from jaxlm import distributed
from jaxlm import input_pipeline
from jaxlm import metrics as metrics_lib
from jaxlm import model as model_lib
from jaxlm import optimizer as optimizer_lib
from jaxlm import preflight
from jaxlm import sharding
from jaxlm import validation
from jaxlm.validation import token_nll

# Batch fields the model step reads (source_ids only matter for validation).
TRAIN_FIELDS = ("inputs", "targets", "loss_weights", "segment_ids", "positions")
VAL_FIELDS = TRAIN_FIELDS + ("source_ids",)
NONFINITE_POLICIES = ("skip", "stop")


class NonFiniteError(RuntimeError):
  """Raised under nonfinite_policy='stop'; the message names the optimizer step."""


# ----------------------------------------------------------------------------------
# One optimizer step.


def train_step(state, batch, *, model, optimizer, schedule, nonfinite_policy):
  """One optimizer step over `grad_accum_steps` micro batches.

  state: {'params', 'opt_state', 'train_state': {'step', 'nonfinite_skipped',
          'first_nonfinite_step'}}
  batch: arrays shaped [grad_accum_steps, micro_batch_size, T].

  The loss is sum(w * nll) / sum(w) over the whole accumulated batch, so 4 micro
  batches of 1 give exactly the gradient of one batch of 4. Gradients are summed over
  micro batches with lax.scan (memory of one micro batch) and divided by sum(w) once.
  """
  params, train_state = state["params"], state["train_state"]

  def weighted_nll_sum(p, micro):
    nll = token_nll(model, p, micro)
    weights = micro["loss_weights"].astype(jnp.float32)
    # where(): a masked token contributes exactly 0, even if its nll is inf.
    return jnp.sum(jnp.where(weights > 0, weights * nll, 0.0)), jnp.sum(weights)

  grad_fn = jax.value_and_grad(weighted_nll_sum, has_aux=True)

  def accumulate(carry, micro):
    grad_sum, nll_sum, weight_sum = carry
    (micro_nll_sum, micro_weight), grads = grad_fn(params, micro)
    grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
    return (grad_sum, nll_sum + micro_nll_sum, weight_sum + micro_weight), None

  zeros = jax.tree.map(jnp.zeros_like, params)
  (grad_sum, nll_sum, weight_sum), _ = jax.lax.scan(
      accumulate, (zeros, jnp.float32(0), jnp.float32(0)), batch)
  denom = jnp.where(weight_sum > 0, weight_sum, 1.0)  # all-masked batch: loss 0, grads 0
  loss = nll_sum / denom
  grads = jax.tree.map(lambda g: g / denom, grad_sum)
  grad_norm = optax.tree.norm(grads)

  # Never write non-finite params: a bad step keeps the old params and optimizer state.
  finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
  apply = finite
  if nonfinite_policy == "stop":  # freeze until the host sees it and stops
    apply &= train_state["first_nonfinite_step"] < 0
  updates, new_opt_state = optimizer.update(grads, state["opt_state"], params)
  new_params = optax.apply_updates(params, updates)
  keep_if_bad = lambda new, old: jnp.where(apply, new, old)

  step = train_state["step"] + 1
  new_train_state = {
      "step": step,
      "nonfinite_skipped": train_state["nonfinite_skipped"] + (~finite).astype(jnp.int32),
      "first_nonfinite_step": jnp.where(
          (~finite) & (train_state["first_nonfinite_step"] < 0), step,
          train_state["first_nonfinite_step"]),
  }
  new_state = {
      "params": jax.tree.map(keep_if_bad, new_params, params),
      "opt_state": jax.tree.map(keep_if_bad, new_opt_state, state["opt_state"]),
      "train_state": new_train_state,
  }
  metrics = {"loss": loss, "grad_norm": grad_norm, "finite": finite,
             # The rate this step applied: the schedule at the optimizer's own count.
             "learning_rate": schedule(optimizer_lib.applied_steps(state["opt_state"])),
             "loss_tokens": weight_sum}
  return new_state, metrics


# ----------------------------------------------------------------------------------
# Setup helpers.


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Refuses settings the loop cannot honour, naming the key."""
  def need(ok, key, value, why):
    if not ok:
      raise preflight.PreflightError(f"config.{key}={value!r}: {why}")

  need(config.workdir, "workdir", config.workdir, "must be set")
  need(config.train_dir or config.data.get("sources"), "train_dir", config.train_dir,
       "set train_dir or data.sources")
  for key in ("total_opt_steps", "val_every_opt", "checkpoint_every_opt", "log_every",
              "seq_len", "micro_batch_size", "grad_accum_steps", "val_batches",
              "val_batch_size", "keep_latest"):
    need(int(config[key]) > 0, key, config[key], "must be a positive integer")
  need(config.stop_after_opt_steps >= 0, "stop_after_opt_steps",
       config.stop_after_opt_steps, "must be >= 0")
  need(config.nonfinite_policy in NONFINITE_POLICIES, "nonfinite_policy",
       config.nonfinite_policy, f"expected one of {NONFINITE_POLICIES}")
  need(config.seq_len <= config.model.max_seq_len, "seq_len", config.seq_len,
       f"longer than model.max_seq_len={config.model.max_seq_len}")


def _fresh_state(model, optimizer, rng):
  # Param shapes do not depend on the sequence length: init on a short dummy batch.
  params = model.init(rng, jnp.zeros((1, 8), jnp.int32))["params"]
  return state_from_params(params, optimizer)


def state_from_params(params, optimizer):
  """The train state layout: params with a fresh optimizer state at step 0."""
  return {
      "params": params,
      "opt_state": optimizer.init(params),
      "train_state": {"step": jnp.int32(0), "nonfinite_skipped": jnp.int32(0),
                      "first_nonfinite_step": jnp.int32(-1)},
  }


class Program(NamedTuple):
  """The model, optimizer and jitted functions for one (model, optimizer, mesh) setting.

  Every function is jitted with the NamedShardings of the mesh (params and optimizer
  state by jaxlm.sharding's logical-axis rules, batches over ('data', 'fsdp')), so on
  several devices XLA inserts the collectives; on one device it is plain jit.
  """
  model: model_lib.Transformer
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule
  mesh: jax.sharding.Mesh
  state_shardings: Any  # pytree of NamedSharding matching the train state
  init: Any  # rng -> fresh state
  from_params: Any  # params -> state with fresh optimizer state
  train_step: Any  # (state, batch) -> (state, metrics); donates state
  eval_step: Any  # (params, batch, num_sources) -> sums; num_sources positional (static)

  def abstract_state(self, with_shardings: bool = True):
    """The train state's shapes and dtypes (with their shardings: restore targets)."""
    abstract = jax.eval_shape(self.init, jax.random.PRNGKey(0))
    return sharding.with_shardings(abstract, self.state_shardings) if with_shardings else abstract

  def shard_batch(self, batch, fields, accum_steps=None):
    """This process's numpy rows -> global batch arrays laid out on the mesh."""
    return sharding.shard_batch({k: batch[k] for k in fields}, self.mesh, accum_steps)


def build_program(config) -> Program:
  """Builds (or reuses) the jitted functions for `config`.

  Cached on the frozen model/optimizer settings, so several runs in one process
  (tests, sweeps, a notebook) compile each step function once.
  """
  return _build_program(
      ml_collections.FrozenConfigDict(model_lib.model_config(config.model)),
      ml_collections.FrozenConfigDict(config.optimizer), int(config.total_opt_steps),
      config.nonfinite_policy, sharding.make_mesh(config.mesh))


@functools.lru_cache(maxsize=4)
def _build_program(model_config, opt_config, total_steps, nonfinite_policy, mesh) -> Program:
  model = model_lib.Transformer(model_config)
  optimizer, schedule = optimizer_lib.make_optimizer(opt_config, total_steps)
  fresh = functools.partial(_fresh_state, model, optimizer)
  abstract = jax.eval_shape(fresh, jax.random.PRNGKey(0))
  param_shardings = sharding.param_shardings(abstract["params"], mesh)
  state_shardings = sharding.state_shardings(abstract, param_shardings, mesh)
  replicated = sharding.replicated(mesh)
  return Program(
      model=model, optimizer=optimizer, schedule=schedule, mesh=mesh,
      state_shardings=state_shardings,
      init=jax.jit(fresh, out_shardings=state_shardings),
      from_params=jax.jit(functools.partial(state_from_params, optimizer=optimizer),
                          in_shardings=(param_shardings,), out_shardings=state_shardings),
      train_step=jit_train_step(model, optimizer, schedule, state_shardings, mesh,
                                nonfinite_policy),
      eval_step=jax.jit(functools.partial(validation.loss_sums, model=model),
                        in_shardings=(param_shardings, sharding.batch_sharding(mesh)),
                        out_shardings=replicated, static_argnums=2))


def jit_train_step(model, optimizer, schedule, state_shardings, mesh,
                   nonfinite_policy: str = "skip"):
  """`train_step` jitted on `mesh`: (state, batch) -> (state, metrics); donates the state."""
  return jax.jit(
      functools.partial(train_step, model=model, optimizer=optimizer, schedule=schedule,
                        nonfinite_policy=nonfinite_policy),
      in_shardings=(state_shardings, sharding.batch_sharding(mesh, accum=True)),
      out_shardings=(state_shardings, sharding.replicated(mesh)), donate_argnums=0)


def _model_config_changes(old: dict, new: dict) -> list[str]:
  return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new))
          if old.get(k) != new.get(k)]


def initial_state(config, program: Program, checkpoints, train_iter):
  """The state to start from: resume latest > params from init_from > fresh init.

  Resuming restores params, optimizer state, step counters and the data iterator
  position. init_from restores params only (names and shapes must match; other model
  settings such as rope_theta may differ); optimizer state and step start at zero.
  """
  rng = jax.random.PRNGKey(config.seed)
  if checkpoints.latest_step() is not None:
    if config.init_from:
      logging.info("Resuming from %s; init_from=%s is ignored.",
                   checkpoints.latest_dir, config.init_from)
    restored = checkpoints.restore_latest(program.abstract_state())
    train_iter.set_state(restored[ckpt_lib.DATA_ITER])
    logging.info("Resumed at step %d from %s.", int(restored["train_state"]["step"]),
                 checkpoints.latest_dir)
    return {k: restored[k] for k in ("params", "opt_state", "train_state")}
  if config.init_from:
    abstract_params = program.abstract_state()["params"]
    params, old_model_config = ckpt_lib.load_params(config.init_from, abstract_params)
    changes = _model_config_changes(old_model_config, program.model.config.to_dict())
    logging.info("Params from %s (optimizer and schedule start fresh). Model config "
                 "changes: %s", config.init_from, "; ".join(changes) or "none")
    return program.from_params(params)
  return program.init(rng)


class _StopSignal:
  """Turns SIGTERM/SIGINT into a flag the loop checks after each step."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    if self.signum is not None:  # second signal: give up on the clean save
      raise KeyboardInterrupt
    logging.warning("Received %s: saving a checkpoint, then stopping.",
                    signal.Signals(signum).name)
    self.signum = signum

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    return False


def _run_eval_hook(params, model_config, config) -> dict:
  """jaxlm.eval.run_cheap_suites at validation, when config.eval_during_training."""
  if not config.eval_during_training:
    return {}
  from jaxlm import eval as eval_lib  # pylint: disable=import-outside-toplevel
  results = eval_lib.run_cheap_suites(params, model_config, config) or {}
  return {k: float(v) for k, v in results.items() if isinstance(v, (int, float, np.number))}


# ----------------------------------------------------------------------------------
# The loop.


class Throughput:
  """Tokens/s, step time and MFU over the steps since the last read.

  The first step of a run is compilation, and time spent validating or saving is not
  step time: neither is counted.
  """

  def __init__(self, tokens_per_step: int, flops_per_token: float, peak_flops: float | None):
    self.tokens_per_step, self.flops_per_token = tokens_per_step, flops_per_token
    self.peak_flops = peak_flops
    self.start, self.steps, self.compiling = time.perf_counter(), 0, True

  def step_done(self, state) -> None:
    if self.compiling:
      jax.block_until_ready(state)
      self.compiling, self.start = False, time.perf_counter()
    else:
      self.steps += 1

  @contextlib.contextmanager
  def paused(self):
    began = time.perf_counter()
    yield
    self.start += time.perf_counter() - began

  def read(self) -> dict[str, float]:
    """The figures since the last read (none right after compiling), then restarts."""
    elapsed, steps = time.perf_counter() - self.start, self.steps
    self.start, self.steps = time.perf_counter(), 0
    if not steps:
      return {}
    out = {"step_time": elapsed / steps, "tokens_per_sec": steps * self.tokens_per_step / elapsed}
    if self.peak_flops:
      out["mfu"] = self.flops_per_token * out["tokens_per_sec"] / self.peak_flops
    return out


def log_train(step: int, pending: list, state, throughput: Throughput, writer, config) -> dict:
  """Fetches the metrics of the steps since the last log line; writes and logs them."""
  fetched = jax.device_get(pending)
  finite_losses = [float(m["loss"]) for m in fetched if m["finite"]]
  record = {
      "loss": float(np.mean(finite_losses)) if finite_losses else float("nan"),
      "learning_rate": float(fetched[-1]["learning_rate"]),
      "grad_norm": float(fetched[-1]["grad_norm"]),
      "nonfinite_skipped": int(jax.device_get(state["train_state"]["nonfinite_skipped"])),
      **throughput.read(),
  }
  writer.write(step, record, kind="train")
  speed = "".join([
      f", {record['tokens_per_sec']:.0f} tok/s" if "tokens_per_sec" in record else "",
      f", {record['step_time']:.3f} s/step" if "step_time" in record else "",
      f", MFU {record['mfu']:.1%}" if "mfu" in record else ""])
  logging.info("step %d/%d: loss %.4f, lr %.2e, grad_norm %.3f%s", step,
               config.total_opt_steps, record["loss"], record["learning_rate"],
               record["grad_norm"], speed)
  return record


def validate(step: int, program: Program, params, val_batches, val_sources, config,
             model_config, writer) -> dict:
  """Validation loss (jaxlm.validation, the one loss path) and the optional eval hook."""
  result = validation.losses_from_sums(
      [program.eval_step(params, b, len(val_sources)) for b in val_batches], val_sources)
  result.update(_run_eval_hook(params, model_config, config))
  writer.write(step, result, kind="val")
  logging.info("step %d: val loss %.4f%s", step, result["loss"], "".join(
      f", {k} {v:.4f}" for k, v in result.items() if k != "loss"))
  return result


def check_finite(state, config, checkpoints) -> None:
  """At host sync points: under nonfinite_policy='stop' a non-finite step ends the run."""
  first_bad = int(state["train_state"]["first_nonfinite_step"])
  if config.nonfinite_policy == "stop" and first_bad >= 0:
    checkpoints.wait_until_finished()
    raise NonFiniteError(
        f"Non-finite loss or gradients at optimizer step {first_bad} "
        f"(nonfinite_policy='stop'); no update was applied from that step on. The last "
        f"good checkpoint is step {checkpoints.latest_step()} in {checkpoints.latest_dir}.")


def train_and_evaluate(config: ml_collections.ConfigDict) -> dict:
  """Trains as `config` says; returns the last metrics (see module docstring)."""
  validate_config(config)
  preflight.check(config)  # data, tokenizer, checkpoints, device: before any work
  workdir = os.path.abspath(config.workdir)
  os.makedirs(workdir, exist_ok=True)
  program = build_program(config)
  model_config = model_lib.model_config(config.model)  # a plain ConfigDict for hooks
  accum = int(config.grad_accum_steps)
  tokens_per_step = config.seq_len * config.micro_batch_size * accum
  processes = dict(process_index=jax.process_index(), process_count=jax.process_count())

  train_iter = input_pipeline.make_train_iterator(
      config, vocab_size=model_config.vocab_size, **processes)
  val_batches, val_sources = [], []
  if config.val_dir:
    val_batches, val_sources = input_pipeline.make_val_batches(
        config, vocab_size=model_config.vocab_size, **processes)
  # Validation batches are fixed: lay them out on the mesh once.
  val_batches = [program.shard_batch(b, VAL_FIELDS) for b in val_batches]

  checkpoints = ckpt_lib.TrainCheckpoints(workdir, keep_latest=config.keep_latest)
  state = initial_state(config, program, checkpoints, train_iter)
  num_params = sum(x.size for x in jax.tree.leaves(state["params"]))
  logging.info("Model: %s params; %d tokens per optimizer step; mesh %s.",
               f"{num_params:,}", tokens_per_step, dict(program.mesh.shape))
  peak = metrics_lib.peak_flops_per_device()
  throughput = Throughput(tokens_per_step,
                          model_lib.flops_per_token(model_config, config.seq_len),
                          peak * program.mesh.size if peak else None)
  writer = metrics_lib.MetricWriter(workdir, tensorboard=config.tensorboard,
                                    enabled=distributed.is_main_process())
  ckpt_lib.write_run_config(workdir, config.to_dict())  # samplers and eval read it

  def checkpoint_state():
    return {**state, ckpt_lib.MODEL_CONFIG: model_config.to_dict(),
            ckpt_lib.DATA_ITER: train_iter.get_state()}

  step = int(state["train_state"]["step"])
  last_step = config.total_opt_steps
  if config.stop_after_opt_steps:
    last_step = min(last_step, step + config.stop_after_opt_steps)
  last_metrics: dict[str, Any] = {}
  pending = []  # device metrics since the last log line
  stopping = False
  # A console progress bar when a person is watching (the log lines carry the same).
  progress = tqdm.tqdm(total=config.total_opt_steps, initial=step, unit="step",
                       dynamic_ncols=True, leave=False,
                       disable=not (distributed.is_main_process() and sys.stderr.isatty()))
  # Leaving this block in any way (end, signal, NonFiniteError, any error) commits every
  # checkpoint save in flight and closes the managers: no write outlives the run.
  with _StopSignal() as stop_signal, checkpoints, progress:
    while step < last_step and not stopping:
      # batch -> step
      batch = program.shard_batch(next(train_iter), TRAIN_FIELDS, accum)
      state, metrics = program.train_step(state, batch)
      step += 1
      progress.update(1)
      throughput.step_done(state)
      pending.append(metrics)

      # log
      if step % config.log_every == 0 or step == last_step:
        last_metrics = log_train(step, pending, state, throughput, writer, config)
        check_finite(state, config, checkpoints)
        progress.set_postfix(loss=f"{last_metrics['loss']:.4f}",
                             lr=f"{last_metrics['learning_rate']:.2e}", refresh=False)
        pending = []

      # validate / save
      with throughput.paused():
        is_val_step = bool(val_batches) and (
            step % config.val_every_opt == 0 or step == config.total_opt_steps)
        if is_val_step:
          check_finite(state, config, checkpoints)
          val = validate(step, program, state["params"], val_batches, val_sources, config,
                         model_config, writer)
          last_metrics["val_loss"] = val["loss"]
          if checkpoints.save_best(step, checkpoint_state(), val["loss"]):
            logging.info("step %d: new best val loss %.4f", step, val["loss"])
        # Read the flag once: a signal landing between two reads would stop without saving.
        stopping = stop_signal.signum is not None
        if (is_val_step or step % config.checkpoint_every_opt == 0 or step == last_step
            or stopping):
          check_finite(state, config, checkpoints)
          checkpoints.save_latest(step, checkpoint_state())
        writer.flush()

  # stop
  if step >= config.total_opt_steps and config.final_dir:  # synchronous: done on return
    path = ckpt_lib.save_params(config.final_dir, state["params"], model_config.to_dict(),
                                run_config=config.to_dict())
    logging.info("Final params written to %s", path)
  writer.close()
  last_metrics.update(step=step, interrupted=stopping)
  return last_metrics
