"""Long-context documents whose later tokens depend on information far back.

  python -m data_pipeline.longctx_hard --out_dir data/shards/longctx --tokenizer T.model \
      --target_train_tokens 400000000 --target_val_tokens 2000000 --seq_len 8192 \
      --answer_weight 3 --num_workers 2

Each document is real filler (stdlib docstrings, comments and code: `text_sources`) with task
inserts spliced in as tokens. Task families:
  passkey            a pass key stated once, asked for at the end
  kv_retrieval       one record among many distractor records
  variable_tracking  `let a = 7 ... let b = a + 2 ... value of b?` (2-4 hops, distractor chains)
  multi_query        several codes stated across the document, several questions at the end
  code_definition    a real stdlib function defined early; later: its parameters, or its
                     docstring's first line
  copy_span          a sentence tagged `[record N]` early; later: repeat it exactly
The dependency distance (tokens from the end of the needed information to the first answer
token) is drawn uniformly from [--min_distance, --max_distance] (default: the whole window),
so at seq_len 8192 about three quarters of the dependencies are longer than 2048 tokens and a
2k-context model cannot solve them. Each document is verified while it is built: the checker
`solve_from_text` recovers the answer from the text before it, and the answer does not occur
anywhere between the needed information and the question (a failed draw is redrawn).

Document length: the reader cuts windows starting at multiples of seq_len (each window holds
seq_len + 1 tokens, sharing one with the next), so a document of exactly seq_len tokens
(BOS ... EOS) fills one window and is never cut. Documents are padded with filler to that
length.

Curriculum (short range): retrieval has to be learned short before it is stretched. A small
model trained from scratch on passkey documents of 300-2048 tokens never learned retrieval in
3000 steps, while one first trained on documents of at most 512 tokens learned it in about 900
steps and then reached 100% at 2k. So for the phase1/2 mixes build short documents first:
`--max_doc_tokens 512` (documents of 512 tokens, distances up to what fits), then e.g.
`--max_distance 2000 --max_doc_tokens 2048`. With --max_distance alone, documents are
max_distance + 512 tokens (at most seq_len).

Needles and questions sit at line or sentence boundaries of the filler (as RULER inserts
them); a cut moves at most SNAP_TOKENS tokens to reach one. A task that cannot fit the
document length with --min_distance is left out up front (said on stderr and in the report
as tasks_left_out); when none fits, the build is refused with one line naming the flags.

Passkey phrasings (--passkey_phrasings): `fixed` draws from the 8 PASSKEY_TEMPLATES (the first
is the Landmark prompt that `jaxlm.eval --suite passkey` asks), `generated` from PASSKEY_FRAMES
filled with word-list pairs (thousands of phrasings), `both` half and half, `wide` as `both`
with more frames and openers, made-up name words and remarks after the key. None of them is a
held-out phrasing of `jaxlm.eval --suite passkey_heldout` (tests check it).

Keys (--key_kind): the answers of passkey, kv_retrieval and multi_query are digits (default),
snake_case names of one to three words (`crisp_tavoki`), or half of each; a model that only
ever copied digits copies no name (see KEY_KINDS).

Answer tokens can be upweighted with --answer_weight W (uint8 loss-weight sidecar), and the
token that ends each answer (the `.` or newline after a key) with --stop_weight. Per
document facts (task, distances, offset) go to DIR/<split>_documents.jsonl and the closing
report prints the distance histogram. A held-out eval set of the same tasks goes to --eval_out
(default DIR/eval.jsonl): {"task", "prompt", "answer", "distance_tokens", "length_tokens"}; the
prompt is the text the model continues (the answer follows after one space).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import re
import sys

import numpy as np

from data_pipeline import builder_utils as bu
from data_pipeline import text_sources
from jaxlm import eval_tasks
from jaxlm.data import shards
from jaxlm.data.tokenizer import load_tokenizer

TASKS = ("passkey", "kv_retrieval", "variable_tracking", "multi_query", "code_definition",
         "copy_span")
DISTANCE_EDGES = (0, 256, 512, 1024, 2048, 4096, 6144, 8192)
MAX_ATTEMPTS = 25
SNAP_TOKENS = 32  # how far a filler cut may move to reach a line or sentence start
# Passkey phrasings seen in training: (needle, question); the question ends where the key
# follows. The first is the Landmark-Attention passkey that `jaxlm.eval --suite passkey` asks
# (the "training-format" score); `jaxlm.eval --suite passkey_heldout` asks phrasings, filler
# and an instruction that no training document holds (eval_tasks.PASSKEY_HELDOUT_TEMPLATES;
# tests/test_longctx.py checks both sets are disjoint).
PASSKEY_TEMPLATES = (
    (eval_tasks.PASSKEY_NEEDLE, eval_tasks.PASSKEY_QUESTION),
    ("The secret code is {key}. Keep it in mind.", "What is the secret code? The secret code is"),
    ("The magic number is {key}.", "What is the magic number? The magic number is"),
    ("Remember this access code: {key}.", "Which access code was given? The access code is"),
    ("The password for the account is {key}.",
     "What is the password for the account? The password for the account is"),
    ("My PIN is {key}, do not share it.", "What is my PIN? My PIN is"),
    ("The serial number of the device is {key}.",
     "What is the serial number of the device? The serial number of the device is"),
    ("Important: the order id is {key}.", "What is the order id? The order id is"),
)
# Generated passkey phrasings (--passkey_phrasings generated): a needle frame naming a thing by
# an adjective and a noun from _WORDS / _NOUNS, and a question made of an opener and the
# frame's answer lead. The frames place the key after "is", after a colon, mid-sentence,
# after an inserted clause and before the thing's name, and the question words differ from
# the needle's, so what a model can learn from them is to find the thing the question names
# and copy the number stated with it, not a sentence. Half of the needles sit inside a line
# of filler, half on their own line. The held-out phrasings (eval_tasks.
# PASSKEY_HELDOUT_TEMPLATES) use none of these frames, openers or content words (tests check).
# (needle, what the question asks for, answer lead); the lead is where the key follows.
PASSKEY_FRAMES = (
    ("The {a} {n} code is {key}.", "{a} {n} code", "The {a} {n} code is"),
    ("Note the {a} {n} value: {key}.", "{a} {n} value", "The {a} {n} value is"),
    ("{A} {n} has the number {key}.", "number of {a} {n}", "{A} {n} has the number"),
    ("The key of the {a} {n} is {key}.", "key of the {a} {n}", "The key of the {a} {n} is"),
    ("The {a} {n} id is {key}, as agreed.", "{a} {n} id", "The {a} {n} id is"),
    ("Keep the {a} {n} pin {key} somewhere safe.", "{a} {n} pin", "The {a} {n} pin is"),
    ("The {a} {n} was set to {key} this morning.", "setting of the {a} {n}", "The {a} {n} is"),
    ("For the {a} {n}, use {key}.", "{a} {n} setting", "The {a} {n} setting is"),
    ("The {a} {n} number given to the crew is {key}.", "{a} {n} number",
     "The {a} {n} number is"),
    ("We logged {key} as the {a} {n} reading.", "{a} {n} reading", "The {a} {n} reading is"),
    ("{A} {n} tag: {key}.", "{a} {n} tag", "The {a} {n} tag is"),
    ("The dial of the {a} {n} shows {key}.", "reading on the {a} {n} dial",
     "The {a} {n} dial shows"),
    ("Our {a} {n} figure is {key}; check it twice.", "{a} {n} figure", "The {a} {n} figure is"),
    ("Enter {key} in the {a} {n} field.", "{a} {n} field", "The {a} {n} field is"),
)
PASSKEY_OPENERS = ("What is the {q}?", "What was the {q}?", "Recall the {q}.",
                   "Tell me the {q}.", "Do you remember the {q}?", "Which is the {q}?",
                   "Name the {q}.", "The {q} came up earlier.")
# Wide phrasings (--passkey_phrasings wide): the generated ones and these extra frames and
# openers, half of the names' words made up (`bakodi`: no word list predicts them, so the
# question's name has to be matched to the needle's, not recognised) and half of the needles
# followed by a remark, so that the key is not always the last thing its sentence says.
# Checked against the held-out phrasings as the generated ones are.
WIDE_FRAMES = (
    ("The {n} is {key}.", "{n}", "The {n} is"),
    ("{A} {n}: {key}.", "{a} {n}", "The {a} {n} is"),
    ("I was told the {a} {n} is {key}.", "{a} {n}", "The {a} {n} is"),
    ("The {a} {n} reads {key} on the chart.", "{a} {n} reading", "The {a} {n} reads"),
    ("Use {key} for the {a} {n} from now on.", "{a} {n} to use", "The {a} {n} to use is"),
    ("The {n} you need is {key}.", "{n} you need", "The {n} you need is"),
    ("The number on the {a} {n} is {key}.", "number on the {a} {n}",
     "The number on the {a} {n} is"),
    ("Someone set the {n} to {key}.", "{n}", "The {n} is"),
)
WIDE_OPENERS = ("Can you recall the {q}?", "Quick question: what is the {q}?",
                "Earlier there was a {q}. What was it?", "Give the {q}.", "Say the {q}.")
WIDE_REMARKS = ("Keep it close.", "It will be needed.", "Nobody else knows it.",
                "Hold on to it.", "Mind the digits.", "Repeat it to yourself.",
                "It is asked for at the end.", "Guard it well.")
PASSKEY_PHRASINGS = ("fixed", "generated", "both", "wide")
_WORDS = ("amber azure bold brisk calm cedar coral crisp dawn deep dusty eager fern frost gentle "
          "golden granite hazel ivory jade keen lunar maple misty noble ochre pale quiet rapid "
          "rustic sable silver slate solar swift tawny velvet vivid wild bright hollow little "
          "broad steep scarlet dim humble royal northern western upper lower hidden spare "
          "crimson faint plain gray narrow open round sharp").split()
_NOUNS = ("badger beacon canyon comet crane delta ember falcon fjord garnet harbor heron island "
          "jaguar kestrel lagoon lantern marlin meadow nebula orchid otter quarry raven reef "
          "sparrow summit thistle tundra valley walrus willow zephyr anchor barrel cabin candle "
          "castle cellar compass engine forge gallery garden glacier hammer kettle ladder "
          "mirror needle parlor pillar pump radio saddle signal tower tunnel wagon window").split()


def generated_phrasing(rng, key: str, wide: bool = False) -> tuple[str, str]:
  """(needle sentence, question ending in the answer lead) of one generated phrasing; `wide`
  draws from the WIDE_ lists too (frames, openers, made-up words, remarks)."""
  frames = PASSKEY_FRAMES + WIDE_FRAMES if wide else PASSKEY_FRAMES
  openers = PASSKEY_OPENERS + WIDE_OPENERS if wide else PASSKEY_OPENERS
  needle, q, lead = frames[rng.randrange(len(frames))]
  a, n = rng.choice(_WORDS), rng.choice(_NOUNS)
  if wide:  # six letters: no made-up word can spell a held-out one
    a = bu.pseudo_word(rng, 6) if rng.random() < 0.5 else a
    n = bu.pseudo_word(rng, 6) if rng.random() < 0.5 else n
  words = {"a": a, "n": n, "A": a.capitalize(), "key": key}
  opener = openers[rng.randrange(len(openers))].format(q=q.format(**words))
  sentence = needle.format(**words)
  if wide and rng.random() < 0.5:
    sentence += " " + WIDE_REMARKS[rng.randrange(len(WIDE_REMARKS))]
  return sentence, f"{opener} {lead.format(**words)}"


# ----------------------------------------------------------------------------------------------
# The checker: answers recovered from the text alone


def _needle_pattern(needle: str) -> str:
  """A regex for a needle template: the first {key} captures the key (digits or a snake_case
  name), later ones repeat it."""
  head, *rest = needle.split("{key}")
  return re.escape(head) + r"(\w+)" + r"\1".join(re.escape(r) for r in rest)


def _frame_pattern(frame: str) -> str:
  """A regex for a generated question: {a} {n} {A} capture words (repeats must match)."""
  out, seen = "", set()
  for part in re.split(r"(\{[anA]\})", frame):
    name = part[1:-1] if re.fullmatch(r"\{[anA]\}", part) else None
    if name is None:
      out += re.escape(part)
    elif name in seen:
      out += f"(?P={name})"
    else:
      seen.add(name)
      out += rf"(?P<{name}>[A-Za-z]+)"
  return out


def _last_match(pattern: str, text: str):
  matches = list(re.finditer(pattern, text, re.M))
  if not matches:
    raise ValueError(f"no question matching {pattern!r} in the text")
  return matches[-1]


def _evaluate(name: str, defs: dict[str, str], depth: int = 0) -> int:
  if depth > 16:
    raise ValueError("assignment chain too deep or cyclic")
  expr = defs[name].split()
  if len(expr) == 1:
    return int(expr[0])
  left, op, right = expr
  a = _evaluate(left, defs, depth + 1)
  return {"+": a + int(right), "-": a - int(right), "*": a * int(right)}[op]


def solve_from_text(task: str, document_text: str) -> str:
  """Recovers the answer to the last question of `document_text` (the text before the answer).

  Uses only the text: finds what the final question asks about and reads it from the context.
  """
  text = document_text
  if task == "passkey":
    for needle, question in PASSKEY_TEMPLATES:
      if text.endswith(question):
        return re.search(_needle_pattern(needle), text).group(1)
    for needle, _, lead in PASSKEY_FRAMES + WIDE_FRAMES:  # leads are shared: try each that fits
      m = re.search(_frame_pattern(lead) + r"\Z", text)
      found = m and re.search(_needle_pattern(needle.replace("{key}", "\0").format(
          **m.groupdict()).replace("\0", "{key}")), text)
      if found:
        return found.group(1)
    raise ValueError("no passkey question at the end of the text")
  if task == "kv_retrieval":
    key = _last_match(r'Which value does record "([^"]+)" hold\? Value:\Z', text).group(1)
    return re.search(rf'^record "{re.escape(key)}" = (\w+)$', text, re.M).group(1)
  if task == "multi_query":
    name = _last_match(r"Code for (\w+)\?\Z", text).group(1)
    return re.search(rf"^The code for {re.escape(name)} is (\w+)\.$", text, re.M).group(1)
  if task == "variable_tracking":
    name = _last_match(r"Question: what is the value of (\w+)\? Answer:\Z", text).group(1)
    defs = dict(re.findall(r"^let (\w+) = ([\w +*-]+)$", text, re.M))
    return str(_evaluate(name, defs))
  if task == "code_definition":
    m = _last_match(r"# Question: what (are the parameters|is the first line of the docstring) "
                    r"of (\w+)\? Answer:\Z", text)
    kind, name = m.groups()
    if kind == "are the parameters":
      return text_sources.def_params(text, name)
    start = text.index(f"def {name}(")
    doc = re.compile(r"[rRuU]?(\"\"\"|''')\s*(.*)").search(text, start)
    return doc.group(2).strip().rstrip('"\'').strip()
  if task == "copy_span":
    rid = _last_match(r"Repeat record (\d+) exactly:\Z", text).group(1)
    return re.search(rf"^\[record {rid}\] (.*)$", text, re.M).group(1).strip()
  raise ValueError(f"unknown task {task!r}; tasks are {TASKS}")


# ----------------------------------------------------------------------------------------------
# Filler: pre-tokenized passages, spliced as token arrays


@dataclasses.dataclass
class Filler:
  flat: np.ndarray  # all passages' tokens end to end (each passage ends with a blank line)
  bounds: dict[str, np.ndarray]  # kind -> [n, 2] (start, end) into flat
  cut_ok: np.ndarray | None = None  # bool per token of flat: a line or sentence starts here

  def take(self, rng, n: int, kind: str) -> np.ndarray:
    return self.take_with_cuts(rng, n, kind)[0]

  def take_with_cuts(self, rng, n: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """n tokens of whole passages (the last one cut) and, per token, whether a needle may be
    inserted before it (a line or sentence boundary, as RULER inserts needles)."""
    if n <= 0:
      return np.zeros(0, np.int32), np.zeros(0, bool)
    kinds = ("prose", "code") if kind == "mixed" else (kind,)
    pieces, cuts, have = [], [], 0
    while have < n:
      bounds = self.bounds[kinds[rng.randrange(len(kinds))]]
      lo, hi = bounds[rng.randrange(len(bounds))]
      pieces.append(self.flat[lo:hi])
      if self.cut_ok is None:
        cuts.append(np.ones(hi - lo, bool))
      else:
        cut = self.cut_ok[lo:hi].copy()
        cut[0] = True  # a passage starts at a boundary
        cuts.append(cut)
      have += hi - lo
    return np.concatenate(pieces)[:n], np.concatenate(cuts)[:n]


def cut_points(tokenizer, flat: np.ndarray) -> np.ndarray:
  """True where a token starts a line (the previous one ends with a newline) or a sentence
  (the previous one ends with . ! ? and this one starts with a space)."""
  sp = tokenizer.sp
  vocab = sp.GetPieceSize()
  pieces = [sp.IdToPiece(i) for i in range(vocab)]
  newline = np.array([p == "<0x0A>" or p.endswith("\n") for p in pieces] + [False])
  stop = np.array([p.rstrip("\"')").endswith((".", "!", "?")) for p in pieces] + [False])
  space = np.array([p.startswith("\u2581") for p in pieces] + [False])
  ids = np.clip(flat, 0, vocab)  # an id past the vocabulary never marks a boundary
  ok = np.zeros(flat.size, bool)
  prev, cur = ids[:-1], ids[1:]
  ok[1:] = newline[prev] | (stop[prev] & space[cur])
  ok[0] = True
  return ok


def build_filler(tokenizer, corpus: text_sources.Corpus) -> Filler:
  flat, bounds, pos = [], {}, 0
  for kind, texts in (("prose", corpus.prose), ("code", corpus.code)):
    encoded = tokenizer.encode_batch([t + "\n\n" for t in texts])
    kb = []
    for ids in encoded:
      flat.append(np.asarray(ids, np.int32))
      kb.append((pos, pos + len(ids)))
      pos += len(ids)
    bounds[kind] = np.asarray(kb, np.int64)
  flat = np.concatenate(flat)
  return Filler(flat, bounds, cut_points(tokenizer, flat))


# ----------------------------------------------------------------------------------------------
# Document assembly


@dataclasses.dataclass
class Needle:
  text: str
  end_gap: int | None  # wanted tokens between the needle's end and the body's end (None: any)
  info_chars: int | None = None  # the information ends after this many characters (None: all)
  tokens: np.ndarray | None = None
  info_end: int = 0


@dataclasses.dataclass
class Plan:
  """A task instance before filler: needles in the body, then the question/answer tail."""
  task: str
  needles: list[Needle]
  tail: list[tuple[str, bool]]  # (text, is_answer) pieces after the body
  answers: list[tuple[str, int]]  # (answer string, index of the needle holding its info)
  filler_kind: str
  avoid_in_prompt: list[str] = dataclasses.field(default_factory=list)  # must occur once only


@dataclasses.dataclass
class LongDoc:
  task: str
  tokens: np.ndarray
  answer_mask: np.ndarray  # bool per token
  answers: list[dict]  # {"answer", "start", "end", "info_end", "distance"}
  attempts: int


def _encode_needle(tok, needle: Needle):
  if needle.info_chars is None:
    needle.tokens = np.asarray(tok.encode(needle.text), np.int32)
    needle.info_end = needle.tokens.size
  else:
    head = tok.encode(needle.text[:needle.info_chars])
    rest = tok.encode(needle.text[needle.info_chars:])
    needle.tokens = np.asarray(head + rest, np.int32)
    needle.info_end = len(head)


def _place(needles: list[Needle], body: int, rng) -> list[int]:
  """Start offsets in the body: as close to the wanted gaps as possible, never overlapping."""
  targets = []
  for n in needles:
    size = n.tokens.size
    gap = n.end_gap if n.end_gap is not None else rng.randint(0, max(0, body - size))
    targets.append(max(size, body - gap))  # wanted end position
  order = sorted(range(len(needles)), key=lambda i: (targets[i], i))
  starts = [0] * len(needles)
  limit = body
  for i in reversed(order):  # latest first, each ends before the next one starts
    end = min(targets[i], limit)
    starts[i] = end - needles[i].tokens.size
    limit = starts[i]
  floor = 0
  for i in order:  # if the first ones were pushed below 0, push forward again
    starts[i] = max(starts[i], floor)
    floor = starts[i] + needles[i].tokens.size
  return starts


def assemble(plan: Plan, tok, filler: Filler, length: int, rng) -> LongDoc | None:
  for n in plan.needles:
    _encode_needle(tok, n)
  tail_ids, tail_answer = [], []
  for text, is_answer in plan.tail:
    ids = tok.encode(text)
    tail_ids.extend(ids)
    tail_answer.extend([is_answer] * len(ids))
  room = length - 2 - len(tail_ids)
  for n in plan.needles:  # a drawn distance that does not fit is clipped to the room left
    if n.end_gap is not None:
      n.end_gap = max(0, min(n.end_gap, room - n.tokens.size))
  need = max(sum(n.tokens.size for n in plan.needles),
             max(n.tokens.size + (n.end_gap or 0) for n in plan.needles))
  if need > room:
    return None
  body = rng.randint(need, room)
  starts = _place(plan.needles, body, rng)
  order = sorted(range(len(plan.needles)), key=lambda i: starts[i])
  free = body - sum(n.tokens.size for n in plan.needles)
  # Filler is cut only where a line or sentence starts (RULER inserts needles at sentence
  # boundaries): each wanted cut moves to the nearest such point, at most SNAP_TOKENS later.
  stream, cut_ok = filler.take_with_cuts(rng, free + room - body + SNAP_TOKENS * (
      len(plan.needles) + 1), plan.filler_kind)
  bounds = np.flatnonzero(cut_ok)

  def snap(lo: int, want: int) -> int:
    k = np.searchsorted(bounds, want)
    best = lo
    for j in (k - 1, k):
      if 0 <= j < len(bounds) and lo <= bounds[j] <= want + SNAP_TOKENS and \
          abs(bounds[j] - want) < abs(best - want):
        best = int(bounds[j])
    return best

  parts, used, pos = [np.array([tok.bos_id], np.int32)], 0, 0
  actual = [0] * len(plan.needles)  # needle starts in the body as built
  for i in order:
    cut = snap(used, used + max(0, starts[i] - pos))
    parts.append(stream[used:cut])
    pos += cut - used
    used = cut
    actual[i] = pos
    parts.append(plan.needles[i].tokens)
    pos += plan.needles[i].tokens.size
  cut = snap(used, used + max(0, body - pos))
  parts.append(stream[used:cut])
  pos += cut - used
  used = cut
  body, starts = pos, actual
  pad = room - body
  if pad < 0:
    return None
  parts += [np.asarray(tail_ids, np.int32), stream[used:used + pad],
            np.array([tok.eos_id], np.int32)]
  tokens = np.concatenate(parts)
  if tokens.size != length:  # the filler ran short (only for tiny corpora): redraw
    return None
  mask = np.zeros(length, bool)
  tail_start = 1 + body
  mask[tail_start: tail_start + len(tail_ids)] = tail_answer
  # Answer spans in order of the tail; each maps to the needle carrying its information.
  spans, i = [], 0
  while i < len(tail_answer):
    if tail_answer[i]:
      j = i
      while j < len(tail_answer) and tail_answer[j]:
        j += 1
      spans.append((tail_start + i, tail_start + j))
      i = j
    else:
      i += 1
  answers = []
  for (answer, needle_index), (s, e) in zip(plan.answers, spans):
    info_end = 1 + starts[needle_index] + plan.needles[needle_index].info_end
    answers.append({"answer": answer, "start": s, "end": e, "info_end": info_end,
                    "distance": s - info_end})
  return LongDoc(plan.task, tokens, mask, answers, 0)


def verify(doc: LongDoc, tok, plan: Plan) -> bool:
  """The checker recovers every answer from the text before it, and nothing leaks it later."""
  for a in doc.answers:
    # Decoding is concatenative at these cuts (pieces map to text one by one), so the prompt
    # is decoded once, as the context up to the information plus the gap after it.
    gap = tok.sp.DecodeIds(doc.tokens[a["info_end"]:a["start"]].tolist())
    if a["answer"] in gap:
      return False
    prompt = tok.sp.DecodeIds(doc.tokens[1:a["info_end"]].tolist()) + gap
    try:
      if solve_from_text(doc.task, prompt) != a["answer"]:
        return False
    except (ValueError, AttributeError, KeyError, TypeError):
      return False
    for marker in plan.avoid_in_prompt:
      if prompt.count(marker) != 1:
        return False
  return True


# ----------------------------------------------------------------------------------------------
# Task families


def _pseudo_word(rng, used: set, letters: int = 6) -> str:
  while True:
    w = bu.pseudo_word(rng, letters)
    if w not in used:
      used.add(w)
      return w


# Digits of passkey, kv_retrieval and multi_query answers (--key_digits). A model that saw
# only 5-7 digit keys learns their length, not where a key ends: the CPU bridge's wrote six
# digits for the held-out eval's five-digit keys (31968 -> 319688); the eval's keys are
# 1-50000. The CPU bridge's warm-up keeps 5-7 (its copy clicked with them, NOTES.md) and
# widens the range afterwards.
KEY_DIGITS = (5, 7)


def parse_key_digits(text: str) -> tuple[int, int]:
  try:
    lo, hi = (int(x) for x in text.split(","))
  except ValueError:
    raise ValueError(f"--key_digits {text!r}: want LO,HI (e.g. 3,7)") from None
  if not 1 <= lo <= hi <= 12:
    raise ValueError(f"--key_digits {text!r}: want 1 <= LO <= HI <= 12")
  return lo, hi


def _number(rng, used: set, digits_lo=KEY_DIGITS[0], digits_hi=KEY_DIGITS[1]) -> str:
  while True:
    digits = rng.randint(digits_lo, digits_hi)
    n = str(rng.randint(10 ** (digits - 1), 10 ** digits - 1))
    if n not in used:
      used.add(n)
      return n


# What a key is (--key_kind): digits, or a snake_case name of one to three words, each a word of
# the phrasing lists or a made-up word (`amber_tavoki`). A model that retrieved only digit keys
# copied nothing else: the CPU bridge's answered a name-valued passkey with digits, 0 of 64, and
# wrote made-up function names instead of the offered ones in tool calls (NOTES.md, tenth
# session). Copying a name piece by piece is what a tool call on an unseen schema asks.
KEY_KINDS = ("digits", "names", "both")


def _name_key(rng, used: set) -> str:
  while True:
    name = "_".join(bu.pseudo_word(rng, rng.randint(3, 7)) if rng.random() < 0.5 else
                    rng.choice(_WORDS + _NOUNS) for _ in range(rng.choice((1, 2, 2, 3))))
    if name not in used:
      used.add(name)
      return name


class TaskMaker:
  """Draws task instances; `d()` draws a dependency distance for this document length."""

  def __init__(self, cfg: dict, corpus: text_sources.Corpus, length: int):
    self.cfg, self.corpus, self.length = cfg, corpus, length
    self.key_digits = tuple(cfg.get("key_digits", KEY_DIGITS))
    self.key_kind = cfg.get("key_kind", "digits")
    counts = {}
    for f in corpus.functions:
      counts[f.name] = counts.get(f.name, 0) + 1
    # Unique names, and parameter lists distinctive enough not to occur in other code.
    self.functions = [f for f in corpus.functions if counts[f.name] == 1 and len(f.params) >= 8]
    self.sentences_from = [p for p in corpus.prose if len(p.split()) >= 12]

  def key(self, rng, used: set) -> str:
    """A passkey, record value or code: digits or a name (--key_kind; `both`: half each)."""
    if self.key_kind == "names" or (self.key_kind == "both" and rng.random() < 0.5):
      return _name_key(rng, used)
    return _number(rng, used, *self.key_digits)

  def distance(self, rng, reserve: int) -> int:
    lo = self.cfg["min_distance"]
    # In short curriculum documents the reserve can exceed the length: draw a short distance
    # anyway; assemble() clips it to the room left or rejects the draw.
    hi = max(16, min(self.cfg["max_distance"] or self.length, self.length - reserve))
    return rng.randint(min(lo, hi), hi)

  def kind(self, rng) -> str:
    return rng.choice(("prose", "prose", "mixed", "code"))

  def passkey(self, rng) -> Plan:
    key = self.key(rng, set())
    d = self.distance(rng, 64)
    phrasing = self.cfg.get("passkey_phrasings", "fixed")
    sep = "\n"
    if phrasing == "generated" or (phrasing in ("both", "wide") and rng.random() < 0.5):
      sentence, question = generated_phrasing(rng, key, wide=phrasing == "wide")
      sep = rng.choice(("\n", " "))  # inside a line of filler, as prompts put them, or alone
    else:
      template, question = PASSKEY_TEMPLATES[rng.randrange(len(PASSKEY_TEMPLATES))]
      sentence = template.format(key=key)
    tail_lead = sep + question
    needle = Needle(sep + sentence + sep, d)
    return Plan("passkey", [needle], [(tail_lead, False), (f" {key}", True), (".\n", False)],
                [(key, 0)], self.kind(rng))

  def kv_retrieval(self, rng) -> Plan:
    n = rng.randint(4, max(4, min(32, (self.length - 200) // 40)))
    keys, used_vals, pairs = set(), set(), []
    while len(pairs) < n:
      key = f"{rng.choice(_WORDS)}-{rng.choice(_NOUNS)}-{rng.randint(10, 99)}"
      if key not in keys:
        keys.add(key)
        pairs.append((key, self.key(rng, used_vals)))
    needles = [Needle(f'\nrecord "{k}" = {v}\n', None) for k, v in pairs]
    needles[0].end_gap = self.distance(rng, 40 * n)
    key, value = pairs[0]
    tail = [(f'\nWhich value does record "{key}" hold? Value:', False), (f" {value}", True),
            ("\n", False)]
    return Plan("kv_retrieval", needles, tail, [(value, 0)], self.kind(rng))

  def multi_query(self, rng) -> Plan:
    n = rng.randint(4, max(4, min(16, (self.length - 200) // 40)))
    q = rng.randint(2, min(4, n))
    names, used_vals = set(), set()
    pairs = [(_pseudo_word(rng, names).capitalize(), self.key(rng, used_vals))
             for _ in range(n)]
    needles = [Needle(f"\nThe code for {name} is {num}.\n", None) for name, num in pairs]
    tail, answers = [], []
    for k in range(q):
      tail += [(f"\nCode for {pairs[k][0]}?", False), (f" {pairs[k][1]}", True)]
      answers.append((pairs[k][1], k))
    tail.append(("\n", False))
    for k in range(q):
      needles[k].end_gap = self.distance(rng, 40 * n + 20 * q)
    return Plan("multi_query", needles, tail, answers, self.kind(rng))

  def variable_tracking(self, rng) -> Plan:
    names, needles = set(), []
    ops = (("+", 10, 999), ("-", 10, 999), ("*", 2, 9))

    def chain(hops):
      lines, prev, value = [], None, None
      for h in range(hops):
        name = _pseudo_word(rng, names, 5)
        if prev is None:
          value = rng.randint(1000, 9999)
          lines.append((name, f"let {name} = {value}"))
        else:
          op, lo, hi = rng.choice(ops)
          c = rng.randint(lo, hi)
          value = {"+": value + c, "-": value - c, "*": value * c}[op]
          lines.append((name, f"let {name} = {prev} {op} {c}"))
        prev = name
      return lines, value

    hops = rng.randint(2, 4)
    lines, value = chain(hops)
    d = self.distance(rng, 30 * 12 + 40)
    gaps = sorted((rng.randint(0, d) for _ in range(hops - 1)), reverse=True)
    for k, (_, line) in enumerate(lines):
      needles.append(Needle(f"\n{line}\n", d if k == 0 else gaps[k - 1]))
    for _ in range(rng.randint(1, 3)):  # distractor chains
      for _, line in chain(rng.randint(1, 3))[0]:
        needles.append(Needle(f"\n{line}\n", None))
    tail = [(f"\nQuestion: what is the value of {lines[-1][0]}? Answer:", False),
            (f" {value}", True), ("\n", False)]
    return Plan("variable_tracking", needles, tail, [(str(value), 0)],
                rng.choice(("code", "mixed")))

  def code_definition(self, rng) -> Plan:
    fn = self.functions[rng.randrange(len(self.functions))]
    head = f"\n# file: {fn.path}\n"
    if fn.doc_first_line and rng.random() < 0.4:
      question = f"\n# Question: what is the first line of the docstring of {fn.name}? Answer:"
      answer = fn.doc_first_line
      info = fn.source.find(answer) + len(answer)
    else:
      question = f"\n# Question: what are the parameters of {fn.name}? Answer:"
      answer = fn.params
      info = fn.source.find("\n", text_sources.def_params_span(fn.source, fn.name)[1])
      info = len(fn.source) if info < 0 else info
    needle = Needle(head + fn.source + "\n", None, info_chars=len(head) + info)
    needle.end_gap = self.distance(rng, len(fn.source) // 2 + 64)
    return Plan("code_definition", [needle],
                [(question, False), (f" {answer}", True), ("\n", False)], [(answer, 0)], "code",
                avoid_in_prompt=[f"def {fn.name}("])

  def copy_span(self, rng) -> Plan:
    words = self.sentences_from[rng.randrange(len(self.sentences_from))].split()
    n = rng.randint(8, min(30, len(words)))
    start = rng.randint(0, len(words) - n)
    sentence = " ".join(words[start:start + n])
    rid = _number(rng, set(), 4, 5)
    needle = Needle(f"\n[record {rid}] {sentence}\n", None)
    needle.end_gap = self.distance(rng, 2 * len(sentence) // 3 + 40)
    return Plan("copy_span", [needle],
                [(f"\nRepeat record {rid} exactly:", False), (f" {sentence}", True),
                 ("\n", False)], [(sentence, 0)], self.kind(rng))


def document_length(seq_len: int, max_doc_tokens: int | None, max_distance: int | None) -> int:
  if max_doc_tokens:
    return min(seq_len, max_doc_tokens)
  if max_distance:
    return min(seq_len, max_distance + 512)
  return seq_len


def make_document(cfg: dict, state, split: str, index: int) -> LongDoc:
  """Document `index` of `split`: a pure function of (seed, split, index)."""
  tok, filler, maker = state["tokenizer"], state["filler"], state["maker"]
  rng = bu.doc_rng(cfg["seed"], "longctx", split, index)
  task = cfg["tasks"][rng.randrange(len(cfg["tasks"]))]
  for attempt in range(1, MAX_ATTEMPTS + 1):
    plan = getattr(maker, task)(rng)
    doc = assemble(plan, tok, filler, cfg["length"], rng)
    if doc is not None and verify(doc, tok, plan):
      doc.attempts = attempt
      return doc
  raise ValueError(f"could not build a verified {task} document ({split} #{index}) in "
                   f"{MAX_ATTEMPTS} attempts: documents of {cfg['length']} tokens (--seq_len / "
                   f"--max_doc_tokens / --max_distance) are too short for it with --min_distance "
                   f"{cfg['min_distance']}; raise the length, lower --min_distance or leave "
                   f"{task} out of --tasks")


PROBE_DOCUMENTS = 16
PROBE_MAX_FAILURES = 2  # of PROBE_DOCUMENTS; a task failing more often is left out


def fitting_tasks(cfg: dict, state) -> tuple[tuple[str, ...], dict[str, str]]:
  """Tasks that fit the document length: each is drawn PROBE_DOCUMENTS times up front, and one
  that fails to build a verified document more than PROBE_MAX_FAILURES times is left out (with
  the reason), so a setting that cannot hold a task is said at the start. A rare document
  that still cannot be built later is skipped and counted (`unbuildable_<task>`)."""
  keep, left_out = [], {}
  for task in cfg["tasks"]:
    probe = {**cfg, "tasks": (task,)}
    failed = 0
    for index in range(PROBE_DOCUMENTS):
      try:
        make_document(probe, state, f"probe_{task}", index)
      except ValueError:
        failed += 1
    if failed > PROBE_MAX_FAILURES:
      left_out[task] = (f"{failed} of {PROBE_DOCUMENTS} probe documents could not be built in "
                        f"{MAX_ATTEMPTS} draws at {cfg['length']} tokens with --min_distance "
                        f"{cfg['min_distance']}")
    else:
      keep.append(task)
  return tuple(keep), left_out


# ----------------------------------------------------------------------------------------------
# Worker side


def make_worker_state(arg) -> dict:
  cfg, corpus, filler = arg
  return {"cfg": cfg, "tokenizer": load_tokenizer(cfg["tokenizer"]), "filler": filler,
          "maker": TaskMaker(cfg, corpus, cfg["length"])}


def answer_weights(doc: LongDoc, answer_weight: int, stop_weight: int) -> np.ndarray | None:
  """Per-token loss weights: answer tokens weigh answer_weight, the token right after each
  answer (its stop: `.`, a newline, the next question) stop_weight, the rest 1; None when
  all are 1. A copy that runs on (`341411` for 34141) is as wrong as a wrong digit, so the
  stop can be weighted like the digits before it."""
  if answer_weight == 1 and stop_weight == 1:
    return None
  weights = np.where(doc.answer_mask, answer_weight, 1).astype(np.uint8)
  for a in doc.answers:
    if a["end"] < weights.size and not doc.answer_mask[a["end"]]:
      weights[a["end"]] = stop_weight
  return weights


def _train_item(item):
  split, index = item
  state = bu.worker_state()
  cfg = state["cfg"]
  try:
    doc = make_document(cfg, state, split, index)
  except ValueError as e:  # a rare draw that never fits: counted in the report, not fatal
    return bu.Skipped("unbuildable_" + str(e).split()[5], f"{split} #{index}")
  weights = answer_weights(doc, cfg["answer_weight"], cfg["stop_weight"])
  info = {"task": doc.task, "distance_tokens": [a["distance"] for a in doc.answers],
          "attempts": doc.attempts}
  return bu.Document(doc.tokens, weights, source=f"longctx/{doc.task}", info=info)


def _eval_item(index):
  state = bu.worker_state()
  try:
    doc = make_document(state["cfg"], state, "eval", index)
  except ValueError:
    return None
  tok = state["tokenizer"]
  last = doc.answers[-1]
  return {"task": doc.task, "prompt": tok.decode(doc.tokens[1:last["start"]]),
          "answer": last["answer"], "distance_tokens": last["distance"],
          "length_tokens": int(last["start"])}


def prepare(cfg: dict, corpus_chars: int):
  """Main-process setup shared with the workers: filler corpus tokenized once."""
  tok = load_tokenizer(cfg["tokenizer"])
  corpus = text_sources.load_corpus(corpus_chars)
  return tok, corpus, build_filler(tok, corpus)


# ----------------------------------------------------------------------------------------------
# CLI


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  bu.add_common_args(p)
  p.add_argument("--seq_len", type=int, default=8192)
  p.add_argument("--min_distance", type=int, default=128)
  p.add_argument("--max_distance", type=int, default=None,
                 help="short-range mode: distances up to this (documents shrink to fit)")
  p.add_argument("--max_doc_tokens", type=int, default=None,
                 help="curriculum: documents of this many tokens (e.g. 512 first)")
  p.add_argument("--answer_weight", type=int, default=1, help="loss weight of answer tokens")
  p.add_argument("--stop_weight", type=int, default=1,
                 help="loss weight of the token that ends each answer (where the copy stops)")
  p.add_argument("--tasks", default=",".join(TASKS), help=f"comma list from {TASKS}")
  p.add_argument("--passkey_phrasings", choices=PASSKEY_PHRASINGS, default="fixed",
                 help="passkey needles/questions: the 8 fixed PASSKEY_TEMPLATES, phrasings "
                      "generated from PASSKEY_FRAMES and word lists, half of each, or half "
                      "fixed and half generated with the WIDE_ lists too")
  p.add_argument("--key_digits", default=",".join(map(str, KEY_DIGITS)),
                 help="LO,HI: digits of passkey / kv_retrieval / multi_query answers")
  p.add_argument("--key_kind", choices=KEY_KINDS, default="digits",
                 help="passkey / kv_retrieval / multi_query answers: digit keys, snake_case "
                      "names (`amber_tavoki`), or half of each")
  p.add_argument("--eval_out", default=None, help="default OUT_DIR/eval.jsonl")
  p.add_argument("--eval_examples", type=int, default=500)
  p.add_argument("--filler_chars", type=int, default=4_000_000,
                 help="characters of stdlib source sampled for filler")
  return p.parse_args(argv)


def build(args) -> bu.Report:
  tasks = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
  unknown = sorted(set(tasks) - set(TASKS))
  if unknown or not tasks:
    raise ValueError(f"--tasks: unknown task(s) {unknown}; choose from {TASKS}")
  for flag in ("answer_weight", "stop_weight"):
    if not 1 <= getattr(args, flag) <= 255:
      raise ValueError(f"--{flag} {getattr(args, flag)} must be in [1, 255] (uint8)")
  length = document_length(args.seq_len, args.max_doc_tokens, args.max_distance)
  if length < 128 or args.min_distance >= length - 64:
    raise ValueError(f"documents of {length} tokens cannot hold distances from "
                     f"{args.min_distance}; lower --min_distance or raise --max_doc_tokens")
  cfg = {"seed": args.seed, "tokenizer": os.path.abspath(args.tokenizer), "tasks": tasks,
         "length": length, "min_distance": args.min_distance, "max_distance": args.max_distance,
         "answer_weight": args.answer_weight, "stop_weight": args.stop_weight,
         "passkey_phrasings": args.passkey_phrasings,
         "key_digits": parse_key_digits(args.key_digits), "key_kind": args.key_kind}
  tok, corpus, filler = prepare(cfg, args.filler_chars)
  kept, left_out = fitting_tasks(cfg, make_worker_state((cfg, corpus, filler)))
  if not kept:
    raise ValueError(f"no task fits documents of {length} tokens with --min_distance "
                     f"{args.min_distance} (--seq_len {args.seq_len}, --max_doc_tokens "
                     f"{args.max_doc_tokens}, --max_distance {args.max_distance}, --tasks "
                     f"{','.join(tasks)}); raise the length or lower --min_distance")
  tasks = cfg["tasks"] = kept
  report = bu.Report("longctx_hard")
  if left_out:
    report.extra["tasks_left_out"] = left_out
    for task, why in left_out.items():
      print(f"longctx_hard: leaving out {task}: {why}", file=sys.stderr)
  distances, per_task, docs_info = [], {}, {"train": [], "val": []}
  builder_meta = {"name": "longctx_hard", "seed": args.seed, "document_tokens": length,
                  "tasks": list(tasks), "min_distance": args.min_distance,
                  "max_distance": args.max_distance, "answer_weight": args.answer_weight,
                  "stop_weight": args.stop_weight, "key_kind": args.key_kind}
  targets = {"train": args.target_train_tokens, "val": args.target_val_tokens}
  with bu.OrderedPool(make_worker_state, (cfg, corpus, filler), args.num_workers) as pool, \
      shards.ShardDirWriter(args.out_dir, vocab_size=tok.vocab_size, tokenizer_path=tok.path,
                            bos_id=tok.bos_id, eos_id=tok.eos_id, overwrite=args.overwrite,
                            shard_tokens=args.shard_tokens, builder=builder_meta) as writer:
    for split in ("train", "val"):
      with bu.progress(targets[split], f"longctx {split}", args.quiet) as bar:
        def record(doc, split=split):
          offset = report.tokens[split] - doc.num_tokens
          docs_info[split].append({"index": len(docs_info[split]), "offset": offset,
                                   "length_tokens": doc.num_tokens, **doc.info})
          if split == "train":
            distances.extend(doc.info["distance_tokens"])
          per_task[doc.info["task"]] = per_task.get(doc.info["task"], 0) + 1
          if doc.info["attempts"] > 1:
            report.skipped["redrawn_unverified"] += doc.info["attempts"] - 1
        items = ((split, i) for i in itertools.count())
        bu.write_documents(writer, split, pool.imap(_train_item, items), report, bar,
                           targets[split], on_document=record)
    eval_rows = [r for r in pool.map(_eval_item, list(range(args.eval_examples))) if r]
    # Extras go into the staging dir: they are committed together with the shards.
    for split, rows in docs_info.items():
      bu.write_jsonl(bu.staged_path(writer, os.path.join(args.out_dir,
                                                         f"{split}_documents.jsonl")), rows)
    eval_out = args.eval_out or os.path.join(args.out_dir, "eval.jsonl")
    bu.write_jsonl(bu.staged_path(writer, eval_out), eval_rows)
    report.extra["documents_per_task"] = dict(sorted(per_task.items()))
    report.extra["distance_histogram"] = bu.histogram(distances, DISTANCE_EDGES)
    if distances:
      report.extra["fraction_distance_over_2048"] = round(
          float(np.mean(np.asarray(distances) > 2048)), 4)
    report.extra["document_tokens"] = length
    report.extra["eval"] = f"{len(eval_rows)} examples -> {eval_out}"
    bu.commit_report(report, writer)
  return report


def main(argv=None):
  args = parse_args(argv)
  bu.finish(build(args))


if __name__ == "__main__":
  bu.run_main(main)
