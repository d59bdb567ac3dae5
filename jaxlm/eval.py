r"""Evaluations of a checkpoint: passkey, RULER-style needles, held-out long-context and
tool-call sets, and validation loss per source.

  python -m jaxlm.eval --checkpoint models/phase2_5_final --suite passkey,ruler \
      --lengths 1024,2048,4096,8192 --samples 5
  python -m jaxlm.eval --checkpoint DIR --suite longctx,tools \
      --longctx_eval data/longctx/eval.jsonl --tools_eval data/tools/eval.jsonl
  python -m jaxlm.eval --checkpoint DIR --suite val --val_dir data/shards/phase2_5_mixed/val

Prints a table per suite and writes the numbers as JSON next to the checkpoint:
DIR/eval_<suite>.json for one suite, DIR/eval.json for several (--output overrides).
Accuracies are fractions in [0, 1] in the JSON and percentages in the tables.

Suites (prompt construction and scoring live in `jaxlm.eval_tasks`):
  passkey  Landmark-Attention passkey retrieval by length x needle depth (greedy, 10 tokens)
  passkey_heldout  the same with needle/question phrasings, filler and instruction that no
           training document holds (eval_tasks.PASSKEY_HELDOUT_*): the score that counts
  ruler    niah_single, niah_multikey, niah_multivalue, variable_track (string_match_all)
  longctx  records {"task", "prompt", "answer", "distance_tokens", "length_tokens"}: right
           when the answer string is in the output
  tools    records {"messages", "tools", "expected": "call"|"no_call", "expected_name"}:
           call validity (parses, known function, arguments validate) and call decisions
  val      mean token NLL per source of a split dir (jaxlm.input_pipeline.make_val_batches)

Everything except `val` goes through a `GenerateFn`:
    generate_fn(prompt_ids: list[list[int]], max_new_tokens: int, stop_ids: Sequence[int])
        -> list[list[int]]   (new tokens per prompt)
so a stub with known answers can stand in for the model (tests do exactly that).
`model_generate_fn(params, model_config)` wraps `jaxlm.sample.generate` (greedy).

Training calls `run_cheap_suites(params, model_config, config)` at each validation when
config.eval_during_training is set: a short passkey run whose numbers go to metrics.jsonl.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import sys
import tempfile
from typing import Any, Callable, Iterable, Sequence

from jaxlm import eval_tasks

GenerateFn = Callable[[list[list[int]], int, Sequence[int]], list[list[int]]]
DEFAULT_DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
TOOLS_MAX_NEW_TOKENS = 128


def model_generate_fn(params, model_config, batch_size: int = 8) -> GenerateFn:
  """A GenerateFn that decodes greedily with the model (jaxlm.sample.generate)."""
  from jaxlm import sample  # pylint: disable=import-outside-toplevel

  def generate_fn(prompt_ids, max_new_tokens, stop_ids=()):
    return sample.generate(params, model_config, prompt_ids, max_new_tokens,
                           stop_ids=stop_ids, batch_size=min(batch_size, len(prompt_ids)))
  return generate_fn


def _generate_all(generate_fn: GenerateFn, prompts: Sequence[list[int]],
                  max_new_tokens: Sequence[int], stop_ids: Sequence[int]) -> list[list[int]]:
  """Runs prompts grouped by max_new_tokens (one compiled shape each); keeps the order."""
  groups: dict[int, list[int]] = collections.defaultdict(list)
  for i, n in enumerate(max_new_tokens):
    groups[n].append(i)
  outputs: list[list[int] | None] = [None] * len(prompts)
  for n, indices in groups.items():
    new = generate_fn([prompts[i] for i in indices], n, stop_ids)
    if len(new) != len(indices):
      raise ValueError(f"generate_fn returned {len(new)} outputs for {len(indices)} prompts")
    for i, out in zip(indices, new):
      outputs[i] = list(out)
  return outputs  # type: ignore[return-value]


def _mean(values: Iterable[float]) -> float:
  values = list(values)
  return sum(values) / len(values) if values else float("nan")


def _key(x: float | int) -> str:
  return f"{x:g}" if isinstance(x, float) else str(x)


# ------------------------------------------------------------------------------ probes


def score_probes(probes: Sequence[eval_tasks.Probe], generate_fn: GenerateFn, tokenizer
                 ) -> list[dict[str, Any]]:
  """Generates for every probe and scores it; one record per probe."""
  outputs = _generate_all(generate_fn, [p.prompt_ids for p in probes],
                          [p.max_new_tokens for p in probes], [tokenizer.eos_id])
  records = []
  for probe, new in zip(probes, outputs):
    text = tokenizer.decode(new)
    records.append({"task": probe.task, "length": probe.length, "depth": probe.depth,
                    "prompt_tokens": len(probe.prompt_ids), "references": probe.references,
                    "output": text, "score": eval_tasks.score_probe(probe, text)})
  return records


def passkey_suite(generate_fn: GenerateFn, tokenizer, lengths: Sequence[int],
                  depths: Sequence[float] = DEFAULT_DEPTHS, samples: int = 5,
                  seed: int = 0, phrasing: str = "train") -> dict[str, Any]:
  """Passkey accuracy overall, per length and per (length, depth)."""
  probes = eval_tasks.passkey_probes(tokenizer, lengths, depths, samples, seed, phrasing)
  records = score_probes(probes, generate_fn, tokenizer)
  by_cell = collections.defaultdict(list)
  for r in records:
    by_cell[(r["length"], r["depth"])].append(r["score"])
  return {
      "accuracy": _mean(r["score"] for r in records),
      "by_length": {_key(n): _mean(s for (m, _), v in by_cell.items() if m == n for s in v)
                    for n in lengths},
      "by_length_depth": {_key(n): {_key(float(d)): _mean(by_cell[(n, d)]) for d in depths}
                          for n in lengths},
      "samples": samples,
      "records": records,
  }


def ruler_suite(generate_fn: GenerateFn, tokenizer, lengths: Sequence[int], samples: int = 5,
                seed: int = 0, tasks: Sequence[str] = eval_tasks.RULER_TASKS
                ) -> dict[str, Any]:
  """RULER-style scores (mean string_match_all) overall, per task and per (task, length)."""
  probes = eval_tasks.ruler_probes(tokenizer, tasks, lengths, samples, seed)
  records = score_probes(probes, generate_fn, tokenizer)
  by_cell = collections.defaultdict(list)
  for r in records:
    by_cell[(r["task"], r["length"])].append(r["score"])
  return {
      "accuracy": _mean(r["score"] for r in records),
      "by_task": {t: _mean(s for (u, _), v in by_cell.items() if u == t for s in v)
                  for t in tasks},
      "by_task_length": {t: {_key(n): _mean(by_cell[(t, n)]) for n in lengths} for t in tasks},
      "samples": samples,
      "records": records,
  }


# ------------------------------------------------------------------------------ held-out sets


def read_jsonl(path: str, required: Sequence[str], limit: int = 0) -> list[dict[str, Any]]:
  """Records of a JSON-lines file; errors name the file, line and missing key."""
  if not path:
    raise FileNotFoundError("no eval file given")
  if not os.path.exists(path):
    raise FileNotFoundError(f"eval file {path} does not exist")
  records = []
  with open(path, encoding="utf-8") as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{number} is not valid JSON: {e}") from None
      missing = [k for k in required if k not in record]
      if missing:
        raise ValueError(f"{path}:{number} lacks key(s) {missing}")
      records.append(record)
      if limit and len(records) >= limit:
        break
  if not records:
    raise ValueError(f"eval file {path} holds no records")
  return records


def longctx_suite(generate_fn: GenerateFn, tokenizer, path: str, samples: int = 0,
                  max_new_tokens: int = 32) -> dict[str, Any]:
  """Accuracy on held-out long-context records (answer string found in the output)."""
  records = read_jsonl(path, ["task", "prompt", "answer"], samples)
  prompts = [[tokenizer.bos_id] + tokenizer.encode(r["prompt"]) for r in records]
  budgets = [max(max_new_tokens, len(tokenizer.encode(str(r["answer"]))) + 8)
             for r in records]
  outputs = _generate_all(generate_fn, prompts, budgets, [tokenizer.eos_id])
  results = []
  for record, prompt, new in zip(records, prompts, outputs):
    text = tokenizer.decode(new)
    results.append({"task": record["task"], "answer": record["answer"], "output": text,
                    "distance_tokens": record.get("distance_tokens"),
                    "length_tokens": record.get("length_tokens", len(prompt)),
                    "score": eval_tasks.score_answer_found(text, str(record["answer"]))})
  by_task, by_distance = collections.defaultdict(list), collections.defaultdict(list)
  for r in results:
    by_task[r["task"]].append(r["score"])
    if r["distance_tokens"] is not None:
      by_distance[_distance_bucket(int(r["distance_tokens"]))].append(r["score"])
  return {"accuracy": _mean(r["score"] for r in results),
          "by_task": {t: _mean(v) for t, v in sorted(by_task.items())},
          "by_distance": {b: _mean(by_distance[b]) for b in _DISTANCE_BUCKETS
                          if b in by_distance},
          "count": len(results), "records": results}


_DISTANCE_EDGES = (0, 512, 1024, 2048, 4096, 8192)
_DISTANCE_BUCKETS = [f"{a}-{b}" for a, b in zip(_DISTANCE_EDGES, _DISTANCE_EDGES[1:])] + [
    f">={_DISTANCE_EDGES[-1]}"]


def _distance_bucket(distance: int) -> str:
  """Which dependency-distance range (tokens) a record falls in."""
  for a, b in zip(_DISTANCE_EDGES, _DISTANCE_EDGES[1:]):
    if distance < b:
      return f"{a}-{b}"
  return f">={_DISTANCE_EDGES[-1]}"


def tools_suite(generate_fn: GenerateFn, tokenizer, path: str, samples: int = 0,
                max_new_tokens: int = TOOLS_MAX_NEW_TOKENS) -> dict[str, Any]:
  """Tool-call validity and call/no-call decisions on held-out chat prompts."""
  from jaxlm.data import chat_format  # pylint: disable=import-outside-toplevel
  from jaxlm import sample  # pylint: disable=import-outside-toplevel
  records = read_jsonl(path, ["messages", "expected"], samples)
  prompts = [chat_format.encode_prompt(tokenizer, r["messages"], r.get("tools"))
             for r in records]
  outputs = _generate_all(generate_fn, prompts, [max_new_tokens] * len(prompts),
                          sample.chat_stop_ids(tokenizer))
  results = []
  for record, new in zip(records, outputs):
    text = tokenizer.decode(new)
    flags_ = eval_tasks.score_tool_output(chat_format.parse_assistant_output(text), record)
    results.append({"expected": record["expected"], "expected_name": record.get("expected_name"),
                    "has_expected_arguments": record.get("expected_arguments") is not None,
                    "output": text, **flags_})
  want_call = [r for r in results if r["expected"] == "call"]
  want_none = [r for r in results if r["expected"] == "no_call"]
  return {
      "decision_accuracy": _mean(float(r["decision_correct"]) for r in results),
      "call_rate": _mean(float(r["called"]) for r in want_call),
      "valid_call_rate": _mean(float(r["valid"]) for r in want_call),
      "right_function_rate": _mean(float(r["right_name"]) for r in want_call),
      "right_arguments_rate": _mean(float(r["right_arguments"]) for r in want_call
                                    if r["has_expected_arguments"]),
      "no_call_accuracy": _mean(float(not r["called"]) for r in want_none),
      "invalid_when_called": _mean(float(not r["valid"]) for r in results if r["called"]),
      "call_kinds": {k: sum(r["kind"] == k for r in want_call)
                     for k in eval_tasks.TOOL_OUTPUT_KINDS},
      "count_call": len(want_call), "count_no_call": len(want_none),
      "records": results,
  }


# ------------------------------------------------------------------------------ val loss


def val_suite(params, model_config, checkpoint: str = "", val_dir: str = "", seq_len: int = 0,
              val_batches: int = 0, val_batch_size: int = 0) -> dict[str, Any]:
  """Val loss overall and per source, computed exactly as the trainer validates.

  Uses `jaxlm.validation` (the trainer's own loss) on the trainer's batches: by default
  the val_dir, seq_len, val_batches and val_batch_size of the run config recorded next to
  `checkpoint` (workdir/config.json or the final tag's config.json), so the numbers equal
  the trainer's last validation of that checkpoint. Arguments override them.
  """
  import ml_collections  # pylint: disable=import-outside-toplevel
  from jaxlm import checkpoint as checkpoint_lib  # pylint: disable=import-outside-toplevel
  from jaxlm import input_pipeline  # pylint: disable=import-outside-toplevel
  from jaxlm import sample  # pylint: disable=import-outside-toplevel
  from jaxlm import validation  # pylint: disable=import-outside-toplevel

  model_config = sample.as_model_config(model_config)
  run_config_path, run = checkpoint_lib.find_run_config(checkpoint) if checkpoint else ("", {})
  settings = ml_collections.ConfigDict({
      "val_dir": val_dir or run.get("val_dir") or "",
      "seq_len": int(seq_len or run.get("seq_len") or model_config.max_seq_len),
      "val_batches": int(val_batches or run.get("val_batches") or 20),
      "val_batch_size": int(val_batch_size or run.get("val_batch_size") or 8),
  })
  if not settings.val_dir:
    raise ValueError("suite 'val' needs --val_dir (a split directory); none is recorded "
                     f"with checkpoint {checkpoint or '(none given)'}")
  batches, sources = input_pipeline.make_val_batches(settings,
                                                     vocab_size=model_config.vocab_size)
  losses = validation.validation_loss(params, model_config, batches, sources)
  return {
      "loss": losses["loss"],
      "by_source": {k.split("/", 1)[1]: v for k, v in losses.items() if k.startswith("loss/")},
      "batches": len(batches), "batch_size": settings.val_batch_size,
      "seq_len": settings.seq_len, "val_dir": settings.val_dir,
      "settings_from": run_config_path or "arguments",
  }


# ------------------------------------------------------------------------------ reporting


def _pct(x: float) -> str:
  return "  n/a" if x != x else f"{100 * x:5.1f}"


def format_grid(title: str, rows: dict[str, dict[str, float]], row_name: str,
                col_name: str) -> str:
  """A text table of percentages; rows and columns in the dicts' order, plus a mean column."""
  cols = list(next(iter(rows.values())).keys()) if rows else []
  corner = f"{row_name} \\ {col_name}"
  width = max([len(corner)] + [len(r) for r in rows]) + 2
  lines = [title, f"{corner:<{width}}" + "".join(f"{c:>8}" for c in cols) + f"{'mean':>8}"]
  for r, values in rows.items():
    lines.append(f"{r:<{width}}" + "".join(f"{_pct(values[c]):>8}" for c in cols)
                 + f"{_pct(_mean(values.values())):>8}")
  return "\n".join(lines)


def format_results(results: dict[str, Any]) -> str:
  parts = []
  if "passkey" in results:
    r = results["passkey"]
    parts.append(format_grid(f"passkey accuracy (%), {r['samples']} samples per cell",
                             r["by_length_depth"], "length", "depth"))
    parts.append(f"passkey accuracy: {_pct(r['accuracy']).strip()}%")
  if "passkey_heldout" in results:
    r = results["passkey_heldout"]
    parts.append(format_grid(f"held-out passkey accuracy (%), {r['samples']} samples per cell",
                             r["by_length_depth"], "length", "depth"))
    parts.append(f"held-out passkey accuracy: {_pct(r['accuracy']).strip()}%")
  if "ruler" in results:
    r = results["ruler"]
    parts.append(format_grid(f"RULER string_match_all (%), {r['samples']} samples per cell",
                             r["by_task_length"], "task", "length"))
    parts.append(f"ruler score: {_pct(r['accuracy']).strip()}%")
  if "longctx" in results:
    r = results["longctx"]
    parts.append(f"long-context held-out ({r['count']} records): "
                 f"{_pct(r['accuracy']).strip()}%")
    parts.extend(f"  {t:<28}{_pct(v)}%" for t, v in r["by_task"].items())
    parts.extend(f"  distance {d:<19}{_pct(v)}%" for d, v in r["by_distance"].items())
  if "tools" in results:
    r = results["tools"]
    parts.append(f"tool calls ({r['count_call']} call, {r['count_no_call']} no-call prompts)")
    for k in ("decision_accuracy", "call_rate", "valid_call_rate", "right_function_rate",
              "right_arguments_rate", "no_call_accuracy", "invalid_when_called"):
      parts.append(f"  {k:<28}{_pct(r[k])}%")
    parts.append("  calls asked for, by kind: " + ", ".join(
        f"{k} {n}" for k, n in r["call_kinds"].items()))
  if "val" in results:
    r = results["val"]
    parts.append(f"val loss ({r['batches']} batches of {r['seq_len']} tokens): {r['loss']:.4f}")
    parts.extend(f"  {s:<28}{v:.4f}" for s, v in r["by_source"].items())
  return "\n\n".join(parts)


def _finite(obj: Any) -> Any:
  """NaN (an empty cell) -> None, so the file is strict JSON."""
  if isinstance(obj, float) and obj != obj:
    return None
  if isinstance(obj, dict):
    return {k: _finite(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_finite(v) for v in obj]
  return obj


def write_json(path: str, obj: Any) -> None:
  """Atomic JSON write (temp file in the same directory, then rename)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".eval-", suffix=".json", dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      json.dump(_finite(obj), f, indent=1, default=float, allow_nan=False)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def output_path(checkpoint: str, suites: Sequence[str]) -> str:
  name = f"eval_{suites[0]}.json" if len(suites) == 1 else "eval.json"
  return os.path.join(checkpoint, name)


# ------------------------------------------------------------------------------ entry points


@dataclasses.dataclass
class EvalContext:
  """What the evaluators may need; each takes the parts it uses."""
  generate_fn: GenerateFn | None = None
  tokenizer: Any = None
  params: Any = None
  model_config: Any = None
  checkpoint: str = ""
  lengths: Sequence[int] = (1024, 2048, 4096, 8192)
  depths: Sequence[float] = DEFAULT_DEPTHS
  samples: int = 5
  seed: int = 0
  longctx_eval: str = ""
  tools_eval: str = ""
  max_records: int = 0
  val_dir: str = ""
  val_seq_len: int = 0
  val_batches: int = 0
  val_batch_size: int = 0


def _need(value, suite: str, flag: str):
  if not value:
    raise ValueError(f"suite {suite!r} needs {flag}")
  return value


# The evaluators, by name (as big_vision's config.evals): name -> fn(EvalContext) -> dict.
EVALUATORS: dict[str, Callable[[EvalContext], dict[str, Any]]] = {
    "passkey": lambda c: passkey_suite(c.generate_fn, c.tokenizer, c.lengths, c.depths,
                                       c.samples, c.seed),
    "passkey_heldout": lambda c: passkey_suite(c.generate_fn, c.tokenizer, c.lengths,
                                               c.depths, c.samples, c.seed, phrasing="heldout"),
    "ruler": lambda c: ruler_suite(c.generate_fn, c.tokenizer, c.lengths, c.samples, c.seed),
    "longctx": lambda c: longctx_suite(
        c.generate_fn, c.tokenizer,
        _need(c.longctx_eval, "longctx", "--longctx_eval FILE (JSON lines)"), c.max_records),
    "tools": lambda c: tools_suite(
        c.generate_fn, c.tokenizer,
        _need(c.tools_eval, "tools", "--tools_eval FILE (JSON lines)"), c.max_records),
    "val": lambda c: val_suite(c.params, c.model_config, c.checkpoint, c.val_dir,
                               c.val_seq_len, c.val_batches, c.val_batch_size),
}
SUITES = tuple(EVALUATORS)
# Suites that score generated text need the tokenizer and the sampler.
GENERATIVE_SUITES = ("passkey", "passkey_heldout", "ruler", "longctx", "tools")


def run_suites(suites: Sequence[str], context: EvalContext) -> dict[str, Any]:
  """Runs the named evaluators; returns {suite: result dict}."""
  unknown = [s for s in suites if s not in EVALUATORS]
  if unknown:
    raise ValueError(f"unknown suite(s) {unknown}; suites are {list(EVALUATORS)}")
  return {suite: EVALUATORS[suite](context) for suite in suites}


def run_cheap_suites(params, model_config, config) -> dict[str, float]:
  """A quick passkey check for training's validation step; flat {name: value} metrics.

  Runs what `config.eval` says (lengths, depths, samples; see configs/common.py). Needs
  config.tokenizer.
  """
  from jaxlm.data import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel
  if not config.get("tokenizer"):
    raise ValueError("eval_during_training needs config.tokenizer (the passkey prompts are "
                     "built from text)")
  tokenizer = tokenizer_lib.load_tokenizer(config.tokenizer)
  seq_len = int(config.seq_len)
  lengths = list(config.eval.lengths) or sorted({min(512, seq_len), seq_len})
  depths = list(config.eval.depths)
  samples = int(config.eval.samples)
  result = passkey_suite(model_generate_fn(params, model_config), tokenizer, lengths, depths,
                         samples, seed=int(config.get("seed", 0)))
  metrics = {"eval/passkey": result["accuracy"]}
  metrics.update({f"eval/passkey_{n}": v for n, v in result["by_length"].items()})
  return metrics


def parse_args(argv=None) -> argparse.Namespace:
  from jaxlm import sample  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(prog="python -m jaxlm.eval",
                                   description=__doc__.split("\n\n")[0])
  sample.add_model_args(parser)
  parser.add_argument("--suite", default="passkey",
                      help=f"comma-separated suites from {list(EVALUATORS)}")
  parser.add_argument("--lengths", default="1024,2048,4096,8192",
                      help="prompt lengths in tokens (passkey, ruler)")
  parser.add_argument("--depths", default=",".join(_key(d) for d in DEFAULT_DEPTHS),
                      help="passkey needle depths in [0, 1]")
  parser.add_argument("--samples", type=int, default=5,
                      help="samples per (length, depth) or (task, length) cell")
  parser.add_argument("--max_records", type=int, default=0,
                      help="use at most this many records of the held-out files (0 = all)")
  parser.add_argument("--seed", type=int, default=0, help="seed for keys and needles")
  parser.add_argument("--val_dir", default="",
                      help="split directory for the val suite (default: the run's val_dir)")
  parser.add_argument("--val_seq_len", type=int, default=0,
                      help="val window length (0 = the run's seq_len)")
  parser.add_argument("--val_batches", type=int, default=0,
                      help="val batches (0 = the run's val_batches)")
  parser.add_argument("--val_batch_size", type=int, default=0,
                      help="rows per val batch (0 = the run's val_batch_size)")
  parser.add_argument("--longctx_eval", default="", help="JSON lines of held-out long-context records")
  parser.add_argument("--tools_eval", default="", help="JSON lines of held-out tool prompts")
  parser.add_argument("--batch_size", type=int, default=8, help="prompts per generation call")
  parser.add_argument("--output", default="", help="JSON path (default: next to the checkpoint)")
  return parser.parse_args(argv)


def _numbers(text: str, kind, flag: str) -> list:
  try:
    return [kind(x) for x in text.split(",") if x.strip()]
  except ValueError as e:
    raise ValueError(f"{flag} must be comma-separated numbers: {e}") from None


def _main(args: argparse.Namespace) -> None:
  from jaxlm.data import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel
  from jaxlm import sample  # pylint: disable=import-outside-toplevel
  suites = [s.strip() for s in args.suite.split(",") if s.strip()]
  params, model_config = sample.load_model(args.checkpoint, args.compute_dtype)
  tokenizer = None
  if any(s in GENERATIVE_SUITES for s in suites):
    tokenizer = tokenizer_lib.load_tokenizer(sample.find_tokenizer(args.checkpoint,
                                                                   args.tokenizer))
  context = EvalContext(
      generate_fn=model_generate_fn(params, model_config, args.batch_size),
      tokenizer=tokenizer, params=params, model_config=model_config,
      checkpoint=args.checkpoint, lengths=_numbers(args.lengths, int, "--lengths"),
      depths=_numbers(args.depths, float, "--depths"), samples=args.samples, seed=args.seed,
      longctx_eval=args.longctx_eval, tools_eval=args.tools_eval,
      max_records=args.max_records, val_dir=args.val_dir, val_seq_len=args.val_seq_len,
      val_batches=args.val_batches, val_batch_size=args.val_batch_size)
  results = run_suites(suites, context)
  print(format_results(results))
  path = args.output or output_path(args.checkpoint, suites)
  write_json(path, {"checkpoint": os.path.abspath(args.checkpoint), **results})
  print(f"\nwrote {path}")


def main(argv=None):
  args = parse_args(argv)
  try:
    _main(args)
  except (ValueError, FileNotFoundError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  main()
