"""The training loop on a tiny model and tiny shards (real model, real Grain reader)."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from tensorboard.backend.event_processing import event_accumulator

from configs import phase2, phase2_5
from jaxlm import checkpoint as ckpt_lib
from jaxlm import input_pipeline
from jaxlm import train
from tests import train_helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  return train_helpers.write_shards(str(tmp_path_factory.mktemp("data") / "shards"))


@pytest.fixture(scope="module")
def phase2_run(tmp_path_factory, shards):
  """A finished tiny phase-2 run: (config, returned metrics)."""
  root = tmp_path_factory.mktemp("phase2")
  config = train_helpers.tiny_config(
      phase2, str(root / "workdir"), shards, final_dir=str(root / "models" / "phase2_final"))
  return config, train.train_and_evaluate(config)


def read_metrics(workdir, kind="train"):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  return [r for r in records if r["kind"] == kind]


def train_losses(workdir):
  return {r["step"]: r["loss"] for r in read_metrics(workdir)}


def allclose_trees(a, b, atol=1e-6):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert jax.tree.structure(a) == jax.tree.structure(b)
  return all(np.allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)
             for x, y in zip(leaves_a, leaves_b))


# ----------------------------------------------------------------------------------
# Whole runs.


def test_phase2_run_writes_best_latest_final_and_metrics(phase2_run):
  config, result = phase2_run
  workdir = config.workdir
  assert result["step"] == 6 and not result["interrupted"]

  val = read_metrics(workdir, "val")
  assert [r["step"] for r in val] == [3, 6]
  assert all(np.isfinite(r["loss"]) and "loss/chat" in r and "loss/web" in r for r in val)
  best_step = min(val, key=lambda r: r["loss"])["step"]
  assert os.listdir(os.path.join(workdir, "best")) == [f"best_step_{best_step:04d}"]
  assert "6" in os.listdir(os.path.join(workdir, "latest"))

  params, model_config = ckpt_lib.load_params(config.final_dir)
  assert model_config["d_model"] == 32 and model_config["rope_theta"] == 10_000.0
  latest_params, _ = ckpt_lib.load_params(os.path.join(workdir, "latest"))
  assert allclose_trees(params, latest_params, atol=0)

  train_records = read_metrics(workdir)
  assert [r["step"] for r in train_records] == [1, 2, 3, 4, 5, 6]
  assert all(np.isfinite(r["loss"]) and r["grad_norm"] > 0 for r in train_records)
  assert train_records[-1]["loss"] < train_records[0]["loss"]

  # TensorBoard's own reader sees the same scalars.
  events = event_accumulator.EventAccumulator(os.path.join(workdir, "tensorboard"))
  events.Reload()
  tb_loss = events.Scalars("train/loss")
  assert [e.step for e in tb_loss] == [1, 2, 3, 4, 5, 6]
  np.testing.assert_allclose([e.value for e in tb_loss],
                             [r["loss"] for r in train_records], rtol=1e-6)
  assert [e.step for e in events.Scalars("val/loss")] == [3, 6]
  assert "val/loss/chat" in events.Tags()["scalars"]


def test_phase2_5_init_from_final_starts_fresh(phase2_run, shards, tmp_path, monkeypatch):
  p2_config, _ = phase2_run
  config = train_helpers.tiny_config(phase2_5, str(tmp_path / "wd"), shards,
                                     init_from=p2_config.final_dir, total_opt_steps=2,
                                     eval_during_training=True)
  assert config.model.rope_theta == 500_000.0  # differs from phase 2: only shapes matter
  program = train.build_program(config)
  checkpoints = ckpt_lib.TrainCheckpoints(config.workdir)
  iterator = input_pipeline.make_train_iterator(config, vocab_size=train_helpers.VOCAB)
  state = train.initial_state(config, program, checkpoints, iterator)
  checkpoints.close()

  final_params, _ = ckpt_lib.load_params(p2_config.final_dir)
  assert allclose_trees(state["params"], final_params, atol=0)
  assert int(state["train_state"]["step"]) == 0
  assert allclose_trees(state["opt_state"], program.optimizer.init(final_params), atol=0)

  # The eval hook runs at validation and its numbers land in the val records.
  from jaxlm import eval as eval_lib
  calls = []
  def fake_suites(params, model_config, cfg):
    calls.append((jax.tree.structure(params), model_config.rope_theta, cfg.seq_len))
    return {"eval/passkey": 0.5}
  monkeypatch.setattr(eval_lib, "run_cheap_suites", fake_suites)

  result = train.train_and_evaluate(config)
  assert result["step"] == 2
  assert [r["step"] for r in read_metrics(config.workdir)] == [1, 2]
  assert calls == [(jax.tree.structure(final_params), 500_000.0, config.seq_len)]
  assert read_metrics(config.workdir, "val")[0]["eval/passkey"] == 0.5


def test_init_from_mismatched_shapes_fails_naming_the_setting(phase2_run, shards, tmp_path):
  p2_config, _ = phase2_run
  config = train_helpers.tiny_config(phase2_5, str(tmp_path / "wd"), shards,
                                     init_from=p2_config.final_dir)
  config.model.d_model = 48
  with pytest.raises(ValueError) as error:  # jaxlm.preflight, before any work
    train.train_and_evaluate(config)
  message = str(error.value)
  assert p2_config.final_dir in message
  assert "d_model: checkpoint 32 vs config 48" in message
  assert not os.path.exists(config.workdir)


class _SignalAtBatch:
  """Wraps the Grain iterator; sends SIGTERM to this process when batch `n` is read."""

  def __init__(self, iterator, n):
    self.iterator, self.n, self.count = iterator, n, 0

  def __next__(self):
    self.count += 1
    if self.count == self.n:
      os.kill(os.getpid(), signal.SIGTERM)
    return next(self.iterator)

  def get_state(self):
    return self.iterator.get_state()

  def set_state(self, state):
    self.iterator.set_state(state)


def test_resume_after_sigterm_matches_straight_run(phase2_run, shards, tmp_path, monkeypatch):
  straight_config, _ = phase2_run  # 6 uninterrupted steps, same model and data
  config = train_helpers.tiny_config(phase2, str(tmp_path / "wd"), shards,
                                     final_dir=str(tmp_path / "final"))

  real_iterator = input_pipeline.make_train_iterator
  monkeypatch.setattr(input_pipeline, "make_train_iterator",
                      lambda *a, **k: _SignalAtBatch(real_iterator(*a, **k), n=3))
  first = train.train_and_evaluate(config)
  monkeypatch.setattr(input_pipeline, "make_train_iterator", real_iterator)
  assert first["interrupted"] and first["step"] == 3
  assert os.listdir(os.path.join(config.workdir, "latest")) == ["3"]
  assert not os.path.exists(config.final_dir)

  # Continue in two more pieces; init_from is ignored (it does not even exist).
  config.init_from = str(tmp_path / "does_not_exist")
  config.stop_after_opt_steps = 2
  assert train.train_and_evaluate(config)["step"] == 5
  config.stop_after_opt_steps = 0
  assert train.train_and_evaluate(config)["step"] == 6

  straight, resumed = train_losses(straight_config.workdir), train_losses(config.workdir)
  assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
  np.testing.assert_allclose([resumed[s] for s in range(1, 7)],
                             [straight[s] for s in range(1, 7)], atol=1e-6, rtol=0)
  straight_params, _ = ckpt_lib.load_params(straight_config.final_dir)
  resumed_params, _ = ckpt_lib.load_params(config.final_dir)
  assert allclose_trees(straight_params, resumed_params)


class _RaiseAtBatch(_SignalAtBatch):
  """Raises RuntimeError when batch `n` is read (an error in the middle of the loop)."""

  def __next__(self):
    self.count += 1
    if self.count == self.n:
      raise RuntimeError("data source failed")
    return next(self.iterator)


def test_an_error_in_the_loop_commits_the_saves_in_flight_and_closes(shards, tmp_path,
                                                                     monkeypatch):
  """Step 3 validates and saves best and latest asynchronously; reading batch 4 then fails.
  The error propagates, and by then both saves are committed and both managers closed:
  nothing is left writing when the process goes on to exit."""
  config = train_helpers.tiny_config(phase2, str(tmp_path / "wd"), shards)
  real_iterator = input_pipeline.make_train_iterator
  monkeypatch.setattr(input_pipeline, "make_train_iterator",
                      lambda *a, **k: _RaiseAtBatch(real_iterator(*a, **k), n=4))
  opened = []

  class Recorded(ckpt_lib.TrainCheckpoints):
    def __init__(self, *args, **kwargs):
      super().__init__(*args, **kwargs)
      opened.append(self)

  monkeypatch.setattr(ckpt_lib, "TrainCheckpoints", Recorded)
  with pytest.raises(RuntimeError, match="data source failed"):
    train.train_and_evaluate(config)
  assert len(opened) == 1 and opened[0]._closed  # pylint: disable=protected-access
  for manager in (opened[0].latest, opened[0].best):
    assert not manager.is_saving_in_progress()
  assert os.listdir(os.path.join(config.workdir, "latest")) == ["3"]
  assert os.listdir(os.path.join(config.workdir, "best")) == ["best_step_0003"]
  params, _ = ckpt_lib.load_params(os.path.join(config.workdir, "latest"))
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


def test_misspelt_config_key_is_refused_with_valid_keys():
  result = subprocess.run(
      [sys.executable, "-m", "jaxlm.main", "--config=configs/phase2_5.py:tiny",
       "--config.optimizer.learning_rate=1e-4", "--config.val_evry_opt=5"],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert result.returncode != 0
  assert "Unknown config key 'val_evry_opt'" in result.stderr
  assert "Did you mean val_every_opt" in result.stderr
  for key in ("train_dir", "val_dir", "init_from", "total_opt_steps", "optimizer.grad_clip"):
    assert f"\n  {key}\n" in result.stderr


# ----------------------------------------------------------------------------------
# One step at a time.


def _program_and_batch(shards, tmp_path, rows=4, **overrides):
  config = train_helpers.tiny_config(phase2, str(tmp_path / "wd"), shards, **overrides)
  program = train.build_program(config)
  config.micro_batch_size, config.grad_accum_steps = rows, 1
  batch = next(input_pipeline.make_train_iterator(config, vocab_size=train_helpers.VOCAB))
  return program, batch


def _step(program, batch, accum):
  state = program.init(jax.random.PRNGKey(0))
  return program.train_step(state, program.shard_batch(batch, train.TRAIN_FIELDS, accum))


def _recorded_step(program, batch, accum):
  """One `train.train_step` with the program's optimizer (clipping + AdamW) and the
  gradient recorded: (new params, the step's gradient, metrics), as numpy."""
  optimizer = optax.chain(train_helpers.record_gradients(), program.optimizer)
  step = jax.jit(functools.partial(train.train_step, model=program.model, optimizer=optimizer,
                                   schedule=program.schedule, nonfinite_policy="skip"))
  fresh = program.init(jax.random.PRNGKey(0))
  state = {"params": fresh["params"], "opt_state": optimizer.init(fresh["params"]),
           "train_state": fresh["train_state"]}
  state, metrics = step(state, program.shard_batch(batch, train.TRAIN_FIELDS, accum))
  return jax.device_get((state["params"], state["opt_state"][0], metrics))


def test_gradient_accumulation_equals_one_big_batch(shards, tmp_path):
  program, batch = _program_and_batch(shards, tmp_path)
  weights = batch["loss_weights"]
  # Rows carry different total weight, so averaging per micro batch would differ.
  assert len(set(weights.sum(axis=1).tolist())) > 1
  big_params, big_grads, big = _recorded_step(program, batch, accum=1)  # one batch of 4
  acc_params, acc_grads, acc = _recorded_step(program, batch, accum=4)  # 4 micro batches of 1

  # Loss and gradients are sums over the batch's tokens in another order: equal up to the
  # float32 reordering bound (train_helpers), which a per-micro-batch mean misses by far.
  tol = train_helpers.reorder_tolerance(weights.size)
  np.testing.assert_allclose(acc["loss"], big["loss"], rtol=tol)
  np.testing.assert_allclose(acc["grad_norm"], big["grad_norm"], rtol=tol)
  train_helpers.assert_gradients_close(acc_grads, big_grads, weights.size)

  # Params after the one AdamW step. Its update is lr * g'/(|g'| + eps) (+ weight decay)
  # with g' the clipped gradient: about +-lr whatever |g'| >> eps = 1e-8, so where the
  # gradient is itself at rounding level (a sum of cancelling terms) the last-bit
  # difference above can turn it around: params may differ by 2 lr there, no bound is
  # tighter. Where |g'| >= 1e-4 the update's sensitivity to the gradient,
  # eps * |dg| / g'^2 <= 1e-8 * 1e-6 / 1e-8, is ~1e-6 of lr: params agree to rounding.
  lr = float(big["learning_rate"])
  clip = min(1.0, phase2.get_config("tiny").optimizer.grad_clip / float(big["grad_norm"]))
  flat_big = jax.tree_util.tree_flatten_with_path(big_params)[0]
  for (path, want), got, grad in zip(flat_big, jax.tree.leaves(acc_params),
                                     jax.tree.leaves(big_grads)):
    name = jax.tree_util.keystr(path)
    np.testing.assert_allclose(got, want, rtol=0, atol=2 * lr + 1e-6, err_msg=name)
    steady = np.abs(clip * grad) >= 1e-4
    np.testing.assert_allclose(got[steady], want[steady], rtol=0, atol=1e-6, err_msg=name)
  grads = jax.tree.leaves(big_grads)  # the tight check covers most params
  assert sum((np.abs(clip * g) >= 1e-4).sum() for g in grads) > 0.5 * sum(g.size for g in grads)

  # And the loss is the weighted mean over the whole batch.
  params = program.init(jax.random.PRNGKey(0))["params"]
  nll = np.asarray(jax.jit(train.token_nll, static_argnums=0)(program.model, params, batch))
  expected = (nll * weights).sum() / weights.sum()
  np.testing.assert_allclose(big["loss"], expected, rtol=tol)


def test_zero_weight_tokens_are_removed_from_the_loss(shards, tmp_path):
  program, batch = _program_and_batch(shards, tmp_path)
  masked = batch["loss_weights"] == 0
  assert masked.any() and (~masked).any()
  other = dict(batch)
  other["targets"] = np.where(masked, (batch["targets"] + 7) % train_helpers.VOCAB,
                              batch["targets"])
  state_a, metrics_a = _step(program, batch, accum=2)
  state_b, metrics_b = _step(program, other, accum=2)
  assert float(metrics_a["loss"]) == float(metrics_b["loss"])
  assert allclose_trees(state_a["params"], state_b["params"], atol=0)
  # Changing a weighted target does change the loss (the test can fail).
  changed = dict(batch)
  changed["targets"] = np.where(~masked, (batch["targets"] + 7) % train_helpers.VOCAB,
                                batch["targets"])
  assert float(_step(program, changed, accum=2)[1]["loss"]) != float(metrics_a["loss"])


@pytest.mark.parametrize("policy", ["skip", "stop"])
def test_nonfinite_step_never_writes_bad_params(shards, tmp_path, policy):
  program, batch = _program_and_batch(shards, tmp_path, nonfinite_policy=policy)
  bad = dict(batch)
  bad["loss_weights"] = batch["loss_weights"].copy()
  bad["loss_weights"][0, 5] = np.inf  # -> non-finite loss and gradients
  state = program.init(jax.random.PRNGKey(0))
  start = jax.device_get(state)
  state, metrics = program.train_step(state, program.shard_batch(bad, train.TRAIN_FIELDS, 2))
  assert not bool(metrics["finite"])
  assert allclose_trees(state["params"], start["params"], atol=0)
  assert allclose_trees(state["opt_state"], start["opt_state"], atol=0)
  assert int(state["train_state"]["nonfinite_skipped"]) == 1
  assert int(state["train_state"]["first_nonfinite_step"]) == 1

  after_bad = jax.device_get(state["params"])
  state, metrics = program.train_step(state,
                                      program.shard_batch(batch, train.TRAIN_FIELDS, 2))
  assert bool(metrics["finite"]) and int(state["train_state"]["step"]) == 2
  if policy == "skip":  # the first applied update runs at the schedule's first rate
    assert float(program.schedule(0)) != float(program.schedule(1))
    assert float(metrics["learning_rate"]) == float(program.schedule(0))
  moved = not allclose_trees(state["params"], after_bad, atol=0)
  # 'skip' carries on; 'stop' freezes the params until the host stops the run.
  assert moved == (policy == "skip")


def test_peak_flops_table_and_flops_per_token():
  from jaxlm import metrics as metrics_lib
  from jaxlm import model as model_lib
  assert metrics_lib.peak_flops_per_device("NVIDIA H100 80GB HBM3") == 989e12
  assert metrics_lib.peak_flops_per_device("NVIDIA H200") == 989e12
  assert metrics_lib.peak_flops_per_device("NVIDIA A100-SXM4-40GB") == 312e12
  assert metrics_lib.peak_flops_per_device("NVIDIA A10G") == 125e12
  assert metrics_lib.peak_flops_per_device("cpu") is None  # -> MFU omitted on CPU
