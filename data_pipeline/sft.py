"""Generic instruction-chat SFT shards from public conversation sets, mixed by weight.

  python -m data_pipeline.sft --out_dir data/shards/sft --tokenizer T.model --seq_len 8192 \
      --source openhermes=OpenHermes-2.5/openhermes2_5.json:0.6 \
      --source ultrachat=ultrachat_200k/data/train_sft-00000-of-00003.parquet:0.3 \
      --source glaive=glaive-function-calling-v2.json:0.1 \
      --target_train_tokens 300000000 --target_val_tokens 1000000

Each --source is NAME=PATH[:WEIGHT] (repeatable; PATH a JSON array, JSON lines or parquet
file). The record shape is recognised per record:
  ShareGPT       {"conversations": [{"from": system|human|gpt|tool, "value"}, ...]}
                 (OpenHermes-2.5; rows with <tool_call>/<tools> go through the Hermes converter)
  messages       {"messages": [{"role", "content"}, ...]}  (UltraChat-200k, parquet or JSON lines)
  glaive         {"system", "chat"}  (tool_synth.convert_glaive)
Big JSON arrays are streamed element by element (builder_utils.iter_json_array), so even the
1.9 GB OpenHermes file is read in constant memory.

ShareGPT's per-turn `weight` (null throughout OpenHermes-2.5) is not used: every assistant
turn is trained. Conversations render with chat_format; loss weights cover the assistant turns only (system,
user and tool turns are masked). A conversation longer than seq_len keeps its longest prefix
of whole turns that ends on an assistant turn and fits; if none fits it is dropped; both are
counted. Conversations are packed into seq_len-token slots (reader windows start at multiples
of seq_len), never split across a slot: greedy with a small lookahead, the gap before a
conversation that does not fit is a pad document of EOS tokens with loss weight 0
(builder_utils.WindowPacker).

Mixing: at every step the source furthest behind its weight's share of the tokens written
goes next (deterministic); a source that runs out drops out (no repetition). Records go to
val by a hash of (source, record index) with --val_fraction. Malformed records are skipped
and counted by reason; --strict fails on the first, naming the file and record.

--synthetic_spec_fraction F (default 0: off) adds a share F of small synthetic "plan, then
act" conversations (a task decomposed into numbered steps, then the first step carried out).
The plan for phase3 keeps SFT generic (about 90% chat, 10% tool calls: mix a tool_synth shard
directory in with the interleaver).
"""

from __future__ import annotations

import argparse
import itertools
import os

import numpy as np

from data_pipeline import builder_utils as bu
from data_pipeline import tool_synth
from jaxlm.data import chat_format, shards
from jaxlm.data.tokenizer import load_tokenizer

SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                  "assistant": "assistant", "chatgpt": "assistant", "bing": "assistant",
                  "bard": "assistant", "tool": "tool", "function": "tool",
                  "function_response": "tool", "observation": "tool"}


# ----------------------------------------------------------------------------------------------
# Record -> (messages, tools)


def _is_hermes_tools(conv: list) -> bool:
  return any(isinstance(t, dict) and isinstance(t.get("value"), str)
             and ("<tool_call>" in t["value"] or "<tools>" in t["value"]) for t in conv)


def convert_sharegpt(record: dict) -> tuple[list[dict], list[dict]]:
  conv = record["conversations"]
  if _is_hermes_tools(conv):
    return tool_synth.convert_hermes(record)
  messages = []
  for turn in conv:
    if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
      raise bu.SkipRecord("bad_turn", "a turn without a string 'value'")
    role = SHAREGPT_ROLES.get(str(turn.get("from")).lower())
    if role is None:
      raise bu.SkipRecord("unknown_role", str(turn.get("from"))[:40])
    messages.append({"role": role, "content": turn["value"]})
  return messages, []


def convert_messages(record: dict) -> tuple[list[dict], list[dict]]:
  messages = []
  for m in record["messages"]:
    if not isinstance(m, dict) or not isinstance(m.get("content"), str):
      raise bu.SkipRecord("bad_turn", "a message without string 'content'")
    role = m.get("role")
    if role not in chat_format.ROLE_HEADERS:
      raise bu.SkipRecord("unknown_role", str(role)[:40])
    messages.append({"role": role, "content": m["content"]})
  return messages, []


def convert_record(record) -> tuple[list[dict], list[dict]]:
  """Any supported record shape -> (messages, tools); SkipRecord says why not."""
  if not isinstance(record, dict):
    raise bu.SkipRecord("unknown_record_schema", type(record).__name__)
  if isinstance(record.get("conversations"), list):
    messages, tools = convert_sharegpt(record)
  elif isinstance(record.get("messages"), list):
    messages, tools = convert_messages(record)
  elif isinstance(record.get("chat"), str):
    return tool_synth.convert_glaive(record)
  else:
    raise bu.SkipRecord("unknown_record_schema", f"keys {sorted(record)[:8]}")
  while messages and messages[-1]["role"] != "assistant":
    messages.pop()
  if not any(m["role"] == "assistant" for m in messages):
    raise bu.SkipRecord("no_assistant_turn")
  return messages, tools


# ----------------------------------------------------------------------------------------------
# Synthetic plan-then-act conversations (off by default)


PLANS = [
    ("organize a dinner party for {n} people on {day}",
     ["Confirm the guest list and any dietary needs", "Pick a menu of three courses",
      "Write the shopping list from the menu", "Shop the day before {day}",
      "Cook, set the table and plan the timing on {day}"]),
    ("move a small website to a new hosting provider",
     ["List what the site needs: files, database, domain, certificates",
      "Set up the new host and copy the files and database", "Test the site on the new host",
      "Point the domain's DNS at the new host", "Watch traffic and errors, then close the old account"]),
    ("prepare a {k}-minute talk about {topic}",
     ["Write the one-sentence message of the talk", "Outline three supporting points",
      "Draft slides, one idea each", "Rehearse twice with a timer, aiming for {k} minutes",
      "Cut what runs long and prepare answers to likely questions"]),
    ("fix a project's failing unit tests",
     ["Run the suite and record every failure", "Group failures by their first error",
      "Reproduce the most common failure alone", "Fix the cause and rerun that group",
      "Rerun the whole suite and check nothing else broke"]),
    ("plan a {d}-day trip to {city}",
     ["Fix the dates and the budget", "Book transport to {city}", "Book a place to stay",
      "Choose one main sight per day for {d} days", "Pack and check documents"]),
    ("study for a {subject} exam in {w} weeks",
     ["List the topics on the syllabus", "Rate each topic by how well it is known",
      "Spread the weak topics over the {w} weeks", "Do one past paper per week",
      "Use the last days for review only"]),
]
FILL = {"n": ["four", "six", "eight"], "day": ["Saturday", "Friday", "Sunday"],
        "k": ["10", "15", "20"], "topic": ["renewable energy", "code review", "sleep"],
        "d": ["3", "4", "5"], "city": ["Lisbon", "Kyoto", "Vienna"],
        "subject": ["statistics", "chemistry", "history"], "w": ["3", "4", "6"]}


def synthesize_plan(rng) -> list[dict]:
  goal, steps = rng.choice(PLANS)
  values = {k: rng.choice(v) for k, v in FILL.items()}
  goal, steps = goal.format(**values), [s.format(**values) for s in steps]
  plan = "\n".join(f"{i + 1}. {s}." for i, s in enumerate(steps))
  ask = rng.choice(["Help me {g}. Make a plan first, then start.",
                    "I need to {g}. Break it into steps and begin with the first one."])
  return [{"role": "user", "content": ask.format(g=goal)},
          {"role": "assistant", "content": f"Plan:\n{plan}\n\nStep 1: {steps[0]}. Let's start "
                                           f"there: tell me what you have so far and I will "
                                           f"check it against the goal."},
          {"role": "user", "content": "Done with step 1. What next?"},
          {"role": "assistant", "content": f"Step 2: {steps[1]}. After that, step 3 is to "
                                           f"{steps[2][0].lower()}{steps[2][1:]}."}]


# ----------------------------------------------------------------------------------------------
# Worker side


def make_worker_state(arg):
  return {"cfg": arg, "tokenizer": load_tokenizer(arg["tokenizer"])}


def encode_within(tok, messages, tools, limit: int) -> tuple[list[int], list[int], bool]:
  """Encodes the conversation, cut to whole turns ending on an assistant turn if too long.

  Returns (ids, weights, truncated); raises SkipRecord if not even the first exchange fits.
  """
  ids, weights = chat_format.encode_conversation(tok, messages, tools)
  if not limit or len(ids) <= limit:
    return ids, weights, False
  ends = [i + 1 for i, m in enumerate(messages) if m["role"] == "assistant"]
  lo, hi, best = 0, len(ends) - 1, None  # prefix lengths grow with the cut: binary search
  while lo <= hi:
    mid = (lo + hi) // 2
    cut = chat_format.encode_conversation(tok, messages[:ends[mid]], tools)
    if len(cut[0]) <= limit:
      best, lo = cut, mid + 1
    else:
      hi = mid - 1
  if best is None:
    raise bu.SkipRecord("longer_than_seq_len")
  return best[0], best[1], True


def _record_item(item):
  name, where, record = item
  state = bu.worker_state()
  if isinstance(record, Exception):
    return bu.Skipped("bad_json", str(record))
  try:
    messages, tools = convert_record(record)
    ids, weights, truncated = encode_within(state["tokenizer"], messages, tools,
                                            state["cfg"]["seq_len"])
  except bu.SkipRecord as e:
    return bu.Skipped(e.reason, f"{where}: {e.detail}" if e.detail else where)
  except chat_format.ChatFormatError as e:
    return bu.Skipped("bad_turn", f"{where}: {e}")
  return bu.Document(np.asarray(ids, np.int32), np.asarray(weights, np.uint8), f"sft/{name}",
                     info={"truncated": truncated})


def _spec_item(item):
  split, index = item
  state = bu.worker_state()
  messages = synthesize_plan(bu.doc_rng(state["cfg"]["seed"], "plan", split, index))
  ids, weights, _ = encode_within(state["tokenizer"], messages, None, state["cfg"]["seq_len"])
  return bu.Document(np.asarray(ids, np.int32), np.asarray(weights, np.uint8), "sft/plan_spec",
                     info={"truncated": False})


# ----------------------------------------------------------------------------------------------
# Builder


def parse_source(spec: str) -> tuple[str, str, float]:
  """NAME=PATH[:WEIGHT] -> (name, path, weight)."""
  if "=" not in spec:
    raise ValueError(f"--source {spec!r}: expected NAME=PATH[:WEIGHT]")
  name, rest = spec.split("=", 1)
  path, weight = rest, 1.0
  if ":" in rest:
    head, tail = rest.rsplit(":", 1)
    try:
      weight, path = float(tail), head
    except ValueError:
      pass  # a ':' inside the path
  if not name or weight <= 0:
    raise ValueError(f"--source {spec!r}: needs a name and a positive weight")
  if not os.path.exists(path):
    raise FileNotFoundError(f"--source {name}: input file {path} does not exist")
  return name, path, weight


def record_items(name: str, path: str, split: str, val_fraction: float):
  for i, (where, record) in enumerate(bu.iter_records(path)):
    if (bu.stable_fraction("val", name, i) < val_fraction) == (split == "val"):
      yield name, where, record


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  bu.add_common_args(p, targets_required=False)
  p.add_argument("--source", action="append", required=True, help="NAME=PATH[:WEIGHT]")
  p.add_argument("--seq_len", type=int, default=8192)
  p.add_argument("--val_fraction", type=float, default=0.01)
  p.add_argument("--synthetic_spec_fraction", type=float, default=0.0)
  p.add_argument("--strict", action="store_true", help="fail on the first malformed record")
  return p.parse_args(argv)


def build(args) -> bu.Report:
  sources = [parse_source(s) for s in args.source]
  if len({n for n, _, _ in sources}) != len(sources):
    raise ValueError(f"--source names must be unique: {[n for n, _, _ in sources]}")
  if not 0 <= args.synthetic_spec_fraction < 1:
    raise ValueError(f"--synthetic_spec_fraction {args.synthetic_spec_fraction} not in [0, 1)")
  tok = load_tokenizer(args.tokenizer)
  if not tok.has_chat_tokens:
    raise ValueError(f"tokenizer {args.tokenizer} lacks the chat special tokens; train one with "
                     f"python -m data_pipeline.tokenizer")
  cfg = {"tokenizer": tok.path, "seq_len": args.seq_len, "seed": args.seed}
  report = bu.Report("sft")
  targets = {"train": args.target_train_tokens, "val": args.target_val_tokens}
  meta = {"name": "sft", "sources": [list(s) for s in sources], "seq_len": args.seq_len,
          "synthetic_spec_fraction": args.synthetic_spec_fraction}
  truncated = {"train": 0, "val": 0}
  total_weight = sum(w for _, _, w in sources)
  f = args.synthetic_spec_fraction
  with bu.OrderedPool(make_worker_state, cfg, args.num_workers) as pool, \
      shards.ShardDirWriter(args.out_dir, vocab_size=tok.vocab_size, tokenizer_path=tok.path,
                            bos_id=tok.bos_id, eos_id=tok.eos_id, overwrite=args.overwrite,
                            shard_tokens=args.shard_tokens, builder=meta) as writer:
    for split in ("train", "val"):
      streams = [(name, tool_synth.strict_stream(
          pool.imap(_record_item, record_items(name, path, split, args.val_fraction)),
          args.strict), weight) for name, path, weight in sources]
      if f > 0:
        streams.append(("plan_spec", pool.imap(_spec_item, ((split, i) for i in
                                                            itertools.count())),
                        total_weight * f / (1 - f)))
      mix = bu.WeightedInterleave(streams, stop_when_exhausted=[n for n, _, _ in sources])
      packer = bu.WindowPacker(args.seq_len, tok.eos_id)

      def count(doc, split=split):
        truncated[split] += bool(doc.info and doc.info.get("truncated"))

      with bu.progress(targets[split], f"sft {split}", args.quiet) as bar:
        bu.write_documents(writer, split, (r for _, r in mix), report, bar, targets[split],
                           packer=packer, on_document=count)
      report.extra[f"{split}_tokens_per_source"] = writer.tokens_per_source(split)
      report.extra[f"{split}_pad_tokens"] = packer.pad_tokens
      if mix.exhausted:
        report.extra[f"{split}_sources_exhausted"] = mix.exhausted
    report.extra["truncated_at_turn_boundary"] = truncated
    bu.commit_report(report, writer)
  return report


def main(argv=None):
  args = parse_args(argv)
  bu.finish(build(args))


if __name__ == "__main__":
  bu.run_main(main)
