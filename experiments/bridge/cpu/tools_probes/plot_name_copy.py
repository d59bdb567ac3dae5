"""Plots probe H1's name-copy curve: accuracy on name-valued passkey / multi_query records over
the steps of the dense name-copy stage (README.md here says how each eval was made).

  python experiments/bridge/cpu/tools_probes/plot_name_copy.py
"""

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position

HERE = os.path.dirname(os.path.abspath(__file__))
# (steps of the name stage in all, eval file here)
POINTS = [(0, "H0_names.json"), (300, "H1_names_300.json"), (500, "H1_names_500.json"),
          (700, "H1_names_700.json"), (900, "H1_names_900.json"),
          (1200, "H1_names_1200.json"), (1500, "H1_names_1500.json"),
          (1800, "H1_names_1800.json")]


def main():
  steps, by_task = [], {}
  for step, name in POINTS:
    result = json.load(open(os.path.join(HERE, name)))["longctx"]
    steps.append(step)
    by_task.setdefault("all", []).append(100 * result["accuracy"])
    for task, acc in result["by_task"].items():
      by_task.setdefault(task, []).append(100 * acc)
  fig, ax = plt.subplots(figsize=(6, 3.6))
  for task, values in by_task.items():
    ax.plot(steps, values, marker="o", label=task, lw=2.5 if task == "all" else 1.2)
  ax.set_xlabel("steps (32 x 128 tokens, lr 2e-3; restarts at 300 and 900)")
  ax.set_ylabel("held-out records right (%)")
  ax.set_title("2.4M model, seed 3's phase2 -> copying snake_case names", fontsize=10)
  ax.set_ylim(-3, 103)
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  out = os.path.join(HERE, "name_copy_curve.png")
  fig.savefig(out, dpi=110)
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
