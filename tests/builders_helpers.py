"""Shared pieces of the data-builder tests: a tiny tokenizer, fixture paths, shard decoding."""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig

import numpy as np
import pytest

from jaxlm.data import shards
from data_pipeline.tokenizer import train_tokenizer
from jaxlm.data.tokenizer import load_tokenizer

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def fixture(name: str) -> str:
  """tests/fixtures (copied into the repo) first; the shared checkout as a fallback."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  for d in (FIXTURES, os.path.join(repo, "..", "shared", "fixtures"), "/work/shared/fixtures"):
    if os.path.exists(os.path.join(d, name)):
      return os.path.join(d, name)
  pytest.skip(f"fixture {name} not found")


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory):
  """A 1000-piece BPE tokenizer (with the chat tokens) trained on a few stdlib files."""
  root = sysconfig.get_paths()["stdlib"]
  files = [os.path.join(root, f) for f in ("json/decoder.py", "argparse.py", "textwrap.py",
                                           "functools.py")]
  prefix = str(tmp_path_factory.mktemp("tok") / "tok")
  return train_tokenizer(files, 1000, prefix, num_threads=1).path


@pytest.fixture(scope="session")
def tokenizer(tokenizer_path):
  return load_tokenizer(tokenizer_path)


def documents(split_dir: str) -> list[dict]:
  """The split's documents (BOS ... EOS, or runs of pad EOS) with their weights and offsets."""
  sd = shards.SplitDir(split_dir)
  r = sd.read(0, sd.num_tokens)
  tokens, weights = r["tokens"], r["loss_weights"]
  out, start = [], 0
  bos, eos = sd.bos_id, sd.eos_id
  for i, t in enumerate(tokens):
    if t == eos:
      out.append({"offset": start, "tokens": tokens[start:i + 1], "weights": weights[start:i + 1],
                  "sources": r["source_ids"][start:i + 1]})
      start = i + 1
  assert start == tokens.size, "split does not end with EOS"
  for d in out:
    d["pad"] = d["tokens"].size == 1 and d["tokens"][0] == eos
    assert d["pad"] or d["tokens"][0] == bos
  return out


def weighted_runs(tokens, weights):
  """(start, end) of each maximal run of tokens with weight > 0."""
  on = np.concatenate([[False], np.asarray(weights) > 0, [False]])
  edges = np.flatnonzero(on[1:] != on[:-1])
  return list(zip(edges[::2], edges[1::2]))


def tree_digest(path: str) -> dict[str, str]:
  """sha256 of every file under path except the report (it holds timings)."""
  out = {}
  for root, _, files in os.walk(path):
    for f in files:
      if f != "report.json":
        with open(os.path.join(root, f), "rb") as fh:
          out[os.path.relpath(os.path.join(root, f), path)] = hashlib.sha256(fh.read()).hexdigest()
  return out


def read_report(out_dir: str) -> dict:
  with open(os.path.join(out_dir, "report.json")) as f:
    return json.load(f)


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f]
