"""data_pipeline.sft: public chat sets -> packed, assistant-only-loss shards."""

import json
import os

import pytest

from data_pipeline import builder_utils as bu
from data_pipeline import sft
from jaxlm.data import chat_format
from tests.builders_helpers import (documents, fixture, read_report, tokenizer,  # noqa: F401
                                    tokenizer_path, tree_digest, weighted_runs)

SEQ = 512
FIXTURES = {"openhermes": "openhermes2_5_sample.json", "ultrachat": "ultrachat_200k_sample.jsonl",
            "ultrachat_pq": "test_sft-00000-of-00001.parquet",
            "glaive": "glaive_function_calling_v2_sample.json",
            "hermes": "hermes_function_calling_v1_sample.json"}


def build(out, tokenizer_path, sources, *extra, workers=1, seq_len=SEQ):
  argv = ["--out_dir", str(out), "--tokenizer", tokenizer_path, "--seq_len", str(seq_len),
          "--val_fraction", "0", "--quiet", "--num_workers", str(workers), *extra]
  for s in sources:
    argv += ["--source", s]
  sft.main(argv)
  return str(out)


def fixture_sources():
  return [f"{name}={fixture(f)}:1" for name, f in FIXTURES.items()]


def test_masks_cover_exactly_the_assistant_turns(tmp_path, tokenizer_path, tokenizer):
  out = build(tmp_path / "s", tokenizer_path, fixture_sources())
  assistant_pieces, other_pieces = set(), []
  for name, f in FIXTURES.items():
    for _, record in bu.iter_records(fixture(f)):
      messages, tools = sft.convert_record(record)
      for text, trained in chat_format.render_conversation(messages, tools):
        (assistant_pieces.add(text) if trained else other_pieces.append(text))
  docs = [d for d in documents(os.path.join(out, "train")) if not d["pad"]]
  assert len(docs) == 9  # every fixture record, none skipped
  seen = set()
  header = tokenizer.special_id(chat_format.ASSISTANT)
  for d in docs:
    runs = weighted_runs(d["tokens"], d["weights"])
    assert len(runs) == int((d["tokens"] == header).sum()) >= 1
    for s, e in runs:
      text = tokenizer.decode(d["tokens"][s:e])
      assert text in assistant_pieces, text
      seen.add(text)
    # Slots: a conversation never crosses a multiple of seq_len (a reader window start).
    assert d["offset"] // SEQ == (d["offset"] + d["tokens"].size - 1) // SEQ
  assert seen == assistant_pieces
  for d in documents(os.path.join(out, "train")):
    if d["pad"]:
      assert d["weights"].sum() == 0
  report = read_report(out)
  assert report["skipped"] == {}
  assert set(report["train_tokens_per_source"]) == {f"sft/{n}" for n in FIXTURES} | {"pad"}


def write_jsonl(path, rows):
  with open(path, "w") as f:
    for r in rows:
      f.write(r if isinstance(r, str) else json.dumps(r))
      f.write("\n")
  return str(path)


def test_long_conversations_cut_at_turn_boundaries_or_dropped(tmp_path, tokenizer_path, tokenizer):
  turn = "word " * 60
  long_conv = {"messages": [{"role": r, "content": f"{i}: {turn}"}
                            for i, r in enumerate(["user", "assistant"] * 6)]}
  too_long = {"messages": [{"role": "user", "content": turn * 12},
                           {"role": "assistant", "content": "ok"}]}
  path = write_jsonl(tmp_path / "c.jsonl", [long_conv, too_long])
  out = build(tmp_path / "s", tokenizer_path, [f"c={path}"])
  report = read_report(out)
  assert report["skipped"] == {"longer_than_seq_len": 1}
  assert report["truncated_at_turn_boundary"]["train"] == 1
  (doc,) = [d for d in documents(os.path.join(out, "train")) if not d["pad"]]
  assert doc["tokens"].size <= SEQ
  text = tokenizer.decode(doc["tokens"][1:-1])
  assert text.endswith(chat_format.END_OF_TURN)
  assert text.count(chat_format.ASSISTANT) == text.count(chat_format.USER) >= 2
  assert text.rindex(chat_format.ASSISTANT) > text.rindex(chat_format.USER)  # ends on assistant
  assert text.count(chat_format.END_OF_TURN) == 2 * text.count(chat_format.USER)  # whole turns


def test_malformed_records_counted_and_strict_names_them(tmp_path, tokenizer_path):
  path = write_jsonl(tmp_path / "m.jsonl", [
      {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}]},
      "{not json",
      {"messages": [{"role": "narrator", "content": "x"}]},
      {"messages": [{"role": "user", "content": "only a question"}]},
      {"unrelated": 1},
      {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
  ])
  out = build(tmp_path / "s", tokenizer_path, [f"m={path}"])
  report = read_report(out)
  assert report["skipped"] == {"bad_json": 1, "unknown_role": 1, "no_assistant_turn": 1,
                               "unknown_record_schema": 1}
  assert report["documents"]["train"] == 2
  with pytest.raises(SystemExit, match=r"m.jsonl:line 2.*bad_json"):
    bu.run_main(lambda: build(tmp_path / "t", tokenizer_path, [f"m={path}"], "--strict"))
  with pytest.raises(SystemExit, match="nothere.json does not exist"):
    bu.run_main(lambda: build(tmp_path / "u", tokenizer_path, [f"m={tmp_path}/nothere.json"]))


def test_weights_mix_sources_and_plan_spec(tmp_path, tokenizer_path):
  rows = [{"messages": [{"role": "user", "content": f"q{i}"},
                        {"role": "assistant", "content": f"answer number {i}"}]}
          for i in range(200)]
  a = write_jsonl(tmp_path / "a.jsonl", rows)
  b = write_jsonl(tmp_path / "b.jsonl", rows)
  out = build(tmp_path / "s", tokenizer_path, [f"a={a}:3", f"b={b}:1"],
              "--target_train_tokens", "3000", "--synthetic_spec_fraction", "0.25")
  per = read_report(out)["train_tokens_per_source"]
  total = per["sft/a"] + per["sft/b"] + per["sft/plan_spec"]
  assert per["sft/a"] / per["sft/b"] == pytest.approx(3, rel=0.15)
  assert per["sft/plan_spec"] / total == pytest.approx(0.25, abs=0.08)


def test_same_seed_same_bytes_any_worker_count(tmp_path, tokenizer_path):
  a = build(tmp_path / "a", tokenizer_path, fixture_sources())
  b = build(tmp_path / "b", tokenizer_path, fixture_sources(), workers=2)
  assert tree_digest(a) == tree_digest(b)


def test_json_array_streaming_matches_json_load(tmp_path):
  records = [{"i": i, "text": "x" * (i * 13), "nested": [1, {"a": None}]} for i in range(300)]
  path = tmp_path / "big.json"
  path.write_text(json.dumps(records, indent=1))
  assert list(bu.iter_json_array(str(path), chunk_chars=50)) == records
  path.write_text(json.dumps(records)[:-40])
  with pytest.raises(bu.MalformedRecord, match="big.json"):
    list(bu.iter_json_array(str(path), chunk_chars=50))


def test_window_packer_never_straddles_a_slot():
  import numpy as np
  packer = bu.WindowPacker(10, eos_id=3, lookahead=2)
  out = []
  for n in [4, 7, 3, 9, 2, 10, 5]:
    out += packer.pack(bu.Document(np.full(n, 5, np.int32), np.ones(n, np.uint8)))
  out += packer.flush()
  pos = 0
  for d in out:
    if d.source == "pad":
      assert (d.tokens == 3).all() and (d.weights == 0).all()
    else:
      assert pos // 10 == (pos + d.num_tokens - 1) // 10
    pos += d.num_tokens
  assert sorted(d.num_tokens for d in out if d.source != "pad") == [2, 3, 4, 5, 7, 9, 10]
