"""experiments.bridge.answer_loss: the per-task answer loss that shows retrieval clicking."""

import json
import os

import jax
import numpy as np

from data_pipeline import longctx_hard
from experiments.bridge import answer_loss
from jaxlm import checkpoint
from jaxlm import model as model_lib
from jaxlm.data import shards
from tests.builders_helpers import tokenizer_path  # noqa: F401  (a pytest fixture)


def test_answer_spans_are_the_runs_of_upweighted_tokens():
  w = np.array([1, 3, 3, 1, 1, 3, 1, 3, 3, 3], np.uint8)
  assert answer_loss.answer_spans(w) == [(1, 3), (5, 6), (7, 10)]
  assert answer_loss.answer_spans(np.ones(5, np.uint8)) == []


def test_the_probe_reads_each_documents_answer_tokens(tmp_path, tokenizer_path, capsys):
  """Against an independent computation from full logits: the key's first digit and the
  digits after it, per task, for every document of the split."""
  out = tmp_path / "lc"
  longctx_hard.main(["--out_dir", str(out), "--tokenizer", tokenizer_path, "--seq_len", "128",
                     "--max_doc_tokens", "128", "--min_distance", "2", "--tasks",
                     "passkey,multi_query", "--target_train_tokens", "1024",
                     "--target_val_tokens", "2048", "--filler_chars", "100000",
                     "--eval_examples", "2", "--answer_weight", "3", "--quiet"])
  config = model_lib.model_config(dict(vocab_size=1024, d_model=32, n_layers=1, n_heads=2,
                                       n_kv_heads=1, head_dim=16, mlp_dim=64, max_seq_len=128))
  params = model_lib.init_params(config, jax.random.PRNGKey(0))
  ck = checkpoint.save_params(str(tmp_path / "ck"), params, dict(config))
  answer_loss.main(["--checkpoint", ck, "--data", str(out / "val"), "--output",
                    str(tmp_path / "digits.json")])
  got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert json.loads((tmp_path / "digits.json").read_text()) == got

  split = shards.SplitDir(str(out / "val"))
  tokens, weights = split.shards[0], np.asarray(split.weights[0])
  docs = [json.loads(line) for line in open(out / "val_documents.jsonl")]
  want: dict[str, dict[str, list]] = {}
  for d in docs:
    ids = np.asarray(tokens[d["offset"]:d["offset"] + 128], np.int32)
    logits = model_lib.Transformer(config).apply({"params": params}, ids[None, :-1])[0]
    logp = np.asarray(jax.nn.log_softmax(logits.astype(np.float32)))
    w = weights[d["offset"] + 1:d["offset"] + 128]  # weights of the targets
    nll = -logp[np.arange(127), ids[1:]]
    task = want.setdefault(d["task"], {"first": [], "rest": []})
    answer = np.flatnonzero(w > 1)
    starts = [i for i in answer if i - 1 not in answer]
    for s in starts:
      e = s
      while e in answer:
        e += 1
      task["first"].append(nll[s + 1])
      task["rest"].extend(nll[s + 2:e])
  assert set(got) == set(want) == {"passkey", "multi_query"}
  for task, figures in want.items():
    assert got[task]["documents"] == sum(d["task"] == task for d in docs)
    # float32 sums of ~100 terms, then rounded to 4 decimals in the output
    np.testing.assert_allclose(got[task]["first"], np.mean(figures["first"]), atol=2e-4)
    np.testing.assert_allclose(got[task]["rest"], np.mean(figures["rest"]), atol=2e-4)
