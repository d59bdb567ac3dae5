"""Held-out passkey accuracy by phrasing, with and without filler, from `jaxlm.eval` outputs.

  python -m experiments.bridge.heldout_by_phrasing --tokenizer T.model --seed 1002 \
      --max_length 512 runs/v9/seed2/evals/phase2_5_a.json ...

The held-out suite draws one of four needle/question phrasings per probe (`eval_tasks.
PASSKEY_HELDOUT_TEMPLATES`), and the shortest prompts hold little or no filler (at 100 tokens
most are the needle followed at once by its question), so a length's accuracy mixes
phrasings and, at the short lengths, prompts with and without filler. This rebuilds each
file's probes (the eval's `--seed`; the bridge uses 1000 + its seed), checks that their keys
are the file's, and counts correct answers per phrasing, with filler and without. Files
written before short prompts were filled with sentences (2026-12-04) do not match the
rebuilt probes at 128 tokens (their prompt lengths differ) and are refused.
"""

from __future__ import annotations

import argparse
import collections
import json

from jaxlm import eval_tasks
from jaxlm.data.tokenizer import load_tokenizer


def phrasing_of(text: str) -> int:
  """Index in PASSKEY_HELDOUT_TEMPLATES of the question this prompt asks."""
  found = [i for i, (_, question) in enumerate(eval_tasks.PASSKEY_HELDOUT_TEMPLATES)
           if text.endswith(question)]
  if len(found) != 1:
    raise ValueError(f"prompt ends with no held-out question: ...{text[-80:]!r}")
  return found[0]


def has_filler(text: str) -> bool:
  return any(s in text for s in eval_tasks.PASSKEY_HELDOUT_FILLER)


def rebuild_probes(tokenizer, records: list[dict], seed: int, where: str):
  """The probes `jaxlm.eval --suite passkey_heldout --seed seed` asked, in the records' order."""
  lengths = sorted({r["length"] for r in records})
  depths = sorted({r["depth"] for r in records})
  samples = len(records) // (len(lengths) * len(depths))
  probes = eval_tasks.passkey_probes(tokenizer, lengths, depths, samples, seed=seed,
                                     phrasing="heldout")
  if [p.references for p in probes] != [r["references"] for r in records]:
    raise ValueError(f"{where}: its keys are not those of --seed {seed}; pass the eval's seed")
  if any(r.get("prompt_tokens", len(p.prompt_ids)) != len(p.prompt_ids)
         for p, r in zip(probes, records)):
    raise ValueError(f"{where}: its prompts are not the ones this code builds (an eval from "
                     "before short prompts were filled with sentences?)")
  return probes


def by_phrasing(tokenizer, records: list[dict], probes, max_length: int
                ) -> dict[tuple[int, bool], list[float]]:
  """(phrasing, has filler) -> [correct, probes] over the records of length <= max_length."""
  counts: dict[tuple[int, bool], list[float]] = collections.defaultdict(lambda: [0.0, 0])
  for probe, record in zip(probes, records):
    if record["length"] > max_length:
      continue
    text = tokenizer.decode(probe.prompt_ids[1:])
    cell = counts[(phrasing_of(text), has_filler(text))]
    cell[0] += record["score"]
    cell[1] += 1
  return dict(counts)


def table(rows: list[tuple[str, dict]]) -> str:
  n = len(eval_tasks.PASSKEY_HELDOUT_TEMPLATES)
  head = ["eval"] + [f"{i}: {eval_tasks.PASSKEY_HELDOUT_TEMPLATES[i][1].split('?')[0]}?"
                     for i in range(n)]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for name, counts in rows:
    cells = []
    for i in range(n):
      parts = [f"{counts[(i, filled)][0]:.0f}/{counts[(i, filled)][1]}" if (i, filled) in counts
               else "-" for filled in (False, True)]
      cells.append(" / ".join(parts))
    lines.append("| " + " | ".join([name] + cells) + " |")
  return "\n".join(lines)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--tokenizer", required=True)
  p.add_argument("--seed", type=int, required=True, help="the eval's --seed")
  p.add_argument("--max_length", type=int, default=1 << 30, help="leave longer probes out")
  p.add_argument("evals", nargs="+", help="jaxlm.eval output JSON files")
  args = p.parse_args(argv)
  tok = load_tokenizer(args.tokenizer)
  rows = []
  for path in args.evals:
    with open(path, encoding="utf-8") as f:
      records = json.load(f)["passkey_heldout"]["records"]
    probes = rebuild_probes(tok, records, args.seed, path)
    rows.append((path, by_phrasing(tok, records, probes, args.max_length)))
  print("Held-out passkey correct / probes, each phrasing: without filler / with filler")
  print(table(rows))


if __name__ == "__main__":
  main()
