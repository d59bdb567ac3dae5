r"""The whole plan at tiny scale, on a CPU, in a few minutes: the README's first command.

  python -m experiments.quickstart [--workdir runs/quickstart]

Every step is one of the project's own commands, run as the user would run it (each is
printed before it runs), on data this machine has or the code makes:

  1. tokenizer   data_pipeline.tokenizer on Python standard-library code and docstrings, the
                 chat fixtures (OpenHermes / UltraChat / glaive / Hermes schemas) and samples of
                 the synthetic generators
  2. sources     code_stream (the standard library), longctx_hard (short-range for phase 2,
                 full-window for phase 2.5/3), tool_synth (synthetic + glaive + Hermes
                 fixtures), sft (fixture chats)
  3. mixes       interleave: phase2 (code + short-range retrieval), phase2_5 (50% phase2
                 replay, 25% tools, 25% long-context), phase3 (phase1 0.10, phase2 0.15,
                 longctx 0.50, sft 0.25)
  4. training    jaxlm.main: phase2 -> phase2_5 (params-only init from phase2's final)
                 -> phase3 (params-only init from phase2_5's best)
  5. evaluation  jaxlm.eval (passkey by length, val loss per source) and jaxlm.sample (a chat
                 reply)

The tiny scale keeps the proportions of the real plan: phase2 trains at 256 tokens, the
bridge and refine phases at 1024 (the 2k -> 8k step, shrunk 8x), and the bridge raises the
RoPE base as configs/phase2_5.py does. A model this small, trained for seconds, does not
learn retrieval: the point is that every stage runs and hands its output to the next.
The summary table is printed and written to WORKDIR/summary.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import shlex
import subprocess
import sys
import sysconfig
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures")

# Shared by all three phases so each can init_from the previous one.
MODEL = {
    "model.d_model": 128, "model.n_layers": 4, "model.n_heads": 4, "model.n_kv_heads": 2,
    "model.head_dim": 32, "model.mlp_dim": 384, "model.compute_dtype": "float32",
    "model.attention": "auto", "model.remat": "none",
}
SHORT_LEN, LONG_LEN = 256, 1024


def run(cmd: list[str], log) -> str:
  """Runs one project command, echoing it; stops the quickstart if it fails."""
  printable = " ".join(shlex.quote(c) for c in cmd)
  print(f"\n$ {printable}", flush=True)
  log.write(f"$ {printable}\n")
  start = time.time()
  proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                            filter(None, [REPO, os.environ.get("PYTHONPATH")]))})
  log.write(proc.stdout + "\n")
  tail = "\n".join(proc.stdout.strip().splitlines()[-6:])
  print(tail)
  print(f"  ({time.time() - start:.1f} s)", flush=True)
  if proc.returncode != 0:
    print(proc.stdout[-4000:], file=sys.stderr)
    sys.exit(f"quickstart: step failed (exit {proc.returncode}): {printable}")
  return proc.stdout


def py(module: str, *args) -> list[str]:
  return [sys.executable, "-m", module, *map(str, args)]


def tokenizer_corpus(path: str) -> None:
  """Standard-library code and docstrings, chat fixtures and synthetic samples, one file."""
  from data_pipeline import tool_synth
  from jaxlm.data import chat_format  # pylint: disable=import-outside-toplevel
  stdlib = sysconfig.get_paths()["stdlib"]
  files = sorted(glob.glob(os.path.join(stdlib, "*.py")))
  random.Random(0).shuffle(files)
  parts = []
  for f in files[:120]:
    with open(f, encoding="utf-8", errors="replace") as fh:
      parts.append(fh.read())
  for name in sorted(os.listdir(FIXTURES)):
    if name.endswith((".json", ".jsonl")):
      with open(os.path.join(FIXTURES, name), encoding="utf-8") as fh:
        parts.append(fh.read())
  rng = random.Random(0)
  for _ in range(300):
    messages, tools, _ = tool_synth.synthesize(rng)
    parts.append(chat_format.render_text(messages, tools))
  filler = ("The grass is green. The sky is blue. The sun is yellow. Here we go. "
            "There and back again. The pass key is 12345. Remember it. What is the pass key?")
  parts.extend([filler] * 50)
  with open(path, "w", encoding="utf-8") as fh:
    fh.write("\n".join(parts))


def stdlib_chats(path: str, limit: int = 3000, max_chars: int = 8_000_000) -> None:
  """Generic chats the machine can make: questions about standard-library functions, answered
  from their own signatures and docstrings (JSON lines with a `messages` list, as UltraChat)."""
  from data_pipeline import text_sources  # pylint: disable=import-outside-toplevel
  corpus = text_sources.load_corpus(max_chars=max_chars)
  rng = random.Random(0)
  with open(path, "w", encoding="utf-8") as f:
    for fn in corpus.functions[:limit]:
      module = fn.path[:-3].replace("/", ".")
      turns = [{"role": "user", "content": f"What is the signature of {fn.name} in {module}?"},
               {"role": "assistant", "content": f"def {fn.name}({fn.params})"}]
      if fn.doc_first_line:
        turns += [{"role": "user", "content": f"And what does {fn.name} do?"},
                  {"role": "assistant", "content": fn.doc_first_line}]
      if rng.random() < 0.3:
        turns.insert(0, {"role": "system", "content": "You are a concise Python assistant."})
      f.write(json.dumps({"messages": turns}) + "\n")


def train_phase(phase: str, args, data: str, extra: dict, log) -> None:
  overrides = {
      "workdir": os.path.join(args.workdir, "workdirs", phase),
      "train_dir": os.path.join(data, "train"), "val_dir": os.path.join(data, "val"),
      "tokenizer": args.tokenizer_path, "model.vocab_size": args.vocab_size, **MODEL,
      "micro_batch_size": 4, "grad_accum_steps": 1, "val_batches": 4, "val_batch_size": 4,
      "log_every": 10, "optimizer.learning_rate": 3e-3, "optimizer.warmup_steps": 10,
      "optimizer.min_lr_ratio": 0.1, "tensorboard": True, **extra,
  }
  run(py("jaxlm.main", f"--config=configs/{phase}.py",
         *[f"--config.{k}={v}" for k, v in overrides.items()]), log)


def read_jsonl(path: str) -> list[dict]:
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--workdir", default="runs/quickstart")
  parser.add_argument("--vocab_size", type=int, default=2048)
  parser.add_argument("--phase2_steps", type=int, default=300)
  parser.add_argument("--phase2_5_steps", type=int, default=80)
  parser.add_argument("--phase3_steps", type=int, default=60)
  args = parser.parse_args(argv)
  args.workdir = os.path.abspath(args.workdir)
  os.makedirs(args.workdir, exist_ok=True)
  start = time.time()
  log = open(os.path.join(args.workdir, "quickstart.log"), "w", encoding="utf-8")
  data, models = os.path.join(args.workdir, "data"), os.path.join(args.workdir, "models")
  shards_dir = os.path.join(data, "shards")

  # 1. Tokenizer.
  corpus = os.path.join(data, "tokenizer_corpus.txt")
  os.makedirs(data, exist_ok=True)
  tokenizer_corpus(corpus)
  prefix = os.path.join(data, "tokenizer", "jaxlm_tiny")
  run(py("data_pipeline.tokenizer", "--input", corpus, "--vocab_size", args.vocab_size,
         "--model_prefix", prefix), log)
  args.tokenizer_path = prefix + ".model"
  tok = ["--tokenizer", args.tokenizer_path, "--overwrite", "--quiet"]

  # 2. Sources.
  src = {name: os.path.join(shards_dir, name) for name in
         ("code", "longctx_short", "longctx", "tools", "sft")}
  run(py("data_pipeline.code_stream", "--input", sysconfig.get_paths()["stdlib"],
         "--out_dir", src["code"], "--target_train_tokens", 600_000,
         "--target_val_tokens", 40_000, *tok), log)
  run(py("data_pipeline.longctx_hard", "--out_dir", src["longctx_short"], "--seq_len",
         SHORT_LEN, "--max_distance", 200, "--target_train_tokens", 300_000,
         "--target_val_tokens", 20_000, *tok), log)
  run(py("data_pipeline.longctx_hard", "--out_dir", src["longctx"], "--seq_len", LONG_LEN,
         "--target_train_tokens", 400_000, "--target_val_tokens", 40_000,
         "--eval_examples", 24, *tok), log)
  run(py("data_pipeline.tool_synth", "--out_dir", src["tools"], "--seq_len", LONG_LEN,
         "--glaive", os.path.join(FIXTURES, "glaive_function_calling_v2_sample.json"),
         "--hermes", os.path.join(FIXTURES, "hermes_function_calling_v1_sample.json"),
         "--target_train_tokens", 200_000, "--target_val_tokens", 20_000,
         "--eval_examples", 16, *tok), log)
  chats = os.path.join(data, "stdlib_chats.jsonl")
  stdlib_chats(chats)
  run(py("data_pipeline.sft", "--out_dir", src["sft"], "--seq_len", LONG_LEN,
         "--source", f"stdlib_chat={chats}:0.6",
         "--source", "openhermes=" + os.path.join(FIXTURES, "openhermes2_5_sample.json") + ":0.15",
         "--source", "ultrachat=" + os.path.join(FIXTURES, "test_sft-00000-of-00001.parquet") + ":0.15",
         "--source", "glaive=" + os.path.join(FIXTURES, "glaive_function_calling_v2_sample.json") + ":0.1",
         "--target_train_tokens", 150_000, "--target_val_tokens", 16_000, "--val_fraction", 0.1,
         *tok), log)

  # 3. Mixes (the plan's weights).
  def interleave(name, block, train_tokens, val_tokens, sources):
    out = os.path.join(shards_dir, name)
    run(py("data_pipeline.interleave", "--out_dir", out, "--block_tokens", block,
           "--target_train_tokens", train_tokens, "--target_val_tokens", val_tokens,
           "--allow_repeat", "--overwrite",
           *sum([["--source", f"{n}={src_dir}:{w}"] for n, src_dir, w in sources], [])), log)
    return out
  phase2_mix = interleave("phase2_mixed", SHORT_LEN, 600_000, 32_768, [
      ("code", src["code"], 0.6), ("longctx_short", src["longctx_short"], 0.4)])
  phase2_5_mix = interleave("phase2_5_mixed", LONG_LEN, 400_000, 32_768, [
      ("phase2", phase2_mix, 0.5), ("tools", src["tools"], 0.25),
      ("longctx", src["longctx"], 0.25)])
  phase3_mix = interleave("phase3_mixed", LONG_LEN, 300_000, 32_768, [
      ("phase1", src["code"], 0.10), ("phase2", phase2_mix, 0.15),
      ("longctx", src["longctx"], 0.50), ("sft", src["sft"], 0.25)])

  # 4. Training: phase2 -> phase2_5 (params only) -> phase3 (params only, from the best).
  final = {p: os.path.join(models, f"{p}_final") for p in ("phase2", "phase2_5", "phase3")}
  train_phase("phase2", args, phase2_mix, {
      "seq_len": SHORT_LEN, "model.max_seq_len": SHORT_LEN, "init_from": "",
      "final_dir": final["phase2"], "total_opt_steps": args.phase2_steps,
      "val_every_opt": 100, "checkpoint_every_opt": 100}, log)
  train_phase("phase2_5", args, phase2_5_mix, {
      "seq_len": LONG_LEN, "model.max_seq_len": LONG_LEN, "init_from": final["phase2"],
      "model.rope_original_max_len": SHORT_LEN, "final_dir": final["phase2_5"],
      "total_opt_steps": args.phase2_5_steps, "val_every_opt": 20,
      "checkpoint_every_opt": 20, "optimizer.learning_rate": 1.5e-3}, log)
  best_2_5 = os.path.join(args.workdir, "workdirs", "phase2_5", "best")
  train_phase("phase3", args, phase3_mix, {
      "seq_len": LONG_LEN, "model.max_seq_len": LONG_LEN, "init_from": best_2_5,
      "model.rope_original_max_len": SHORT_LEN, "final_dir": final["phase3"],
      "total_opt_steps": args.phase3_steps, "val_every_opt": 20,
      "checkpoint_every_opt": 20, "optimizer.learning_rate": 1e-3}, log)

  # 5. Evaluation and a chat reply.
  lengths = "256,512,1024"
  evals = {}
  for phase in ("phase2", "phase2_5", "phase3"):
    suites = "passkey,val" if phase == "phase2" else "passkey,longctx,tools,val"
    mix = {"phase2": phase2_mix, "phase2_5": phase2_5_mix, "phase3": phase3_mix}[phase]
    run(py("jaxlm.eval", "--checkpoint", final[phase], "--tokenizer", args.tokenizer_path,
           "--suite", suites, "--lengths", lengths, "--samples", 4,
           "--val_dir", os.path.join(mix, "val"),
           "--longctx_eval", os.path.join(src["longctx"], "eval.jsonl"),
           "--tools_eval", os.path.join(src["tools"], "eval.jsonl")), log)
    with open(os.path.join(final[phase], "eval.json")) as f:
      evals[phase] = json.load(f)
  reply = run(py("jaxlm.sample", "--checkpoint", final["phase3"], "--tokenizer",
                 args.tokenizer_path, "--chat", "--prompt", "Write a Python function that adds two numbers.",
                 "--max_new_tokens", 48, "--temperature", 0), log)

  # Summary.
  rows = []
  for phase in ("phase2", "phase2_5", "phase3"):
    workdir = os.path.join(args.workdir, "workdirs", phase)
    metrics = read_jsonl(os.path.join(workdir, "metrics.jsonl"))
    vals = [m for m in metrics if m.get("kind") == "val"]
    last_val = vals[-1] if vals else {}
    rows.append({
        "phase": phase,
        "steps": max((m.get("step", 0) for m in metrics), default=0),
        "val_loss": last_val.get("loss"),
        "val_loss_per_source": {k[len("loss/"):]: v for k, v in last_val.items()
                                if k.startswith("loss/")},
        "passkey_by_length": evals[phase].get("passkey", {}).get("by_length"),
        "longctx_accuracy": evals[phase].get("longctx", {}).get("accuracy"),
        "tool_valid_call_rate": evals[phase].get("tools", {}).get("valid_call_rate"),
        "checkpoints": {
            "latest": sorted(glob.glob(os.path.join(workdir, "latest", "*"))),
            "best": sorted(glob.glob(os.path.join(workdir, "best", "best_step_*"))),
            "final": final[phase] if os.path.isdir(final[phase]) else None,
        },
    })
  summary = {"workdir": args.workdir, "wall_time_s": round(time.time() - start, 1),
             "tokenizer": args.tokenizer_path, "phases": rows,
             "chat_reply": reply.strip().splitlines()[-1] if reply.strip() else ""}
  with open(os.path.join(args.workdir, "summary.json"), "w") as f:
    json.dump(summary, f, indent=2)

  print("\n" + "=" * 100)
  pct = lambda v: "-" if v is None else f"{v:.0%}"
  print(f"{'phase':<9} {'steps':>5} {'val loss':>9}  {'val loss per source':<52} "
        f"{'passkey by length':<26} {'longctx':>7} {'tool calls valid':>16}")
  for r in rows:
    per_source = " ".join(f"{k}={v:.2f}" for k, v in sorted(r["val_loss_per_source"].items()))
    passkey = " ".join(f"{k}:{v:.0%}" for k, v in (r["passkey_by_length"] or {}).items())
    val = f"{r['val_loss']:.3f}" if r["val_loss"] is not None else "-"
    print(f"{r['phase']:<9} {r['steps']:>5} {val:>9}  {per_source:<52} {passkey:<26} "
          f"{pct(r['longctx_accuracy']):>7} {pct(r['tool_valid_call_rate']):>16}")
  for r in rows:
    ck = r["checkpoints"]
    print(f"{r['phase']:<9} latest={ck['latest'][-1] if ck['latest'] else None}")
    print(f"{'':<9} best={ck['best'][-1] if ck['best'] else None}  final={ck['final']}")
  print(f"chat reply after phase3: {summary['chat_reply']!r}")
  print(f"summary: {os.path.join(args.workdir, 'summary.json')}  "
        f"({summary['wall_time_s']:.0f} s in all)")


if __name__ == "__main__":
  main()
