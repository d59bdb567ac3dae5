"""data_pipeline.interleave: shares, whole blocks, determinism, provenance, refusals."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipeline import interleave
from jaxlm.data import shards
from tests.data_core_helpers import random_documents, tree_digest, write_shard_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BLOCK = 8
WEIGHTS = {"web": 0.5, "code": 0.3, "math": 0.2}


def run_cli(*args):
  return subprocess.run([sys.executable, "-m", "data_pipeline.interleave", *map(str, args)],
                        cwd=REPO, capture_output=True, text=True)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
  base = tmp_path_factory.mktemp("sources")
  dirs = {}
  for i, (name, weight) in enumerate(WEIGHTS.items()):
    rng = np.random.default_rng(i)
    # ~10% more than a 10k-block mixture needs from this source.
    n_train = int(weight * 10_000 * BLOCK * 1.1 / 22)
    write_shard_dir(str(base / name), {"train": random_documents(rng, n_train),
                                       "val": random_documents(rng, 60)},
                    source=name, weights=(name == "code"), shard_tokens=20_000)
    dirs[name] = str(base / name)
  return dirs


def source_flags(dirs, weights=WEIGHTS):
  return [interleave.Source(n, dirs[n], w) for n, w in weights.items()]


@pytest.fixture(scope="module")
def mixed(sources, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("mixed") / "mix")
  logs = []
  report = interleave.interleave(source_flags(sources), out,
                                 target_tokens={"train": 10_000 * BLOCK, "val": 1003},
                                 block_tokens=BLOCK, seed=3, shard_tokens=30_000,
                                 log=logs.append)
  return out, report, logs


def test_shares_match_weights_over_10k_blocks(mixed):
  out, report, logs = mixed
  sd = shards.SplitDir(os.path.join(out, "train"))
  assert sd.num_tokens == 10_000 * BLOCK and len(sd.shards) == 3
  assert sd.sources == list(WEIGHTS)
  per_token = np.concatenate([np.asarray(s) for s in sd.source_ids])
  shares = np.bincount(per_token, minlength=3) / per_token.size
  np.testing.assert_allclose(shares, list(WEIGHTS.values()), atol=0.01)
  assert report["train"] == {n: round(w * 10_000) * BLOCK for n, w in WEIGHTS.items()}
  assert sd.meta["tokens_per_source"] == report["train"]
  # Spread evenly: even the first 1000 blocks hold the sources close to their shares.
  first = np.bincount(per_token[: 1000 * BLOCK: BLOCK], minlength=3) / 1000
  np.testing.assert_allclose(first, list(WEIGHTS.values()), atol=0.01)
  # Val: 1003 tokens -> 125 whole blocks (within one block of the target).
  val = shards.SplitDir(os.path.join(out, "val"))
  assert val.num_tokens == 125 * BLOCK
  assert any(l.startswith("train: 80000 tokens") for l in logs)
  assert any("web" in l and "share 0.5000" in l for l in logs)


def test_blocks_are_whole_source_blocks_with_their_weights(mixed, sources):
  out, _, _ = mixed
  sd = shards.SplitDir(os.path.join(out, "train"))
  assert sd.meta["has_loss_weights"]
  streams = {}
  for name in WEIGHTS:
    src = shards.SplitDir(os.path.join(sources[name], "train"))
    data = src.read(0, src.num_tokens // BLOCK * BLOCK)
    streams[name] = {k: v.reshape(-1, BLOCK) for k, v in data.items()}
  rng = np.random.default_rng(0)
  for b in rng.choice(10_000, 300, replace=False):
    block = sd.read(int(b) * BLOCK, BLOCK)
    assert (block["source_ids"] == block["source_ids"][0]).all()
    name = sd.sources[block["source_ids"][0]]
    rows = np.flatnonzero((streams[name]["tokens"] == block["tokens"]).all(axis=1))
    assert rows.size, f"block {b} is not a block of {name}"
    np.testing.assert_array_equal(streams[name]["loss_weights"][rows[0]], block["loss_weights"])
  # No block used twice without --allow_repeat.
  all_blocks = sd.read(0, sd.num_tokens)["tokens"].reshape(-1, BLOCK)
  assert np.unique(all_blocks, axis=0).shape[0] == 10_000


def test_same_seed_same_bytes_other_seed_other_order(sources, mixed, tmp_path):
  out, _, _ = mixed
  target = {"train": 10_000 * BLOCK, "val": 1003}
  again = str(tmp_path / "again")
  interleave.interleave(source_flags(sources), again, target_tokens=target, block_tokens=BLOCK,
                        seed=3, shard_tokens=30_000, log=lambda _: None)
  assert tree_digest(again) == tree_digest(out)
  other = str(tmp_path / "other")
  interleave.interleave(source_flags(sources), other, target_tokens=target, block_tokens=BLOCK,
                        seed=4, shard_tokens=30_000, log=lambda _: None)
  a = shards.SplitDir(os.path.join(out, "train")).read(0, 4000)["tokens"]
  b = shards.SplitDir(os.path.join(other, "train")).read(0, 4000)["tokens"]
  assert not np.array_equal(a, b)


def test_too_small_source_is_named_unless_repeat_allowed(sources, tmp_path):
  target = {"train": 20_000 * BLOCK, "val": 0}
  with pytest.raises(ValueError, match=r"source 'web' .* too small for its train share: needs "
                                       r"10000 blocks .*\(\d+ tokens missing\)"):
    interleave.interleave(source_flags(sources), str(tmp_path / "x"), target_tokens=target,
                          block_tokens=BLOCK, log=lambda _: None)
  assert not os.path.exists(tmp_path / "x")
  out = str(tmp_path / "rep")
  report = interleave.interleave(source_flags(sources), out, target_tokens=target,
                                 block_tokens=BLOCK, allow_repeat=True, log=lambda _: None)
  assert report["train"]["web"] == 10_000 * BLOCK
  assert sorted(os.listdir(out)) == ["train"]  # target_val_tokens 0: no val split


def test_cli_refusals_leave_existing_output_untouched(sources, mixed, tmp_path):
  out, _, _ = mixed
  before = tree_digest(out)
  web, code = sources["web"], sources["code"]
  common = ["--out_dir", out, "--overwrite", "--target_train_tokens", 800,
            "--target_val_tokens", 80, "--block_tokens", BLOCK]
  cases = {
      "weight 0.0 is not a positive number": [f"web={web}:0", f"code={code}:1"],
      "weight -2.0 is not a positive number": [f"web={web}:-2", f"code={code}:1"],
      "weight nan is not a positive number": [f"web={web}:nan"],
      "weight 'lots' is not a number": [f"web={web}:lots"],
      "source name 'web' is given twice": [f"web={web}:1", f"web={code}:1"],
      f"{tmp_path}/none/train does not exist": [f"web={web}:1", f"none={tmp_path}/none:1"],
      "expected NAME=DIR:WEIGHT": [f"{web}:1"],
  }
  for message, flags in cases.items():
    result = run_cli(*common, *sum((["--source", f] for f in flags), []))
    assert result.returncode != 0 and message in result.stderr, (message, result.stderr)
  assert tree_digest(out) == before


def test_empty_source_is_named(sources, tmp_path):
  with shards.ShardDirWriter(str(tmp_path / "empty"), vocab_size=1000) as w:
    w.add("val", [2, 5, 3])
  with pytest.raises(ValueError, match=f"source 'empty': {tmp_path}/empty/train: .*no tokens"):
    interleave.interleave([interleave.Source("web", sources["web"], 1.0),
                           interleave.Source("empty", str(tmp_path / "empty"), 1.0)],
                          str(tmp_path / "o"), target_tokens={"train": 80, "val": 8},
                          block_tokens=BLOCK, log=lambda _: None)


def _set_meta(split_dir, **changes):
  path = os.path.join(split_dir, "meta.json")
  with open(path) as f:
    meta = json.load(f)
  meta.update(changes)
  shards.atomic_write_json(path, meta)


def test_tokenizer_or_vocab_mismatch_names_the_sources(tmp_path):
  rng = np.random.default_rng(0)
  dirs = {}
  for name in ("a", "b", "c"):
    dirs[name] = str(tmp_path / name)
    write_shard_dir(dirs[name], {"train": random_documents(rng, 20),
                                 "val": random_documents(rng, 5)})
  for split in ("train", "val"):
    _set_meta(os.path.join(dirs["a"], split), tokenizer={"path": "/t/a.model", "sha256": "aa" * 32})
    _set_meta(os.path.join(dirs["b"], split), tokenizer={"path": "/t/b.model", "sha256": "bb" * 32})
  pair = lambda x, y: [interleave.Source(x, dirs[x], 1.0), interleave.Source(y, dirs[y], 1.0)]
  kw = dict(target_tokens={"train": 80, "val": 16}, block_tokens=BLOCK, log=lambda _: None)
  with pytest.raises(ValueError, match=r"disagree on tokenizer sha256: a \(.*\) has a+, b \(.*\)"):
    interleave.interleave(pair("a", "b"), str(tmp_path / "o1"), **kw)
  # An unknown tokenizer (imported shards) mixes with a known one; the output records the known.
  interleave.interleave(pair("a", "c"), str(tmp_path / "o2"), **kw)
  assert shards.load_meta(str(tmp_path / "o2/train"))["tokenizer"]["sha256"] == "aa" * 32
  _set_meta(os.path.join(dirs["c"], "train"), vocab_size=2000)
  with pytest.raises(ValueError, match=r"disagree on vocab_size: a \(.*\) has 1000, c \(.*\) has 2000"):
    interleave.interleave(pair("a", "c"), str(tmp_path / "o3"), **kw)
