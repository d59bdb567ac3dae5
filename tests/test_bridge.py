"""experiments/bridge: the targets' PASS / FAIL logic, the time-budget planner, and a CPU
smoke run of the whole script (tiny model and data; every stage, the tables and the JSON)."""

import json
import os
import subprocess
import sys
import time

import pytest

from experiments.bridge import report
from experiments.bridge import run as bridge

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENGTHS = [1024, 2048, 4096, 8192]


def _eval(passkey, niah, valid=1.0, replay=2.0, trained=0.5):
  """An eval summary with the same figure at every length (the training phrasing's passkey
  at `trained`: it is reported, never judged)."""
  return {"heldout_by_length": {str(n): passkey for n in LENGTHS},
          "passkey_by_length": {str(n): trained for n in LENGTHS},
          "ruler_by_task_length": {"niah_single": {str(n): niah for n in LENGTHS}},
          "tools": {"valid_call_rate": valid, "no_call_accuracy": 1.0, "count_call": 40},
          "replay_val_loss": replay}


def _chat(in_format):
  return [{"prompt": "p", "reply": "r", "ended_with": "<|end|>", "in_chat_format": ok}
          for ok in in_format]


def _statuses(evals, chat=None):
  targets = report.evaluate_targets(evals, chat, LENGTHS, 2048, 8192)
  return {(t["phase"], t["target"].split(" at ")[0].split(" (")[0].split(" /")[0]): t["status"]
          for t in targets}


def test_targets_pass_at_their_thresholds():
  evals = {"phase2": {**_eval(1.0, 1.0, replay=2.0),
                      "heldout_by_length": {"1024": 0.95, "2048": 0.95, "4096": 0.0,
                                            "8192": 0.0}},
           "phase2_5": _eval(0.99, 0.95, valid=0.95, replay=2.04),
           "phase3": _eval(0.97, 0.93)}
  statuses = _statuses(evals, _chat([True, True, True, True, False]))
  assert set(statuses.values()) == {"PASS"}, statuses
  assert len(statuses) == 8


def test_targets_fail_just_below_their_thresholds():
  evals = {"phase2": {**_eval(1.0, 1.0), "heldout_by_length": {"1024": 1.0, "2048": 0.9,
                                                               "4096": 1.0, "8192": 1.0}},
           "phase2_5": {**_eval(1.0, 0.9, valid=0.9, replay=2.05),
                        "heldout_by_length": {"1024": 1.0, "2048": 1.0, "4096": 1.0,
                                              "8192": 0.98}},
           "phase3": {**_eval(1.0, 0.87), "heldout_by_length": {"1024": 1.0, "2048": 1.0,
                                                                "4096": 0.9, "8192": 0.98}}}
  targets = report.evaluate_targets(evals, _chat([True, False, False]), LENGTHS, 2048, 8192)
  assert [t["status"] for t in targets] == ["FAIL"] * 8, targets
  by_name = {t["target"]: t for t in targets}
  # The numbers behind the verdicts: the worst length, the loss ratio, the largest drop.
  assert by_name["held-out passkey at every length <= 2048"]["value"] == 0.9
  # The training phrasing's passkey is shown beside it, never judged.
  assert "training phrasing 1024: 50%, 2048: 50%" in by_name[
      "held-out passkey at every length <= 2048"]["detail"]
  assert by_name["phase2-replay val loss / its value after phase2"]["value"] == \
      pytest.approx(1.025)
  assert by_name["held-out passkey holds (change from phase2_5, every length)"]["value"] == \
      pytest.approx(-0.1)
  assert "4096: 100% -> 90%" in by_name[
      "held-out passkey holds (change from phase2_5, every length)"]["detail"]


def test_targets_without_numbers_are_missing_not_failed():
  statuses = _statuses({"phase2": _eval(1.0, 1.0)})
  assert statuses[("phase2", "held-out passkey")] == "PASS"
  assert [s for k, s in statuses.items() if k[0] != "phase2"] == ["MISSING"] * 7


def test_markdown_lists_targets_and_phases():
  evals = {"phase2": _eval(1.0, 1.0), "phase2_5": _eval(1.0, 1.0), "phase3": _eval(1.0, 1.0)}
  results = {
      "status": "finished", "started": "today", "wall_time_s": 1.0, "device": "d",
      "software": "s", "command": "c",
      "steps_shrunk_to_fit_budget": {"phase3": {"planned": 120, "run": 60}},
      "settings": {"eval_lengths_list": LENGTHS, "time_budget_s": 540, "model": "33m",
                   "model_dims": "d_model 512", "vocab_size": 8192, "compute_dtype": "bf16",
                   "tokens_per_step": 65536, "short_len": 512, "mid_len": 2048,
                   "long_len": 8192},
      "stages": [{"name": "train_phase2", "status": "ok", "started_at": 0, "seconds": 3,
                  "command": "python -m jaxlm.main ..."}],
      "training": {"phase2": {"steps": 10, "train_loss": 1.0, "tokens_per_sec": 1000.0,
                              "mfu": None, "val_loss": 1.1, "val_loss_by_source": {"code": 1.2}}},
      "evals": evals, "chat": _chat([True]),
      "targets": report.evaluate_targets(evals, _chat([True]), LENGTHS, 2048, 8192)}
  text = report.format_markdown(results)
  assert text.count("**PASS**") == 8
  assert "| phase2 | 10 | 0.7M | 1,000 |" in text and "| phase2a | not run |" in text
  assert "python -m jaxlm.main ..." in text and "phase3: 60 of 120 planned" in text


def test_flops_per_token_counts_the_33m_model():
  """The bridge uses jaxlm.model's one formula, with attention halved for causality."""
  args = bridge.parse_args(["--out_dir", "/tmp/x", "--workdir", "/tmp/y"])
  # Per layer: q, k, v, o projections, SwiGLU, two norm scales; final norm; output head.
  params = 8 * (2 * 512 * 64 * (8 + 4) + 3 * 512 * 1536 + 2 * 512) + 512 + 512 * 8192
  assert bridge.flops_per_token(args, 0) == 6 * params
  assert bridge.flops_per_token(args, 8192) - bridge.flops_per_token(args, 2048) == \
      6 * 8 * 8 * 64 * 6144


def _fake_phase(run, phase, steps, tokens_per_sec, stage_seconds):
  os.makedirs(run.paths.workdir(phase), exist_ok=True)
  with open(run.paths.metrics(phase), "w") as f:
    f.write(json.dumps({"step": steps, "kind": "train", "loss": 2.0,
                        "tokens_per_sec": tokens_per_sec}) + "\n")
  run.runner.stages.append(bridge.Stage(f"train_{phase}", "cmd", "ok", stage_seconds, 0.0))


def test_fit_steps_shrinks_later_phases_to_the_budget(tmp_path):
  args = bridge.parse_args(["--out_dir", str(tmp_path / "out"), "--workdir",
                            str(tmp_path / "work"), "--time_budget_s", "600"])
  run = bridge.Run(args)
  # phase2a: 400 steps of 65536 tokens at 262144 tok/s = 100 s of training + 20 s overhead.
  _fake_phase(run, "phase2a", 400, 262144.0, 120.0)
  run.fit_steps("phase2")  # ~400 s of room, ~290 s needed: nothing changes
  assert (args.phase2_steps, args.phase2_5_steps, args.phase3_steps) == (250, 250, 120)
  assert run.adapted == {}
  run.runner.deadline = time.time() + 400  # ~200 s of room for ~290 s of training
  run.fit_steps("phase2")
  steps = (args.phase2_steps, args.phase2_5_steps, args.phase3_steps)
  assert all(s < p for s, p in zip(steps, (250, 250, 120))), steps
  # One scale for all: the ratios between the phases stay (up to rounding down).
  assert abs(args.phase2_steps / 250 - args.phase3_steps / 120) < 0.02
  assert run.adapted["phase3"] == {"planned": 120, "run": args.phase3_steps}
  run.runner.deadline = time.time() + 1  # nothing left: never below --min_steps
  run.fit_steps("phase2")
  assert (args.phase2_steps, args.phase2_5_steps, args.phase3_steps) == (20, 20, 20)


def test_bad_extra_config_is_refused_naming_it(capsys):
  with pytest.raises(SystemExit):
    bridge.parse_args(["--smoke", "--extra_config", "phase9:seed=1"])
  assert "phase9:seed=1" in capsys.readouterr().err


def test_smoke_run_writes_every_phase_and_judges_every_target(tmp_path):
  """The whole script on a CPU: ~40 s on 2 cores (mostly starting and compiling 9 JAX
  processes)."""
  out, work = tmp_path / "out", tmp_path / "work"
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, "-m", "experiments.bridge.run", "--smoke",
                         "--out_dir", str(out), "--workdir", str(work)],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  # What a GPU session copies back: few flat files ($OUT returns at most 8).
  assert sorted(os.listdir(out)) == ["bridge.log", "evals.json", "results.json", "results.md"]
  results = json.loads((out / "results.json").read_text())
  assert {s["status"] for s in results["stages"]} == {"ok"}
  names = {s["name"] for s in results["stages"]}
  assert {"train_phase2a", "train_phase2", "train_phase2_5", "train_phase3", "eval_phase2",
          "eval_phase2_5", "eval_phase3", "chat_phase3", "mix_phase3"} <= names
  for phase in bridge.PHASES:
    assert results["training"][phase]["steps"] == 2
    assert results["training"][phase]["val_loss_by_source"]
  for phase in bridge.EVAL_PHASES:
    e = results["evals"][phase]
    lengths = set(bridge.SMOKE_PROFILE["eval_lengths"].split(","))
    assert set(e["heldout_by_length"]) == lengths and set(e["passkey_by_length"]) == lengths
    assert set(e["ruler_by_task_length"]) >= {"niah_single", "variable_track"}
    assert e["tools"]["count_call"] >= 1 and e["replay_val_loss"] > 0
  # The phase2_5 / phase3 trainers read the plan's mixes.
  assert set(results["training"]["phase2_5"]["val_loss_by_source"]) <= {
      "phase2", "tools", "longctx"}
  assert set(results["training"]["phase3"]["val_loss_by_source"]) <= {
      "phase1", "phase2", "longctx", "sft", "sft_tools"}
  assert len(results["chat"]) == len(bridge.CHAT_PROMPTS)
  assert all(r["ended_with"] in ("<|end|>", "eos", "budget") for r in results["chat"])
  # Every target judged with a number (a tiny model fails most of them: that is expected).
  assert len(results["targets"]) == 8
  assert all(t["status"] in ("PASS", "FAIL") and t["value"] is not None
             for t in results["targets"]), results["targets"]
  md = (out / "results.md").read_text()
  assert md.count("**PASS**") + md.count("**FAIL**") == 8
  assert "python -m jaxlm.main --config=configs/phase2_5.py" in md
  assert "--config.model.rope_theta=500000.0" in md
  full = json.loads((out / "evals.json").read_text())
  assert set(full) == set(bridge.EVAL_PHASES) and full["phase3"]["passkey"]["records"]
  # The printed summary names each target with its verdict.
  assert proc.stdout.count("PASS") + proc.stdout.count("FAIL ") >= 8


# ------------------------------------------------------------------ the CPU-scale bridge


def test_cpu_controls_change_one_thing_each(tmp_path):
  from experiments.bridge import cpu  # pylint: disable=import-outside-toplevel
  args = cpu.parse_args(["--workdir", str(tmp_path), "--out_dir", str(tmp_path / "out")])
  paths = cpu.Paths(args)
  # `all` is the three; the tools probe runs only by name.
  assert cpu.parse_args(["--controls", "all"]).control_list == (
      "no_rope", "linear_pi", "replay_for_longctx")
  assert cpu.parse_args(["--controls", "tools_only"]).control_list == ("tools_only",)

  def flags(phase, variant="main"):
    cmd = cpu.train_cmd(args, paths, phase, variant)
    return dict(c[len("--config."):].split("=", 1) for c in cmd if c.startswith("--config."))

  main = flags("phase2_5")
  assert float(main["model.rope_theta"]) == 44_000.0 and main["seq_len"] == "512"
  assert main["init_from"] == paths.final("phase2")
  assert float(flags("phase2")["model.rope_theta"]) == 10_000.0
  assert flags("phase3")["init_from"] == os.path.join(paths.workdir("phase2_5"), "best")
  for variant, changed in (("no_rope", {"model.rope_theta": "10000.0",
                                       "model.rope_original_max_len": "512"}),
                           ("linear_pi", {"model.rope_theta": "10000.0",
                                          "model.rope_scaling": "linear",
                                          "model.rope_scaling_factor": "4.0"}),
                           ("replay_for_longctx", {}), ("tools_only", {})):
    got = flags("phase2_5", variant)
    diff = {k: v for k, v in got.items() if main.get(k) != v
            and k not in ("workdir", "final_dir", "train_dir", "val_dir")}
    assert diff == changed, (variant, diff)
    if variant == "replay_for_longctx":
      assert "replay" in got["train_dir"] and got["train_dir"] != main["train_dir"]
    elif variant == "tools_only":  # the probe: the tool shard alone
      assert got["train_dir"] == os.path.join(paths.shard("tools"), "train")
      assert got["val_dir"] == os.path.join(paths.shard("tools"), "val")
    else:
      assert got["train_dir"] == main["train_dir"]  # same data, same steps


def test_cpu_controls_alone_build_their_data_first(tmp_path, monkeypatch):
  """--skip_main still runs the data stages (skipping the unchanged ones): data built since by
  a variant with other flags is rebuilt before a control trains on it."""
  from experiments.bridge import cpu  # pylint: disable=import-outside-toplevel
  calls = []
  monkeypatch.setattr(cpu.CpuRun, "build_data", lambda self: calls.append("data") or False)
  monkeypatch.setattr(cpu.CpuRun, "train", lambda self, *a: calls.append(a) or True)
  args = cpu.parse_args(["--workdir", str(tmp_path), "--out_dir", str(tmp_path / "out"),
                         "--controls", "no_rope", "--skip_main"])
  assert cpu.CpuRun(args).main() == 1 and calls == ["data"]  # a failed build trains nothing


def test_cpu_variant_chain_keeps_its_own_bridge(tmp_path, capsys):
  """--variant_name: phase2_5 and phase3 under the variant's name, from the seed's own phase2,
  never over the main chain's files; a control's name is refused."""
  from experiments.bridge import cpu  # pylint: disable=import-outside-toplevel
  args = cpu.parse_args(["--workdir", str(tmp_path), "--variant_name", "steps600",
                         "--phase2_5_steps", "600", "--start_at", "phase2_5"])
  paths = cpu.Paths(args)
  assert [cpu.chain_variant(args, p) for p in cpu.PHASES] == [
      "main", "main", "main", "steps600", "steps600"]

  def flags(phase):
    cmd = cpu.train_cmd(args, paths, phase, cpu.chain_variant(args, phase))
    return dict(c[len("--config."):].split("=", 1) for c in cmd if c.startswith("--config."))

  bridge25, phase3 = flags("phase2_5"), flags("phase3")
  assert bridge25["init_from"] == paths.final("phase2")  # the main chain's phase2
  assert bridge25["workdir"] != paths.workdir("phase2_5")
  assert bridge25["total_opt_steps"] == "600"
  assert phase3["init_from"] == os.path.join(paths.workdir("phase2_5", "steps600"), "best")
  with pytest.raises(SystemExit):
    cpu.parse_args(["--variant_name", "no_rope", "--start_at", "phase2_5"])
  assert "no_rope" in capsys.readouterr().err
  with pytest.raises(SystemExit):  # the warm-up and its gate belong to the main chain
    cpu.parse_args(["--variant_name", "x"])
  assert "--start_at" in capsys.readouterr().err
  # From phase2 on: the bridge starts from the variant's own phase2.
  args = cpu.parse_args(["--workdir", str(tmp_path), "--variant_name", "phase2x2",
                         "--start_at", "phase2"])
  assert [cpu.chain_variant(args, p) for p in cpu.PHASES] == [
      "main", "main", "phase2x2", "phase2x2", "phase2x2"]
  phase2 = cpu.train_cmd(args, paths, "phase2", "phase2x2")
  assert f"--config.workdir={paths.workdir('phase2', 'phase2x2')}" in phase2
  assert f"--config.init_from={cpu.phase2b_result(paths)}" in phase2
  phase2_5 = cpu.train_cmd(args, paths, "phase2_5", "phase2x2")
  assert f"--config.init_from={paths.final('phase2', 'phase2x2')}" in phase2_5
  # Continued later (--start_at phase2_5): its own phase2 once it has one, not main's.
  later = cpu.parse_args(["--workdir", str(tmp_path), "--variant_name", "phase2x2",
                          "--start_at", "phase2_5"])
  assert cpu.chain_variant(later, "phase2") == "main"
  os.makedirs(paths.final("phase2", "phase2x2"))
  assert cpu.chain_variant(later, "phase2") == "phase2x2"
  assert f"--config.init_from={paths.final('phase2', 'phase2x2')}" in cpu.train_cmd(
      later, paths, "phase2_5", "phase2x2")
  # Only phase3 as a variant: from the main chain's phase2_5, not a bridge it never trained.
  only3 = cpu.parse_args(["--workdir", str(tmp_path), "--variant_name", "lr3",
                          "--start_at", "phase3"])
  assert [cpu.chain_variant(only3, p) for p in cpu.PHASES] == ["main"] * 4 + ["lr3"]
  assert "--config.init_from=" + os.path.join(paths.workdir("phase2_5"), "best") in \
      cpu.train_cmd(only3, paths, "phase3", "lr3")


def test_cpu_targets_judged_per_seed():
  from experiments.bridge import cpu  # pylint: disable=import-outside-toplevel
  lengths = [96, 128, 256, 512, 1024]
  good = {str(n): 1.0 for n in lengths}
  runs = {"seed0/main": {"phases": {
      "phase2": {"passkey_by_length": good, "heldout_by_length": good, "replay_val_loss": 2.0},
      "phase2_5": {"heldout_by_length": {**good, "512": 0.94, "1024": 0.0},
                   "tools_heldout": {"valid_call_rate": 0.9}, "replay_val_loss": 2.05,
                   "phase3_mix_val": {"sft": 3.0}},
      "phase3": {"heldout_by_length": {**good, "512": 0.93},
                 "passkey_by_length": {**good, "96": 0.5}, "tools_heldout":
                 {"valid_call_rate": 0.87}, "phase3_mix_val": {"sft": 2.5}}}},
      "seed0/no_rope": {"phases": {}},
      # A variant chain: judged on its own phase2_5 / phase3 against the seed's phase2.
      "seed0/steps600": {"phases": {
          "phase2_5": {"heldout_by_length": good, "tools_heldout": {"valid_call_rate": 0.5},
                       "replay_val_loss": 2.03, "phase3_mix_val": {"sft": 3.0}}}}}
  runs["seed0/phase2x2"] = {"phases": {"phase2": {"heldout_by_length": {"96": 0.5}}}}
  targets = cpu.judge(runs, lengths, 128, 512)
  assert {t["run"] for t in targets} == {"seed0/main", "seed0/steps600", "seed0/phase2x2"}
  own = [t for t in targets if t["run"] == "seed0/phase2x2" and t["target"].startswith(
      "phase2: held-out")]
  assert [(t["status"], t["value"]) for t in own] == [("FAIL", 0.5)]  # its own phase2
  got = {t["target"].split(":")[0] + ":" + t["target"].split(":")[1][:12]: t["status"]
         for t in targets if t["run"] == "seed0/main"}
  assert list(got.values()) == ["PASS", "PASS", "FAIL", "PASS", "FAIL", "PASS", "MISSING",
                                "FAIL", "PASS"]
  variant = {t["target"]: (t["status"], t["value"]) for t in targets
             if t["run"] == "seed0/steps600"}
  assert not any(name.startswith("phase2:") for name in variant)  # main's phase2, judged there
  assert variant["phase2_5: held-out passkey >= 95% at every length <= 4L=512"][0] == "PASS"
  assert variant["phase2_5: tool-call validity >= 90% (held-out schemas)"][0] == "FAIL"
  status, ratio = variant["phase2_5: phase2-replay val loss <= 1.02 x phase2's"]
  assert status == "PASS" and ratio == pytest.approx(2.03 / 2.0)
  assert variant["phase3: SFT val loss down (phase3 - phase2_5)"][0] == "MISSING"


def test_cpu_smoke_run_writes_results_and_plots(tmp_path):
  """python -m experiments.bridge.run --scale cpu --smoke: every stage of the CPU chain with a
  tiny model (evaluated after phase3 only), its JSON, table and plots."""
  out = tmp_path / "out"
  start = time.time()
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, "-m", "experiments.bridge.run", "--scale", "cpu",
                         "--smoke", "--workdir", str(tmp_path / "work"), "--out_dir", str(out)],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  results = json.loads((out / "results.json").read_text())
  run = results["runs"]["seed0/main"]
  assert list(run["phases"]) == ["phase2a", "phase2b", "phase2", "phase2_5", "phase3"]
  assert all(s["status"] == "ok" for s in run["stages"]), run["stages"]
  # The smoke gate never sees a click (--click_loss 0): both rounds run, and phase2 starts
  # from the second.
  p2b = run["phases"]["phase2b"]
  assert [r["round"] for r in p2b["gate"]["rounds"]] == [1, 2] and p2b["steps"] == 4
  assert not p2b["gate"]["rounds"][-1]["clicked"]
  with open(tmp_path / "work" / "seed0" / "workdirs" / "phase2" / "config.json") as f:
    assert json.load(f)["init_from"] == p2b["gate"]["final"]
  assert p2b["gate"]["final"].endswith("phase2b_round2_final")
  assert "## Phase2b gate" in (out / "RESULTS.md").read_text()
  p3 = run["phases"]["phase3"]
  assert p3["steps"] == 2 and p3["tokens"] == 2 * 256 and p3["seed"] == 0
  assert set(p3["heldout_by_length"]) == {"128"} and set(p3["passkey_by_length"]) == {"128"}
  assert p3["phase3_mix_val"] and p3["replay_val"] and p3["chat"]
  assert p3["records"]["count"] >= 1 and 0.0 <= p3["records"]["accuracy"] <= 1.0
  assert {t["status"] for t in results["targets"]} <= {"PASS", "FAIL", "MISSING"}
  assert "| seed0/main | phase3 |" in (out / "RESULTS.md").read_text()
  # Every retrieval shard weighs the answers and the token that stops them as the profile says.
  from experiments.bridge import cpu  # pylint: disable=import-outside-toplevel
  for name in ("longctx_warmup", "longctx_tiny", "longctx_short", "longctx_long"):
    meta = json.loads((tmp_path / "work" / "data" / "shards" / name / "train" / "meta.json"
                       ).read_text())
    assert meta["has_loss_weights"], name
    assert (meta["builder"]["answer_weight"], meta["builder"]["stop_weight"]) == (
        cpu.SMOKE_PROFILE["answer_weight"], cpu.SMOKE_PROFILE["stop_weight"]), name
  # Phase 3's SFT quarter: chat from the SFT shard, its tool-call tenth from the tool shard.
  shards = tmp_path / "work" / "data" / "shards"
  inputs = json.loads((shards / "phase3_mixed" / "train" / "meta.json").read_text()
                      )["builder"]["inputs"]
  assert {k: v["weight"] for k, v in inputs.items()} == pytest.approx(
      {"phase1": 0.10, "phase2": 0.15, "longctx": 0.50, "sft": 0.225, "sft_tools": 0.025})
  assert inputs["sft_tools"]["dir"] == str(shards / "tools")
  try:
    import matplotlib  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    for name in ("loss_curves.png", "accuracy_by_length.png", "retrieval_curve.png"):
      assert (out / name).stat().st_size > 1000
  except ImportError:
    pass
  # Changing one builder's flag rebuilds that shard and what comes after it (the mixes read
  # it), and reuses every shard before it as built.
  data = tmp_path / "work" / "data"
  tokenizer_bytes = (data / "tokenizer" / "bridge_cpu.model").read_bytes()
  proc = subprocess.run([sys.executable, "-m", "experiments.bridge.cpu", "--smoke",
                         "--workdir", str(tmp_path / "work"), "--out_dir", str(out),
                         "--start_at", "phase3", "--tools_generated_share", "0.5"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  first = {s["name"]: s for s in run["stages"]}
  again = json.loads((out / "results.json").read_text())["runs"]["seed0/main"]
  stages = {s["name"]: s for s in again["stages"]}
  # Both invocations' commands and wall times stay on record.
  assert again["earlier_invocations"] == [
      {k: run[k] for k in ("command", "wall_time_s", "started")}]
  assert "--tools_generated_share 0.5" in again["command"]
  assert f"- seed0/main (earlier): `{run['command']}`" in (out / "RESULTS.md").read_text()
  names = [name for name, _ in cpu.data_stages(cpu.parse_args(["--smoke"]), cpu.Paths(
      cpu.parse_args(["--smoke"])))]
  tools_at = names.index("tools")
  # The shards before it are skipped and keep the records of the run that built them.
  assert all(f"skip {n}: {cpu.BUILT_BEFORE}" in proc.stdout for n in names[:tools_at])
  assert all(stages[n] == first[n] for n in names[:tools_at])
  assert all(stages[n]["status"] == "ok" for n in names[tools_at:]), stages
  assert stages["tools"]["command"] != first["tools"]["command"]
  assert (data / "tokenizer" / "bridge_cpu.model").read_bytes() == tokenizer_bytes
  meta = json.loads((data / "shards" / "tools" / "train" / "meta.json").read_text())
  assert meta["builder"]["generated_share"] == 0.5
  stamps = json.loads((data / "stages.json").read_text())
  assert "--generated_share 0.5" in stamps["tools"] and list(stamps) == names
  # --evals_only: the named evals run again on the finished checkpoints, nothing trains or
  # builds, the other evals' files stay, and the run keeps the command that trained it.
  evals = tmp_path / "work" / "seed0" / "evals"
  (evals / "phase3_a.json").unlink()
  b_mtime = (evals / "phase3_b.json").stat().st_mtime_ns
  metrics = (tmp_path / "work" / "seed0" / "workdirs" / "phase3" / "metrics.jsonl").read_bytes()
  proc = subprocess.run([sys.executable, "-m", "experiments.bridge.cpu", "--smoke",
                         "--workdir", str(tmp_path / "work"), "--out_dir", str(out),
                         "--evals_only", "a"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  assert json.loads((evals / "phase3_a.json").read_text())["passkey_heldout"]["by_length"]
  assert (evals / "phase3_b.json").stat().st_mtime_ns == b_mtime
  assert (tmp_path / "work" / "seed0" / "workdirs" / "phase3" / "metrics.jsonl"
          ).read_bytes() == metrics
  assert "start eval_phase3_a" in proc.stdout
  assert "train_" not in proc.stdout and "start tools" not in proc.stdout
  third = json.loads((out / "results.json").read_text())["runs"]["seed0/main"]
  assert third["command"] == again["command"]
  assert third["phases"]["phase3"]["heldout_probes"] == 1  # the smoke profile's 1 a length
  print(f"cpu smoke: {time.time() - start:.0f} s")


def test_cpu_long_phrasings_reach_the_4l_documents_only():
  """--long_phrasings sets the passkey phrasings of the 4L shard (phase2_5 and phase3) and
  leaves phase2's and the warm-up's as they were; the default keeps the main chains' data."""
  from experiments.bridge import cpu  # pylint: disable=import-outside-toplevel

  def phrasings(argv):
    args = cpu.parse_args(["--smoke", *argv])
    cmds = dict(cpu.data_stages(args, cpu.Paths(args)))
    return {name: cmds[name][cmds[name].index("--passkey_phrasings") + 1]
            for name in ("longctx_warmup", "longctx_tiny", "longctx_short", "longctx_long")}
  assert phrasings([]) == {"longctx_warmup": "fixed", "longctx_tiny": "fixed",
                           "longctx_short": "both", "longctx_long": "both"}
  assert phrasings(["--long_phrasings", "wide"]) == {
      "longctx_warmup": "fixed", "longctx_tiny": "fixed", "longctx_short": "both",
      "longctx_long": "wide"}


def test_cpu_retrieval_curve_reads_every_kept_checkpoints_evals(tmp_path):
  """The files curve_cmds writes (per step: jaxlm.eval and the answer-digit losses) are what
  read_curve returns, in step order, and what RESULTS.md's curve table shows."""
  from experiments.bridge import cpu  # pylint: disable=import-outside-toplevel
  args = cpu.parse_args(["--workdir", str(tmp_path), "--out_dir", str(tmp_path / "out")])
  paths = cpu.Paths(args)
  os.makedirs(os.path.join(paths.run, "evals"))
  for step, acc, rest in ((200, 0.5, 0.3), (100, 0.0, 2.3)):
    with open(paths.eval_json("phase2b", "main", f"curve{step:05d}"), "w") as f:
      json.dump({"passkey_heldout": {"accuracy": acc}, "longctx": {"accuracy": acc / 2,
                                                                  "by_task": {}}}, f)
    with open(paths.eval_json("phase2b", "main", f"digits{step:05d}"), "w") as f:
      json.dump({"passkey": {"first": rest + 0.1, "rest": rest, "documents": 3}}, f)
  curve = cpu.read_curve(paths, "phase2b", "main")
  assert [p["step"] for p in curve] == [100, 200]
  assert [p["heldout_passkey_L"] for p in curve] == [0.0, 0.5]
  assert curve[1]["digits"]["passkey"]["rest"] == 0.3
  results = {"updated": "now", "device": "cpu", "targets": [],
             "settings": {"lengths": [128], "short_len": 128, "long_len": 512},
             "runs": {"seed0/main": {"phases": {"phase2b": {
                 "retrieval_curve": curve, "curve": [{"step": 200, "eval/passkey": 0.75}]}}}}}
  md = cpu.format_markdown(results)
  assert "| seed0/main | phase2b | 200 | 75 | 50 | 25 | 0.40 / 0.30 | - |" in md


def test_cpu_evals_only_refuses_an_unknown_part_naming_it(capsys):
  from experiments.bridge import cpu  # pylint: disable=import-outside-toplevel
  with pytest.raises(SystemExit):
    cpu.parse_args(["--evals_only", "a,tools"])
  assert "--evals_only: unknown ['tools']" in capsys.readouterr().err


def test_cpu_curve_phases_must_be_short_phases(capsys):
  from experiments.bridge import cpu  # pylint: disable=import-outside-toplevel
  with pytest.raises(SystemExit):
    cpu.parse_args(["--curve_phases", "phase2,phase2_5"])
  assert "--curve_phases: ['phase2_5']" in capsys.readouterr().err


def test_cpu_gate_reads_the_passkey_digits():
  from experiments.bridge import cpu  # pylint: disable=import-outside-toplevel
  assert cpu.clicked({"passkey": {"first": 0.40, "rest": 0.79}}, 1.0) == (0.595, True)
  assert cpu.clicked({"passkey": {"first": 1.34, "rest": 1.24}}, 1.0) == (1.29, False)
  with pytest.raises(ValueError, match="no passkey documents"):
    cpu.clicked({"multi_query": {"first": 0.1, "rest": 0.1}}, 1.0)


def test_cpu_overrun_share_by_length():
  from experiments.bridge import cpu  # pylint: disable=import-outside-toplevel
  records = [{"length": 100, "references": ["34141"], "output": " 341411."},
             {"length": 100, "references": ["34141"], "output": " 34141."},
             {"length": 512, "references": ["2024"], "output": " 202."}]
  assert cpu._overrun_by_length(records) == {"100": 0.5, "512": 0.0}  # pylint: disable=protected-access


def test_cpu_answer_kinds_count_probes_up_to_4l():
  from experiments.bridge import cpu  # pylint: disable=import-outside-toplevel
  records = [{"length": 100, "references": ["34141"], "output": " 341411."},
             {"length": 128, "references": ["34141"], "output": " 34141."},
             {"length": 512, "references": ["2024"], "output": " 202."},
             {"length": 1024, "references": ["2024"], "output": " 2024."}]  # beyond 4L
  kinds = cpu._answer_kinds(records, 512)  # pylint: disable=protected-access
  assert kinds == {"correct": 1, "overrun": 1, "truncated": 1, "wrong_digits": 0,
                   "other_number": 0, "no_number": 0}


def test_cpu_tool_kinds_table_shows_held_out_and_seen_counts():
  from experiments.bridge import cpu  # pylint: disable=import-outside-toplevel
  held = {"valid_call_rate": 0.0, "call_kinds": {"malformed": 20, "unknown_function": 3,
                                                 "no_call": 1}}
  seen = {"valid_call_rate": 0.25, "call_kinds": {"valid": 6, "malformed": 18}}
  results = {"runs": {"seed2/main": {"phases": {
      "phase2": {"tools_heldout": {"valid_call_rate": 0.0}},  # an old eval: no kinds, no row
      "phase2_5": {"tools_heldout": held, "tools_seen": seen},
      "phase3": {"tools_heldout": held}}}}}
  lines = cpu.tool_kinds_table(results)
  assert "| valid | bad arguments | unknown function | malformed | no call |" in lines[5]
  assert lines[7:] == ["| seed2/main | phase2_5 | 0 / 6 | 0 / 0 | 3 / 0 | 20 / 18 | 1 / 0 |",
                       "| seed2/main | phase3 | 0 / - | 0 / - | 3 / - | 20 / - | 1 / - |"]
  assert cpu.tool_kinds_table({"runs": {}}) == []


def test_cpu_merge_joins_seeds_run_apart_and_refuses_bad_files(tmp_path):
  """Seeds run side by side, each into its own --out_dir, are joined by --merge: every run
  keeps its own command, a key already there is replaced, targets and tables cover them all."""
  from experiments.bridge import cpu  # pylint: disable=import-outside-toplevel
  def run(seed, heldout, command):
    return {"seed": seed, "command": command, "phases": {"phase2_5": {
        "steps": 300, "curve": [{"step": 100, "loss": 2.5, "loss/phase2": 2.6}],
        "heldout_by_length": {"128": heldout, "512": heldout},
        "passkey_by_length": {"128": heldout, "512": heldout},
        "tools_heldout": {"valid_call_rate": 0.0}, "replay_val_loss": 2.0}}}
  out = tmp_path / "out"
  out.mkdir()
  (out / "results.json").write_text(json.dumps({"runs": {
      "seed0/main": run(0, 0.25, "old"), "seed5/main": run(5, 0.5, "kept")}}))
  a, b = tmp_path / "a.json", tmp_path / "b.json"
  a.write_text(json.dumps({"runs": {"seed0/main": run(0, 1.0, "cmd a")}, "settings": {}}))
  b.write_text(json.dumps({"runs": {"seed1/main": run(1, 0.75, "cmd b"),
                                    "seed1/no_rope": run(1, 0.5, "cmd b")}}))
  assert cpu.main(["--merge", f"{a},{b}", "--out_dir", str(out)]) == 0
  results = json.loads((out / "results.json").read_text())
  assert {k: r["command"] for k, r in results["runs"].items()} == {
      "seed0/main": "cmd a", "seed5/main": "kept", "seed1/main": "cmd b",
      "seed1/no_rope": "cmd b"}
  bridge_target = "phase2_5: held-out passkey >= 95% at every length <= 4L=512"
  judged = {t["run"]: t["status"] for t in results["targets"] if t["target"] == bridge_target}
  assert judged == {"seed0/main": "PASS", "seed1/main": "FAIL", "seed5/main": "FAIL"}
  table = (out / "RESULTS.md").read_text()
  assert "| seed1/main | phase2_5 |" in table and "| seed0/main | phase2_5 |" in table
  before = (out / "results.json").read_text()
  (tmp_path / "bad.json").write_text("[1, 2]")
  for bad, says in ((tmp_path / "bad.json", "no 'runs' object"),
                    (tmp_path / "none.json", "does not exist")):
    with pytest.raises(SystemExit, match=says) as e:
      cpu.main(["--merge", f"{a},{bad}", "--out_dir", str(out)])
    assert str(bad) in str(e.value)
  assert (out / "results.json").read_text() == before  # a refused merge writes nothing


def test_gpu_plots_read_what_a_device_call_brings_back(tmp_path):
  """plot_gpu reads each run's results.json and the trainers' metrics in work_logs.tgz."""
  import io
  import tarfile
  from experiments.bridge import plot_gpu
  run = tmp_path / "run1"
  run.mkdir()
  evals = {p: {"heldout_by_length": {"1024": 0.5}, "passkey_by_length": {"1024": 1.0}}
           for p in bridge.EVAL_PHASES}
  (run / "results.json").write_text(json.dumps({
      "settings": {"eval_lengths_list": [1024]}, "evals": evals,
      "training": {p: {"steps": 2} for p in bridge.PHASES}}))
  with tarfile.open(run / "work_logs.tgz", "w:gz") as tar:
    for phase in bridge.PHASES:
      rows = [{"step": 1, "kind": "train", "loss": 3.0}, {"step": 2, "kind": "val", "loss": 9.0},
              {"step": 2, "kind": "train", "loss": 2.5}]
      data = "".join(json.dumps(r) + "\n" for r in rows).encode()
      info = tarfile.TarInfo(f"runs/bridge_work/workdirs/{phase}/metrics.jsonl")
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  curves = plot_gpu.train_losses(str(run / "work_logs.tgz"))
  assert curves == {p: [(1, 3.0), (2, 2.5)] for p in bridge.PHASES}
  plot_gpu.main([str(tmp_path)])
  assert (tmp_path / "loss_curves.png").stat().st_size > 0
  assert (tmp_path / "accuracy_by_length.png").stat().st_size > 0
  with pytest.raises(SystemExit, match="no run directory"):
    plot_gpu.main([str(run)])
