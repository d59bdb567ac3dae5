"""Plots of GPU bridge runs: training loss across the phases, accuracy by length per phase.

  python -m experiments.bridge.plot_gpu experiments/bridge/gpu_h200_2026-12-04

Reads every run directory under the given one that holds the files a device call brings
back (`results.json`, and `work_logs.tgz` with the trainers' metrics.jsonl, optional), and
writes `loss_curves.png` and `accuracy_by_length.png` beside them.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile

from experiments.bridge.report import EVAL_PHASES, PHASES, PASSKEY_BRIDGE


def train_losses(tgz: str) -> dict[str, list[tuple[int, float]]]:
  """(step, train loss) per phase from the trainers' metrics.jsonl inside a run's tarball."""
  curves: dict[str, list[tuple[int, float]]] = {}
  if not os.path.exists(tgz):
    return curves
  with tarfile.open(tgz) as tar:
    for member in tar.getmembers():
      parts = member.name.split("/")
      if parts[-1] != "metrics.jsonl" or parts[-2] not in PHASES:
        continue
      text = io.TextIOWrapper(tar.extractfile(member), encoding="utf-8").read()
      rows = [json.loads(line) for line in text.splitlines() if line.strip()]
      curves[parts[-2]] = [(r["step"], r["loss"]) for r in rows
                           if r.get("kind") == "train" and "loss" in r]
  return curves


def main(argv: list[str]) -> None:
  if len(argv) != 1:
    raise SystemExit(__doc__)
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  root = argv[0]
  runs = {}
  for name in sorted(os.listdir(root)):
    path = os.path.join(root, name, "results.json")
    if os.path.exists(path):
      with open(path, encoding="utf-8") as f:
        runs[name] = json.load(f)
  if not runs:
    raise SystemExit(f"{root}: no run directory with a results.json")

  fig, ax = plt.subplots(figsize=(10, 4))
  for i, name in enumerate(runs):
    curves = train_losses(os.path.join(root, name, "work_logs.tgz"))
    offset = 0
    for phase in PHASES:
      if phase not in curves:
        continue
      xs, ys = zip(*curves[phase]) if curves[phase] else ((), ())
      ax.plot([offset + x for x in xs], ys, color=f"C{i}", label=name if phase == "phase2a"
              else None)
      offset += runs[name]["training"].get(phase, {}).get("steps", 0)
      ax.axvline(offset, color=f"C{i}", lw=0.4, ls=":")
  ax.set_yscale("log")
  ax.set_xlabel("optimizer step (phase2a, phase2, phase2_5, phase3 end to end; dotted: phase ends)")
  ax.set_ylabel("train loss (own mix, nats/token)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(root, "loss_curves.png"), dpi=110)
  plt.close(fig)

  fig, axes = plt.subplots(2, len(EVAL_PHASES), figsize=(5 * len(EVAL_PHASES), 7.5),
                           sharex=True, sharey=True, squeeze=False)
  for row, (key, title) in enumerate((("heldout_by_length", "held-out passkey"),
                                      ("passkey_by_length", "passkey, training phrasing"))):
    for col, phase in enumerate(EVAL_PHASES):
      ax = axes[row][col]
      for i, (name, run) in enumerate(runs.items()):
        lengths = run["settings"]["eval_lengths_list"]
        values = (run["evals"].get(phase) or {}).get(key) or {}
        if values:
          ax.plot(lengths, [values.get(str(n)) for n in lengths], "o-", color=f"C{i}",
                  label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [str(n) for n in lengths])
      ax.axhline(PASSKEY_BRIDGE, color="grey", lw=0.5)
      ax.set_title(f"after {phase}: {title}", fontsize=10)
      if row == 1:
        ax.set_xlabel("prompt length (tokens)")
    axes[row][0].set_ylabel("accuracy")
  axes[0][0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(os.path.join(root, "accuracy_by_length.png"), dpi=110)
  plt.close(fig)
  print(f"wrote {root}/loss_curves.png, {root}/accuracy_by_length.png ({len(runs)} runs)")


if __name__ == "__main__":
  main(sys.argv[1:])
