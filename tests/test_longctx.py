"""data_pipeline.longctx_hard: solvable-only-from-context tasks, distance spread, determinism."""

import json
import os
import re

import numpy as np
import pytest

from data_pipeline import builder_utils as bu
from data_pipeline import longctx_hard
from jaxlm.data import shards
from tests.builders_helpers import (documents, read_jsonl, read_report, tokenizer,  # noqa: F401
                                    tokenizer_path, tree_digest, weighted_runs)

SEQ = 8192


def build(out_dir, tokenizer_path, *extra, train=SEQ * 24, val=SEQ, workers=1, seed=0):
  argv = ["--out_dir", str(out_dir), "--tokenizer", tokenizer_path, "--seq_len", str(SEQ),
          "--target_train_tokens", str(train), "--target_val_tokens", str(val), "--seed", str(seed),
          "--num_workers", str(workers), "--filler_chars", "300000", "--eval_examples", "12",
          "--answer_weight", "3", "--quiet", *extra]
  longctx_hard.main(argv)
  return str(out_dir)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tokenizer_path):
  return build(tmp_path_factory.mktemp("lc") / "out", tokenizer_path, train=SEQ * 60)


def test_every_answer_is_recovered_from_its_context_only(built, tokenizer):
  infos = read_jsonl(os.path.join(built, "train_documents.jsonl"))
  docs = [d for d in documents(os.path.join(built, "train"))]
  assert len(docs) == len(infos) >= 60
  tasks = set()
  for info, doc in zip(infos, docs):
    tokens, weights = doc["tokens"], doc["weights"]
    assert tokens.size == SEQ and info["offset"] == doc["offset"]
    runs = weighted_runs(tokens, weights - 1)  # answers carry weight 3, the rest 1
    assert len(runs) == len(info["distance_tokens"]) >= 1
    for (s, e), distance in zip(runs, info["distance_tokens"]):
      answer = tokenizer.decode(tokens[s:e]).strip()
      prompt = tokenizer.decode(tokens[1:s])
      assert longctx_hard.solve_from_text(info["task"], prompt) == answer, info
      question = prompt[prompt.rindex("\n"):]
      assert answer not in question
      # Nothing within the dependency distance gives the answer away.
      assert answer not in tokenizer.decode(tokens[s - distance:s])
      if info["task"] != "variable_tracking":  # there the answer is computed, not copied
        assert answer in prompt
    tasks.add(info["task"])
  assert tasks == set(longctx_hard.TASKS)


def test_distances_spread_over_the_window(built):
  report = read_report(built)
  hist = report["distance_histogram"]
  distances = [d for row in read_jsonl(os.path.join(built, "train_documents.jsonl"))
               for d in row["distance_tokens"]]
  assert sum(hist.values()) == len(distances)
  assert np.mean(np.asarray(distances) > 2048) >= 0.5
  assert report["fraction_distance_over_2048"] >= 0.5
  assert min(distances) < 2048 and max(distances) > 6144  # the whole window, not one band
  assert report["tokens"]["train"] >= SEQ * 60 and report["tokens"]["val"] >= SEQ


def test_eval_file_holds_solvable_prompts(built):
  rows = read_jsonl(os.path.join(built, "eval.jsonl"))
  assert len(rows) == 12
  for row in rows:
    assert set(row) == {"task", "prompt", "answer", "distance_tokens", "length_tokens"}
    assert longctx_hard.solve_from_text(row["task"], row["prompt"]) == row["answer"]
    assert row["answer"] not in row["prompt"][row["prompt"].rindex("\n"):]
    assert 0 < row["distance_tokens"] < row["length_tokens"] <= SEQ


def test_split_dir_reads_and_weights_are_uint8_sidecar(built):
  sd = shards.SplitDir(os.path.join(built, "train"))
  assert sd.meta["has_loss_weights"] and sd.num_tokens % SEQ == 0
  assert set(np.unique(sd.read(0, SEQ)["loss_weights"])) == {1.0, 3.0}


def test_short_curriculum_documents(tmp_path, tokenizer_path):
  out = build(tmp_path / "short", tokenizer_path, "--max_doc_tokens", "512", "--tasks",
              "passkey,kv_retrieval", train=512 * 20, val=512)
  infos = read_jsonl(os.path.join(out, "train_documents.jsonl"))
  assert {i["length_tokens"] for i in infos} == {512}
  assert all(128 <= d < 512 for i in infos for d in i["distance_tokens"])
  assert {i["task"] for i in infos} == {"passkey", "kv_retrieval"}


def test_same_seed_same_bytes_any_worker_count(tmp_path, tokenizer_path):
  a = build(tmp_path / "a", tokenizer_path, train=SEQ * 6, workers=1)
  b = build(tmp_path / "b", tokenizer_path, train=SEQ * 6, workers=2)
  c = build(tmp_path / "c", tokenizer_path, train=SEQ * 6, seed=1)
  assert tree_digest(a) == tree_digest(b)
  assert tree_digest(a)["train/shard_00000.bin"] != tree_digest(c)["train/shard_00000.bin"]


def test_checker_refuses_text_without_the_information():
  with pytest.raises(AttributeError):
    longctx_hard.solve_from_text("passkey", "filler\nWhat is the pass key? The pass key is")
  text = "let abc = 5\nlet xyz = abc * 3\nQuestion: what is the value of xyz? Answer:"
  assert longctx_hard.solve_from_text("variable_tracking", text) == "15"


def test_bad_flags_exit_with_message(tmp_path, tokenizer_path):
  with pytest.raises(SystemExit, match="unknown task"):
    bu.run_main(lambda: build(tmp_path / "x", tokenizer_path, "--tasks", "passkey,nope"))
  with pytest.raises(SystemExit, match="cannot hold distances"):
    bu.run_main(lambda: build(tmp_path / "y", tokenizer_path, "--max_doc_tokens", "256",
                              "--min_distance", "300"))


def test_impossible_task_is_left_out_and_reported(tmp_path, tokenizer_path, capsys):
  # kv_retrieval's records do not fit 128-token documents with distances >= 16: it is left
  # out up front (said on stderr and in the report), the others are built.
  out = build(tmp_path / "s", tokenizer_path, "--seq_len", "128", "--min_distance", "16",
              "--max_distance", "100", train=128 * 40, val=128 * 2)
  report = read_report(out)
  assert "kv_retrieval" in report["tasks_left_out"]
  assert "kv_retrieval" not in report["documents_per_task"]
  assert "leaving out kv_retrieval" in capsys.readouterr().err
  infos = read_jsonl(os.path.join(out, "train_documents.jsonl"))
  assert {i["length_tokens"] for i in infos} == {128}


def test_setting_no_task_fits_is_refused_in_one_line(tmp_path, tokenizer_path):
  with pytest.raises(SystemExit) as e:
    bu.run_main(lambda: build(tmp_path / "z", tokenizer_path, "--seq_len", "128",
                              "--min_distance", "16", "--tasks", "kv_retrieval"))
  message = str(e.value)
  assert "\n" not in message and "--min_distance 16" in message and "--seq_len 128" in message
  assert not os.path.exists(tmp_path / "z")


def _toy_filler(tokenizer):
  prose = ["Lorem ipsum dolor sit amet. Consectetur adipiscing elit sed. " * 12] * 3
  code = ["alpha = beta + gamma\ndelta = epsilon(zeta)\n" * 12] * 3
  corpus = longctx_hard.text_sources.Corpus(prose, code, [], 1)
  return longctx_hard.build_filler(tokenizer, corpus), corpus


def test_needles_sit_at_line_or_sentence_boundaries(tokenizer):
  import random  # pylint: disable=import-outside-toplevel
  filler, corpus = _toy_filler(tokenizer)
  maker = longctx_hard.TaskMaker({"min_distance": 16, "max_distance": None}, corpus, 512)
  first_words = ("Lorem ", "Consectetur ", "alpha ", "delta ")
  rng, checked = random.Random(0), 0
  for _ in range(40):
    plan = rng.choice([maker.passkey, maker.multi_query])(rng)
    doc = longctx_hard.assemble(plan, tokenizer, filler, 512, rng)
    if doc is None:
      continue
    text = tokenizer.decode(doc.tokens)
    inserts = [n.text.strip("\n") for n in plan.needles] + [plan.tail[0][0].strip("\n")]
    for k, inner in enumerate(inserts):
      at = text.find(inner)
      assert at >= 0, inner
      # the filler before an insert ends a sentence or a line (or there is none)
      before = text[:at].rstrip("\n ")
      assert before == "" or before.endswith(".") or text[:at].endswith("\n\n") or \
          text[:at - 1].endswith("\n"), repr(text[max(0, at - 40):at + 10])
      if k == len(inserts) - 1:
        continue  # after the question comes the answer
      after = text[at + len(inner):].lstrip("\n ")
      if after and not any(after.startswith(i) for i in inserts):
        # the filler after a needle starts a sentence or a line, never inside a word
        assert after.startswith(first_words), repr(text[at:at + len(inner) + 30])
      checked += 1
  assert checked >= 40


def test_heldout_passkey_eval_shares_no_phrasing_with_training(built, tokenizer):
  from jaxlm import eval_tasks  # pylint: disable=import-outside-toplevel
  train_sentences = set()
  for needle, question in longctx_hard.PASSKEY_TEMPLATES:
    train_sentences.update(s.strip() for s in re.split(r"(?<=[.?:])\s", needle + " " + question))
  for needle, question in eval_tasks.PASSKEY_HELDOUT_TEMPLATES:
    held = [s.strip() for s in re.split(r"(?<=[.?:])\s", needle + " " + question)]
    assert not set(held) & train_sentences, held
  # The training format is one of the training templates: the plain passkey suite asks it.
  assert (eval_tasks.PASSKEY_NEEDLE, eval_tasks.PASSKEY_QUESTION) in longctx_hard.PASSKEY_TEMPLATES
  # No training document holds a held-out needle or question phrase, filler sentence or the
  # instruction (the key phrase of each template is enough to tell).
  text = "".join(tokenizer.decode(d["tokens"]) for d in documents(os.path.join(built, "train")))
  phrases = [q.rsplit("?", 1)[1].strip() for _, q in eval_tasks.PASSKEY_HELDOUT_TEMPLATES]
  phrases += list(eval_tasks.PASSKEY_HELDOUT_FILLER) + [eval_tasks.PASSKEY_HELDOUT_INSTRUCTION]
  for phrase in phrases:
    assert phrase not in text, phrase


@pytest.mark.parametrize("phrasings", ["generated", "wide"])
def test_generated_passkey_phrasings_are_solvable_and_not_held_out(tmp_path, tokenizer_path,
                                                                  tokenizer, phrasings):
  from jaxlm import eval_tasks  # pylint: disable=import-outside-toplevel
  out = build(tmp_path / "gen", tokenizer_path, "--max_doc_tokens", "512", "--tasks", "passkey",
              "--passkey_phrasings", phrasings, "--min_distance", "16",
              train=512 * (30 if phrasings == "generated" else 60), val=512)
  frames = longctx_hard.PASSKEY_FRAMES + longctx_hard.WIDE_FRAMES
  infos = read_jsonl(os.path.join(out, "train_documents.jsonl"))
  questions = set()
  for info, doc in zip(infos, documents(os.path.join(out, "train"))):
    (s, e), = weighted_runs(doc["tokens"], doc["weights"] - 1)
    prompt = tokenizer.decode(doc["tokens"][1:s])
    assert longctx_hard.solve_from_text("passkey", prompt) == tokenizer.decode(
        doc["tokens"][s:e]).strip()
    leads = [m.group(0) for _, _, lead in frames
             for m in [re.search(longctx_hard._frame_pattern(lead) + r"\Z", prompt)] if m]
    if phrasings == "generated" or leads:  # wide: half are the fixed templates
      assert leads, prompt[-120:]
      questions.add(leads[0])
  assert len(questions) >= 20  # many phrasings, not a few sentences
  # No held-out question, and no content word of a held-out needle or question, in any frame,
  # opener or word list: the held-out score is about phrasings the model never saw.
  held_words = {w for needle, q in eval_tasks.PASSKEY_HELDOUT_TEMPLATES
                for w in re.findall(r"[a-z]+", (needle + " " + q).lower()) if len(w) >= 4}
  held_words -= {"number", "what", "which", "this", "that", "with", "from", "your"}
  vocabulary = " ".join([*(" ".join(f) for f in frames), *longctx_hard.PASSKEY_OPENERS,
                         *longctx_hard.WIDE_OPENERS, *longctx_hard.WIDE_REMARKS,
                         *longctx_hard._WORDS, *longctx_hard._NOUNS]).lower()
  assert held_words and not held_words & set(re.findall(r"[a-z]+", vocabulary))
  text = "".join(tokenizer.decode(d["tokens"]) for d in documents(os.path.join(out, "train")))
  for _, q in eval_tasks.PASSKEY_HELDOUT_TEMPLATES:
    assert q.rsplit("?", 1)[1].strip() not in text
  # wide: its own frames, openers and remarks are used, and names no word list holds
  wide_used = [x for x in [*(f[0].split("{", 1)[0] for f in longctx_hard.WIDE_FRAMES
                             if not f[0].startswith("{")),
                           *(o.split("{", 1)[0] for o in longctx_hard.WIDE_OPENERS),
                           *longctx_hard.WIDE_REMARKS] if x.strip() and x in text]
  lists = set(longctx_hard._WORDS) | set(longctx_hard._NOUNS)
  made_up = {m.group("n") for q in questions
             for _, _, lead in frames
             for m in [re.fullmatch(longctx_hard._frame_pattern(lead), q)] if m
             if "n" in m.groupdict()} - lists
  if phrasings == "wide":
    assert len(wide_used) >= 8 and len(made_up) >= 5, (wide_used, made_up)
  else:
    assert not made_up and not any(r in text for r in longctx_hard.WIDE_REMARKS)


def test_key_digits_set_the_answer_lengths(tmp_path, tokenizer_path):
  """--key_digits 3,7: keys of every length from 3 to 7 (a model trained on one length learns
  the length, not where a key ends); a bad range is refused naming the flag."""
  out = build(tmp_path / "k", tokenizer_path, "--seq_len", "128", "--max_doc_tokens", "128",
              "--min_distance", "2", "--tasks", "passkey,multi_query", "--key_digits", "3,7",
              train=128 * 200, val=128 * 2)
  lengths = set()
  for doc, info in zip(documents(os.path.join(out, "train")),
                       read_jsonl(os.path.join(out, "train_documents.jsonl"))):
    for s, e in weighted_runs(doc["tokens"], doc["weights"] - 1):
      lengths.add(e - s - 1)  # a space piece, then one piece per digit
  assert lengths == {3, 4, 5, 6, 7}
  with pytest.raises(ValueError, match="--key_digits"):
    build(tmp_path / "bad", tokenizer_path, "--key_digits", "7,3")


@pytest.mark.parametrize("kind", ["names", "both"])
def test_key_kind_names_are_snake_case_answers_the_checker_recovers(tmp_path, tokenizer_path,
                                                                   tokenizer, kind):
  """--key_kind names: every passkey / kv_retrieval / multi_query answer is a snake_case name
  (no digit key), recovered by the checker from its context alone, in training and eval;
  `both` mixes names and digit keys."""
  out = build(tmp_path / kind, tokenizer_path, "--seq_len", "512", "--max_doc_tokens", "512",
              "--min_distance", "2", "--tasks", "passkey,multi_query,kv_retrieval",
              "--passkey_phrasings", "both", "--key_kind", kind, train=512 * 60, val=512 * 2)
  name = re.compile(r"[a-z]+(_[a-z]+){0,2}")
  answers = []
  for doc, info in zip(documents(os.path.join(out, "train")),
                       read_jsonl(os.path.join(out, "train_documents.jsonl"))):
    for s, _ in weighted_runs(doc["tokens"], doc["weights"] - 1):
      prompt = tokenizer.decode(doc["tokens"][1:s])
      answer = longctx_hard.solve_from_text(info["task"], prompt)
      assert tokenizer.decode(doc["tokens"][s:]).startswith(" " + answer), info
      answers.append(answer)
  evals = read_jsonl(os.path.join(out, "eval.jsonl"))
  assert evals and all(longctx_hard.solve_from_text(r["task"], r["prompt"]) == r["answer"]
                       for r in evals)
  answers += [r["answer"] for r in evals]
  names = [a for a in answers if name.fullmatch(a)]
  digits = [a for a in answers if a.isdigit()]
  assert len(names) + len(digits) == len(answers) > 100
  assert len({n.count("_") for n in names}) == 3  # one, two and three words
  if kind == "names":
    assert not digits
  else:
    assert 0.3 < len(names) / len(answers) < 0.7


def test_stop_weight_marks_the_token_that_ends_each_answer(tmp_path, tokenizer_path, tokenizer):
  """--stop_weight weighs the one token after each answer (where a copied key must stop);
  the answers keep --answer_weight and every other token weighs 1."""
  out = build(tmp_path / "stop", tokenizer_path, "--stop_weight", "5", "--tasks",
              "passkey,multi_query,kv_retrieval", train=SEQ * 6)
  infos = read_jsonl(os.path.join(out, "train_documents.jsonl"))
  for info, doc in zip(infos, documents(os.path.join(out, "train"))):
    tokens, weights = doc["tokens"], doc["weights"]
    answers = weighted_runs(tokens, weights == 3)
    stops = np.flatnonzero(weights == 5)
    assert len(answers) == len(info["distance_tokens"]) == len(stops) >= 1
    assert [e for _, e in answers] == stops.tolist()  # each stop right after its answer
    assert set(np.unique(weights)) == {1, 3, 5}
    for s in stops:
      assert not re.search(r"\d", tokenizer.decode(tokens[s:s + 1])), info


@pytest.mark.parametrize("flag", ["--answer_weight", "--stop_weight"])
def test_weight_outside_uint8_is_refused_naming_the_flag(tmp_path, tokenizer_path, flag):
  with pytest.raises(ValueError, match=f"{flag} 256 must be in"):
    build(tmp_path / "bad", tokenizer_path, flag, "256", train=SEQ)
