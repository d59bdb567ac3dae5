"""Bad input is refused before any work, naming the culprit, and changes nothing on disk.

Every case runs the real CLI (`python -m jaxlm.main`) against an existing workdir (with a
latest checkpoint), an init_from checkpoint and the shards; the cases run a few at a time
and the digest of all those files must be the same afterwards.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil

import jax
import ml_collections
import numpy as np
import pytest

from configs import phase2, phase2_5, phase3
from jaxlm.data import shards as shards_lib
from jaxlm import checkpoint as ckpt_lib
from jaxlm import input_pipeline
from jaxlm import preflight
from jaxlm import train
from tests import reliability_helpers as rh
from tests import train_helpers
from tests.builders_helpers import tokenizer_path  # noqa: F401  (session fixture)


def _existing_outputs(root: str, shard_dir: str) -> dict[str, str]:
  """A workdir holding a training checkpoint at step 1, and a params-only checkpoint.

  Built without compiling anything: params come from the model's shapes, the optimizer
  state from optax's (eager) init.
  """
  workdir, init_dir = os.path.join(root, "workdir"), os.path.join(root, "models", "init")
  config = train_helpers.tiny_config(phase2, workdir, shard_dir)
  program = train.build_program(config)
  abstract = jax.eval_shape(program.init, jax.random.PRNGKey(0))
  params = jax.tree.map(lambda s: np.full(s.shape, 0.01, s.dtype), abstract["params"])
  model_config = program.model.config.to_dict()
  ckpt_lib.save_params(init_dir, params, model_config)
  iterator = input_pipeline.make_train_iterator(config, vocab_size=train_helpers.VOCAB)
  checkpoints = ckpt_lib.TrainCheckpoints(workdir)
  checkpoints.save_latest(1, {**train.state_from_params(params, program.optimizer),
                              ckpt_lib.MODEL_CONFIG: model_config,
                              ckpt_lib.DATA_ITER: iterator.get_state()})
  checkpoints.close()
  return {"workdir": workdir, "init": init_dir, "config": config}


def _bad_data_dirs(root: str, shard_dir: str) -> dict[str, str]:
  """Broken copies of a split dir, and shards recording another tokenizer."""
  out = {"empty_dir": os.path.join(root, "empty")}
  os.makedirs(out["empty_dir"])
  out["no_tokens"] = os.path.join(root, "no_tokens")
  with shards_lib.ShardDirWriter(out["no_tokens"], vocab_size=train_helpers.VOCAB, bos_id=1,
                                 eos_id=2, splits=("train",)):
    pass
  out["truncated"] = os.path.join(root, "truncated")
  shutil.copytree(os.path.join(shard_dir, "train"), out["truncated"])
  shard = os.path.join(out["truncated"], "shard_00000.bin")
  os.truncate(shard, os.path.getsize(shard) - 10)
  out["truncated_file"] = shard
  out["bad_meta"] = os.path.join(root, "bad_meta")
  shutil.copytree(os.path.join(shard_dir, "val"), out["bad_meta"])
  with open(os.path.join(out["bad_meta"], "meta.json"), "w") as f:
    f.write('{"format": "jaxlm-shards", "shards": [')
  out["other_tokenizer"] = os.path.join(root, "other_tok")
  with shards_lib.ShardDirWriter(
      out["other_tokenizer"], vocab_size=1000, bos_id=1, eos_id=2,
      tokenizer={"path": "/elsewhere/other.model", "sha256": "ab" * 32}) as writer:
    for split in ("train", "val"):
      writer.add(split, np.arange(1, 400) % 1000)
  return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, tokenizer_path):  # noqa: F811
  root = str(tmp_path_factory.mktemp("bad_input"))
  shard_dir = train_helpers.write_shards(os.path.join(root, "shards"))
  outputs = _existing_outputs(root, shard_dir)
  return {"root": root, "shards": shard_dir, "tokenizer": tokenizer_path,
          "fresh": os.path.join(root, "fresh_workdir"),
          "config_file": rh.write_config(os.path.join(root, "config.py"),
                                         outputs["workdir"], shard_dir),
          **outputs, **_bad_data_dirs(root, shard_dir)}


def _missing(w):
  return os.path.join(w["root"], "no_such_dir", "train")


# name -> w -> (override flags, substrings the error must contain). `w` is the `world`.
CASES = {
    "missing train_dir": lambda w: (
        [f"--config.train_dir={_missing(w)}"],
        [f"config.train_dir={_missing(w)}", "does not exist"]),
    "empty val_dir": lambda w: (
        [f"--config.val_dir={w['empty_dir']}"],
        [f"config.val_dir={w['empty_dir']}", "has no meta.json"]),
    "split dir without tokens": lambda w: (
        [f"--config.train_dir={w['no_tokens']}/train"],
        [f"{w['no_tokens']}/train", "holds no tokens"]),
    "truncated shard file": lambda w: (
        [f"--config.train_dir={w['truncated']}"],
        [w["truncated_file"], "truncated or padded shard"]),
    "corrupt meta.json": lambda w: (
        [f"--config.val_dir={w['bad_meta']}"],
        [os.path.join(w["bad_meta"], "meta.json"), "not valid JSON"]),
    "tokenizer larger than model vocab": lambda w: (
        [f"--config.tokenizer={w['tokenizer']}"],
        [f"config.tokenizer={w['tokenizer']} has 1000 pieces", "model.vocab_size=256"]),
    "shards written with another tokenizer": lambda w: (
        [f"--config.workdir={w['fresh']}", f"--config.tokenizer={w['tokenizer']}",
         "--config.model.vocab_size=1000",
         f"--config.train_dir={w['other_tokenizer']}/train",
         f"--config.val_dir={w['other_tokenizer']}/val"],
        [f"config.train_dir={w['other_tokenizer']}/train",
         "records tokenizer /elsewhere/other.model", "abababababab"]),
    "init_from pointing nowhere": lambda w: (
        [f"--config.workdir={w['fresh']}", f"--config.init_from={w['root']}/models/nope"],
        [f"config.init_from={w['root']}/models/nope", "not found"]),
    "init_from another architecture": lambda w: (
        [f"--config.workdir={w['fresh']}", f"--config.init_from={w['init']}",
         "--config.model.d_model=48"],
        [f"config.init_from={w['init']}", "d_model: checkpoint 32 vs config 48"]),
    "resume into another architecture": lambda w: (
        ["--config.model.n_layers=3"],
        [f"config.workdir={w['workdir']}/latest/1", "n_layers: checkpoint 2 vs config 3"]),
    "seq_len beyond model.max_seq_len": lambda w: (
        ["--config.seq_len=64"],
        ["config.seq_len=64", "longer than model.max_seq_len=32"]),
    "seq_len beyond RoPE base, no scaling": lambda w: (
        [f"--config.workdir={w['fresh']}", "--config.model.rope_original_max_len=16"],
        ["config.seq_len=32", "model.rope_original_max_len=16", "rope_scaling='none'"]),
    "unknown attention backend": lambda w: (
        ["--config.model.attention=flash3"],
        ["config.model.attention='flash3' is not a backend", "blockwise"]),
    "cudnn attention on CPU": lambda w: (
        ["--config.model.attention=cudnn"],
        ["config.model.attention='cudnn' needs an NVIDIA GPU", "'cpu'"]),
    "splash attention off TPU": lambda w: (
        ["--config.model.attention=splash"],
        ["config.model.attention='splash' needs a TPU", "'cpu'"]),
    "misspelt config key": lambda w: (
        ["--config.model.d_modle=48"],
        ["Unknown config key 'model.d_modle'", "Did you mean model.d_model"]),
}


@pytest.fixture(scope="module")
def results(world):
  """Runs every case through the CLI, checking that nothing on disk changed."""
  watched = (world["workdir"], world["init"], world["shards"], world["truncated"])
  before = rh.tree_digest(*watched)

  def run(name):
    flags, _ = CASES[name](world)
    return name, rh.run(rh.main_command(world["config_file"], *flags), timeout=180)

  with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    out = dict(pool.map(run, CASES))
  assert rh.tree_digest(*watched) == before, "a refused run changed existing outputs"
  assert not os.path.exists(world["fresh"]), "a refused run created its workdir"
  return out


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_naming_the_culprit(world, results, case):
  _, expected = CASES[case](world)
  result = results[case]
  assert result.returncode != 0, result.stderr[-2000:]
  for text in expected:
    assert text in result.stderr, f"{text!r} not in:\n{result.stderr[-3000:]}"
  assert "Traceback" not in result.stderr  # a message, not a crash
  assert "Model:" not in result.stderr  # refused before params were allocated


# ----------------------------------------------------------------------------------
# The same checks in-process: what passes, and the RoPE rule on the real phase configs.


def test_good_config_passes_preflight(world):
  preflight.check(world["config"])  # resumes world["workdir"]: same architecture
  fresh = train_helpers.tiny_config(phase2, world["fresh"], world["shards"],
                                    init_from=world["init"])
  preflight.check(fresh)
  assert not os.path.exists(world["fresh"])


def test_several_problems_are_listed_together(world):
  config = train_helpers.tiny_config(phase2, world["fresh"], world["shards"],
                                     init_from=world["init"], val_dir=world["empty_dir"])
  config.model.n_heads, config.model.attention = 4, "splash"
  with pytest.raises(preflight.PreflightError) as error:
    preflight.check(config)
  message = str(error.value)
  assert message.startswith("3 problem(s)")
  assert "n_heads: checkpoint 2 vs config 4" in message
  assert world["empty_dir"] in message and "'splash' needs a TPU" in message


def _rope(config, start=None):
  return preflight.rope_problems(config.model, config.seq_len, start)


def test_rope_rule_on_the_phase_configs():
  p2, p25, p3 = phase2.get_config(), phase2_5.get_config(), phase3.get_config()
  p2_final = p2.model.to_dict()  # what phase 2 saves with its final params
  assert _rope(p2) == []  # 2k: nothing to extend
  # Phase 2.5: 8k from phase 2's params, RoPE base 10k -> 500k, no scaling: passes.
  assert p25.model.rope_scaling == "none" and _rope(p25, p2_final) == []
  assert _rope(p25) == []  # no checkpoint: 500k is above the default base
  # Phase 3: 8k from phase 2.5's best, which was built for 8k with the same base.
  assert _rope(p3, p25.model.to_dict()) == []
  # Forgetting to raise the base (or to scale) at 8k is refused, naming the keys.
  p25.model.rope_theta = 10_000.0
  [problem] = _rope(p25, p2_final)
  assert "config.seq_len=8192" in problem and "rope_original_max_len=2048" in problem
  assert "start checkpoint's rope_theta=10000" in problem
  p25.model.rope_scaling, p25.model.rope_scaling_factor = "yarn", 4.0
  assert _rope(p25, p2_final) == []
  # Resuming phase 2.5 itself: its own checkpoint was built for 8k with base 500k.
  assert _rope(phase2_5.get_config(), phase2_5.get_config().model.to_dict()) == []


def test_split_dirs_with_different_tokenizers_are_refused(world):
  config = train_helpers.tiny_config(phase2, world["fresh"], world["shards"])
  config.model.vocab_size = 1000
  # train_dir recorded no tokenizer; make val record one and train another.
  config.train_dir = os.path.join(world["other_tokenizer"], "train")
  other_val = os.path.join(world["root"], "other_val")
  shutil.copytree(os.path.join(world["other_tokenizer"], "val"), other_val)
  meta_path = os.path.join(other_val, "meta.json")
  with open(meta_path) as f:
    meta = json.load(f)
  meta["tokenizer"] = {"path": "/elsewhere/third.model", "sha256": "cd" * 32}
  shards_lib.atomic_write_json(meta_path, meta)
  config.val_dir = other_val
  with pytest.raises(preflight.PreflightError, match="the splits use different tokenizers"):
    preflight.check(config)


def test_mixture_source_that_is_missing_is_named(world):
  config = train_helpers.tiny_config(phase2, world["fresh"], world["shards"])
  missing = os.path.join(world["root"], "gone", "train")
  config.data.sources = ml_collections.ConfigDict({
      "web": (os.path.join(world["shards"], "train"), 0.7), "code": (missing, 0.3)})
  with pytest.raises(preflight.PreflightError) as error:
    preflight.check(config)
  assert f"config.data.sources.code={missing}: data directory {missing} does not exist" in str(
      error.value)
  assert "data.sources.web" not in str(error.value)
