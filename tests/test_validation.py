"""One loss path: `jaxlm.eval --suite val` reports the trainer's own validation numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import phase2
from jaxlm import input_pipeline
from jaxlm import train
from tests import train_helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("cross_document_attention", [True, False])
def test_eval_val_suite_equals_the_trainers_last_validation(tmp_path, cross_document_attention):
  shard_dir = train_helpers.write_shards(str(tmp_path / "shards"), num_val_docs=60,
                                         doc_lengths=(4, 12))
  final = str(tmp_path / "models" / "final")
  config = train_helpers.tiny_config(
      phase2, str(tmp_path / "workdir"), shard_dir, final_dir=final, total_opt_steps=12,
      val_every_opt=6, val_batches=3, val_batch_size=2,
      **{"optimizer.learning_rate": 1e-2,
         "model.cross_document_attention": cross_document_attention})
  # The split's windows hold several documents each (documents are 6-14 tokens, windows
  # 32), so a per-document vs whole-window position choice would change the numbers.
  batches, _ = input_pipeline.make_val_batches(config, vocab_size=train_helpers.VOCAB)
  assert all(int(np.max(b["segment_ids"][row])) >= 2 for b in batches for row in range(2))
  train.train_and_evaluate(config)
  with open(os.path.join(config.workdir, "metrics.jsonl")) as f:
    last_val = [r for r in map(json.loads, f) if r["kind"] == "val"][-1]
  assert last_val["step"] == 12

  output = str(tmp_path / "eval.json")
  # No batch flags: eval must find the val_dir and batch shape the run recorded.
  result = subprocess.run([sys.executable, "-m", "jaxlm.eval", "--checkpoint", final,
                           "--suite", "val", "--output", output],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(output) as f:
    val = json.load(f)["val"]
  assert (val["batches"], val["batch_size"], val["seq_len"]) == (3, 2, train_helpers.SEQ_LEN)
  assert set(val["by_source"]) == {"chat", "web"}
  # Same function, same batches, same device: equal up to float32 summation order.
  assert val["loss"] == pytest.approx(last_val["loss"], rel=1e-5)
  for source, loss in val["by_source"].items():
    assert loss == pytest.approx(last_val[f"loss/{source}"], rel=1e-5), source
