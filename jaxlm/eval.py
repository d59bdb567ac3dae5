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

import collections
import json
import os
import sys
import tempfile
from typing import Any, Callable, Iterable, Sequence

from absl import app
from absl import flags
from absl import logging

from jaxlm import eval_tasks

GenerateFn = Callable[[list[list[int]], int, Sequence[int]], list[list[int]]]
SUITES = ("passkey", "passkey_heldout", "ruler", "longctx", "tools", "val")
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
      "count_call": len(want_call), "count_no_call": len(want_none),
      "records": results,
  }


# ------------------------------------------------------------------------------ val loss


def val_suite(params, model_config, val_dir: str, seq_len: int = 0, val_batches: int = 20,
              val_batch_size: int = 8) -> dict[str, Any]:
  """Mean token NLL (weighted by loss_weights) overall and per source of a split dir."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from configs import common  # pylint: disable=import-outside-toplevel
  from jaxlm import input_pipeline  # pylint: disable=import-outside-toplevel
  from jaxlm import model as model_lib  # pylint: disable=import-outside-toplevel
  from jaxlm import sample  # pylint: disable=import-outside-toplevel

  config = common.get_base_config()
  model_config = sample.as_model_config(model_config)
  config.val_dir = val_dir
  config.seq_len = int(seq_len or model_config.get("max_seq_len", 2048))
  config.val_batches = val_batches
  config.val_batch_size = val_batch_size
  batches, sources = input_pipeline.make_val_batches(
      config, vocab_size=int(model_config.get("vocab_size", 32000)))
  model = model_lib.Transformer(model_config)

  @jax.jit
  def nll_fn(params, batch):
    hidden = model.apply({"params": params}, batch["inputs"], positions=batch["positions"],
                         segment_ids=batch["segment_ids"], return_hidden=True)
    return model_lib.token_nll(hidden, model_lib.lm_head_matrix(params, model_config),
                               batch["targets"])

  weighted = collections.defaultdict(float)
  weights = collections.defaultdict(float)
  for batch in batches:
    inputs = {k: batch[k] for k in ("inputs", "targets", "positions", "segment_ids")}
    nll = np.asarray(nll_fn(params, inputs), np.float64)
    w = np.asarray(batch["loss_weights"], np.float64)
    for source_id in np.unique(batch["source_ids"]):
      mask = batch["source_ids"] == source_id
      weighted[int(source_id)] += float(np.sum(nll[mask] * w[mask]))
      weights[int(source_id)] += float(np.sum(w[mask]))

  def name(i):
    return sources[i] if 0 <= i < len(sources) else "unknown"

  total_w = sum(weights.values())
  return {
      "loss": sum(weighted.values()) / total_w if total_w else float("nan"),
      "by_source": {name(i): weighted[i] / weights[i] for i in sorted(weights) if weights[i]},
      "tokens_by_source": {name(i): weights[i] for i in sorted(weights)},
      "batches": len(batches), "seq_len": config.seq_len, "val_dir": val_dir,
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


def run_suites(suites: Sequence[str], generate_fn: GenerateFn | None, tokenizer, *,
               lengths: Sequence[int] = (1024, 2048, 4096, 8192),
               depths: Sequence[float] = DEFAULT_DEPTHS, samples: int = 5, seed: int = 0,
               longctx_eval: str = "", tools_eval: str = "", max_records: int = 0,
               val_dir: str = "",
               params=None, model_config=None, val_seq_len: int = 0, val_batches: int = 20,
               val_batch_size: int = 8) -> dict[str, Any]:
  """Runs the named suites; returns {suite: result dict}."""
  unknown = [s for s in suites if s not in SUITES]
  if unknown:
    raise ValueError(f"unknown suite(s) {unknown}; suites are {list(SUITES)}")
  results: dict[str, Any] = {}
  for suite in suites:
    if suite == "passkey":
      results[suite] = passkey_suite(generate_fn, tokenizer, lengths, depths, samples, seed)
    elif suite == "passkey_heldout":
      results[suite] = passkey_suite(generate_fn, tokenizer, lengths, depths, samples, seed,
                                     phrasing="heldout")
    elif suite == "ruler":
      results[suite] = ruler_suite(generate_fn, tokenizer, lengths, samples, seed)
    elif suite == "longctx":
      if not longctx_eval:
        raise ValueError("suite 'longctx' needs --longctx_eval FILE (JSON lines)")
      results[suite] = longctx_suite(generate_fn, tokenizer, longctx_eval, max_records)
    elif suite == "tools":
      if not tools_eval:
        raise ValueError("suite 'tools' needs --tools_eval FILE (JSON lines)")
      results[suite] = tools_suite(generate_fn, tokenizer, tools_eval, max_records)
    elif suite == "val":
      if not val_dir:
        raise ValueError("suite 'val' needs --val_dir (a split directory)")
      results[suite] = val_suite(params, model_config, val_dir, val_seq_len, val_batches,
                                 val_batch_size)
  return results


def run_cheap_suites(params, model_config, config) -> dict[str, float]:
  """A quick passkey check for training's validation step; flat {name: value} metrics.

  Lengths: 512 (if shorter than the training context) and config.seq_len; depths 0, 0.5,
  1; 2 samples per cell. An optional `config.eval` ConfigDict may override `lengths`,
  `depths` and `samples`. Needs config.tokenizer.
  """
  from jaxlm.data import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel
  if not config.get("tokenizer"):
    raise ValueError("eval_during_training needs config.tokenizer (the passkey prompts are "
                     "built from text)")
  tokenizer = tokenizer_lib.load_tokenizer(config.tokenizer)
  overrides = config.get("eval") or {}
  seq_len = int(config.seq_len)
  lengths = list(overrides.get("lengths") or sorted({min(512, seq_len), seq_len}))
  depths = list(overrides.get("depths") or (0.0, 0.5, 1.0))
  samples = int(overrides.get("samples") or 2)
  result = passkey_suite(model_generate_fn(params, model_config), tokenizer, lengths, depths,
                         samples, seed=int(config.get("seed", 0)))
  metrics = {"eval/passkey": result["accuracy"]}
  metrics.update({f"eval/passkey_{n}": v for n, v in result["by_length"].items()})
  return metrics


FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_string("checkpoint", None, "Params checkpoint (step dir, manager root or tag).")
  flags.DEFINE_list("suite", ["passkey"], f"Comma-separated suites from {list(SUITES)}.")
  flags.DEFINE_list("lengths", ["1024", "2048", "4096", "8192"],
                    "Prompt lengths in tokens (passkey, ruler).")
  flags.DEFINE_list("depths", [_key(d) for d in DEFAULT_DEPTHS], "Passkey needle depths in [0, 1].")
  flags.DEFINE_integer("samples", 5, "Samples per (length, depth) or (task, length) cell.")
  flags.DEFINE_integer("max_records", 0, "Use at most this many records of the held-out files "
                       "(0 = all).")
  flags.DEFINE_integer("seed", 0, "Seed for keys and needles.")
  flags.DEFINE_string("tokenizer", "", "SentencePiece model (default: recorded with the checkpoint).")
  flags.DEFINE_string("val_dir", "", "Split directory for the val suite.")
  flags.DEFINE_integer("val_seq_len", 0, "Val window length (0 = the model's max_seq_len).")
  flags.DEFINE_integer("val_batches", 20, "Val batches.")
  flags.DEFINE_integer("val_batch_size", 8, "Rows per val batch.")
  flags.DEFINE_string("longctx_eval", "", "JSON lines of held-out long-context records.")
  flags.DEFINE_string("tools_eval", "", "JSON lines of held-out tool prompts.")
  flags.DEFINE_integer("batch_size", 8, "Prompts per generation call.")
  flags.DEFINE_string("output", "", "JSON path (default: next to the checkpoint).")


def _main(argv):
  del argv
  from jaxlm.data import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel
  from jaxlm import sample  # pylint: disable=import-outside-toplevel
  if not FLAGS.checkpoint:
    raise ValueError("--checkpoint is required")
  suites = [s.strip() for s in FLAGS.suite if s.strip()]
  try:
    lengths = [int(x) for x in FLAGS.lengths]
    depths = [float(x) for x in FLAGS.depths]
  except ValueError as e:
    raise ValueError(f"--lengths / --depths must be numbers: {e}") from None
  params, model_config = sample.load_model(FLAGS.checkpoint)
  tokenizer = None
  if any(s != "val" for s in suites):
    tokenizer = tokenizer_lib.load_tokenizer(sample.find_tokenizer(FLAGS.checkpoint,
                                                                   FLAGS.tokenizer))
  generate_fn = model_generate_fn(params, model_config, FLAGS.batch_size)
  results = run_suites(
      suites, generate_fn, tokenizer, lengths=lengths, depths=depths, samples=FLAGS.samples,
      seed=FLAGS.seed, longctx_eval=FLAGS.longctx_eval, tools_eval=FLAGS.tools_eval,
      max_records=FLAGS.max_records,
      val_dir=FLAGS.val_dir, params=params, model_config=model_config,
      val_seq_len=FLAGS.val_seq_len, val_batches=FLAGS.val_batches,
      val_batch_size=FLAGS.val_batch_size)
  print(format_results(results))
  path = FLAGS.output or output_path(FLAGS.checkpoint, suites)
  write_json(path, {"checkpoint": os.path.abspath(FLAGS.checkpoint), **results})
  print(f"\nwrote {path}")


def main(argv):
  try:
    _main(argv)
  except (ValueError, FileNotFoundError, KeyError) as e:
    logging.flush()
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
