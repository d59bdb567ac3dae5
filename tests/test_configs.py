"""Phase configs: plan numbers, tiny variants, one model shape across the phase chain."""

from __future__ import annotations

import importlib

import jax
import pytest

from configs import common
from jaxlm import model as model_lib

PHASES = ("phase1", "phase2", "phase2_5", "phase3")


def load(phase, arg=None):
  module = importlib.import_module(f"configs.{phase}")
  return module.get_config(arg) if arg else module.get_config()


def tokens_per_run(c):
  return c.seq_len * c.micro_batch_size * c.grad_accum_steps * c.total_opt_steps


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("arg", [None, "tiny"])
def test_config_is_complete_and_valid(phase, arg):
  c = load(phase, arg)
  base = common.get_base_config()
  # Same keys as the base config, at every level (nothing added, nothing lost).
  assert sorted(c.keys()) == sorted(base.keys())
  for group in ("optimizer", "model", "data", "mesh"):
    assert sorted(c[group].keys()) == sorted(base[group].keys())
  model_lib.model_config(c.model)  # the model accepts every model key
  assert c.seq_len <= c.model.max_seq_len
  assert c.optimizer.schedule in ("cosine", "wsd")
  assert c.nonfinite_policy in ("skip", "stop")
  assert c.train_dir.endswith("/train") and c.val_dir.endswith("/val")


@pytest.mark.parametrize("phase", PHASES)
def test_docstring_gives_command_and_expectations(phase):
  doc = importlib.import_module(f"configs.{phase}").get_config.__doc__
  assert f"python -m jaxlm.main --config=configs/{phase}.py" in doc
  assert f"--config=configs/{phase}.py:tiny" in doc
  assert "Expected" in doc and "Purpose" in doc


def test_plan_numbers():
  p1, p2, p25, p3 = (load(p) for p in PHASES)
  assert p1.seq_len == p2.seq_len == 2048
  assert p25.seq_len == p3.seq_len == 8192 == p25.model.max_seq_len
  assert (p25.total_opt_steps, p25.val_every_opt) == (2000, 200)
  assert (p3.total_opt_steps, p3.val_every_opt) == (1000, 100)
  assert p25.train_dir == "data/shards/phase2_5_mixed/train"
  assert p25.val_dir == "data/shards/phase2_5_mixed/val"
  assert p3.train_dir == "data/shards/phase3_mixed/train"
  assert p3.val_dir == "data/shards/phase3_mixed/val"
  assert 1.0e9 <= tokens_per_run(p25) <= 1.1e9  # ~1B-token bridge
  assert 0.5e9 <= tokens_per_run(p3) <= 0.55e9  # ~0.5B-token refine
  assert p2.model.rope_theta == 10_000.0 and p25.model.rope_theta == 500_000.0
  assert p3.model.rope_theta == 500_000.0
  assert p25.micro_batch_size == 1 and p25.model.remat == "full"
  assert p25.model.compute_dtype == "bfloat16"
  assert p3.model.cross_document_attention is False
  # The chain: each phase starts from the previous one's output.
  assert p2.init_from == p1.final_dir
  assert p25.init_from == p2.final_dir == "models/phase2_final"
  assert p3.init_from == p25.workdir + "/best"


def test_default_model_is_about_350m_and_shared_by_all_phases():
  shapes = []
  for phase in PHASES:
    c = load(phase)
    n = model_lib.count_params(model_lib.model_config(c.model), non_embedding=False)
    assert 330e6 <= n <= 370e6, (phase, n)
    params = jax.eval_shape(lambda c=c: model_lib.init_params(
        model_lib.model_config(c.model), jax.random.PRNGKey(0)))
    shapes.append(jax.tree.map(lambda x: x.shape, params))
  assert all(s == shapes[0] for s in shapes)


def test_tiny_variants_are_small_and_chained():
  for phase in PHASES:
    c = load(phase, "tiny")
    n = model_lib.count_params(model_lib.model_config(c.model), non_embedding=False)
    assert n < 5e6 and c.total_opt_steps <= 20 and c.seq_len <= 128
    assert c.workdir.startswith("workdirs/tiny/")
  assert load("phase2_5", "tiny").init_from == load("phase2", "tiny").final_dir
  assert load("phase3", "tiny").init_from == load("phase2_5", "tiny").workdir + "/best"


def test_unknown_config_argument_is_refused():
  with pytest.raises(ValueError, match="tiny"):
    load("phase2_5", "tinny")
