"""Shard files, imports (llm.c both versions, nanoGPT raw), refusals, TFDS input."""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipeline import import_bin, inspect as inspect_cli, tfds_input
from jaxlm.data import shards
from tests.data_core_helpers import (BOS, EOS, random_documents, train_tiny_tokenizer,
                                     tree_digest, write_shard_dir)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(module, *args):
  return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO,
                        capture_output=True, text=True)


@pytest.mark.parametrize("dtype,magic,version", [(np.uint16, 20240520, 1),
                                                 (np.uint32, 20240801, 7)])
def test_llmc_bin_round_trip(tmp_path, dtype, magic, version):
  tokens = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, 1000).astype(dtype)
  path = str(tmp_path / "a.bin")
  shards.write_bin(path, tokens)
  header = np.fromfile(path, np.int32, count=256)
  assert (header[0], header[1], header[2]) == (magic, version, 1000)
  assert os.path.getsize(path) == 1024 + 1000 * np.dtype(dtype).itemsize
  for mmap in (True, False):
    back = shards.read_bin(path, mmap=mmap)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, tokens)


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_import_llmc_shards_glob(tmp_path, dtype):
  rng = np.random.default_rng(1)
  parts = [rng.integers(0, 50257, n).astype(dtype) for n in (300, 1, 700)]
  for i, part in enumerate(parts):
    shards.write_bin(str(tmp_path / f"fw_train_{i:06d}.bin"), part)
  out = tmp_path / "out"
  meta = import_bin.import_bins([str(tmp_path / "fw_train_*.bin")], str(out), split="train",
                                vocab_size=50257, eos_id=50256, shard_tokens=256)
  assert meta["tokenizer"] is None and meta["vocab_size"] == 50257
  assert meta["eos_id"] == 50256 and meta["bos_id"] is None
  assert meta["builder"]["kinds"] == ["llm.c"] * 3
  split = shards.SplitDir(str(out / "train"))
  expected = np.concatenate(parts)
  assert split.num_tokens == expected.size and len(split.shards) == 4  # 1001 tokens / 256
  np.testing.assert_array_equal(split.read(0, expected.size)["tokens"], expected)
  assert sorted(os.listdir(out)) == ["train"]  # no staging left behind


def test_import_nanogpt_raw_and_second_split(tmp_path):
  rng = np.random.default_rng(2)
  train = rng.integers(0, 50257, 5000).astype(np.uint16)
  val = rng.integers(0, 50257, 800).astype(np.uint16)
  train[::100] = 50256
  train.tofile(tmp_path / "train.bin")  # nanoGPT's prepare.py: raw uint16, no header
  val.tofile(tmp_path / "val.bin")
  out = tmp_path / "shards"
  result = run_cli("data_pipeline.import_bin", "--input", tmp_path / "train.bin",
                   "--out_dir", out, "--eos_id", "50256", "--vocab_size", "50257")
  assert result.returncode == 0, result.stderr
  meta = import_bin.import_bins([str(tmp_path / "val.bin")], str(out), split="val",
                                vocab_size=50257, eos_id=50256)
  assert meta["builder"]["kinds"] == ["nanogpt-raw"]
  for split, tokens in (("train", train), ("val", val)):
    sd = shards.SplitDir(str(out / split))
    np.testing.assert_array_equal(sd.read(0, sd.num_tokens)["tokens"], tokens)
  assert shards.load_meta(str(out / "train"))["num_documents"] == 50


def test_import_infers_vocab_without_tokenizer(tmp_path):
  np.array([5, 9, 7], np.uint16).tofile(tmp_path / "x.bin")
  meta = import_bin.import_bins([str(tmp_path / "x.bin")], str(tmp_path / "o"))
  assert meta["vocab_size"] == 10 and meta["builder"]["vocab_size_inferred"]


def test_import_with_tokenizer_records_it(tmp_path):
  tok = train_tiny_tokenizer(tmp_path)
  shards.write_bin(str(tmp_path / "a.bin"), np.array(tok.encode("def f(x): return x"), np.uint16))
  meta = import_bin.import_bins([str(tmp_path / "a.bin")], str(tmp_path / "o"),
                                tokenizer_path=tok.path)
  assert meta["tokenizer"] == {"path": tok.path, "sha256": tok.sha256}
  assert (meta["vocab_size"], meta["bos_id"], meta["eos_id"]) == (tok.vocab_size, 2, 3)


# ----------------------------------------------------------------------------------------------
# Refusals: each names the file or value and leaves an existing output untouched.


@pytest.fixture
def existing_out(tmp_path):
  """An import target that already holds a train split (must survive failed runs)."""
  shards.write_bin(str(tmp_path / "good.bin"), np.arange(100, dtype=np.uint16))
  out = tmp_path / "out"
  import_bin.import_bins([str(tmp_path / "good.bin")], str(out), vocab_size=1000)
  return out, tree_digest(out)


def test_truncated_shard_is_refused(tmp_path, existing_out):
  out, before = existing_out
  bad = tmp_path / "trunc.bin"
  shards.write_bin(str(bad), np.arange(50, dtype=np.uint16))
  with open(bad, "r+b") as f:
    f.truncate(1024 + 60)
  with pytest.raises(shards.ShardError, match=f"{bad}: truncated"):
    shards.read_bin(str(bad))
  for split in ("train", "val"):
    result = run_cli("data_pipeline.import_bin", "--input", bad, "--out_dir", out,
                     "--split", split, "--overwrite")
    assert result.returncode != 0 and f"{bad}: truncated" in result.stderr
  small = tmp_path / "tiny.bin"
  small.write_bytes(np.int32(20240520).tobytes())
  with pytest.raises(shards.ShardError, match=f"{small}: truncated shard"):
    shards.read_bin(str(small))
  assert tree_digest(out) == before


def test_wrong_magic_is_refused_naming_the_shard(tmp_path):
  out = str(tmp_path / "d")
  write_shard_dir(out, {"train": random_documents(np.random.default_rng(0), 10)})
  shard = os.path.join(out, "train", "shard_00000.bin")
  with open(shard, "r+b") as f:
    f.write(np.int32(12345).tobytes())
  with pytest.raises(shards.ShardError, match=f"{shard}: wrong magic 12345"):
    shards.SplitDir(os.path.join(out, "train"))
  with open(shard, "r+b") as f:  # right magic, wrong version
    f.write(np.array([20240801, 1], np.int32).tobytes())
  with pytest.raises(shards.ShardError, match=f"{shard}: magic 20240801 needs version 7"):
    shards.read_bin(shard)


def test_token_beyond_vocab_is_refused(tmp_path, existing_out):
  out, before = existing_out
  bad = tmp_path / "big.bin"
  shards.write_bin(str(bad), np.array([1, 2, 999], np.uint16))
  result = run_cli("data_pipeline.import_bin", "--input", bad, "--out_dir", out, "--split", "val",
                   "--vocab_size", "500")
  assert result.returncode != 0
  assert f"{bad}: token id 999 >= vocab_size 500" in result.stderr
  assert tree_digest(out) == before


def test_existing_split_needs_overwrite(tmp_path, existing_out):
  out, before = existing_out
  result = run_cli("data_pipeline.import_bin", "--input", tmp_path / "good.bin", "--out_dir", out)
  assert result.returncode != 0 and f"{out}/train already exists" in result.stderr
  assert tree_digest(out) == before
  missing = tmp_path / "nothing_*.bin"
  result = run_cli("data_pipeline.import_bin", "--input", missing, "--out_dir", out, "--overwrite")
  assert result.returncode != 0 and f"--input {missing} matches no file" in result.stderr
  assert tree_digest(out) == before


def test_tokenizer_sha256_mismatch_is_refused(tmp_path):
  tok_a = train_tiny_tokenizer(tmp_path / "a", vocab_size=400)
  tok_b = train_tiny_tokenizer(tmp_path / "b", vocab_size=400, files=[os.__file__])
  assert tok_a.sha256 != tok_b.sha256
  shards.write_bin(str(tmp_path / "x.bin"), np.array(tok_a.encode("import os"), np.uint16))
  out = tmp_path / "out"
  import_bin.import_bins([str(tmp_path / "x.bin")], str(out), tokenizer_path=tok_a.path)
  before = tree_digest(out)
  sd = shards.SplitDir(str(out / "train"))
  with pytest.raises(shards.ShardError, match=f"tokenizer {tok_b.path} .*{out}/train/meta.json"):
    sd.check_tokenizer(tok_b.path)
  sd.check_tokenizer(tok_a.path)
  # A second split written with another tokenizer is refused.
  result = run_cli("data_pipeline.import_bin", "--input", tmp_path / "x.bin", "--out_dir", out,
                   "--split", "val", "--tokenizer", tok_b.path)
  assert result.returncode != 0
  assert f"tokenizer {tok_b.path}" in result.stderr and f"{out}/train/meta.json" in result.stderr
  # So is decoding a sample with it.
  result = run_cli("data_pipeline.inspect", out, "--tokenizer", tok_b.path)
  assert result.returncode != 0 and f"tokenizer {tok_b.path}" in result.stderr
  assert tree_digest(out) == before


def test_inspect_reports_counts(tmp_path):
  tok = train_tiny_tokenizer(tmp_path)
  out = str(tmp_path / "d")
  docs = [np.array([BOS] + tok.encode(f"value = {i}") + [EOS]) for i in range(30)]
  write_shard_dir(out, {"train": docs, "val": docs[:5]}, vocab_size=tok.vocab_size,
                  weights=True, tokenizer_path=tok.path, source="code")
  lines = []
  stats = inspect_cli.inspect(out, out=lines.append)
  total = sum(d.size for d in docs)
  assert stats["train"]["tokens"] == total and stats["train"]["documents"] == 30
  assert stats["train"]["per_source"] == {"code": total}
  expected_weighted = sum(np.count_nonzero(np.arange(d.size) % 3) for d in docs) / total
  assert stats["train"]["weighted"] == pytest.approx(expected_weighted)
  assert any("'<s>value = 0</s>" in l or "value = 0" in l for l in lines), lines


# ----------------------------------------------------------------------------------------------
# TFDS (array_record) without TensorFlow.


TINY_TFDS_BUILDER = """
import sys
import numpy as np
import tensorflow_datasets as tfds

class JaxlmTinyText(tfds.core.GeneratorBasedBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
        {"text": tfds.features.Text(), "n": np.int64}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(6), "validation": self._generate_examples(2)}

  def _generate_examples(self, n):
    for i in range(n):
      yield str(i), {"text": f"document {i}: h\u00e9llo \u2713", "n": i}

JaxlmTinyText(data_dir=sys.argv[1], file_format="array_record").download_and_prepare()
"""


def _prepare_tiny_tfds(tmp_path):
  """Prepares a 6+2 example dataset with tfds itself, in array_record format.

  Run as a script: tfds resolves a builder's code path through `importlib_resources` (not
  installed) when the class lives in a package such as tests/.
  """
  script = tmp_path / "make_tiny_tfds.py"
  script.write_text(TINY_TFDS_BUILDER)
  data_dir = str(tmp_path / "tfds")
  result = subprocess.run([sys.executable, str(script), data_dir], capture_output=True, text=True)
  assert result.returncode == 0, result.stderr
  return data_dir


def test_tfds_array_record_read_without_tensorflow(tmp_path):
  data_dir = _prepare_tiny_tfds(tmp_path)
  # A fresh interpreter that has never seen the builder class; TensorFlow is not installed.
  script = (
      "import sys\n"
      "from data_pipeline.tfds_input import iter_tfds_texts, parse_tfds_spec\n"
      "name, split = parse_tfds_spec('tfds:jaxlm_tiny_text:validation')\n"
      f"print(sorted(iter_tfds_texts(name, {data_dir!r}, split)))\n"
      f"print(len(list(iter_tfds_texts('jaxlm_tiny_text', {data_dir!r}, 'train'))))\n"
      "print('tensorflow' in sys.modules)\n")
  result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True)
  assert result.returncode == 0, result.stderr
  lines = result.stdout.split("\n")
  assert lines[:2] == ["['document 0: héllo ✓', 'document 1: héllo ✓']", "6"]
  if importlib.util.find_spec("tensorflow") is None:  # the case that matters: TF not installed
    assert lines[2] == "False"


def test_tfds_refusals(tmp_path):
  data_dir = _prepare_tiny_tfds(tmp_path)
  assert tfds_input.parse_tfds_spec("tfds:wiki/en") == ("wiki/en", "train")
  assert tfds_input.parse_tfds_spec("tfds:gsm8k:train[:90%]") == ("gsm8k", "train[:90%]")
  with pytest.raises(ValueError, match="no dataset name"):
    tfds_input.parse_tfds_spec("tfds::train")
  with pytest.raises(FileNotFoundError, match=f"'not_there' is not prepared in {data_dir}"):
    next(tfds_input.iter_tfds_texts("not_there", data_dir, "train"))
  with pytest.raises(KeyError, match="no field 'body'"):
    next(tfds_input.iter_tfds_texts("jaxlm_tiny_text", data_dir, "train", field="body"))
  with pytest.raises(ValueError, match="split 'test'"):
    next(tfds_input.iter_tfds_texts("jaxlm_tiny_text", data_dir, "test"))


def test_bin_glob_yields_only_token_shards_and_version_1_dirs_still_read(tmp_path):
  """llm.c / nanoGPT loaders read DIR/*.bin: sidecars must not match it."""
  import glob
  import json
  out = str(tmp_path / "d")
  tokens = np.arange(2, 300, dtype=np.int64) % 250 + 2
  weights = np.where(np.arange(tokens.size) % 3 == 0, 0, 1)
  with shards.ShardDirWriter(out, vocab_size=256, bos_id=2, eos_id=3, shard_tokens=100) as w:
    w.add("train", tokens, loss_weights=weights, source="a")
    w.add("val", tokens, source="b")
  train = os.path.join(out, "train")
  bins = sorted(glob.glob(os.path.join(train, "*.bin")))
  assert [os.path.basename(b) for b in bins] == ["shard_00000.bin", "shard_00001.bin",
                                                  "shard_00002.bin"]
  for b in bins:  # every *.bin is a real llm.c shard
    shards.read_bin(b)
  expected = shards.SplitDir(train).read(0, tokens.size)
  np.testing.assert_array_equal(expected["tokens"], tokens)
  np.testing.assert_array_equal(expected["loss_weights"], weights)
  # A directory written before the rename (format version 1, .weights.bin/.sources.bin).
  for name in os.listdir(train):
    for kind in ("weights", "sources"):
      if name.endswith(f".{kind}.u8"):
        os.rename(os.path.join(train, name),
                  os.path.join(train, name.replace(f".{kind}.u8", f".{kind}.bin")))
  meta_path = os.path.join(train, "meta.json")
  meta = json.load(open(meta_path))
  meta["version"] = 1
  json.dump(meta, open(meta_path, "w"))
  old = shards.SplitDir(train).read(0, tokens.size)
  for key in expected:
    np.testing.assert_array_equal(old[key], expected[key])
  meta["version"] = 99
  json.dump(meta, open(meta_path, "w"))
  with pytest.raises(shards.ShardError, match="meta.json: format version 99"):
    shards.SplitDir(train)
