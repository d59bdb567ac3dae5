r"""Loss on the answer tokens of long-context documents, per task: first token vs the rest.

  python -m experiments.bridge.answer_loss --checkpoint CK --data DIR/val \
      [--documents DIR/val_documents.jsonl] [--max_documents 256] [--output F.json]

Retrieval "clicks" before greedy accuracy moves: the first digit of an answer has to be found
(the question names the needle), every later one only copied from after the digit just
written (an induction head). A model that has not learned to copy pays ~ln 10 = 2.30 nats for
each later digit of a key; one that copies pays ~0. Answers start with a space piece (nearly
free), so "first" is the answer's second token (a key's first digit) and "rest" the ones
after it. Prints one JSON object: {task: {"first": nats, "rest": nats, "documents": n}}.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def answer_spans(weights: np.ndarray) -> list[tuple[int, int]]:
  """[start, end) runs of upweighted (answer) tokens."""
  answer = np.concatenate([[False], weights > 1, [False]])
  edges = np.flatnonzero(answer[1:] != answer[:-1])
  return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", required=True)
  p.add_argument("--data", required=True, help="a longctx_hard split directory (e.g. DIR/val)")
  p.add_argument("--documents", default="", help="default: <split>_documents.jsonl beside it")
  p.add_argument("--max_documents", type=int, default=256)
  p.add_argument("--output", default="", help="also write the JSON here")
  args = p.parse_args(argv)

  import jax  # pylint: disable=import-outside-toplevel
  from jaxlm import model as model_lib  # pylint: disable=import-outside-toplevel
  from jaxlm import sample  # pylint: disable=import-outside-toplevel
  from jaxlm import validation  # pylint: disable=import-outside-toplevel
  from jaxlm.data import shards  # pylint: disable=import-outside-toplevel

  split = shards.SplitDir(args.data)
  if split.weights[0] is None:
    raise SystemExit(f"{args.data}: no loss-weight sidecar, so no answer tokens are marked")
  documents = args.documents or os.path.join(
      os.path.dirname(os.path.abspath(args.data)),
      os.path.basename(os.path.normpath(args.data)) + "_documents.jsonl")
  with open(documents) as f:
    docs = [json.loads(line) for line in f][:args.max_documents]
  tokens = np.concatenate(split.shards)
  weights = np.concatenate([np.asarray(w) for w in split.weights])
  params, config = sample.load_model(args.checkpoint)
  model = model_lib.Transformer(config)
  length = docs[0]["length_tokens"]
  if any(d["length_tokens"] != length for d in docs):
    raise SystemExit(f"{documents}: documents of different lengths; this probe wants one")
  nll_fn = jax.jit(lambda p_, b: validation.token_nll(model, p_, b))
  sums: dict[str, dict[str, list[float]]] = {}
  counts: dict[str, int] = {}
  for start in range(0, len(docs), 16):
    chunk = docs[start:start + 16]
    ids = np.stack([tokens[d["offset"]:d["offset"] + length] for d in chunk]).astype(np.int32)
    w = np.stack([weights[d["offset"]:d["offset"] + length] for d in chunk])
    batch = {"inputs": ids[:, :-1], "targets": ids[:, 1:],
             "positions": np.broadcast_to(np.arange(length - 1), ids[:, 1:].shape),
             "segment_ids": np.ones_like(ids[:, 1:])}
    nll = np.asarray(nll_fn(params, batch))
    for d, row_w, row_nll in zip(chunk, w[:, 1:], nll):
      task = sums.setdefault(d["task"], {"first": [], "rest": []})
      counts[d["task"]] = counts.get(d["task"], 0) + 1
      for s, e in answer_spans(row_w):
        if e - s >= 2:
          task["first"].append(float(row_nll[s + 1]))
          task["rest"].extend(row_nll[s + 2:e].tolist())
  out = {t: {"first": round(float(np.mean(v["first"])), 4) if v["first"] else None,
             "rest": round(float(np.mean(v["rest"])), 4) if v["rest"] else None,
             "documents": counts[t]} for t, v in sorted(sums.items())}
  print(json.dumps(out))
  if args.output:
    shards.atomic_write_json(args.output, out)


if __name__ == "__main__":
  main()
