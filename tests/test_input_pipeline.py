"""jaxlm.input_pipeline: windows, batches, shuffling, mixing, resume and refusals."""

import json
import math
import os

import numpy as np
import pytest

from jaxlm.data import shards
from jaxlm import input_pipeline
from tests.data_core_helpers import BOS, EOS, data_config, random_documents, write_shard_dir

T = 16  # seq_len


@pytest.fixture(scope="module")
def split(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("data") / "a")
  rng = np.random.default_rng(0)
  streams = write_shard_dir(out, {"train": random_documents(rng, 120),
                                  "val": random_documents(rng, 40)}, weights=True)
  return out, streams


def reference_segments(tokens):
  seg, pos, segs, poss = 1, 0, [], []
  for i, t in enumerate(tokens):
    if i > 0 and (t == BOS or tokens[i - 1] == EOS):
      seg, pos = seg + 1, 0
    segs.append(seg)
    poss.append(pos)
    pos += 1
  return np.array(segs), np.array(poss)


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def window_index(stream, inputs):
  """Which window (start = i*T) a row of inputs is; asserts it is one."""
  starts = [i for i in range(0, stream.size - T, T) if np.array_equal(stream[i:i + T], inputs)]
  assert starts, "row is not a window of the stream"
  return starts[0] // T


def test_train_windows_match_written_tokens(split):
  out, streams = split
  stream = streams["train"]
  weights = np.concatenate([np.arange(d) % 3 for d in np.diff(
      np.flatnonzero(np.r_[stream == BOS, True]))])
  config = data_config(out + "/train")
  it = input_pipeline.make_train_iterator(config, vocab_size=1000)
  num_windows = (stream.size - 1) // T
  rows_per_epoch = num_windows // 4 * 4
  seen = []
  for batch in take(it, num_windows // 4):
    assert {k: v.shape for k, v in batch.items()} == {k: (4, T) for k in batch}
    assert batch["inputs"].dtype == np.int32 and batch["loss_weights"].dtype == np.float32
    for r in range(4):
      w = window_index(stream, batch["inputs"][r])
      seen.append(w)
      np.testing.assert_array_equal(batch["targets"][r], stream[w * T + 1: w * T + T + 1])
      np.testing.assert_array_equal(batch["loss_weights"][r], weights[w * T + 1: w * T + T + 1])
      segs, pos = reference_segments(batch["inputs"][r])
      np.testing.assert_array_equal(batch["segment_ids"][r], segs)
      np.testing.assert_array_equal(batch["positions"][r], pos)
      assert (batch["source_ids"][r] == 0).all()
  assert len(set(seen)) == rows_per_epoch  # no window twice within an epoch
  assert seen != sorted(seen)  # shuffled


def test_val_batches_are_consecutive_windows(split):
  out, streams = split
  config = data_config(val_dir=out + "/val", val_batches=3, val_batch_size=2)
  batches, names = input_pipeline.make_val_batches(config, vocab_size=1000)
  assert names == ["default"] and len(batches) == 3
  stream = streams["val"]
  for b, batch in enumerate(batches):
    for r in range(2):
      w = b * 2 + r
      np.testing.assert_array_equal(batch["inputs"][r], stream[w * T: w * T + T])
      np.testing.assert_array_equal(batch["targets"][r], stream[w * T + 1: w * T + T + 1])
  again, _ = input_pipeline.make_val_batches(config, vocab_size=1000)
  assert_batches_equal(batches, again)
  # Two processes split every batch's rows between them.
  parts = [input_pipeline.make_val_batches(config, vocab_size=1000, process_index=p,
                                           process_count=2)[0] for p in range(2)]
  for b in range(3):
    np.testing.assert_array_equal(
        np.concatenate([parts[0][b]["inputs"], parts[1][b]["inputs"]]), batches[b]["inputs"])


def test_same_seed_same_order_other_seed_other_order(split):
  out, _ = split
  first = take(input_pipeline.make_train_iterator(data_config(out + "/train"), vocab_size=1000), 5)
  same = take(input_pipeline.make_train_iterator(data_config(out + "/train"), vocab_size=1000), 5)
  other = take(input_pipeline.make_train_iterator(data_config(out + "/train", seed=1),
                                                  vocab_size=1000), 5)
  assert_batches_equal(first, same)
  assert not all(np.array_equal(a["inputs"], b["inputs"]) for a, b in zip(first, other))


def test_epochs_reshuffle_and_repeat(split):
  out, streams = split
  config = data_config(out + "/train", micro_batch_size=1, grad_accum_steps=1)
  num_windows = (streams["train"].size - 1) // T
  it = input_pipeline.make_train_iterator(config, vocab_size=1000)
  epochs = [[tuple(b["inputs"][0]) for b in take(it, num_windows)] for _ in range(2)]
  assert sorted(epochs[0]) == sorted(epochs[1])
  assert epochs[0] != epochs[1]


def test_processes_read_disjoint_windows(split):
  out, streams = split
  config = data_config(out + "/train", micro_batch_size=2, grad_accum_steps=1)
  num_windows = (streams["train"].size - 1) // T
  rows = []
  for p in range(2):
    it = input_pipeline.make_train_iterator(config, vocab_size=1000, process_index=p,
                                            process_count=2)
    rows.append({tuple(r) for b in take(it, num_windows // 2) for r in b["inputs"]})
    assert all(b["inputs"].shape == (1, T) for b in take(it, 1))
  assert not rows[0] & rows[1]
  assert len(rows[0] | rows[1]) == num_windows // 2 * 2


@pytest.mark.parametrize("num_workers", [0, 2])
def test_state_restore_continues_exactly(split, num_workers):
  out, _ = split
  config = data_config(out + "/train", num_workers=num_workers)
  it = input_pipeline.make_train_iterator(config, vocab_size=1000)
  take(it, 7)
  state = json.loads(json.dumps(it.get_state()))  # must survive a JSON checkpoint
  expected = take(it, 9)
  fresh = input_pipeline.make_train_iterator(config, vocab_size=1000)
  fresh.set_state(state)
  assert_batches_equal(take(fresh, 9), expected)
  for i in (it, fresh):
    if hasattr(i, "close"):
      i.close()


@pytest.fixture(scope="module")
def three_sources(tmp_path_factory):
  base = tmp_path_factory.mktemp("mix")
  dirs = {}
  for i, name in enumerate(["web", "code", "math"]):
    rng = np.random.default_rng(10 + i)
    write_shard_dir(str(base / name), {"train": random_documents(rng, 30 + 20 * i)},
                    source=name)
    dirs[name] = str(base / name / "train")
  return dirs


def test_mixture_proportions_match_weights(three_sources):
  weights = {"web": 0.5, "code": 0.3, "math": 0.2}
  sources = {n: (three_sources[n], w) for n, w in weights.items()}
  config = data_config(seq_len=8, micro_batch_size=8, grad_accum_steps=1, sources=sources)
  it = input_pipeline.make_train_iterator(config, vocab_size=1000)
  counts = np.zeros(3)
  for batch in take(it, 10_000 // 8):
    assert (batch["source_ids"] == batch["source_ids"][:, :1]).all()  # one source per row
    counts += np.bincount(batch["source_ids"][:, 0], minlength=3)
  # source_ids index the mixture in the order config.data.sources iterates (ConfigDict sorts).
  names = [name for name, _, _ in input_pipeline.parse_sources(config.data.sources)]
  assert names == ["code", "math", "web"]
  shares = counts / counts.sum()
  np.testing.assert_allclose(shares, [weights[n] for n in names], atol=0.01)
  # Each row really comes from the source its id names.
  readers = [input_pipeline.WindowReader(three_sources[n], 8) for n in names]
  batch = next(it)
  for r in range(8):
    src = readers[batch["source_ids"][r, 0]]
    stream = src.split.read(0, src.split.num_tokens)["tokens"]
    assert any(np.array_equal(stream[i:i + 8], batch["inputs"][r])
               for i in range(0, stream.size - 8, 8))


def test_mixture_resume(three_sources):
  sources = {"web": (three_sources["web"], 2.0), "math": (three_sources["math"], 1.0)}
  config = data_config(seq_len=8, sources=sources)
  it = input_pipeline.make_train_iterator(config, vocab_size=1000)
  take(it, 5)
  state = json.loads(json.dumps(it.get_state()))
  expected = take(it, 6)
  fresh = input_pipeline.make_train_iterator(config, vocab_size=1000)
  fresh.set_state(state)
  assert_batches_equal(take(fresh, 6), expected)


@pytest.mark.parametrize("weight", [0, -1.0, float("nan"), float("inf"), "heavy", None])
def test_mixture_refuses_bad_weight(three_sources, weight):
  sources = {"web": (three_sources["web"], 1.0), "code": (three_sources["code"], weight)}
  with pytest.raises(ValueError, match=r"'code'.*weight"):
    input_pipeline.make_train_iterator(data_config(sources=sources), vocab_size=1000)


def test_mixture_refuses_duplicate_name(three_sources):
  with pytest.raises(ValueError, match="'web' is given twice"):
    input_pipeline.parse_sources([("web", three_sources["web"], 1.0),
                                  ("web", three_sources["code"], 1.0)])


def test_mixture_refuses_empty_source(tmp_path, three_sources):
  with shards.ShardDirWriter(str(tmp_path / "empty"), vocab_size=1000) as w:
    w.add("val", [BOS, 5, EOS])
  empty = str(tmp_path / "empty" / "train")
  sources = {"web": (three_sources["web"], 1.0), "nothing": (empty, 1.0)}
  with pytest.raises(ValueError, match=f"{empty}.*no tokens"):
    input_pipeline.make_train_iterator(data_config(sources=sources), vocab_size=1000)


def test_missing_dir_is_named(tmp_path):
  missing = str(tmp_path / "nope" / "train")
  with pytest.raises(FileNotFoundError, match=missing):
    input_pipeline.make_train_iterator(data_config(missing), vocab_size=1000)
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    input_pipeline.make_val_batches(data_config(val_dir=str(tmp_path)), vocab_size=1000)
  with pytest.raises(FileNotFoundError, match="no data directory"):
    input_pipeline.make_train_iterator(data_config(""), vocab_size=1000)


def test_too_short_split_is_named(tmp_path):
  with shards.ShardDirWriter(str(tmp_path / "s"), vocab_size=1000) as w:
    w.add("train", [BOS, 5, 6, EOS])
  with pytest.raises(ValueError, match=f"{tmp_path}/s/train.*fewer than one window"):
    input_pipeline.make_train_iterator(data_config(str(tmp_path / "s/train")), vocab_size=1000)


def test_token_id_beyond_vocab_is_refused_naming_the_shard(split):
  out, _ = split
  with pytest.raises(ValueError, match=r"shard_\d+\.bin: token id \d+ >= the model's vocab_size 500"):
    input_pipeline.make_train_iterator(data_config(out + "/train"), vocab_size=500)
  with pytest.raises(ValueError, match=r"val/shard_\d+\.bin"):
    input_pipeline.make_val_batches(data_config(val_dir=out + "/val"), vocab_size=500)


def test_batch_rows_must_split_over_processes(split):
  out, _ = split
  config = data_config(out + "/train", micro_batch_size=3, grad_accum_steps=1)
  with pytest.raises(ValueError, match="multiple of the process count 2"):
    input_pipeline.make_train_iterator(config, vocab_size=1000, process_index=0, process_count=2)
