r"""The plan end to end at small scale: 2k reasoning core -> 8k bridge -> refine, on one GPU.

  python -m experiments.bridge.run                  # one H200: ~4 minutes, results in $OUT
  python -m experiments.bridge.run --smoke          # CPU, tiny everything: checks the machinery
  python -m experiments.bridge.run --scale cpu      # the plan at L=128 -> 512 on 2 CPU cores

Every step is one of the project's own commands, run as a subprocess and recorded:

  tokenizer  data_pipeline.tokenizer (8k vocab) on stdlib code, the chat fixtures and samples
             of the synthetic generators (the quickstart's corpus)
  data       code_stream (stdlib), longctx_hard three times: short-range documents of
             --short_len tokens (passkey / kv / multi-query retrieval; the curriculum),
             documents of up to --mid_len tokens, full --long_len windows; tool_synth; sft
             (fixture chats + generated stdlib chats); interleave into four mixes
  phase2a    jaxlm.main configs/phase2.py at --short_len on code 0.3 + short retrieval 0.7,
             from scratch. Retrieval is learned short first: a small model trained from
             scratch on 300-2048-token passkey documents never learned it in 3000 steps,
             one trained first on <= 512-token documents did in ~900 steps.
  phase2     configs/phase2.py at --mid_len (2k), params-only from phase2a, on code 0.35 +
             short retrieval 0.25 + long-context documents up to 2k 0.40
  phase2_5   configs/phase2_5.py at --long_len (8k): 50% phase2 replay, 25% tool protocol,
             25% long-context hard dependencies; params only from phase2; RoPE 10k -> 500k
  phase3     configs/phase3.py at 8k: phase1 (code) 0.10, phase2 0.15, long-context 0.50,
             SFT 0.25 (chat 0.9, tool calls 0.1 from the tool shard); params only from
             phase2_5's best
  evals      jaxlm.eval after phase2, phase2_5 and phase3: held-out passkey (phrasings,
             filler and instruction no training document uses; the score that counts),
             the training phrasing's passkey and RULER at
             --eval_lengths, tool-call validity / no-call accuracy on held-out tool prompts,
             val loss per source of the phase2 mix at 2k (replay must not degrade); the
             trainers' own last validation gives val loss per source of each phase's mix.
             After phase3 a few chat prompts are answered (greedy) and checked for the chat
             format: the reply is text that ends with <|end|>.

Timing: the 8k data is built while phase2a trains, and each phase's evaluation runs while
the next phase trains (the GPU memory is split between the two processes), so the critical
path is data for phase2a -> four trainings -> the last evaluation. With --time_budget_s a
stage that would start too late is skipped, and a running one is stopped at the deadline.

Output (--out_dir, default $OUT if set, else runs/bridge), rewritten after every stage so a
run cut short still leaves its numbers:
  results.json   settings, device, stages (command, seconds, status), per-phase training and
                 eval figures, the targets with PASS / FAIL / MISSING, chat replies
  results.md     the same as tables, ready to paste into experiments/bridge/RESULTS.md
  evals.json     the full jaxlm.eval output of every phase (per-probe records)
  bridge.log     every command's output
Data, checkpoints and per-stage logs live in --workdir (default runs/bridge_work).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from typing import Any, Callable, Sequence

from experiments.bridge import report
from experiments.bridge.report import EVAL_PHASES, PHASES

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
CONFIG_FILE = {"phase2a": "configs/phase2.py", "phase2": "configs/phase2.py",
               "phase2_5": "configs/phase2_5.py", "phase3": "configs/phase3.py"}

# ~33.6M params: 8 x 3.15M per layer (attention 0.79M with 4 kv heads, SwiGLU 2.36M) plus
# 2 x 8192 x 512 untied embeddings. All phases share the shapes (params-only init).
MODEL_33M = {"d_model": 512, "n_layers": 8, "n_heads": 8, "n_kv_heads": 4, "head_dim": 64,
             "mlp_dim": 1536}
MODEL_TINY = {"d_model": 64, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "head_dim": 16,
              "mlp_dim": 128}
MODELS = {"33m": MODEL_33M, "tiny": MODEL_TINY}

# Defaults for one H100 (~9 minutes in all) and for --smoke (CPU, well under a minute of
# compute per stage). Any flag given on the command line wins over its profile.
GPU_PROFILE = dict(
    model="33m", vocab_size=8192, compute_dtype="bfloat16",
    short_len=512, mid_len=2048, long_len=8192, tokens_per_step=65536,
    phase2a_steps=400, phase2_steps=250, phase2_5_steps=250, phase3_steps=120,
    lr_phase2a=1e-3, lr_phase2=6e-4, lr_phase2_5=4e-4, lr_phase3=2e-4,
    warmup_phase2a=40, warmup_phase2=20, warmup_phase2_5=20, warmup_phase3=10,
    val_tokens=131072, val_batches=8, log_every=25,
    eval_lengths="1024,2048,4096,8192", eval_depths="0,0.25,0.5,0.75,1", eval_samples=5,
    eval_records=64, eval_batch_size=25, chat_max_new_tokens=64,
    builder_workers=6, filler_chars=4_000_000, stdlib_chats=6000, code_input="",
    time_budget_s=540.0,
)
SMOKE_PROFILE = dict(
    model="tiny", vocab_size=1024, compute_dtype="float32",
    short_len=256, mid_len=256, long_len=512, tokens_per_step=1024,
    # phase2a and phase2 alike (same length, steps and schedule): phase2 reuses phase2a's
    # compiled step from the persistent compilation cache.
    phase2a_steps=2, phase2_steps=2, phase2_5_steps=2, phase3_steps=2,
    lr_phase2a=1e-3, lr_phase2=1e-3, lr_phase2_5=1e-3, lr_phase3=1e-3,
    warmup_phase2a=1, warmup_phase2=1, warmup_phase2_5=1, warmup_phase3=1,
    val_tokens=1024, val_batches=1, log_every=1,
    eval_lengths="256", eval_depths="0.5", eval_samples=1,
    eval_records=3, eval_batch_size=4, chat_max_new_tokens=8,
    builder_workers=1, filler_chars=200_000, stdlib_chats=100, code_input="asyncio",
    time_budget_s=0.0,
)

CHAT_PROMPTS = (
    "What is the signature of dumps in json?",
    "And what does os.path.join do?",
    "Write a Python function that adds two numbers.",
    "Hello! Can you help me with a question about Python lists?",
    "What is a context manager in Python?",
)


def _stamp() -> str:
  return _stamp_of(time.time())


def _stamp_of(seconds: float) -> str:
  return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime(
      "%Y-%m-%d %H:%M:%S UTC")


def write_atomic(path: str, text: str) -> None:
  """Writes text to path through a temp file in the same directory and a rename."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".bridge-", dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; these are plain result files
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


# ------------------------------------------------------------------------------ stages


@dataclasses.dataclass
class Stage:
  """One command's record: what ran, for how long, and how it ended."""
  name: str
  command: str
  status: str = "pending"  # ok | failed (rc N) | timeout | skipped: why
  seconds: float = 0.0
  started_at: float = 0.0  # seconds since the run started
  log: str = ""


class StageRunner:
  """Runs commands as subprocesses with the run's deadline; keeps every stage's record."""

  def __init__(self, workdir: str, log_path: str, deadline: float | None, start: float,
               on_change: Callable[[], None]):
    self.logs = os.path.join(workdir, "logs")
    os.makedirs(self.logs, exist_ok=True)
    self.log_path, self.deadline, self.start = log_path, deadline, start
    self.on_change = on_change
    self.stages: list[Stage] = []
    self.running: dict[str, subprocess.Popen] = {}
    self.stopped = False  # set by kill_all: no stage starts after it
    self.lock, self.print_lock = threading.Lock(), threading.Lock()
    write_atomic(log_path, f"bridge run started {_stamp()}\n")

  def elapsed(self) -> float:
    return time.time() - self.start

  def say(self, text: str) -> None:
    with self.print_lock:
      print(f"[{self.elapsed():6.1f}s] {text}", flush=True)

  def skip(self, name: str, command: Sequence[str], why: str) -> Stage:
    stage = Stage(name, shlex.join(command), f"skipped: {why}", 0.0, self.elapsed())
    with self.lock:
      self.stages.append(stage)
    self.say(f"skip {name}: {why}")
    self.on_change()
    return stage

  def run(self, name: str, command: Sequence[str], env: dict[str, str] | None = None,
          min_seconds: float = 10.0) -> Stage:
    """Runs `command` in the repository; never raises for a failing command."""
    printable = shlex.join(command)
    if self.stopped:
      return self.skip(name, command, "the run was interrupted")
    timeout = None
    if self.deadline is not None:
      timeout = self.deadline - time.time()
      if timeout < min_seconds:
        return self.skip(name, command, f"time budget: {max(timeout, 0):.0f} s left")
    stage = Stage(name, printable, "running", 0.0, self.elapsed(),
                  os.path.join(self.logs, f"{name}.log"))
    with self.lock:
      self.stages.append(stage)
    self.say(f"start {name}: {printable}")
    full_env = {**os.environ, **(env or {})}
    # The repository first, keeping what PYTHONPATH already holds (the GPU image gets
    # grain & co. from /tmp/site through it).
    full_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (REPO, os.environ.get("PYTHONPATH", "")) if p)
    begin = time.time()
    with open(stage.log, "w", encoding="utf-8") as log:
      log.write(f"$ {printable}\n")
      log.flush()
      # A process group of its own (same session), so a timeout also ends the builders'
      # worker processes.
      proc = subprocess.Popen(list(command), cwd=REPO, env=full_env, stdout=log,
                              stderr=subprocess.STDOUT, process_group=0)
      with self.lock:
        self.running[name] = proc
      try:
        rc = proc.wait(timeout=timeout)
        stage.status = "ok" if rc == 0 else f"failed (rc {rc})"
      except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.wait()
        stage.status = "timeout"
      except BaseException:  # interrupted while waiting: the stage goes down with the run
        _kill_group(proc)
        proc.wait()
        stage.status, stage.seconds = "interrupted", round(time.time() - begin, 1)
        raise
      finally:
        with self.lock:
          self.running.pop(name, None)
    stage.seconds = round(time.time() - begin, 1)
    with open(stage.log, encoding="utf-8", errors="replace") as f:
      output = f.read()
    with self.lock:
      with open(self.log_path, "a", encoding="utf-8") as f:
        f.write(f"\n===== {name}: {stage.status}, {stage.seconds} s (started at "
                f"{stage.started_at:.1f} s)\n{output[-20000:]}\n")
    lines = output.strip().splitlines()[1:]  # the first line is the command
    tail = "\n".join("    " + line for line in lines[-4:])
    self.say(f"{stage.status:<6} {name} ({stage.seconds:.1f} s)\n{tail}")
    self.on_change()
    return stage


  def kill_all(self) -> None:
    """Ends every running stage (and its workers); their records say how they ended."""
    with self.lock:
      self.stopped = True
      procs = list(self.running.values())
    for proc in procs:
      _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
  try:
    os.killpg(proc.pid, signal.SIGKILL)
  except ProcessLookupError:  # already gone
    pass


class Jobs:
  """Stages that run beside each other; each waits for the stages it needs."""

  def __init__(self, runner: StageRunner):
    self.runner = runner
    self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=32)
    self.futures: dict[str, concurrent.futures.Future] = {}

  def submit(self, name: str, command: Sequence[str], needs: Sequence[str] = (),
             env: dict[str, str] | None = None, after: Sequence[str] = ()) -> None:
    """Runs `command` once every stage in `needs` succeeded and every one in `after` ended."""
    def job():
      for other in after:
        self.futures[other].result()
      for need in needs:
        if self.futures[need].result().status != "ok":
          return self.runner.skip(name, command, f"needs {need}, which did not succeed")
      return self.runner.run(name, command, env)
    self.futures[name] = self.pool.submit(job)

  def wait(self, name: str) -> Stage:
    return self.futures[name].result()

  def ok(self, *names: str) -> bool:
    return all(self.wait(n).status == "ok" for n in names)


def py(module: str, *args) -> list[str]:
  return [sys.executable, "-m", module, *map(str, args)]


def py_call(code: str) -> list[str]:
  return [sys.executable, "-c", code]


# ------------------------------------------------------------------------------ the plan


@dataclasses.dataclass
class Paths:
  work: str
  out: str

  def __post_init__(self):
    self.data = os.path.join(self.work, "data")
    self.shards = os.path.join(self.data, "shards")
    self.models = os.path.join(self.work, "models")
    self.workdirs = os.path.join(self.work, "workdirs")
    self.evals = os.path.join(self.work, "evals")
    self.tokenizer_prefix = os.path.join(self.data, "tokenizer", "bridge")
    self.tokenizer = self.tokenizer_prefix + ".model"

  def shard(self, name: str) -> str:
    return os.path.join(self.shards, name)

  def final(self, phase: str) -> str:
    return os.path.join(self.models, f"{phase}_final")

  def workdir(self, phase: str) -> str:
    return os.path.join(self.workdirs, phase)

  def metrics(self, phase: str) -> str:
    return os.path.join(self.workdir(phase), "metrics.jsonl")

  def eval_json(self, phase: str) -> str:
    return os.path.join(self.evals, f"{phase}.json")


def tokens_for(args, phase: str) -> int:
  """Training tokens a phase reads (5% spare so the reader rarely wraps around)."""
  return int(getattr(args, f"{phase}_steps") * args.tokens_per_step * 1.05)


def seq_len_of(args, phase: str) -> int:
  return {"phase2a": args.short_len, "phase2": args.mid_len}.get(phase, args.long_len)


def flops_per_token(args, seq_len: int) -> float:
  """Training FLOPs per token: jaxlm.model's formula, attention halved for causality."""
  from jaxlm import model as model_lib  # pylint: disable=import-outside-toplevel
  config = model_lib.model_config({**MODELS[args.model], "vocab_size": args.vocab_size})
  return model_lib.flops_per_token(config, seq_len, causal=True)


def sft_sources(stdlib_chats: str) -> list[str]:
  """The SFT builder's --source flags: phase 3's generic chat (generated stdlib chats,
  OpenHermes, UltraChat). Its tool calls come from the tool shard (phase3_sources)."""
  return ["--source", f"stdlib_chat={stdlib_chats}:0.6",
          "--source", "openhermes=" + os.path.join(FIXTURES, "openhermes2_5_sample.json") + ":0.15",
          "--source", "ultrachat=" + os.path.join(FIXTURES, "test_sft-00000-of-00001.parquet")
          + ":0.15"]


# Phase 3's SFT quarter is chat ~90% and tool calls ~10% (the plan). The tool tenth is read from
# the tool shard (tool_synth's conversations, the glaive and hermes fixtures among them): as an
# SFT builder source, glaive's 2-record fixture ran out after 330 tokens, 0.3% of the quarter.
SFT_TOOL_SHARE = 0.1


def phase3_sources() -> list[tuple[str, str, float]]:
  """(source name, shard, weight) of phase 3's mix: configs/phase3.py's phase1 0.10, phase2
  0.15, long-context 0.50 and SFT 0.25, the SFT split into chat and tool calls."""
  return [("phase1", "code", 0.10), ("phase2", "phase2_mixed", 0.15),
          ("longctx", "longctx_long", 0.50), ("sft", "sft", 0.25 * (1 - SFT_TOOL_SHARE)),
          ("sft_tools", "tools", 0.25 * SFT_TOOL_SHARE)]


def source_tokens(tokens: float, document_tokens: int) -> int:
  """A source's token target: what its mixes take, and never under a few whole documents
  (the interleaver cuts sources into blocks of a document's length)."""
  return max(int(tokens), 4 * document_tokens)


def submit_data(jobs: Jobs, args, paths: Paths) -> None:
  """Tokenizer, sources and mixes; each waits only for what it reads."""
  workers, background = args.builder_workers, max(1, args.builder_workers * 2 // 3)
  tok = ["--tokenizer", paths.tokenizer, "--overwrite", "--quiet"]
  val = args.val_tokens
  corpus = os.path.join(paths.data, "tokenizer_corpus.txt")
  jobs.submit("tokenizer_corpus", py_call(
      f"from experiments import quickstart; quickstart.tokenizer_corpus({corpus!r})"))
  jobs.submit("tokenizer", py("data_pipeline.tokenizer", "--input", corpus, "--vocab_size",
                              args.vocab_size, "--model_prefix", paths.tokenizer_prefix),
              needs=["tokenizer_corpus"])
  stdlib = sysconfig.get_paths()["stdlib"]
  code_input = os.path.join(stdlib, args.code_input) if args.code_input else stdlib
  n2a, n2 = tokens_for(args, "phase2a"), tokens_for(args, "phase2")
  n25, n3 = tokens_for(args, "phase2_5"), tokens_for(args, "phase3")
  longctx = ["--answer_weight", args.answer_weight, "--stop_weight", args.stop_weight,
             "--filler_chars", args.filler_chars]
  # The CPU bridge's finding (cpu/NOTES.md): the copy clicks on the 8 fixed passkey
  # phrasings, and reaches held-out phrasings only when later phases also see generated ones.
  generated = ["--passkey_phrasings", "both"]

  # Phase 2a's sources first: they are on the critical path.
  jobs.submit("code", py("data_pipeline.code_stream", "--input", code_input, "--out_dir",
                         paths.shard("code"), "--val_fraction", 0.02 if not args.smoke else 0.3,
                         "--num_workers", workers, *tok), needs=["tokenizer"])
  jobs.submit("longctx_short", py(
      "data_pipeline.longctx_hard", "--out_dir", paths.shard("longctx_short"),
      "--seq_len", args.short_len, "--max_doc_tokens", args.short_len, "--min_distance", 16,
      "--tasks", "passkey,kv_retrieval,multi_query",
      "--target_train_tokens", source_tokens(0.7 * n2a + 0.25 * n2, args.short_len),
      "--target_val_tokens", val,
      "--eval_examples", 8, "--num_workers", workers, *longctx, *tok), needs=["tokenizer"])
  jobs.submit("mix_phase2a", interleave_cmd(paths, "phase2a_mixed", args.short_len, n2a, val, [
      ("code", "code", 0.3), ("longctx_short", "longctx_short", 0.7)]),
      needs=["code", "longctx_short"])

  # Everything later phases read: built while phase2a trains.
  jobs.submit("longctx_mid", py(
      "data_pipeline.longctx_hard", "--out_dir", paths.shard("longctx_mid"),
      "--seq_len", args.mid_len, "--max_doc_tokens", args.mid_len,
      "--max_distance", args.mid_len - 48, *generated,
      "--target_train_tokens", source_tokens(0.4 * n2, args.mid_len), "--target_val_tokens", val,
      "--eval_examples", 8, "--num_workers", background, *longctx, *tok), needs=["tokenizer"])
  jobs.submit("longctx_long", py(
      "data_pipeline.longctx_hard", "--out_dir", paths.shard("longctx_long"),
      "--seq_len", args.long_len, *generated,
      "--target_train_tokens", source_tokens(0.25 * n25 + 0.5 * n3, args.long_len),
      "--target_val_tokens", val, "--eval_examples", max(8, args.eval_records),
      "--num_workers", background, *longctx, *tok), needs=["tokenizer"])
  jobs.submit("tools", py(
      "data_pipeline.tool_synth", "--out_dir", paths.shard("tools"), "--seq_len", args.long_len,
      "--glaive", os.path.join(FIXTURES, "glaive_function_calling_v2_sample.json"),
      "--hermes", os.path.join(FIXTURES, "hermes_function_calling_v1_sample.json"),
      # Half the conversations with renamed functions, as the CPU bridge: a model that only
      # ever sees the generator's own names learns them, not the copy of an offered one.
      "--rename_share", args.tools_rename_share,
      "--target_train_tokens", source_tokens(0.25 * n25, args.long_len), "--target_val_tokens", val,
      "--eval_examples", max(8, args.eval_records), "--num_workers", background, *tok),
      needs=["tokenizer"])
  chats = os.path.join(paths.data, "stdlib_chats.jsonl")
  jobs.submit("stdlib_chats", py_call(
      f"from experiments import quickstart; quickstart.stdlib_chats({chats!r}, "
      f"limit={args.stdlib_chats})"))
  jobs.submit("sft", py(
      "data_pipeline.sft", "--out_dir", paths.shard("sft"), "--seq_len", args.long_len,
      *sft_sources(chats), "--target_train_tokens", source_tokens(0.25 * n3, args.long_len), "--target_val_tokens", val,
      "--val_fraction", 0.1, *tok), needs=["tokenizer", "stdlib_chats"])
  jobs.submit("mix_phase2", interleave_cmd(paths, "phase2_mixed", args.mid_len, n2, val, [
      ("code", "code", 0.35), ("longctx_short", "longctx_short", 0.25),
      ("longctx_mid", "longctx_mid", 0.40)]), needs=["code", "longctx_short", "longctx_mid"])
  jobs.submit("mix_phase2_5", interleave_cmd(paths, "phase2_5_mixed", args.long_len, n25, val, [
      ("phase2", "phase2_mixed", 0.5), ("tools", "tools", 0.25),
      ("longctx", "longctx_long", 0.25)]), needs=["mix_phase2", "tools", "longctx_long"])
  jobs.submit("mix_phase3", interleave_cmd(paths, "phase3_mixed", args.long_len, n3, val,
                                         phase3_sources()),
              needs=["code", "mix_phase2", "longctx_long", "sft", "tools"])


def interleave_cmd(paths: Paths, out: str, block: int, train_tokens: int, val_tokens: int,
                   sources: Sequence[tuple[str, str, float]]) -> list[str]:
  flags_ = sum([["--source", f"{name}={paths.shard(src)}:{w}"] for name, src, w in sources], [])
  # At least a few blocks of val, so the trainer's and the eval's val batches fit.
  val = max(2 * val_tokens, 4 * block)
  return py("data_pipeline.interleave", "--out_dir", paths.shard(out), "--block_tokens", block,
            "--target_train_tokens", max(train_tokens, 4 * block), "--target_val_tokens", val,
            "--allow_repeat", "--overwrite", *flags_)


def train_cmd(args, paths: Paths, phase: str) -> list[str]:
  seq_len = seq_len_of(args, phase)
  mix = paths.shard(f"{phase}_mixed")
  rows = max(1, args.tokens_per_step // seq_len)
  steps = getattr(args, f"{phase}_steps")
  init_from = {"phase2a": "", "phase2": paths.final("phase2a"),
               "phase2_5": paths.final("phase2"),
               "phase3": os.path.join(paths.workdir("phase2_5"), "best")}[phase]
  overrides: dict[str, Any] = {
      "workdir": paths.workdir(phase), "train_dir": os.path.join(mix, "train"),
      "val_dir": os.path.join(mix, "val"), "init_from": init_from,
      "final_dir": paths.final(phase), "tokenizer": paths.tokenizer,
      "model.vocab_size": args.vocab_size,
      **{f"model.{k}": v for k, v in MODELS[args.model].items()},
      "model.compute_dtype": args.compute_dtype, "model.attention": "auto",
      "model.remat": "none", "seq_len": seq_len, "model.max_seq_len": seq_len,
      "micro_batch_size": rows, "grad_accum_steps": 1, "total_opt_steps": steps,
      # One validation (the phase's mix, per source) and one checkpoint, at the end.
      "val_every_opt": steps, "checkpoint_every_opt": steps,
      "val_batches": args.val_batches,
      "val_batch_size": max(1, args.val_tokens // (args.val_batches * seq_len)),
      "log_every": args.log_every, "tensorboard": False, "data.prefetch": 4,
      "optimizer.learning_rate": getattr(args, f"lr_{phase}"),
      "optimizer.warmup_steps": getattr(args, f"warmup_{phase}"),
      "optimizer.schedule": "cosine", "optimizer.min_lr_ratio": 0.1,
  }
  if phase in ("phase2_5", "phase3"):
    overrides["model.rope_theta"] = args.bridge_rope_theta
    overrides["model.rope_original_max_len"] = args.mid_len
  for item in args.extra_config:
    target, _, assignment = item.partition(":")
    key, sep, value = assignment.partition("=")
    if target not in PHASES or not sep or not key:
      raise ValueError(f"--extra_config {item!r}: expected PHASE:KEY=VALUE with PHASE in "
                       f"{PHASES}")
    if target == phase:
      overrides[key] = value
  return py("jaxlm.main", f"--config={CONFIG_FILE[phase]}",
            *[f"--config.{k}={v}" for k, v in overrides.items()])


def eval_cmd(args, paths: Paths, phase: str) -> list[str]:
  # passkey_heldout is the retrieval score that counts; passkey (the training phrasing) and
  # RULER's needles are reported beside it.
  suites = ["passkey_heldout", "passkey", "ruler", "tools", "val"]
  extra = []
  if args.longctx_eval:
    suites.insert(2, "longctx")
    extra = ["--longctx_eval", os.path.join(paths.shard("longctx_long"), "eval.jsonl")]
  phase2_val = os.path.join(paths.shard("phase2_mixed"), "val")
  return py("jaxlm.eval", "--checkpoint", paths.final(phase), "--tokenizer", paths.tokenizer,
            "--suite", ",".join(suites), "--lengths", args.eval_lengths,
            "--depths", args.eval_depths, "--samples", args.eval_samples,
            "--max_records", args.eval_records, "--batch_size", args.eval_batch_size,
            "--tools_eval", os.path.join(paths.shard("tools"), "eval.jsonl"), *extra,
            # Replay: the phase2 mix's val split at 2k, the same tokens for every phase.
            "--val_dir", phase2_val, "--val_seq_len", args.mid_len,
            "--val_batches", args.val_batches,
            "--val_batch_size", max(1, args.val_tokens // (args.val_batches * args.mid_len)),
            "--output", paths.eval_json(phase))


def chat_cmd(args, paths: Paths) -> list[str]:
  return [sys.executable, "-m", "experiments.bridge.run", "--chat_probe", paths.final("phase3"),
          "--chat_tokenizer", paths.tokenizer, "--chat_out",
          os.path.join(paths.evals, "chat.json"),
          "--chat_max_new_tokens", str(args.chat_max_new_tokens)]


# ------------------------------------------------------------------------------ chat probe


def chat_probe(checkpoint: str, tokenizer_path: str, prompts: Sequence[str],
               max_new_tokens: int) -> list[dict]:
  """Greedy replies to single-turn chat prompts, each judged for the chat format.

  In the format, an assistant turn is text (or tool calls) closed by <|end|>; a reply is
  judged in format when generation reaches <|end|> within the budget before EOS, the reply
  is not empty, and it holds no role header or end-of-text of another turn.
  """
  from jaxlm.data import chat_format  # pylint: disable=import-outside-toplevel
  from jaxlm.data import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel
  from jaxlm import sample  # pylint: disable=import-outside-toplevel
  params, config = sample.load_model(checkpoint)
  tok = tokenizer_lib.load_tokenizer(tokenizer_path)
  end = tok.special_id(chat_format.END_OF_TURN)
  headers = {tok.special_id(h) for h in chat_format.ROLE_HEADERS.values()}
  encoded = [chat_format.encode_prompt(tok, [{"role": "user", "content": p}]) for p in prompts]
  # No stop ids: the whole budget is generated, so what ended the turn can be seen.
  outputs = sample.generate(params, config, encoded, max_new_tokens, stop_ids=())
  replies = []
  for prompt, new in zip(prompts, outputs):
    stop = next((i for i, t in enumerate(new) if t in (end, tok.eos_id)), None)
    body = new[:stop] if stop is not None else new
    ended_with = ("<|end|>" if stop is not None and new[stop] == end
                  else "eos" if stop is not None else "budget")
    text = tok.decode(body)
    in_format = (ended_with == "<|end|>" and bool(text.strip())
                 and not any(t in headers for t in body))
    replies.append({"prompt": prompt, "reply": text, "ended_with": ended_with,
                    "reply_tokens": len(body), "in_chat_format": in_format})
  return replies


# ------------------------------------------------------------------------------ main


def device_description() -> str:
  try:
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                          "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
    if out.returncode == 0 and out.stdout.strip():
      return "GPU: " + "; ".join(out.stdout.strip().splitlines())
  except (OSError, subprocess.TimeoutExpired):
    pass
  return f"CPU only ({os.cpu_count()} cores, {platform.machine()})"


def software_description() -> str:
  parts = [f"python {platform.python_version()}"]
  for name in ("jax", "jaxlib", "flax", "optax", "grain"):
    try:
      parts.append(f"{name} {importlib.metadata.version(name)}")
    except importlib.metadata.PackageNotFoundError:
      pass
  try:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                            capture_output=True, text=True, timeout=10).stdout.strip()
    if commit:
      parts.append(f"git {commit}")
  except (OSError, subprocess.TimeoutExpired):
    pass
  return ", ".join(parts)


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--smoke", action="store_true",
                 help="tiny model, data and step counts, float32: checks the machinery on a CPU")
  p.add_argument("--scale", choices=("gpu", "cpu"), default="gpu",
                 help="cpu: the plan at L=128 -> 512 on 2 CPU cores (experiments/bridge/cpu.py; "
                      "--scale cpu --help lists its flags)")
  p.add_argument("--out_dir", default=None, help="results (default: $OUT if set, else runs/bridge)")
  p.add_argument("--workdir", default=None, help="data, checkpoints, logs "
                 "(default runs/bridge_work, or runs/bridge_smoke with --smoke)")
  p.add_argument("--model", choices=sorted(MODELS))
  p.add_argument("--vocab_size", type=int)
  p.add_argument("--compute_dtype")
  for name in ("short_len", "mid_len", "long_len", "tokens_per_step", "val_tokens",
               "val_batches", "log_every", "eval_samples", "eval_records", "eval_batch_size",
               "chat_max_new_tokens", "builder_workers", "filler_chars", "stdlib_chats"):
    p.add_argument(f"--{name}", type=int)
  for phase in PHASES:
    p.add_argument(f"--{phase}_steps", type=int, help=f"optimizer steps of {phase}")
    p.add_argument(f"--lr_{phase}", type=float, help=f"peak learning rate of {phase}")
    p.add_argument(f"--warmup_{phase}", type=int)
  p.add_argument("--eval_lengths", help="comma-separated prompt lengths (passkey, RULER)")
  p.add_argument("--eval_depths", help="comma-separated passkey depths")
  p.add_argument("--code_input", help="stdlib subdirectory for code_stream ('' = all of it)")
  p.add_argument("--time_budget_s", type=float,
                 help="stop starting / kill stages after this many seconds (0 = no limit)")
  p.add_argument("--tools_rename_share", type=float, default=0.5,
                 help="tool_synth --rename_share: conversations whose functions are renamed")
  p.add_argument("--stop_weight", type=int, default=3,
                 help="longctx_hard --stop_weight (the token that ends each answer)")
  p.add_argument("--answer_weight", type=int, default=3,
                 help="loss weight of long-context answer tokens")
  p.add_argument("--bridge_rope_theta", type=float, default=500_000.0)
  p.add_argument("--longctx_eval", action="store_true",
                 help="also run jaxlm.eval's held-out long-context suite (more compiles)")
  p.add_argument("--no_adapt", action="store_true",
                 help="keep the step counts even when they will not fit --time_budget_s")
  p.add_argument("--min_steps", type=int, default=20,
                 help="fit_steps never shrinks a phase below this many steps")
  p.add_argument("--data_only", action="store_true", help="build the data, then stop")
  p.add_argument("--no_overlap", action="store_true",
                 help="run evals and later data builds one after another, not beside training")
  p.add_argument("--extra_config", action="append", default=[], metavar="PHASE:KEY=VALUE",
                 help="any trainer override for one phase, e.g. phase2_5:optimizer.b2=0.99")
  # The chat probe's own entry (run as a subprocess after phase3).
  p.add_argument("--chat_probe", default=None, help=argparse.SUPPRESS)
  p.add_argument("--chat_tokenizer", default=None, help=argparse.SUPPRESS)
  p.add_argument("--chat_out", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  profile = SMOKE_PROFILE if args.smoke else GPU_PROFILE
  for key, value in profile.items():
    if getattr(args, key, None) is None:
      setattr(args, key, value)
  if args.out_dir is None:
    args.out_dir = os.environ.get("OUT") or os.path.join(REPO, "runs", "bridge")
  if args.workdir is None:
    args.workdir = os.path.join(REPO, "runs", "bridge_smoke" if args.smoke else "bridge_work")
  args.out_dir, args.workdir = os.path.abspath(args.out_dir), os.path.abspath(args.workdir)
  try:
    args.eval_lengths_list = [int(x) for x in args.eval_lengths.split(",") if x.strip()]
    [float(x) for x in args.eval_depths.split(",")]
  except ValueError as e:
    p.error(f"--eval_lengths / --eval_depths must be comma-separated numbers: {e}")
  if not args.short_len <= args.mid_len <= args.long_len:
    p.error(f"need short_len <= mid_len <= long_len, got {args.short_len}, {args.mid_len}, "
            f"{args.long_len}")
  for item in args.extra_config:
    if ":" not in item or "=" not in item or item.split(":", 1)[0] not in PHASES:
      p.error(f"--extra_config {item!r}: expected PHASE:KEY=VALUE with PHASE in {PHASES}")
  return args


class Run:
  """The whole run: stages, their results, and the files in out_dir."""

  def __init__(self, args):
    self.args, self.start = args, time.time()
    self.paths = Paths(args.workdir, args.out_dir)
    deadline = self.start + args.time_budget_s if args.time_budget_s else None
    self.write_lock = threading.Lock()
    self.runner = StageRunner(args.workdir, os.path.join(args.out_dir, "bridge.log"), deadline,
                              self.start, self.write_results)
    self.jobs = Jobs(self.runner)
    self.started = _stamp()
    self.device, self.software = device_description(), software_description()
    self.status = "running"
    self.adapted: dict[str, dict[str, int]] = {}  # phase -> planned / run steps (fit_steps)

  def env_for(self, kind: str) -> dict[str, str]:
    """Splits GPU memory between a trainer and the eval beside it (ignored on CPUs)."""
    env = {"JAX_COMPILATION_CACHE_DIR": os.path.join(self.args.workdir, "jax_cache"),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    if self.args.smoke:  # tiny shapes: compile time is all there is, so compile cheaply
      env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "true"
    if not self.args.no_overlap:
      env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = {"train": "0.55", "eval": "0.3",
                                               "chat": "0.1"}[kind]
    return env

  def collect(self) -> tuple[dict, dict]:
    args, paths = self.args, self.paths
    training = {p: report.training_summary(paths.metrics(p)) for p in PHASES}
    evals, full = {}, {}
    for phase in EVAL_PHASES:
      if os.path.exists(paths.eval_json(phase)):
        full[phase] = report.read_json(paths.eval_json(phase))
        evals[phase] = report.eval_summary(full[phase])
    chat_path = os.path.join(paths.evals, "chat.json")
    chat = report.read_json(chat_path) if os.path.exists(chat_path) else None
    with self.runner.lock:
      stages = [dataclasses.asdict(s) for s in self.runner.stages]
    settings = {k: v for k, v in vars(args).items() if not k.startswith("chat_")
                or k == "chat_max_new_tokens"}
    settings["model_dims"] = ", ".join(f"{k} {v}" for k, v in MODELS[args.model].items())
    results = {
        "status": self.status, "started": self.started,
        "wall_time_s": round(time.time() - self.start, 1), "device": self.device,
        "software": self.software,
        "command": shlex.join([os.path.basename(sys.executable), "-m",
                               "experiments.bridge.run", *sys.argv[1:]]),
        "settings": settings, "steps_shrunk_to_fit_budget": self.adapted, "stages": stages,
        "training": training, "evals": evals, "chat": chat,
        "targets": report.evaluate_targets(evals, chat, args.eval_lengths_list, args.mid_len,
                                    args.long_len),
    }
    return results, full

  def write_results(self) -> None:
    with self.write_lock:
      results, full = self.collect()
      out = self.args.out_dir
      write_atomic(os.path.join(out, "results.json"), json.dumps(results, indent=1) + "\n")
      write_atomic(os.path.join(out, "results.md"), report.format_markdown(results))
      write_atomic(os.path.join(out, "evals.json"), json.dumps(full, indent=1) + "\n")

  def evaluate(self, phase: str) -> None:
    cmd = eval_cmd(self.args, self.paths, phase)
    needs = ["tools", "mix_phase2"]
    if self.args.no_overlap:
      if self.jobs.ok(*needs):
        self.runner.run(f"eval_{phase}", cmd, self.env_for("eval"))
    else:
      # One eval at a time: with a trainer beside it, two would not fit the GPU's memory.
      previous = EVAL_PHASES[EVAL_PHASES.index(phase) - 1] if phase != EVAL_PHASES[0] else None
      self.jobs.submit(f"eval_{phase}", cmd, needs=needs + [f"train_{phase}"],
                       env=self.env_for("eval"), after=[f"eval_{previous}"] if previous else [])

  def fit_steps(self, phase: str) -> None:
    """Shrinks the step counts of `phase` and the phases after it to fit the time budget.

    The measured speed of the last finished phase, scaled by FLOPs per token to each
    later phase's length, says how long the planned steps would take; the startup and
    compile time of a phase is taken as the largest seen so far. Phase 3 masks attention
    per document (cuDNN with a same-document mask): assumed 1.5x slower (1.2-1.4x measured
    on an H200).
    Room is kept for the last evaluation and the chat probe. Never raises a step count.
    """
    args = self.args
    if args.no_adapt or self.runner.deadline is None:
      return
    stages = {s.name: s for s in self.runner.stages}
    measured = []
    for p in PHASES[:PHASES.index(phase)]:
      t = report.training_summary(self.paths.metrics(p))
      stage = stages.get(f"train_{p}")
      if t and t["tokens_per_sec"] and stage and stage.status == "ok":
        train_s = t["steps"] * args.tokens_per_step / t["tokens_per_sec"]
        measured.append((p, t["tokens_per_sec"], max(0.0, stage.seconds - train_s)))
    if not measured:
      return
    last, speed, _ = measured[-1]
    seconds_per_flop = 1.0 / (speed * flops_per_token(args, seq_len_of(args, last)))
    overhead = max(o for _, _, o in measured)
    later = PHASES[PHASES.index(phase):]
    cost = {q: getattr(args, f"{q}_steps") * args.tokens_per_step
            * flops_per_token(args, seq_len_of(args, q)) * seconds_per_flop
            * (1.5 if q == "phase3" else 1.0) for q in later}
    eval_stage = stages.get("eval_phase2")
    reserve = (eval_stage.seconds if eval_stage and eval_stage.seconds else 120.0) + 20.0
    room = self.runner.deadline - time.time() - reserve - overhead * len(later)
    if sum(cost.values()) <= room:
      return
    scale = max(room, 0.0) / sum(cost.values())
    for q in later:
      before = getattr(args, f"{q}_steps")
      after = max(min(before, args.min_steps), int(before * scale))
      if after < before:
        setattr(args, f"{q}_steps", after)
        self.adapted[q] = {"planned": self.adapted.get(q, {}).get("planned", before),
                           "run": after}
    self.runner.say(f"time budget: {room:.0f} s of training left for {', '.join(later)} "
                    f"(~{sum(cost.values()):.0f} s planned at {speed:,.0f} tok/s measured in "
                    f"{last}); steps now " + ", ".join(
                        f"{q} {getattr(args, f'{q}_steps')}" for q in later))

  def train(self, phase: str, needs: Sequence[str]) -> bool:
    name = f"train_{phase}"
    command = train_cmd(self.args, self.paths, phase)
    for need in needs:
      if self.jobs.wait(need).status != "ok":
        stage = self.runner.skip(name, command, f"needs {need}, which did not succeed")
        self.jobs.futures[name] = _done(stage)
        return False
    # Each run trains afresh: an earlier run's checkpoints would be resumed by jaxlm.main.
    for directory in (self.paths.workdir(phase), self.paths.final(phase)):
      shutil.rmtree(directory, ignore_errors=True)
    stage = self.runner.run(name, command, self.env_for("train"), min_seconds=30)
    self.jobs.futures[name] = _done(stage)
    return stage.status == "ok"

  def main(self) -> int:
    args, paths = self.args, self.paths
    os.makedirs(paths.evals, exist_ok=True)
    os.makedirs(paths.data, exist_ok=True)
    for f in os.listdir(paths.evals):  # a rerun in the same workdir starts clean
      os.remove(os.path.join(paths.evals, f))
    self.runner.say(f"bridge run: out_dir {args.out_dir}, workdir {args.workdir}")
    self.runner.say(f"device: {self.device}")
    self.write_results()
    submit_data(self.jobs, args, paths)
    if args.no_overlap or args.data_only:  # the data first, all of it
      for name in list(self.jobs.futures):
        self.jobs.wait(name)
    if args.data_only:
      return self.finish()
    self.train("phase2a", ["mix_phase2a"])
    self.fit_steps("phase2")
    self.train("phase2", ["mix_phase2", "train_phase2a"])
    self.evaluate("phase2")
    self.fit_steps("phase2_5")
    self.train("phase2_5", ["mix_phase2_5", "train_phase2"])
    self.evaluate("phase2_5")
    self.fit_steps("phase3")
    self.train("phase3", ["mix_phase3", "train_phase2_5"])
    self.evaluate("phase3")
    chat = chat_cmd(args, paths)
    if args.no_overlap:
      if self.jobs.wait("train_phase3").status == "ok":
        self.runner.run("chat_phase3", chat, self.env_for("chat"))
    else:
      self.jobs.submit("chat_phase3", chat, needs=["train_phase3"], env=self.env_for("chat"))
    return self.finish()

  def finish(self) -> int:
    """Waits for every stage, writes the results, prints the targets; 1 if a stage failed."""
    args = self.args
    for name in list(self.jobs.futures):
      self.jobs.wait(name)
    self.jobs.pool.shutdown()
    self.status = "finished" if all(
        s.status == "ok" for s in self.runner.stages) else "finished with failed stages"
    self.write_results()
    results, _ = self.collect()
    print("\n" + "=" * 100)
    for t in results["targets"]:
      value = t["value"]
      shown = "-" if value is None else f"{value:.4f}"
      print(f"{t['status']:<8} {t['phase']:<9} {t['target']:<58} {shown:>8}  "
            f"({t['threshold']}) {t['detail']}")
    failed = [s for s in self.runner.stages if s.status != "ok"]
    for s in failed:
      print(f"stage {s.name}: {s.status} (log {s.log or '-'})")
    print(f"results: {os.path.join(args.out_dir, 'results.md')} "
          f"({time.time() - self.start:.0f} s in all)")
    return 1 if failed else 0


def _done(stage: Stage) -> concurrent.futures.Future:
  future: concurrent.futures.Future = concurrent.futures.Future()
  future.set_result(stage)
  return future


class Interrupted(Exception):
  pass


def _interrupt(signum, frame):
  del frame
  raise Interrupted(signal.Signals(signum).name)


def main(argv=None) -> int:
  # --scale cpu: the same plan at L = 128 -> 512 on 2 CPU cores (experiments/bridge/cpu.py).
  scale = argparse.ArgumentParser(add_help=False)
  scale.add_argument("--scale", choices=("gpu", "cpu"), default="gpu")
  known, rest = scale.parse_known_args(sys.argv[1:] if argv is None else argv)
  if known.scale == "cpu":
    from experiments.bridge import cpu  # pylint: disable=import-outside-toplevel
    return cpu.main(rest)
  args = parse_args(rest)
  if args.chat_probe:
    if not args.chat_tokenizer or not args.chat_out:
      sys.exit("--chat_probe needs --chat_tokenizer and --chat_out")
    replies = chat_probe(args.chat_probe, args.chat_tokenizer, CHAT_PROMPTS,
                         args.chat_max_new_tokens)
    for r in replies:
      print(f"{r['prompt']!r} -> {r['reply']!r} [{r['ended_with']}]")
    write_atomic(args.chat_out, json.dumps(replies, indent=1) + "\n")
    return 0
  run = Run(args)
  # SIGTERM / Ctrl-C: end the running stages, keep what was measured.
  previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
  try:
    return run.main()
  except Interrupted as e:
    run.runner.kill_all()
    run.runner.say(f"interrupted by {e}: stages ended, writing the results")
    run.status = f"interrupted ({e})"
    run.write_results()
    return 130
  finally:
    for sig, handler in previous.items():
      signal.signal(sig, handler)


if __name__ == "__main__":
  sys.exit(main())
