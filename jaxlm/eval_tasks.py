"""Long-context probe prompts and their scorers (pure Python; no JAX).

Passkey retrieval follows the protocol of the Landmark Attention paper (Mohtashami & Jaggi,
2023): a fixed instruction, a filler paragraph repeated to the wanted length, one needle
sentence holding a key in [1, 50000] at a chosen depth, then the question. The model writes
10 tokens greedily and is right when the first integer it writes is the key.

The RULER-style tasks (Hsieh et al., 2024) hide short "key -> value" needles in the same
filler and are scored like RULER's `string_match_all`: the share of reference strings that
appear in the output, ignoring case.

  niah_single      one needle; asked for its value
  niah_multikey    several needles with different keys; asked for one key's value
  niah_multivalue  several needles with the same key; asked for all values
  variable_track   a chain of assignments VAR A = 12345, VAR B = VAR A, ...; asked which
                   variables hold the number

Lengths are in tokens of the given tokenizer (BOS included) and hold the answer too, as
RULER counts them and as `jaxlm.chat` requires of a model's context: each prompt is filled
with whole filler paragraphs up to, never beyond, the length less the probe's answer budget
(`max_new_tokens`), so a model asked at its own context length writes its answer inside it.
Anything with `encode(text) -> list[int]` and `bos_id` works as a tokenizer.
"""

from __future__ import annotations

import dataclasses
import random
import re
import string
from typing import Any, Sequence

from jaxlm.data import chat_format

PASSKEY_INSTRUCTION = ("There is an important info hidden inside a lot of irrelevant text. "
                       "Find it and memorize them. I will quiz you about the important "
                       "information there.")
PASSKEY_FILLER = ("The grass is green. The sky is blue. The sun is yellow. "
                  "Here we go. There and back again.")
PASSKEY_NEEDLE = "The pass key is {key}. Remember it. {key} is the pass key."
PASSKEY_QUESTION = "What is the pass key? The pass key is"
PASSKEY_MAX_NEW_TOKENS = 10
PASSKEY_KEY_RANGE = (1, 50000)

# Held-out passkey (`--suite passkey_heldout`): phrasings, filler and instruction that no
# training document holds (data_pipeline.longctx_hard trains on PASSKEY_NEEDLE/QUESTION and
# its own PASSKEY_TEMPLATES; tests/test_longctx.py checks the sets share nothing). As in the
# training phrasings, the question ends where the key follows.
PASSKEY_HELDOUT_INSTRUCTION = ("Below is a long note. One detail in it matters; you will be "
                               "asked about it at the end.")
PASSKEY_HELDOUT_TEMPLATES = (
    ("The vault combination is {key}. Do not forget it.",
     "What is the vault combination? The vault combination is"),
    ("Today the lucky ticket is {key}.", "Which ticket is lucky today? The lucky ticket is"),
    ("The locker number assigned to you is {key}.",
     "What locker number was assigned? The locker number is"),
    ("Please write down the tracking number {key} for later.",
     "What was the tracking number? The tracking number is"),
)
PASSKEY_HELDOUT_FILLER = (
    "The river bends twice before it reaches the old mill.",
    "Swallows nest under the bridge every spring.",
    "A narrow path climbs the hill behind the chapel.",
    "The baker opens his shop before sunrise.",
    "Fog settles over the meadow on autumn mornings.",
    "Two fishing boats rest on the pebbled shore.",
    "The orchard yields more pears than apples this year.",
    "An owl calls from the pine wood after dusk.",
    "The market square fills with stalls on Saturdays.",
    "Snow rarely lasts more than a day in the valley.",
    "The lighthouse keeper paints the railings each summer.",
    "Wild thyme grows between the stones of the wall.",
    "Children race paper boats down the stream.",
    "The ferry crosses the lake three times a day.",
    "Copper roofs turn green after many years of rain.",
    "A shepherd counts his flock at the gate each evening.",
)
PASSKEY_PHRASINGS = ("train", "heldout")

RULER_TASKS = ("niah_single", "niah_multikey", "niah_multivalue", "variable_track")
# Enough room for every reference (numbers tokenise digit by digit).
RULER_MAX_NEW_TOKENS = {"niah_single": 16, "niah_multikey": 16, "niah_multivalue": 64,
                        "variable_track": 48}


@dataclasses.dataclass
class Probe:
  """One prompt and what a correct answer contains."""
  task: str
  prompt_ids: list[int]
  references: list[str]  # passkey: [str(key)]; RULER: every string the answer must hold
  length: int  # target length in tokens
  depth: float | None  # needle position in [0, 1] (passkey), None when needles are scattered
  max_new_tokens: int


# ------------------------------------------------------------------ filling to a length


def filled_prompt(tokenizer, build, length: int, answer_tokens: int, label: str) -> list[int]:
  """Token ids of `build(n)` with the largest filler count n that leaves `answer_tokens` of
  `length` free for the answer.

  `build(n)` returns the prompt text holding n filler paragraphs. Tokenisation is not
  additive at the seams, so the count is estimated from the per-paragraph cost and then
  corrected against the real encoding.
  """
  def encoded(n):
    return [tokenizer.bos_id] + tokenizer.encode(build(n))

  target_tokens = length - answer_tokens
  base = len(encoded(0))
  if base > target_tokens:
    raise ValueError(f"{label}: {length} tokens is too short; the prompt without filler is "
                     f"already {base} tokens and the answer needs {answer_tokens} more")
  per = max(1, len(encoded(8)) - base) / 8
  n = max(0, int((target_tokens - base) / per))
  ids = encoded(n)
  while len(ids) > target_tokens and n > 0:
    n -= 1
    ids = encoded(n)
  while True:
    longer = encoded(n + 1)
    if len(longer) > target_tokens:
      return ids
    n, ids = n + 1, longer


def _with_needles(filler_count: int, needles: Sequence[tuple[float, str]],
                  paragraphs: Sequence[str] | None = None) -> str:
  """Filler paragraphs with each (depth, sentence) needle inserted between paragraphs.

  The paragraphs are PASSKEY_FILLER repeated, or paragraphs[i] for the i-th one."""
  slots: dict[int, list[str]] = {}
  for depth, sentence in needles:
    slots.setdefault(round(depth * filler_count), []).append(sentence)
  parts = []
  for i in range(filler_count + 1):
    parts.extend(slots.get(i, []))
    if i < filler_count:
      parts.append(paragraphs[i % len(paragraphs)] if paragraphs else PASSKEY_FILLER)
  return " ".join(parts)


# ------------------------------------------------------------------ passkey


def heldout_paragraphs(rng: random.Random, count: int) -> list[str]:
  """Filler paragraphs of three held-out sentences each, drawn once per prompt."""
  return [" ".join(rng.sample(PASSKEY_HELDOUT_FILLER, 3)) for _ in range(count)]


def passkey_probe(tokenizer, length: int, depth: float, key: int, phrasing: str = "train",
                  rng: random.Random | None = None) -> Probe:
  """A passkey prompt whose answer ends within `length` tokens, needle at `depth` in [0, 1].

  phrasing "train": the Landmark-Attention prompt (its needle and question are also in the
  training data). "heldout": a held-out needle/question template, filler and instruction
  (drawn with `rng`), none of which any training document holds.
  """
  if not 0.0 <= depth <= 1.0:
    raise ValueError(f"passkey depth {depth} is outside [0, 1]")
  if phrasing == "train":
    instruction, needle_t, question = PASSKEY_INSTRUCTION, PASSKEY_NEEDLE, PASSKEY_QUESTION
    paragraphs = None
  elif phrasing == "heldout":
    rng = rng or random.Random(key)
    instruction = PASSKEY_HELDOUT_INSTRUCTION
    needle_t, question = PASSKEY_HELDOUT_TEMPLATES[rng.randrange(len(PASSKEY_HELDOUT_TEMPLATES))]
    # Enough paragraphs for any length: a paragraph is > 20 tokens with any tokenizer here.
    paragraphs = heldout_paragraphs(rng, max(4, length // 8))
  else:
    raise ValueError(f"passkey phrasing {phrasing!r}; phrasings are {list(PASSKEY_PHRASINGS)}")
  needle = needle_t.format(key=key)

  def build_from(units):
    return lambda n: " ".join([instruction, _with_needles(n, [(depth, needle)], units), question])

  build = build_from(paragraphs)
  if paragraphs and 1 + len(tokenizer.encode(build(1))) + PASSKEY_MAX_NEW_TOKENS > length:
    # No whole paragraph fits a short prompt: fill it with their sentences, so that a probe of
    # any length puts filler around the needle (a split, not a new draw: the probes drawn after
    # this one stay the same).
    build = build_from([s + "." for p in paragraphs for s in p[:-1].split(". ")])
  ids = filled_prompt(tokenizer, build, length, PASSKEY_MAX_NEW_TOKENS,
                      f"passkey length {length}")
  return Probe("passkey", ids, [str(key)], length, depth, PASSKEY_MAX_NEW_TOKENS)


def passkey_probes(tokenizer, lengths: Sequence[int], depths: Sequence[float],
                   samples: int, seed: int = 0, phrasing: str = "train") -> list[Probe]:
  """`samples` probes per (length, depth), keys drawn uniformly from [1, 50000]."""
  rng = random.Random(seed)
  return [passkey_probe(tokenizer, length, depth, rng.randint(*PASSKEY_KEY_RANGE), phrasing, rng)
          for length in lengths for depth in depths for _ in range(samples)]


_INTEGER = re.compile(r"\d+")


def first_integer(text: str) -> int | None:
  match = _INTEGER.search(text)
  return int(match.group()) if match else None


def score_passkey(output: str, key: str | int) -> float:
  """1.0 when the first integer of the output is the key, else 0.0."""
  return float(first_integer(output) == int(key))


# What a passkey answer is, read from the first number of the output. Misses are told apart
# because they point at different faults: a copy that runs on, one that stops early, one that
# loses its place among the digits, and a retrieval that found nothing.
PASSKEY_ANSWER_KINDS = ("correct", "overrun", "truncated", "wrong_digits", "other_number",
                        "no_number")


def passkey_answer_kind(output: str, key: str | int) -> str:
  """One of PASSKEY_ANSWER_KINDS: correct (score_passkey's 1.0); overrun, the key with more
  digits after it (`341411` for 34141); truncated, a proper prefix of it (`3414`);
  wrong_digits, as many digits as the key but not it (`44141`); other_number, any other
  number (`244044` for 21404); no_number."""
  match = _INTEGER.search(output)
  if match is None:
    return "no_number"
  number, key = match.group(), str(key)
  if int(number) == int(key):
    return "correct"
  if len(number) > len(key) and number.startswith(key):
    return "overrun"
  if len(number) < len(key) and key.startswith(number):
    return "truncated"
  return "wrong_digits" if len(number) == len(key) else "other_number"


def passkey_overrun(output: str, key: str | int) -> float:
  """1.0 when the key was found and copied but the copy did not stop (a miss under
  score_passkey, counted apart from a failed retrieval)."""
  return float(passkey_answer_kind(output, key) == "overrun")


# ------------------------------------------------------------------ RULER-style tasks


def _word(rng: random.Random) -> str:
  """A made-up lowercase key word (not a real one, so priors cannot help)."""
  consonants, vowels = "bcdfghklmnprstvz", "aeiou"
  return "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(3))


def _number(rng: random.Random) -> str:
  return str(rng.randint(100000, 999999))


def _variable(rng: random.Random) -> str:
  return "".join(rng.choice(string.ascii_uppercase) for _ in range(5))


def _code_needle(key: str, value: str) -> str:
  return f"The hidden code for {key} is {value}."


def ruler_probe(tokenizer, task: str, length: int, rng: random.Random) -> Probe:
  """One RULER-style probe whose answer ends within `length` tokens."""
  if task == "niah_single":
    key, value = _word(rng), _number(rng)
    needles = [_code_needle(key, value)]
    question = f"What is the hidden code for {key}? The hidden code for {key} is"
    refs = [value]
  elif task == "niah_multikey":
    keys = []
    while len(keys) < 4:
      word = _word(rng)
      if word not in keys:
        keys.append(word)
    values = [_number(rng) for _ in keys]
    needles = [_code_needle(k, v) for k, v in zip(keys, values)]
    asked = rng.randrange(len(keys))
    question = (f"What is the hidden code for {keys[asked]}? "
                f"The hidden code for {keys[asked]} is")
    refs = [values[asked]]
  elif task == "niah_multivalue":
    key = _word(rng)
    values = []
    while len(values) < 4:
      value = _number(rng)
      if value not in values:
        values.append(value)
    needles = [_code_needle(key, v) for v in values]
    question = (f"The text gives several hidden codes for {key}. List all of them. "
                f"The hidden codes for {key} are:")
    refs = values
  elif task == "variable_track":
    names = []
    while len(names) < 5:
      name = _variable(rng)
      if name not in names:
        names.append(name)
    value = str(rng.randint(10000, 99999))
    needles = [f"VAR {names[0]} = {value}."]
    needles += [f"VAR {b} = VAR {a}." for a, b in zip(names, names[1:])]
    question = (f"Which variables hold {value}, directly or through other variables? "
                f"The variables holding {value} are:")
    refs = names
  else:
    raise ValueError(f"unknown RULER task {task!r}; tasks are {list(RULER_TASKS)}")
  # Needles at sorted random depths keep a variable chain in reading order.
  depths = sorted(rng.random() for _ in needles)
  placed = list(zip(depths, needles))
  instruction = ("Some special facts are hidden in the text below. Read it carefully; "
                 "a question about them follows.")

  def build(n):
    return " ".join([instruction, _with_needles(n, placed), question])

  ids = filled_prompt(tokenizer, build, length, RULER_MAX_NEW_TOKENS[task],
                      f"{task} length {length}")
  return Probe(task, ids, refs, length, None, RULER_MAX_NEW_TOKENS[task])


def ruler_probes(tokenizer, tasks: Sequence[str], lengths: Sequence[int], samples: int,
                 seed: int = 0) -> list[Probe]:
  rng = random.Random(seed)
  return [ruler_probe(tokenizer, task, length, rng)
          for task in tasks for length in lengths for _ in range(samples)]


def string_match_all(output: str, references: Sequence[str]) -> float:
  """Share of references found in the output, ignoring case (RULER's string_match_all)."""
  if not references:
    raise ValueError("string_match_all needs at least one reference")
  lowered = output.lower()
  return sum(ref.lower() in lowered for ref in references) / len(references)


def score_probe(probe: Probe, output: str) -> float:
  if probe.task == "passkey":
    return score_passkey(output, probe.references[0])
  return string_match_all(output, probe.references)


# ------------------------------------------------------------------ held-out records


def score_answer_found(output: str, answer: str) -> float:
  """1.0 when the answer string appears in the output (ignoring case and outer spaces)."""
  return float(answer.strip().lower() in output.lower())


TOOL_OUTPUT_KINDS = chat_format.TOOL_CALL_KINDS + ("no_call",)  # what a turn's first call is


def score_tool_output(parsed: dict[str, Any], record: dict[str, Any]) -> dict[str, bool]:
  """Judges one assistant turn (chat_format.parse_assistant_output) against a tool record.

  Returns flags: `called` (a call was made), `valid` (the first call parses, names an
  offered function and its arguments validate), `right_name` (valid and the expected
  function), `right_arguments` (right_name and exactly the record's expected_arguments,
  when it gives them), `decision_correct` (called exactly when a call was expected); and
  `kind`, what the first call is (one of TOOL_OUTPUT_KINDS).
  """
  expected = record.get("expected")
  if expected not in ("call", "no_call"):
    raise ValueError(f"tool eval record has expected={expected!r}; want 'call' or 'no_call'")
  calls = parsed["tool_calls"]
  called = bool(calls)
  kind = chat_format.check_tool_call(calls[0], record.get("tools") or [])[0] if called \
      else "no_call"
  valid = kind == "valid"
  right_name = right_arguments = False
  if valid:
    name, arguments = chat_format.parse_tool_call(calls[0])
    right_name = name == record.get("expected_name")
    right_arguments = right_name and arguments == record.get("expected_arguments")
  return {"called": called, "valid": valid, "right_name": right_name,
          "right_arguments": right_arguments, "decision_correct": called == (expected == "call"),
          "kind": kind}
