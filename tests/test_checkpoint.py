"""Params checkpoints and the latest/best managers (jaxlm/checkpoint.py)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm import checkpoint as ckpt_lib


def make_params(scale=1.0):
  return {"embed": {"embedding": jnp.full((8, 4), scale, jnp.float32)},
          "final_norm": {"scale": jnp.arange(4, dtype=jnp.float32) * scale}}


def make_state(scale):
  params = make_params(scale)
  return {"params": params, "opt_state": {"mu": params, "count": jnp.int32(3)},
          "train_state": {"step": jnp.int32(7)}, "model_config": {"d_model": 4},
          "data_iter": {"position": int(scale * 10)}}


def assert_tree_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_and_load_params_round_trip(tmp_path):
  path = str(tmp_path / "models" / "phase2_final")
  ckpt_lib.save_params(path, make_params(), {"d_model": 4, "rope_theta": 10000.0})
  params, config = ckpt_lib.load_params(path)
  assert_tree_equal(params, make_params())
  assert config == {"d_model": 4, "rope_theta": 10000.0}
  # With an abstract tree: dtypes follow the target, names and shapes are checked.
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, jnp.bfloat16), make_params())
  params, _ = ckpt_lib.load_params(path, abstract)
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(params))


def test_save_params_replaces_atomically(tmp_path):
  path = str(tmp_path / "final")
  ckpt_lib.save_params(path, make_params(1.0), {"v": 1})
  ckpt_lib.save_params(path, make_params(2.0), {"v": 2})
  params, config = ckpt_lib.load_params(path)
  assert config == {"v": 2}
  assert_tree_equal(params, make_params(2.0))
  assert sorted(os.listdir(tmp_path)) == ["final"]  # no temporary or old siblings left


def test_mismatched_params_are_listed(tmp_path):
  path = str(tmp_path / "final")
  ckpt_lib.save_params(path, make_params(), {})
  wanted = {"embed": {"embedding": jax.ShapeDtypeStruct((8, 6), jnp.float32)},
            "lm_head": {"kernel": jax.ShapeDtypeStruct((6, 8), jnp.float32)}}
  with pytest.raises(ValueError) as error:
    ckpt_lib.load_params(path, wanted)
  message = str(error.value)
  assert path in message and "3 mismatched" in message
  assert "embed/embedding: checkpoint (8, 4) vs model (8, 6)" in message
  assert "lm_head/kernel: missing in checkpoint" in message
  assert "final_norm/scale: in checkpoint (4,) but not in the model" in message


def test_missing_or_empty_paths_name_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="nowhere"):
    ckpt_lib.load_params(str(tmp_path / "nowhere"))
  (tmp_path / "empty").mkdir()
  (tmp_path / "empty" / "notes.txt").write_text("x")
  with pytest.raises(FileNotFoundError, match="notes.txt"):
    ckpt_lib.load_params(str(tmp_path / "empty"))


def test_latest_keeps_two_and_resumes_everything(tmp_path):
  checkpoints = ckpt_lib.TrainCheckpoints(str(tmp_path / "wd"), keep_latest=2)
  for step in (1, 2, 3):
    checkpoints.save_latest(step, make_state(float(step)))
  checkpoints.wait_until_finished()
  assert sorted(os.listdir(tmp_path / "wd" / "latest")) == ["2", "3"]
  abstract = jax.eval_shape(lambda: {k: make_state(0.0)[k]
                                     for k in ("params", "opt_state", "train_state")})
  restored = checkpoints.restore_latest(abstract)
  checkpoints.close()
  expected = make_state(3.0)
  for key in ("params", "opt_state", "train_state"):
    assert_tree_equal(restored[key], expected[key])
  assert restored["data_iter"] == {"position": 30}
  assert restored["model_config"] == {"d_model": 4}
  # load_params reads the params of a training checkpoint: manager root or step dir.
  assert_tree_equal(ckpt_lib.load_params(str(tmp_path / "wd" / "latest"))[0], make_params(3.0))
  assert_tree_equal(ckpt_lib.load_params(str(tmp_path / "wd" / "latest" / "2"))[0],
                    make_params(2.0))


def test_best_keeps_only_the_lowest_val_loss(tmp_path):
  checkpoints = ckpt_lib.TrainCheckpoints(str(tmp_path / "wd"))
  assert checkpoints.save_best(200, make_state(2.0), val_loss=3.0)
  assert checkpoints.save_best(400, make_state(4.0), val_loss=2.0)
  assert not checkpoints.save_best(600, make_state(6.0), val_loss=2.5)
  checkpoints.wait_until_finished()
  assert os.listdir(tmp_path / "wd" / "best") == ["best_step_0400"]
  checkpoints.close()
  # A fresh manager (a resumed run) knows the best so far.
  checkpoints = ckpt_lib.TrainCheckpoints(str(tmp_path / "wd"))
  assert not checkpoints.save_best(800, make_state(8.0), val_loss=2.1)
  assert checkpoints.save_best(1000, make_state(10.0), val_loss=1.5)
  checkpoints.close()
  assert os.listdir(tmp_path / "wd" / "best") == ["best_step_1000"]
  assert_tree_equal(ckpt_lib.load_params(str(tmp_path / "wd" / "best"))[0], make_params(10.0))


def test_uncommitted_saves_are_never_picked_up(tmp_path):
  root = tmp_path / "latest"
  ckpt_lib.save_params(str(root / "5"), make_params(5.0), {})
  # What a save killed halfway leaves behind: Orbax's temporary name, params inside.
  partial = root / "9.orbax-checkpoint-tmp-1234"
  (partial / "params").mkdir(parents=True)
  assert ckpt_lib.resolve_checkpoint_dir(str(root)) == str(root / "5")
  assert_tree_equal(ckpt_lib.load_params(str(root))[0], make_params(5.0))
