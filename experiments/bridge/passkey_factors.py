r"""Which change defeats a model on the held-out passkey: phrasing, filler, instruction or layout.

  python -m experiments.bridge.passkey_factors --checkpoint CK [--length 128] [--samples 24] \
      [--phrasings train,generated,heldout] [--output F.json]

`jaxlm.eval --suite passkey_heldout` changes four things at once against the training
documents: the needle and question (held-out templates), the filler (held-out sentences), an
instruction line at the top, and the needle's layout (inside the text, where longctx_hard put
it on its own line). This probe crosses them, 3 x 2 x 2 x 2 cells of `--samples` prompts each
(the same keys and depths in every cell, so cells compare pairwise):
  phrasing     train (longctx_hard.PASSKEY_TEMPLATES), generated (its frames and word lists),
               heldout (eval_tasks.PASSKEY_HELDOUT_TEMPLATES)
  filler       stdlib (docstrings and comments: the kind the training filler is) or heldout
               (eval_tasks.PASSKEY_HELDOUT_FILLER, three sentences a paragraph)
  instruction  none or eval_tasks.PASSKEY_HELDOUT_INSTRUCTION
  layout       line (needle and question on their own lines) or inline (joined by spaces)
Scored like the passkey eval (the first integer written is the key). Prints one line per cell
and writes {"cells": [{phrasing, filler, instruction, layout, accuracy, example}], ...}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random

from data_pipeline import longctx_hard
from data_pipeline import text_sources
from jaxlm import eval_tasks

PHRASINGS = ("train", "generated", "heldout")
FILLERS = ("stdlib", "heldout")
LAYOUTS = ("line", "inline")
DEPTHS = (0.0, 0.5, 1.0)


def needle_and_question(phrasing: str, key: int, rng: random.Random) -> tuple[str, str]:
  if phrasing == "train":
    needle, question = longctx_hard.PASSKEY_TEMPLATES[rng.randrange(
        len(longctx_hard.PASSKEY_TEMPLATES))]
    return needle.format(key=key), question
  if phrasing == "generated":
    return longctx_hard.generated_phrasing(rng, str(key))
  if phrasing == "heldout":
    needle, question = eval_tasks.PASSKEY_HELDOUT_TEMPLATES[rng.randrange(
        len(eval_tasks.PASSKEY_HELDOUT_TEMPLATES))]
    return needle.format(key=key), question
  raise ValueError(f"phrasing {phrasing!r}; phrasings are {list(PHRASINGS)}")


def factor_probe(tokenizer, length: int, phrasing: str, filler: str, instruction: bool,
                 layout: str, key: int, depth: float, seed: int,
                 stdlib_prose: list[str]) -> eval_tasks.Probe:
  """One passkey prompt whose answer ends within `length` tokens (eval_tasks' convention);
  `seed` fixes its phrasing and filler."""
  if filler not in FILLERS or layout not in LAYOUTS:
    raise ValueError(f"filler {filler!r} / layout {layout!r}; choose from {FILLERS} / {LAYOUTS}")
  rng = random.Random(seed)
  needle, question = needle_and_question(phrasing, key, rng)
  count = max(4, length // 8)  # more paragraphs than any length here can hold
  paragraphs = ([rng.choice(stdlib_prose) for _ in range(count)] if filler == "stdlib"
                else eval_tasks.heldout_paragraphs(rng, count))
  sep = "\n" if layout == "line" else " "
  head = [eval_tasks.PASSKEY_HELDOUT_INSTRUCTION] if instruction else []

  def build(n):
    at = round(depth * n)
    return sep.join(head + paragraphs[:at] + [needle] + paragraphs[at:n] + [question])

  ids = eval_tasks.filled_prompt(tokenizer, build, length, eval_tasks.PASSKEY_MAX_NEW_TOKENS,
                                 f"passkey_factors length {length}")
  return eval_tasks.Probe("passkey", ids, [str(key)], length, depth,
                          eval_tasks.PASSKEY_MAX_NEW_TOKENS)


def stdlib_paragraphs(max_chars: int = 300_000) -> list[str]:
  """Short docstrings and comment blocks: paragraphs of the training filler's kind."""
  return [p for p in text_sources.load_corpus(max_chars).prose if len(p) < 400]


def cells(phrasings) -> list[tuple[str, str, bool, str]]:
  return list(itertools.product(phrasings, FILLERS, (False, True), LAYOUTS))


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", required=True)
  p.add_argument("--tokenizer", default="", help="default: the one the run recorded")
  p.add_argument("--length", type=int, default=128)
  p.add_argument("--samples", type=int, default=24)
  p.add_argument("--phrasings", default=",".join(PHRASINGS))
  p.add_argument("--seed", type=int, default=7)
  p.add_argument("--output", default="")
  args = p.parse_args(argv)
  phrasings = [x for x in args.phrasings.split(",") if x]
  bad = sorted(set(phrasings) - set(PHRASINGS))
  if bad:
    p.error(f"--phrasings: unknown {bad}; choose from {list(PHRASINGS)}")

  from jaxlm import eval as eval_lib  # pylint: disable=import-outside-toplevel
  from jaxlm import sample  # pylint: disable=import-outside-toplevel
  from jaxlm.data import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel
  params, model_config = sample.load_model(args.checkpoint, "float32")
  tokenizer = tokenizer_lib.load_tokenizer(sample.find_tokenizer(args.checkpoint,
                                                                 args.tokenizer))
  generate = eval_lib.model_generate_fn(params, model_config, 16)
  prose = stdlib_paragraphs()
  draws = random.Random(args.seed)
  keys = [draws.randint(*eval_tasks.PASSKEY_KEY_RANGE) for _ in range(args.samples)]
  out = []
  for phrasing, filler, instruction, layout in cells(phrasings):
    probes = [factor_probe(tokenizer, args.length, phrasing, filler, instruction, layout, key,
                           DEPTHS[i % len(DEPTHS)], args.seed * 100_003 + i, prose)
              for i, key in enumerate(keys)]
    records = eval_lib.score_probes(probes, generate, tokenizer)
    accuracy = sum(r["score"] for r in records) / len(records)
    out.append({"phrasing": phrasing, "filler": filler, "instruction": instruction,
                "layout": layout, "accuracy": accuracy,
                "example": {"key": records[0]["references"][0], "output": records[0]["output"]}})
    print(f"{phrasing:9s} filler={filler:7s} instruction={int(instruction)} {layout:6s} "
          f"{100 * accuracy:5.1f}%", flush=True)
  result = {"checkpoint": args.checkpoint, "length": args.length, "samples": args.samples,
            "cells": out}
  if args.output:
    eval_lib.write_json(args.output, result)


if __name__ == "__main__":
  main()
