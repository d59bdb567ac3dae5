"""Eval prompts, scorers and suites, checked with stub generators whose answers are known."""

import json
import os
import random
import re

import pytest

from jaxlm import eval as eval_lib
from jaxlm import eval_tasks
from tests import sampling_helpers as helpers


@pytest.fixture
def tok():
  return helpers.CharTokenizer()


# --------------------------------------------------------------------------- prompts


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_passkey_prompt_follows_the_protocol_and_fills_to_the_length(tok, depth):
  probe = eval_tasks.passkey_probe(tok, 1000, depth, key=4321)
  text = tok.decode(probe.prompt_ids)
  assert probe.prompt_ids[0] == tok.bos_id
  filler_tokens = len(tok.encode(eval_tasks.PASSKEY_FILLER + " "))
  # Filled with whole paragraphs up to the length less the answer's 10 tokens (the answer is
  # written inside the length, as RULER counts it), and one more paragraph would not fit.
  room = 1000 - probe.max_new_tokens
  assert room - filler_tokens < len(probe.prompt_ids) <= room
  assert text.startswith(eval_tasks.PASSKEY_INSTRUCTION + " ")
  assert text.endswith(" " + eval_tasks.PASSKEY_QUESTION)
  needle = "The pass key is 4321. Remember it. 4321 is the pass key."
  assert text.count(needle) == 1
  before, after = text.split(needle)
  n_before = before.count(eval_tasks.PASSKEY_FILLER)
  n_after = after.count(eval_tasks.PASSKEY_FILLER)
  assert n_before == round(depth * (n_before + n_after))
  assert probe.references == ["4321"] and probe.max_new_tokens == 10


def test_passkey_keys_are_in_range_and_seeded(tok):
  a = eval_tasks.passkey_probes(tok, [300], [0.0, 1.0], samples=20, seed=3)
  b = eval_tasks.passkey_probes(tok, [300], [0.0, 1.0], samples=20, seed=3)
  keys = [int(p.references[0]) for p in a]
  assert keys == [int(p.references[0]) for p in b]
  assert all(1 <= k <= 50000 for k in keys) and len(set(keys)) > 30


def test_too_short_length_is_refused_with_the_length(tok):
  with pytest.raises(ValueError, match="passkey length 50: 50 tokens is too short"):
    eval_tasks.passkey_probe(tok, 50, 0.5, key=1)
  # A length that holds the bare prompt but not the answer after it is refused too.
  bare = len([tok.bos_id] + tok.encode(" ".join([eval_tasks.PASSKEY_INSTRUCTION,
                                                  eval_tasks.PASSKEY_NEEDLE.format(key=1),
                                                  eval_tasks.PASSKEY_QUESTION])))
  with pytest.raises(ValueError, match="the answer needs 10 more"):
    eval_tasks.passkey_probe(tok, bare + 5, 0.5, key=1)


@pytest.mark.parametrize("task", eval_tasks.RULER_TASKS)
def test_ruler_prompts_hold_their_references(tok, task):
  probe = eval_tasks.ruler_probe(tok, task, 800, random.Random(0))
  assert len(probe.prompt_ids) + probe.max_new_tokens <= 800
  text = tok.decode(probe.prompt_ids)
  assert sorted(helpers.needle_answers(text)) == sorted(probe.references)


def test_scorers():
  assert eval_tasks.first_integer("is 0042, not 7") == 42
  assert eval_tasks.first_integer("no digits") is None
  assert eval_tasks.score_passkey(" 12345. The pass", 12345) == 1.0
  assert eval_tasks.score_passkey(" 1234 5", 12345) == 0.0
  # A copy that runs on: a miss, counted apart from a wrong or truncated key.
  assert eval_tasks.score_passkey(" 341411.", 34141) == 0.0
  assert eval_tasks.passkey_overrun(" 341411.", 34141) == 1.0
  assert eval_tasks.passkey_overrun(" 34141.", "34141") == 0.0  # correct: not an overrun
  assert eval_tasks.passkey_overrun(" 3414.", 34141) == 0.0  # truncated
  assert eval_tasks.passkey_overrun(" 934141", 34141) == 0.0
  assert eval_tasks.passkey_overrun("no digits", 34141) == 0.0
  kinds = {" 34141.": "correct", " 341411.": "overrun", " 3414.": "truncated",
           " 44141.": "wrong_digits", " 244044": "other_number", " 934141": "other_number",
           " 4.": "other_number", "words only": "no_number"}
  for output, kind in kinds.items():
    assert eval_tasks.passkey_answer_kind(output, 34141) == kind, output
  assert set(kinds.values()) == set(eval_tasks.PASSKEY_ANSWER_KINDS)
  assert eval_tasks.string_match_all("ABCDE and fghij", ["abcde", "FGHIJ", "zzz", "q"]) == 0.5
  assert eval_tasks.score_answer_found("The answer: Blue Whale!", " blue whale ") == 1.0


# --------------------------------------------------------------------------- suites


@pytest.mark.parametrize("mode,expected", [("right", 1.0), ("wrong", 0.0), ("alternate", 0.5)])
def test_passkey_suite_accuracy_on_stubs(tok, mode, expected):
  stub = helpers.StubGenerator(tok, mode)
  result = eval_lib.passkey_suite(stub, tok, lengths=[300, 600], depths=[0.0, 0.5, 1.0],
                                  samples=2)
  assert result["accuracy"] == expected
  assert result["by_length"] == {"300": expected, "600": expected}
  assert result["by_length_depth"]["600"] == {"0": expected, "0.5": expected, "1": expected}
  assert stub.calls == [(12, 10, (tok.eos_id,))]  # one call, 10 new tokens, EOS stops
  table = eval_lib.format_results({"passkey": result})
  assert f"passkey accuracy: {100 * expected:.1f}%" in table
  row = [line for line in table.splitlines() if line.startswith("600")][0]
  assert row.split()[1:] == [f"{100 * expected:.1f}"] * 4


@pytest.mark.parametrize("mode,expected", [("right", 1.0), ("wrong", 0.0)])
def test_ruler_suite_on_stubs(tok, mode, expected):
  result = eval_lib.ruler_suite(helpers.StubGenerator(tok, mode), tok, lengths=[500],
                                samples=2)
  assert result["accuracy"] == expected
  assert result["by_task"] == {t: expected for t in eval_tasks.RULER_TASKS}
  assert f"ruler score: {100 * expected:.1f}%" in eval_lib.format_results({"ruler": result})


def test_ruler_multivalue_counts_the_share_of_values_found(tok):
  result = eval_lib.ruler_suite(helpers.StubGenerator(tok, "half_values"), tok,
                                lengths=[500], samples=3, tasks=["niah_multivalue"])
  assert result["accuracy"] == 0.5


def _write_jsonl(path, records):
  with open(path, "w", encoding="utf-8") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")
  return str(path)


def test_longctx_suite_scores_answer_found(tok, tmp_path):
  records = [{"task": "copy", "prompt": f"Remember {w}. Say it:", "answer": w,
              "distance_tokens": 5, "length_tokens": 20} for w in ("apple", "pear", "fig")]
  records.append({"task": "sum", "prompt": "2+2=", "answer": "4"})
  path = _write_jsonl(tmp_path / "longctx.jsonl", records)
  answers = {"apple": " APPLE!", "pear": " peach", "fig": " fig", "2+2": " 5"}

  def generate_fn(prompts, max_new_tokens, stop_ids):
    outs = []
    for ids in prompts:
      text = tok.decode(ids)
      word = next(k for k in answers if k in text)
      outs.append(tok.encode(answers[word]))
    return outs

  result = eval_lib.longctx_suite(generate_fn, tok, path)
  assert result["by_task"] == {"copy": 2 / 3, "sum": 0.0}
  assert result["by_distance"] == {"0-512": 2 / 3}  # the record without a distance is left out
  assert result["accuracy"] == 0.5 and result["count"] == 4


def test_longctx_file_errors_name_the_file(tok, tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.jsonl"):
    eval_lib.longctx_suite(None, tok, str(tmp_path / "nope.jsonl"))
  path = _write_jsonl(tmp_path / "bad.jsonl", [{"task": "x", "prompt": "p"}])
  with pytest.raises(ValueError, match=r"bad.jsonl:1 lacks key\(s\) \['answer'\]"):
    eval_lib.longctx_suite(None, tok, path)


WEATHER_TOOL = {"name": "get_weather", "description": "Weather now",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                               "required": ["city"]}}


class ChatTokenizer(helpers.CharTokenizer):
  """Chat markers as single ids above the character range."""
  def __init__(self):
    from jaxlm.data import chat_format
    self.specials = {m: 300 + i for i, m in enumerate(chat_format.SPECIAL_TOKENS)}

  def special_id(self, piece):
    return self.specials[piece]

  def decode(self, ids):
    inverse = {v: k for k, v in self.specials.items()}
    return "".join(inverse.get(i, chr(i - 3) if 3 <= i < 300 else "") for i in ids)


def test_tools_suite_judges_validity_and_decisions(tmp_path):
  tok = ChatTokenizer()
  call = {"messages": [{"role": "user", "content": "weather?"}], "tools": [WEATHER_TOOL],
          "expected": "call", "expected_name": "get_weather",
          "expected_arguments": {"city": "Oslo"}}
  no_call = {"messages": [{"role": "user", "content": "hi"}], "tools": [WEATHER_TOOL],
             "expected": "no_call", "expected_name": None}
  path = _write_jsonl(tmp_path / "tools.jsonl", [call] * 5 + [no_call, no_call])
  outputs = iter([
      '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call>',  # valid
      '<tool_call>{"name": "get_weather", "arguments": {"town": "Oslo"}}</tool_call>',  # bad args
      '<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}',  # unterminated JSON
      "I cannot check that.",  # no call where one was expected
      '<tool_call>{"name": "get_forecast", "arguments": {"city": "Oslo"}}</tool_call>',  # not offered
      "Hello!",  # right: no call
      '<tool_call>{"name": "launch", "arguments": {}}</tool_call>',  # wrong: unknown, and called
  ])
  seen_stops = []

  def generate_fn(prompts, max_new_tokens, stop_ids):
    seen_stops.append(list(stop_ids))
    return [_encode_with_specials(tok, next(outputs)) for _ in prompts]

  result = eval_lib.tools_suite(generate_fn, tok, path)
  from jaxlm.data import chat_format
  assert seen_stops == [[tok.eos_id, tok.specials[chat_format.END_OF_TURN]]]
  assert result["call_rate"] == 0.8
  assert result["valid_call_rate"] == 0.2
  assert result["right_function_rate"] == 0.2
  assert result["right_arguments_rate"] == 0.2
  assert result["no_call_accuracy"] == 0.5
  assert result["decision_accuracy"] == 5 / 7
  assert result["invalid_when_called"] == 4 / 5
  # Where the calls asked for go wrong, one of each kind here (the no_call prompts' own
  # unknown call is not counted: kinds are over the prompts that wanted a call).
  assert result["call_kinds"] == dict.fromkeys(eval_tasks.TOOL_OUTPUT_KINDS, 1)
  assert [r["kind"] for r in result["records"]] == [
      "valid", "bad_arguments", "malformed", "no_call", "unknown_function", "no_call",
      "unknown_function"]
  text = eval_lib.format_results({"tools": result})
  assert re.search(r"valid_call_rate\s+20\.0%", text)
  assert "valid 1, bad_arguments 1, unknown_function 1, malformed 1, no_call 1" in text


def _encode_with_specials(tok, text):
  ids = []
  while text:
    for marker, i in tok.specials.items():
      if text.startswith(marker):
        ids.append(i)
        text = text[len(marker):]
        break
    else:
      ids.append(3 + ord(text[0]))
      text = text[1:]
  return ids


def test_unknown_suite_and_missing_files_are_refused(tok):
  with pytest.raises(ValueError, match="unknown suite"):
    eval_lib.run_suites(["passkee"], eval_lib.EvalContext(tokenizer=tok))
  with pytest.raises(ValueError, match="--tools_eval"):
    eval_lib.run_suites(["tools"], eval_lib.EvalContext(tokenizer=tok))


def test_json_output_is_strict_and_atomic(tmp_path):
  path = tmp_path / "ck" / "eval.json"
  eval_lib.write_json(str(path), {"a": float("nan"), "b": [1.5]})
  assert json.loads(path.read_text()) == {"a": None, "b": [1.5]}
  assert os.listdir(tmp_path / "ck") == ["eval.json"]


# --------------------------------------------------------------------------- held-out passkey


def _heldout_key(text):
  for needle, _ in eval_tasks.PASSKEY_HELDOUT_TEMPLATES:
    head, tail = needle.split("{key}")
    m = re.search(re.escape(head) + r"(\d+)" + re.escape(tail), text)
    if m:
      return m.group(1)
  return None


@pytest.mark.parametrize("depth", [0.0, 0.5, 1.0])
def test_heldout_passkey_prompt_shares_nothing_with_the_training_format(tok, depth):
  probe = eval_tasks.passkey_probe(tok, 900, depth, key=4321, phrasing="heldout",
                                   rng=random.Random(7))
  text = tok.decode(probe.prompt_ids)
  assert len(probe.prompt_ids) + probe.max_new_tokens <= 900 and probe.references == ["4321"]
  assert text.startswith(eval_tasks.PASSKEY_HELDOUT_INSTRUCTION + " ")
  assert any(text.endswith(" " + q) for _, q in eval_tasks.PASSKEY_HELDOUT_TEMPLATES)
  assert _heldout_key(text) == "4321" and text.count("4321") == 1
  for phrase in (eval_tasks.PASSKEY_INSTRUCTION, eval_tasks.PASSKEY_FILLER, "pass key",
                 eval_tasks.PASSKEY_QUESTION):
    assert phrase not in text
  sentences = re.findall(r"[A-Z][^.?]*\.", text)
  filler = [s for s in sentences if s in eval_tasks.PASSKEY_HELDOUT_FILLER]
  assert len(filler) >= 9 and len(set(filler)) > 5  # varied sentences, not one repeated
  needle_at = text.index("4321")
  share_before = sum(text[:needle_at].count(s) for s in eval_tasks.PASSKEY_HELDOUT_FILLER)
  assert abs(share_before / len(filler) - depth) < 0.1


def test_heldout_passkey_suite_on_a_stub(tok):
  def generate(prompt_ids, max_new_tokens, stop_ids=()):
    return [tok.encode(" " + (_heldout_key(tok.decode(ids)) or "0") + ".")[:max_new_tokens]
            for ids in prompt_ids]
  context = eval_lib.EvalContext(generate_fn=generate, tokenizer=tok, lengths=[300, 600],
                                 depths=[0.0, 1.0], samples=3)
  results = eval_lib.run_suites(["passkey_heldout", "passkey"], context)
  assert results["passkey_heldout"]["accuracy"] == 1.0
  assert results["passkey_heldout"]["by_length"] == {"300": 1.0, "600": 1.0}
  assert results["passkey"]["accuracy"] == 0.0  # the stub only reads held-out needles
  table = eval_lib.format_results(results)
  assert "held-out passkey accuracy: 100.0%" in table and "passkey accuracy: 0.0%" in table
  with pytest.raises(ValueError, match="phrasing"):
    eval_tasks.passkey_probe(tok, 300, 0.5, 1, phrasing="other")


def test_heldout_passkey_fills_short_prompts_with_sentences(tok):
  """A prompt too short for one filler paragraph is filled with single filler sentences (the
  needle is not left next to its question), and up to the length; a long one keeps whole
  paragraphs of three sentences."""
  def filler_sentences(probe):
    text = tok.decode(probe.prompt_ids)
    return [s for s in re.findall(r"[A-Z][^.?]*\.", text) if s in eval_tasks.PASSKEY_HELDOUT_FILLER]

  paragraph = len(" ".join(eval_tasks.PASSKEY_HELDOUT_FILLER[:3]))
  bare = eval_tasks.passkey_probe(tok, 10_000, 0.5, key=4321, phrasing="heldout",
                                  rng=random.Random(7))
  overhead = len(bare.prompt_ids) - len(" ".join(filler_sentences(bare))) + bare.max_new_tokens
  length = overhead + paragraph - 40  # room for some sentences, not for a paragraph
  for depth in (0.0, 0.5, 1.0):
    probe = eval_tasks.passkey_probe(tok, length, depth, key=4321, phrasing="heldout",
                                     rng=random.Random(7))
    found = filler_sentences(probe)
    assert 1 <= len(found) < 3, found
    assert length - 60 < len(probe.prompt_ids) + probe.max_new_tokens <= length
    assert _heldout_key(tok.decode(probe.prompt_ids)) == "4321"
  long = eval_tasks.passkey_probe(tok, 900, 0.5, key=4321, phrasing="heldout",
                                  rng=random.Random(7))
  assert len(filler_sentences(long)) % 3 == 0 and len(filler_sentences(long)) >= 9
