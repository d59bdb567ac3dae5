"""data_pipeline.tool_synth: valid synthetic calls, glaive/Hermes conversion with their quirks."""

import json
import os
import re

import numpy as np
import pytest

from data_pipeline import builder_utils as bu
from data_pipeline import tool_synth
from jaxlm.data import chat_format, shards
from tests.builders_helpers import (documents, fixture, read_jsonl, read_report,  # noqa: F401
                                    tokenizer, tokenizer_path, tree_digest, weighted_runs)

GLAIVE_SYSTEM = ('SYSTEM: You are a helpful assistant with access to the following functions. '
                 'Use them if required -\n{fn}\n')
FN = json.dumps({"name": "get_time", "description": "Time in a city",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                "required": ["city"]}}, indent=4)


def quirky_glaive_records():
  call = '<functioncall> {"name": "get_time", "arguments": \'{"city": "Lima"}\'} <|endoftext|>'
  return [
      # two blank lines instead of three, and text before <functioncall>
      {"system": GLAIVE_SYSTEM.format(fn=FN),
       "chat": f"USER: What time is it in Lima?\n\nASSISTANT: Let me look. {call}\n\n"
               "FUNCTION RESPONSE: {\"time\": \"10:42\"}\n\nASSISTANT: It is 10:42 in Lima. "
               "<|endoftext|>\n\n"},
      # the function declared twice, and the chat ends on a user turn
      {"system": GLAIVE_SYSTEM.format(fn=FN + "\n" + FN),
       "chat": f"USER: Time in Lima?\n\n\nASSISTANT: {call}\n\n\nFUNCTION RESPONSE: "
               "{\"time\": \"09:00\"}\n\n\nASSISTANT: 09:00. <|endoftext|>\n\n\nUSER: thanks\n\n\n"},
      # arguments that are not JSON: skipped as bad_function_call_json
      {"system": GLAIVE_SYSTEM.format(fn=FN),
       "chat": "USER: x\n\n\nASSISTANT: <functioncall> {\"name\": \"get_time\", \"arguments\": "
               "'{city: Lima}'} <|endoftext|>\n\n\n"},
      # a call that does not match the schema: skipped as call_fails_schema
      {"system": GLAIVE_SYSTEM.format(fn=FN),
       "chat": "USER: x\n\n\nASSISTANT: <functioncall> {\"name\": \"get_time\", \"arguments\": "
               "'{\"town\": \"Lima\"}'} <|endoftext|>\n\n\n"},
  ]


def quirky_hermes_records():
  system = ("You are a function calling AI model. You are provided with function signatures "
            "within <tools></tools> XML tags.\n<tools>\n[{'type': 'function', 'function': "
            "{'name': 'get_time', 'description': 'Time in a city', 'parameters': {'type': "
            "'object', 'properties': {'city': {'type': 'string'}}, 'required': ['city']}}}]\n"
            "</tools>\nUse <tool_call></tool_call> tags.")
  return [
      {"conversations": [
          {"from": "system", "value": system},
          {"from": "human", "value": "Time in Oslo and Lima?"},
          # two calls, one with arguments as a JSON string
          {"from": "gpt", "value": "<tool_call>\n{'arguments': {'city': 'Oslo'}, 'name': "
                                   "'get_time'}\n</tool_call>\n<tool_call>\n{\"arguments\": "
                                   "\"{\\\"city\\\": \\\"Lima\\\"}\", \"name\": \"get_time\"}\n"
                                   "</tool_call>"},
          {"from": "tool", "value": "<tool_response>\n{'time': '17:00'}\n</tool_response>\n"
                                    "<tool_response>\n{'time': '11:00'}\n</tool_response>"},
          {"from": "gpt", "value": "17:00 in Oslo, 11:00 in Lima."}]},
      {"conversations": [{"from": "system", "value": system},
                         {"from": "human", "value": "x"},
                         {"from": "gpt", "value": "<tool_call>\n{'name': 'get_time', "
                                                  "'arguments': {'city': 'Oslo'</tool_call>"}]},
  ]


def all_calls_valid(messages, tools):
  assert tool_synth.call_problems(messages, tools) == []


def test_fixture_conversions_produce_valid_calls():
  for source, name in (("glaive", "glaive_function_calling_v2_sample.json"),
                       ("hermes", "hermes_function_calling_v1_sample.json")):
    converted = [tool_synth.CONVERTERS[source](r) for _, r in bu.iter_records(fixture(name))]
    calls = [c for m, _ in converted for msg in m for c in msg.get("tool_calls") or []]
    assert calls, source
    for messages, tools in converted:
      all_calls_valid(messages, tools)
      assert messages[-1]["role"] == "assistant"
  messages, tools = tool_synth.convert_glaive(
      next(bu.iter_records(fixture("glaive_function_calling_v2_sample.json")))[1])
  assert messages[2]["tool_calls"] == [{"name": "convert_currency",
                                        "arguments": {"amount": 250, "from": "EUR", "to": "JPY"}}]
  assert messages[3] == {"role": "tool",
                         "content": '{"converted_amount": 40512.5, "from": "EUR", "to": "JPY"}'}


def test_glaive_quirks():
  records = quirky_glaive_records()
  messages, tools = tool_synth.convert_glaive(records[0])
  assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "assistant"]
  assert messages[2]["content"] == "Let me look."
  assert messages[2]["tool_calls"] == [{"name": "get_time", "arguments": {"city": "Lima"}}]
  messages, tools = tool_synth.convert_glaive(records[1])
  assert [t["name"] for t in tools] == ["get_time"]  # declared twice, kept once
  assert messages[-1] == {"role": "assistant", "content": "09:00."}  # trailing user turn dropped
  for record, reason in ((records[2], "bad_function_call_json"),
                         (records[3], "call_fails_schema")):
    with pytest.raises(bu.SkipRecord) as e:
      tool_synth.convert_glaive(record)
    assert e.value.reason == reason


def test_hermes_quirks():
  good, broken = quirky_hermes_records()
  messages, tools = tool_synth.convert_hermes(good)
  assert [t["name"] for t in tools] == ["get_time"]
  assert messages[0] == {"role": "system", "content": "You are a function calling AI model."}
  assert messages[2]["tool_calls"] == [{"name": "get_time", "arguments": {"city": "Oslo"}},
                                       {"name": "get_time", "arguments": {"city": "Lima"}}]
  assert [m["content"] for m in messages[3:5]] == ["{'time': '17:00'}", "{'time': '11:00'}"]
  with pytest.raises(bu.SkipRecord) as e:
    tool_synth.convert_hermes(broken)
  assert e.value.reason == "bad_tool_call_literal"


def build(out, tokenizer_path, *extra, workers=1, seed=0):
  tool_synth.main(["--out_dir", str(out), "--tokenizer", tokenizer_path, "--seq_len", "2048",
                   "--target_train_tokens", "20000", "--target_val_tokens", "4000", "--quiet",
                   "--num_workers", str(workers), "--seed", str(seed), "--eval_examples", "30",
                   *extra])
  return str(out)


def conversations(split_dir, tok):
  for doc in documents(split_dir):
    if not doc["pad"]:
      yield doc, tok.decode(doc["tokens"][1:-1])


def test_synthetic_calls_all_parse_and_validate(tmp_path, tokenizer_path, tokenizer):
  out = build(tmp_path / "syn", tokenizer_path)
  n_calls, n_conv, domains = 0, 0, set()
  for doc, text in conversations(os.path.join(out, "train"), tokenizer):
    n_conv += 1
    tools = json.loads(re.search(r"<tools>(.*?)</tools>", text, re.S).group(1))
    domains.update(t["name"] for t in tools)
    for s, e in weighted_runs(doc["tokens"], doc["weights"]):
      # Loss exactly on assistant turns: each run follows the assistant header, ends with <|end|>.
      assert tokenizer.decode(doc["tokens"][s - 1:s]) == chat_format.ASSISTANT
      span = tokenizer.decode(doc["tokens"][s:e])
      assert span.endswith(chat_format.END_OF_TURN)
      for payload in chat_format.parse_assistant_output(span)["tool_calls"]:
        assert chat_format.validate_tool_call(payload, tools) == [], payload
        n_calls += 1
    masked = tokenizer.decode(doc["tokens"][doc["weights"] == 0])
    assert chat_format.TOOL_CALL_OPEN not in masked
  assert n_conv >= 20 and n_calls >= n_conv // 2
  assert len(domains) >= 10
  report = read_report(out)
  assert report["skipped"] == {}
  rows = read_jsonl(os.path.join(out, "eval.jsonl"))
  assert len(rows) == 30 and {r["expected"] for r in rows} == {"call", "no_call"}
  for r in rows:
    assert r["messages"][-1]["role"] == "user"
    if r["expected"] == "call":
      payload = json.dumps({"name": r["expected_name"], "arguments": r["expected_arguments"]})
      assert chat_format.validate_tool_call(payload, r["tools"]) == []


def test_real_sets_with_quirks_through_the_cli(tmp_path, tokenizer_path, tokenizer):
  glaive = tmp_path / "glaive.json"
  hermes = tmp_path / "hermes.json"
  with open(fixture("glaive_function_calling_v2_sample.json")) as f:
    glaive.write_text(json.dumps(json.load(f) + quirky_glaive_records()))
  with open(fixture("hermes_function_calling_v1_sample.json")) as f:
    hermes.write_text(json.dumps(json.load(f) + quirky_hermes_records()))
  out = build(tmp_path / "real", tokenizer_path, "--glaive", str(glaive), "--hermes",
              str(hermes), "--val_fraction", "0")
  report = read_report(out)
  assert report["skipped"] == {"bad_function_call_json": 1, "call_fails_schema": 1,
                               "bad_tool_call_literal": 1}
  assert "glaive.json:record 4" in report["skip_examples"]["bad_function_call_json"]
  per_source = shards.SplitDir(os.path.join(out, "train")).meta["tokens_per_source"]
  assert per_source["tools/glaive"] > 0 and per_source["tools/hermes"] > 0
  texts = [t for _, t in conversations(os.path.join(out, "train"), tokenizer)]
  assert any("It is 10:42 in Lima." in t for t in texts)
  with pytest.raises(SystemExit, match=r"glaive.json:record 4.*bad_function_call_json"):
    bu.run_main(lambda: build(tmp_path / "strict", tokenizer_path, "--glaive", str(glaive),
                              "--val_fraction", "0", "--strict"))


def test_same_seed_same_bytes_any_worker_count(tmp_path, tokenizer_path):
  glaive = fixture("glaive_function_calling_v2_sample.json")
  a = build(tmp_path / "a", tokenizer_path, "--glaive", glaive)
  b = build(tmp_path / "b", tokenizer_path, "--glaive", glaive, workers=2)
  c = build(tmp_path / "c", tokenizer_path, "--glaive", glaive, seed=3)
  assert tree_digest(a) == tree_digest(b)
  assert tree_digest(a) != tree_digest(c)


def test_eval_offers_only_schemas_training_never_saw(tmp_path, tokenizer_path, tokenizer):
  out = build(tmp_path / "held", tokenizer_path, "--glaive",
              fixture("glaive_function_calling_v2_sample.json"))
  held = set(tool_synth.HELDOUT_FUNCTIONS)
  assert read_report(out)["heldout_functions"] == sorted(held, key=tool_synth.HELDOUT_FUNCTIONS.index)
  seen_in_training = set()
  for split in ("train", "val"):
    for _, text in conversations(os.path.join(out, split), tokenizer):
      for block in re.findall(r"<tools>(.*?)</tools>", text, re.S):
        seen_in_training.update(t["name"] for t in json.loads(block))
      for name in held:
        assert name not in text  # not in a schema, a call or anywhere else
  assert seen_in_training and not seen_in_training & held
  rows = read_jsonl(os.path.join(out, "eval.jsonl"))
  offered = {t["name"] for r in rows for t in r["tools"]}
  assert offered and offered <= held
  assert {r["expected_name"] for r in rows if r["expected"] == "call"} <= held
  train_schemas = {json.dumps(f.schema(), sort_keys=True) for f in tool_synth.LIBRARY
                   if f.name in seen_in_training}
  assert not {json.dumps(t, sort_keys=True) for r in rows for t in r["tools"]} & train_schemas
  # eval_seen.jsonl: the same kind of prompts on the training schemas, for comparison.
  seen_rows = read_jsonl(os.path.join(out, "eval_seen.jsonl"))
  assert len(seen_rows) == 30
  assert {t["name"] for r in seen_rows for t in r["tools"]} <= seen_in_training | {
      f.name for f in tool_synth.LIBRARY if f.name not in held}
  assert not {t["name"] for r in seen_rows for t in r["tools"]} & held


def test_heldout_functions_flag(tmp_path, tokenizer_path):
  with pytest.raises(SystemExit, match="unknown function"):
    bu.run_main(lambda: build(tmp_path / "bad", tokenizer_path, "--heldout_functions", "nope"))
  out = build(tmp_path / "none", tokenizer_path, "--heldout_functions", "")
  assert read_report(out)["heldout_functions"] == []


def _renamed_tools(out, tokenizer):
  """(every offered schema, number of calls) of a renamed build's train split; each call
  validates against the schemas offered beside it."""
  offered, n_calls = [], 0
  for _, text in conversations(os.path.join(out, "train"), tokenizer):
    tools = json.loads(re.search(r"<tools>(.*?)</tools>", text, re.S).group(1))
    offered += tools
    for call in re.findall(re.escape(chat_format.TOOL_CALL_OPEN) + "(.*?)" +
                           re.escape(chat_format.TOOL_CALL_CLOSE), text, re.S):
      n_calls += 1
      assert not chat_format.validate_tool_call(call, tools), call
  return offered, n_calls


def _name_words(tool):
  words = set(tool["name"].split("_"))
  for p in tool["parameters"]["properties"]:
    words.update(p.split("_"))
  return words


@pytest.mark.parametrize("words", tool_synth.RENAME_WORDS)
def test_renamed_functions_must_be_read_from_the_schema(tmp_path, tokenizer_path, tokenizer,
                                                        words):
  """--rename_share 1: every synthetic conversation offers its functions and parameters under
  generated names, consistently in schema and call (the calls still validate), none built from
  a held-out function's or parameter's words; the held-out eval is untouched. Invented words
  are none of the fixed lists' and hardly repeat, so no name can be guessed."""
  out = build(tmp_path / "ren", tokenizer_path, "--rename_share", "1", "--rename_words", words)
  plain = build(tmp_path / "plain", tokenizer_path)
  library = {f.name for f in tool_synth.LIBRARY}
  held_words = tool_synth.name_words(
      [f for f in tool_synth.LIBRARY if f.name in tool_synth.HELDOUT_FUNCTIONS])
  assert {"calculate", "bmi", "topic", "genre"} <= held_words
  offered, n_calls = _renamed_tools(out, tokenizer)
  names = {t["name"] for t in offered}
  assert not names & library
  for t in offered:
    assert not _name_words(t) & held_words, (t["name"], _name_words(t) & held_words)
  assert n_calls >= 10 and len(names) >= 20
  fixed = set(tool_synth._NAME_VERBS + tool_synth._NAME_NOUNS + tool_synth._PARAM_WORDS)
  used = set().union(*(_name_words(t) for t in offered))
  if words == "fixed":
    assert used <= fixed
  elif words == "invented":
    assert not used & fixed
  else:  # one or two of the tokenizer's letter pieces, mostly words no list holds
    pieces = set(tool_synth.tokenizer_word_pieces(tokenizer))
    assert all(w in pieces or any(w[:k] in pieces and w[k:] in pieces
                                  for k in range(2, len(w) - 1)) for w in used), used
    assert len(used - fixed) > 5 * len(used & fixed)
  if words != "fixed":
    assert len(names) >= 0.9 * len(offered)  # a fresh name nearly every time it is offered
  assert read_report(out)["rename"] == {"share": 1.0, "words": words}
  assert read_jsonl(os.path.join(out, "eval.jsonl")) == read_jsonl(os.path.join(plain,
                                                                                "eval.jsonl"))


def test_short_schemas_put_the_name_close_to_the_call(tmp_path, tokenizer_path, tokenizer):
  """--max_offered 1 --schema_detail names: one function a conversation, offered as its name
  and typed parameters only (no descriptions), so the schema is short; calls still validate,
  and the held-out eval keeps its full schemas."""
  out = build(tmp_path / "short", tokenizer_path, "--max_offered", "1", "--schema_detail",
              "names", "--rename_share", "1", "--rename_words", "invented")
  full = build(tmp_path / "full", tokenizer_path, "--rename_share", "1", "--rename_words",
               "invented")
  offered, n_calls = _renamed_tools(out, tokenizer)
  assert n_calls >= 10
  for t in offered:
    assert "description" not in json.dumps(t), t
    assert set(t["parameters"]["properties"]) and all(
        "type" in p for p in t["parameters"]["properties"].values())
  n_offered = [len(json.loads(re.search(r"<tools>(.*?)</tools>", text, re.S).group(1)))
               for _, text in conversations(os.path.join(out, "train"), tokenizer)]
  assert set(n_offered) == {1}
  full_offered, _ = _renamed_tools(full, tokenizer)

  def mean_tokens(tools):
    return sum(len(tokenizer.encode(json.dumps(t))) for t in tools) / len(tools)
  assert mean_tokens(offered) < 0.8 * mean_tokens(full_offered)
  assert read_report(out)["rename"] == {"share": 1.0, "words": "invented"}
  assert read_jsonl(os.path.join(out, "eval.jsonl")) == read_jsonl(os.path.join(full,
                                                                                "eval.jsonl"))


def test_name_weight_weighs_exactly_the_called_names(tmp_path, tokenizer_path, tokenizer):
  """--name_weight 3: the tokens that spell each call's function name weigh 3 and no other
  token does; the tokens themselves and every other weight are those of the plain build."""
  common = ("--rename_share", "1", "--rename_words", "invented")
  out = build(tmp_path / "nw", tokenizer_path, *common, "--name_weight", "3")
  plain = build(tmp_path / "plain", tokenizer_path, *common)
  docs, plain_docs = documents(os.path.join(out, "train")), documents(os.path.join(plain,
                                                                                   "train"))
  assert len(docs) == len(plain_docs)
  n_names = 0
  for d, p in zip(docs, plain_docs):
    np.testing.assert_array_equal(d["tokens"], p["tokens"])
    assert set(np.unique(p["weights"])) <= {0, 1}
    np.testing.assert_array_equal(np.minimum(d["weights"], 1), p["weights"])
    if d["pad"]:
      continue
    heavy = d["weights"] == 3
    edges = np.flatnonzero(np.diff(np.concatenate([[0], heavy.astype(int), [0]])))
    runs = [tokenizer.decode(d["tokens"][a:b].tolist()) for a, b in zip(edges[::2], edges[1::2])]
    text = tokenizer.decode(d["tokens"][1:-1].tolist())
    called = re.findall(re.escape(chat_format.TOOL_CALL_OPEN) + r'\{"name": "([^"]+)"', text)
    assert runs == called, (runs, called)
    n_names += len(called)
  assert n_names >= 10


def test_generated_functions_are_spelt_from_their_request(tmp_path, tokenizer_path, tokenizer):
  """--generated_share 1: every synthetic conversation offers functions generated afresh; the
  called one's noun and attribute are words of the user's request, as is every argument's
  value, the other offered ones use other nouns, calls validate, no held-out word is used;
  eval_generated.jsonl asks fresh ones, and the held-out eval is that of the plain build."""
  out = build(tmp_path / "gen", tokenizer_path, "--generated_share", "1")
  plain = build(tmp_path / "plain", tokenizer_path)
  held_words = tool_synth.name_words(
      [f for f in tool_synth.LIBRARY if f.name in tool_synth.HELDOUT_FUNCTIONS])
  offered, n_calls = _renamed_tools(out, tokenizer)
  library = {f.name for f in tool_synth.LIBRARY}
  assert n_calls >= 10 and not {t["name"] for t in offered} & library
  for t in offered:
    assert not _name_words(t) & held_words, t["name"]
  rows = read_jsonl(os.path.join(out, "eval_generated.jsonl"))
  calls = [r for r in rows if r["expected"] == "call"]
  assert len(rows) == 30 and len(calls) >= 10
  for r in calls:
    _, noun, attr = r["expected_name"].split("_")
    request = r["messages"][-1]["content"].lower()
    assert noun in request and attr in request, (r["expected_name"], request)
    others = [t["name"].split("_")[1] for t in r["tools"] if t["name"] != r["expected_name"]]
    assert noun not in others
    # Every argument is a value the request states: the id, a number, a choice, a text.
    args = r["expected_arguments"]
    assert args[f"{noun}_id"] == re.search(r"[A-Z]-\d+", request.upper()).group(0)
    assert all(str(v).lower() in request for v in args.values()), (args, request)
    assert set(args) == set(next(t for t in r["tools"] if t["name"] == r["expected_name"])[
        "parameters"]["properties"])
  kinds = {len(r["expected_arguments"]) for r in calls}
  assert kinds >= {1, 2}, kinds  # some requests carry more than the id
  assert read_jsonl(os.path.join(out, "eval.jsonl")) == read_jsonl(os.path.join(plain,
                                                                                "eval.jsonl"))
  assert not os.path.exists(os.path.join(plain, "eval_generated.jsonl"))
  with pytest.raises(ValueError, match="--generated_share 2"):
    build(tmp_path / "bad", tokenizer_path, "--generated_share", "2")


def test_generated_functions_with_invented_words(tmp_path, tokenizer_path, tokenizer):
  """--generated_share 1 --rename_words invented: the generated functions' verb, noun,
  attribute and parameter words are made up (none of the fixed lists' or a held-out name's),
  still stated in the request, and their calls validate."""
  out = build(tmp_path / "inv", tokenizer_path, "--generated_share", "1", "--rename_words",
              "invented")
  offered, n_calls = _renamed_tools(out, tokenizer)
  fixed = set(tool_synth._NAME_VERBS + tool_synth._NAME_NOUNS + tool_synth._PARAM_WORDS
              + tool_synth._GEN_ATTRS)
  held_words = tool_synth.name_words(
      [f for f in tool_synth.LIBRARY if f.name in tool_synth.HELDOUT_FUNCTIONS])
  used = set().union(*(_name_words(t) for t in offered)) - {"id"} - set(tool_synth._GEN_UNITS)
  assert n_calls >= 10 and used and not used & (fixed | held_words)
  for r in read_jsonl(os.path.join(out, "eval_generated.jsonl")):
    if r["expected"] == "call":
      _, noun, attr = r["expected_name"].split("_")
      assert noun in r["messages"][-1]["content"] and attr in r["messages"][-1]["content"]


def test_bad_rename_settings_are_refused(tmp_path, tokenizer_path):
  with pytest.raises(ValueError, match="--rename_share"):
    build(tmp_path / "bad", tokenizer_path, "--rename_share", "1.5")
  with pytest.raises(SystemExit):  # argparse names the flag and its choices
    build(tmp_path / "bad2", tokenizer_path, "--rename_share", "1", "--rename_words", "random")
  with pytest.raises(ValueError, match="--rename_words 'random'"):
    tool_synth.rename_functions(None, [], [], {}, "random")
  with pytest.raises(ValueError, match="tokenizer's pieces"):
    tool_synth.rename_functions(None, [], [], {}, "pieces")
  with pytest.raises(ValueError, match="--name_weight 0"):
    build(tmp_path / "bad4", tokenizer_path, "--name_weight", "0")
  with pytest.raises(ValueError, match="--max_offered 0"):
    build(tmp_path / "bad3", tokenizer_path, "--max_offered", "0")


@pytest.mark.parametrize("words", ["fixed", "pieces"])
def test_generated_names_apart_from_their_request(tmp_path, tokenizer_path, tokenizer, words):
  """--generated_apart_share 1: every generated name (two or three words) and its id
  parameter are spelt from words no request states, while the description still shares the
  request's noun and attribute; calls validate and name an offered function."""
  out = build(tmp_path / "apart", tokenizer_path, "--generated_share", "1",
              "--generated_apart_share", "1", "--rename_words", words)
  offered, n_calls = _renamed_tools(out, tokenizer)
  assert n_calls >= 10
  rows = [r for r in read_jsonl(os.path.join(out, "eval_generated.jsonl"))
          if r["expected"] == "call"]
  assert len(rows) >= 10
  shapes = set()
  for r in rows:
    request = set(re.findall(r"[a-z]+", r["messages"][-1]["content"].lower()))
    words = r["expected_name"].split("_")
    shapes.add(len(words))
    assert not set(words) & request, (r["expected_name"], request)
    tool = next(t for t in r["tools"] if t["name"] == r["expected_name"])
    described = set(re.findall(r"[a-z]+", tool["description"].lower()))
    assert len(described & request) >= 2, (tool["description"], request)
    id_param = next(k for k in r["expected_arguments"] if k.endswith("_id"))
    assert id_param == f"{words[1]}_id" and words[1] not in request
  assert shapes == {2, 3}
  with pytest.raises(ValueError, match="--generated_apart_share -0.5"):
    build(tmp_path / "bad", tokenizer_path, "--generated_apart_share", "-0.5")


def test_generated_functions_without_an_id(tmp_path, tokenizer_path, tokenizer):
  """--generated_id_share 0: no generated function takes an id of its noun; each takes one to
  three values (number with unit, choice, quoted text), every one stated in the request,
  and every call validates (nothing is skipped)."""
  out = build(tmp_path / "noid", tokenizer_path, "--generated_share", "1",
              "--generated_id_share", "0", "--rename_words", "pieces")
  offered, n_calls = _renamed_tools(out, tokenizer)
  assert n_calls >= 10
  assert not [p for t in offered for p in t["parameters"]["properties"] if p.endswith("_id")]
  assert read_report(out)["skipped"] == {}
  rows = [r for r in read_jsonl(os.path.join(out, "eval_generated.jsonl"))
          if r["expected"] == "call"]
  assert len(rows) >= 10 and {len(r["expected_arguments"]) for r in rows} >= {1, 2, 3}
  for r in rows:
    request = r["messages"][-1]["content"].lower()
    assert all(str(v).lower() in request for v in r["expected_arguments"].values()), r
  with pytest.raises(ValueError, match="--generated_id_share 1.5"):
    build(tmp_path / "bad", tokenizer_path, "--generated_id_share", "1.5")
