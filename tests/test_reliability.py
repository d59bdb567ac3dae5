"""Fault tolerance: killed runs resume exactly, non-finite steps, killed data builders.

The training runs are real `python -m jaxlm.main` subprocesses on the tiny test model,
killed with SIGKILL at seeded points (inside a step, while Orbax writes a checkpoint,
during validation) and restarted with the same command; the end result must equal an
uninterrupted run's: the same loss at every step, the same checkpoints, the same final
params. The processes share a JAX compilation cache, so only the first one compiles.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sys
import time

import jax
import numpy as np
import pytest

from configs import phase2
from jaxlm.data import shards as shards_lib
from data_pipeline import tool_synth
from jaxlm import checkpoint as ckpt_lib
from jaxlm import input_pipeline
from jaxlm import train
from tests import reliability_helpers as rh
from tests import train_helpers
from tests.builders_helpers import tokenizer_path  # noqa: F401  (session fixture)

SEED = 1  # picks the kill points
STEPS, CHECKPOINT_EVERY, VAL_EVERY = 16, 2, 4


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return tmp_path_factory.mktemp("reliability")


@pytest.fixture(scope="module")
def shard_dir(root):
  return train_helpers.write_shards(str(root / "shards"))


def _run_config(root, name, shard_dir):
  return rh.write_config(
      str(root / f"{name}_config.py"), str(root / name), shard_dir,
      total_opt_steps=STEPS, checkpoint_every_opt=CHECKPOINT_EVERY, val_every_opt=VAL_EVERY,
      keep_latest=2, log_every=1, final_dir=str(root / f"{name}_final"))


def _new_record(workdir, step, since, kind="train"):
  """The record of `step` written by a process started at `since`, if any."""
  record = rh.records(workdir, kind).get(step)
  return record if record and record["time"] >= since else None


def _temps(*dirs, min_step=0):
  """Orbax temp dirs on disk, by (name, inode): a rewrite under the same name is new."""
  found = set()
  for d in dirs:
    for name in rh.temp_names(d):
      try:
        if int(re.search(r"(\d+)\.orbax", name).group(1)) >= min_step:
          found.add((name, os.stat(os.path.join(d, name)).st_ino))
      except FileNotFoundError:  # committed (renamed) meanwhile
        pass
  return found


def _committed_step(latest):
  return int(rh.checkpoint_names(latest)[-1])


def test_killed_runs_resume_to_the_uninterrupted_result(root, shard_dir):
  rng = random.Random(SEED)
  cache = str(root / "jax_cache")
  reference = rh.run(rh.main_command(_run_config(root, "reference", shard_dir)),
                     compile_cache=cache)
  assert reference.returncode == 0, reference.stderr[-3000:]

  workdir = str(root / "killed")
  latest, best = os.path.join(workdir, "latest"), os.path.join(workdir, "best")
  command = rh.main_command(_run_config(root, "killed", shard_dir))
  log = str(root / "killed.log")
  expected_resumes = []

  def start():
    return rh.start(command, log, compile_cache=cache)

  # 1. SIGINT after a seeded step: the run saves where it stopped and exits 1.
  stop_at = rng.randint(1, 3)
  process = start()
  assert rh.wait_for(lambda: rh.records(workdir).get(stop_at), process)
  process.send_signal(signal.SIGINT)
  assert process.wait(timeout=120) == 1
  stopped = max(rh.records(workdir))
  assert rh.checkpoint_names(latest)[-1] == str(stopped)
  print(f"SIGINT after step {stop_at}: saved step {stopped}, exit 1")

  # 2. SIGKILL at a seeded moment inside a step (between two log lines).
  expected_resumes.append(_committed_step(latest))
  since, target = time.time(), stopped + rng.randint(2, 5)
  process = start()
  assert rh.wait_for(lambda: _new_record(workdir, target, since), process)
  time.sleep(rng.uniform(0, 0.02))
  process.kill()
  process.wait()
  print(f"SIGKILL after step {target}'s log line: last logged step "
        f"{max(rh.records(workdir))}, committed {rh.checkpoint_names(latest)}")

  # 3. SIGKILL while Orbax writes the checkpoint of a seeded step (its temp dir is on disk).
  # A kill that lands just after the rename is only a mid-step kill: try again (rare).
  for _ in range(3):
    expected_resumes.append(_committed_step(latest))
    min_step = expected_resumes[-1] + CHECKPOINT_EVERY * rng.randint(1, 2)
    before = _temps(latest, best)
    process = start()
    caught = rh.wait_for(lambda: _temps(latest, best, min_step=min_step) - before, process)
    process.kill()
    process.wait()
    assert caught, "the run ended before a checkpoint write could be interrupted"
    if caught <= _temps(latest, best):  # the partial checkpoint is left on disk...
      break
  else:
    pytest.fail("every kill landed after the checkpoint write had finished")
  print(f"SIGKILL during checkpoint write: {sorted(n for n, _ in caught)} left on disk, "
        f"committed {rh.checkpoint_names(latest)} {rh.checkpoint_names(best)}")

  # 4. SIGKILL during validation: the val step's train record is out, its val record not.
  for _ in range(3):
    expected_resumes.append(_committed_step(latest))  # ...and never resumed from
    since = time.time()
    val_step = (expected_resumes[-1] // VAL_EVERY + 1) * VAL_EVERY
    process = start()
    assert rh.wait_for(lambda: _new_record(workdir, val_step, since), process)
    process.kill()
    process.wait()
    if not _new_record(workdir, val_step, since, "val"):
      break
  else:
    pytest.fail("every kill landed after validation had finished")
  print(f"SIGKILL during validation at step {val_step}")

  # 5. The same command once more, to the end.
  expected_resumes.append(_committed_step(latest))
  final = rh.run(command, compile_cache=cache)
  assert final.returncode == 0, final.stderr[-3000:]
  with open(log) as f:
    resumed = [int(s) for s in re.findall(r"Resumed at step (\d+)", f.read() + final.stderr)]
  assert resumed == expected_resumes
  print(f"resumed at steps {resumed}")

  ref_dir = str(root / "reference")
  for kind in ("train", "val"):
    want, got = rh.records(ref_dir, kind), rh.records(workdir, kind)
    assert sorted(got) == sorted(want)
    for key in ("loss", "grad_norm", "learning_rate") if kind == "train" else ("loss",):
      np.testing.assert_allclose([got[s][key] for s in sorted(got)],
                                 [want[s][key] for s in sorted(want)], atol=1e-6, rtol=0)
  assert sorted(rh.records(ref_dir)) == list(range(1, STEPS + 1))
  for sub in ("latest", "best"):
    assert rh.checkpoint_names(os.path.join(workdir, sub)) == rh.checkpoint_names(
        os.path.join(ref_dir, sub))
    assert rh.temp_names(os.path.join(workdir, sub)) == []  # cleaned up on restart
  ref_params, _ = ckpt_lib.load_params(str(root / "reference_final"))
  params, _ = ckpt_lib.load_params(str(root / "killed_final"))
  for a, b in zip(jax.tree.leaves(ref_params), jax.tree.leaves(params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=0)


def test_uncommitted_checkpoint_is_ignored_then_deleted(tmp_path):
  """A temp dir left by a save that was killed, for a step never saved again (e.g. a
  SIGTERM save at an odd step), is not resumed from and goes away on the next save."""
  state = {"params": {"w": np.ones(3, np.float32)}, "opt_state": {"m": np.zeros(3, np.float32)},
           "train_state": {"step": np.int32(2)}, ckpt_lib.MODEL_CONFIG: {"d_model": 3},
           ckpt_lib.DATA_ITER: {"position": 2}}
  checkpoints = ckpt_lib.TrainCheckpoints(str(tmp_path))
  checkpoints.save_latest(2, state)
  checkpoints.close()
  for partial in ("latest/5.orbax-checkpoint-tmp", "best/best_step_0005.orbax-checkpoint-tmp"):
    os.makedirs(tmp_path / partial / "params")
    (tmp_path / partial / "params" / "half_written").write_bytes(b"\0" * 100)

  checkpoints = ckpt_lib.TrainCheckpoints(str(tmp_path))
  assert checkpoints.latest_step() == 2
  assert ckpt_lib.resolve_checkpoint_dir(str(tmp_path / "latest")).endswith("latest/2")
  checkpoints.save_latest(3, state)
  checkpoints.save_best(3, state, val_loss=0.5)
  checkpoints.close()
  assert sorted(os.listdir(tmp_path / "latest")) == ["2", "3"]
  assert os.listdir(tmp_path / "best") == ["best_step_0003"]


# ----------------------------------------------------------------------------------
# Non-finite loss or gradients, end to end through train_and_evaluate.


class _PoisonBatch:
  """Wraps the Grain iterator: batch number `n` (from 1) gets one bad loss weight."""

  def __init__(self, iterator, n, value):
    self.iterator, self.n, self.value, self.count = iterator, n, value, 0

  def __next__(self):
    batch = next(self.iterator)
    self.count += 1
    if self.count == self.n:
      batch = dict(batch, loss_weights=batch["loss_weights"].copy())
      batch["loss_weights"][0, 3] = self.value
    return batch

  def get_state(self):
    return self.iterator.get_state()

  def set_state(self, state):
    self.iterator.set_state(state)


def _poison(monkeypatch, n, value):
  real = input_pipeline.make_train_iterator
  monkeypatch.setattr(input_pipeline, "make_train_iterator",
                      lambda *a, **k: _PoisonBatch(real(*a, **k), n, value))


def _nan_config(root, shard_dir, name, policy):
  return train_helpers.tiny_config(
      phase2, str(root / name), shard_dir, nonfinite_policy=policy, total_opt_steps=6,
      checkpoint_every_opt=1, keep_latest=10, val_every_opt=3, log_every=1, tensorboard=False)


def _step_params(workdir, step):
  params, _ = ckpt_lib.load_params(os.path.join(workdir, "latest", str(step)))
  return jax.tree.leaves(params)


def test_nan_in_a_batch_is_skipped_and_counted(root, shard_dir, monkeypatch):
  # A NaN weight makes the gradients NaN (0 * NaN in the backward pass).
  config = _nan_config(root, shard_dir, "nan_skip", "skip")
  _poison(monkeypatch, n=3, value=np.nan)
  result = train.train_and_evaluate(config)
  assert result["step"] == 6 and result["nonfinite_skipped"] == 1

  records = rh.records(config.workdir)
  assert [records[s]["nonfinite_skipped"] for s in range(1, 7)] == [0, 0, 1, 1, 1, 1]
  assert records[3]["loss"] is None  # no finite loss to report at the bad step
  assert all(np.isfinite(records[s]["loss"]) for s in (1, 2, 4, 5, 6))
  # The bad step left params alone; training then went on; nothing non-finite was saved.
  for a, b in zip(_step_params(config.workdir, 2), _step_params(config.workdir, 3)):
    np.testing.assert_array_equal(a, b)
  assert any(not np.array_equal(a, b) for a, b in zip(_step_params(config.workdir, 3),
                                                      _step_params(config.workdir, 4)))
  for step in range(1, 7):
    assert all(np.isfinite(x).all() for x in _step_params(config.workdir, step))


def test_inf_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    root, shard_dir, monkeypatch):
  # An infinite weight makes the loss itself non-finite (inf / inf).
  config = _nan_config(root, shard_dir, "nan_stop", "stop")
  _poison(monkeypatch, n=4, value=np.inf)
  with pytest.raises(train.NonFiniteError) as error:
    train.train_and_evaluate(config)
  message = str(error.value)
  assert "optimizer step 4" in message and "nonfinite_policy='stop'" in message
  assert f"last good checkpoint is step 3 in {config.workdir}/latest" in message
  assert rh.checkpoint_names(os.path.join(config.workdir, "latest")) == ["1", "2", "3"]
  assert rh.checkpoint_names(os.path.join(config.workdir, "best")) == ["best_step_0003"]
  assert max(rh.records(config.workdir)) == 4
  assert all(np.isfinite(x).all() for x in _step_params(config.workdir, 3))


# ----------------------------------------------------------------------------------
# Data tools: killed mid-write, rerun with the same command.


def _relative_digest(directory):
  return {os.path.relpath(k, directory): v for k, v in rh.tree_digest(directory).items()}


def _hidden_temps(out_dir):
  parent, name = os.path.split(out_dir)
  return [n for n in os.listdir(parent) if n.startswith(f".{name}.tmp-")]


def _files_in_temp(out_dir):
  parent = os.path.dirname(out_dir)
  return sum(len(files) for t in _hidden_temps(out_dir)
             for _, _, files in os.walk(os.path.join(parent, t)))


def _write_source(path, seed, docs):
  rng = np.random.default_rng(seed)
  with shards_lib.ShardDirWriter(path, vocab_size=train_helpers.VOCAB, bos_id=1,
                                 eos_id=2) as writer:
    for split, count in (("train", docs), ("val", docs // 8)):
      for _ in range(count):
        body = rng.integers(3, train_helpers.VOCAB, int(rng.integers(20, 200)))
        writer.add(split, [1, *body.tolist(), 2],
                   loss_weights=[0, *rng.integers(0, 3, body.size).tolist(), 1])
  return path


def test_interleave_killed_mid_write_reruns_to_identical_bytes(tmp_path):
  a = _write_source(str(tmp_path / "a"), 0, 500)
  b = _write_source(str(tmp_path / "b"), 1, 400)

  def command(out_dir):
    return [sys.executable, "-m", "data_pipeline.interleave", "--out_dir", out_dir,
            "--target_train_tokens", "60000", "--target_val_tokens", "6000",
            "--block_tokens", "64", "--shard_tokens", "256", "--seed", "3",
            "--source", f"a={a}:0.6", "--source", f"b={b}:0.4"]

  reference = str(tmp_path / "reference")
  assert rh.run(command(reference)).returncode == 0
  out_dir = str(tmp_path / "mixed")
  kill_after_files = random.Random(SEED).randint(20, 300)
  process = rh.start(command(out_dir), str(tmp_path / "log"))
  assert rh.wait_for(lambda: _files_in_temp(out_dir) >= kill_after_files, process)
  process.kill()
  process.wait()
  assert not os.path.exists(out_dir)  # nothing under the final name...
  assert _hidden_temps(out_dir)  # ...the half-written shards are in the hidden temp dir

  rerun = rh.run(command(out_dir))
  assert rerun.returncode == 0, rerun.stderr
  assert _relative_digest(out_dir) == _relative_digest(reference)
  assert _hidden_temps(out_dir) == []


def _tool_synth_args(out_dir, tokenizer_path):  # noqa: F811
  return ["--out_dir", out_dir, "--tokenizer", tokenizer_path, "--seq_len", "512",
          "--target_train_tokens", "30000", "--target_val_tokens", "3000",
          "--shard_tokens", "1024", "--eval_examples", "20", "--quiet"]


def test_builder_commits_its_extras_with_the_shards(
    tmp_path, tokenizer_path, monkeypatch):  # noqa: F811
  committed = {}
  real_commit = shards_lib.atomic_dir_commit

  def commit(tmp_dir, out_dir, overwrite):
    committed[out_dir] = sorted(os.listdir(tmp_dir))
    real_commit(tmp_dir, out_dir, overwrite)

  monkeypatch.setattr(shards_lib, "atomic_dir_commit", commit)
  out_dir = str(tmp_path / "tools")
  tool_synth.main(_tool_synth_args(out_dir, tokenizer_path))
  # eval.jsonl (held-out schemas), eval_seen.jsonl (training schemas) and report.json were
  # in the staging dir when it was renamed, and nothing was added afterwards: a kill can
  # never leave shards without them.
  assert committed[out_dir] == ["eval.jsonl", "eval_seen.jsonl", "report.json", "train", "val"]
  assert sorted(os.listdir(out_dir)) == committed[out_dir]


def test_builder_killed_mid_write_reruns_to_identical_bytes(tmp_path, tokenizer_path):  # noqa: F811
  reference = str(tmp_path / "reference")
  tool_synth.main(_tool_synth_args(reference, tokenizer_path))
  out_dir = str(tmp_path / "tools")
  command = [sys.executable, "-m", "data_pipeline.tool_synth",
             *_tool_synth_args(out_dir, tokenizer_path)]
  kill_after_files = random.Random(SEED).randint(3, 40)
  process = rh.start(command, str(tmp_path / "log"))
  assert rh.wait_for(lambda: _files_in_temp(out_dir) >= kill_after_files, process)
  process.kill()
  process.wait()
  assert not os.path.exists(out_dir) and _hidden_temps(out_dir)

  rerun = rh.run(command)
  assert rerun.returncode == 0, rerun.stderr
  digest, reference_digest = _relative_digest(out_dir), _relative_digest(reference)
  del digest["report.json"], reference_digest["report.json"]  # it holds timings
  assert digest == reference_digest
  assert _hidden_temps(out_dir) == []
