"""Shared fixtures for the sampling / eval / chat / notebook tests.

* `CharTokenizer`: one id per character, so lengths in tokens are lengths in characters.
* Stub `GenerateFn`s whose answers are known: they read the needle out of the prompt text
  and answer right, wrong, or right on every other prompt.
* `tiny_checkpoint(dir)`: a tiny random model saved with `jaxlm.checkpoint.save_params`,
  a SentencePiece tokenizer with the chat markers next to it, a metrics.jsonl and a
  config.json, laid out like a training workdir.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np


class CharTokenizer:
  """ids: 0 pad, 1 BOS, 2 EOS, 3 + ord(c) for characters below 253."""
  bos_id, eos_id, pad_id, vocab_size = 1, 2, 0, 256

  def encode(self, text):
    return [3 + ord(c) for c in text]

  def decode(self, ids):
    return "".join(chr(i - 3) for i in ids if i >= 3)


def needle_answers(prompt: str) -> list[str]:
  """The right answer strings for a passkey or RULER prompt, read from its text."""
  if "The pass key is" in prompt:
    return [re.search(r"The pass key is (\d+)\. Remember it", prompt).group(1)]
  if prompt.rstrip().endswith("are:") and "VAR " in prompt:
    value = re.search(r"Which variables hold (\d+)", prompt).group(1)
    holders = {re.search(r"VAR (\w+) = " + value, prompt).group(1)}
    changed = True
    while changed:
      changed = False
      for a, b in re.findall(r"VAR (\w+) = VAR (\w+)\.", prompt):
        if b in holders and a not in holders:
          holders.add(a)
          changed = True
    return sorted(holders)
  key = re.findall(r"hidden codes? for (\w+)", prompt)[-1]
  return re.findall(r"The hidden code for " + key + r" is (\d+)\.", prompt)


class StubGenerator:
  """A GenerateFn with known behaviour.

  mode 'right': writes every answer; 'wrong': writes numbers/names that are not answers;
  'alternate': right on even-numbered prompts (counted across calls), wrong on odd ones;
  'half_values': writes the first half of the answers (multi-value RULER tasks).
  """

  def __init__(self, tokenizer, mode: str):
    self.tokenizer, self.mode, self.calls, self.seen = tokenizer, mode, [], 0

  def _answer(self, prompt: str) -> str:
    answers = needle_answers(prompt)
    right = self.mode == "right" or (self.mode == "alternate" and self.seen % 2 == 0)
    self.seen += 1
    if self.mode == "half_values":
      return " ".join(answers[:len(answers) // 2])
    if right:
      return " " + ", ".join(answers) + "."
    return " " + ", ".join(str(int(a) + 1) if a.isdigit() else "QQQQQ" for a in answers)

  def __call__(self, prompt_ids, max_new_tokens, stop_ids=()):
    self.calls.append((len(prompt_ids), max_new_tokens, tuple(stop_ids)))
    outs = []
    for ids in prompt_ids:
      text = self._answer(self.tokenizer.decode(ids))
      outs.append(self.tokenizer.encode(text)[:max_new_tokens])
    return outs


# --------------------------------------------------------------------------- tiny models

TINY_MODEL = dict(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8, mlp_dim=64,
                  max_seq_len=256, compute_dtype="float32", attention="xla", init_std=0.3,
                  tie_embeddings=False, scan_layers=True)

_CORPUS = [
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.",
    "There is an important info hidden inside a lot of irrelevant text.",
    "What is the pass key? The pass key is 12345. Remember it.",
    "Hello! How are you today? I am fine, thank you. What is the weather in Oslo?",
    "The hidden code for bazo is 123456. VAR ABCDE = 5.",
    '{"name": "get_weather", "arguments": {"city": "Oslo"}}',
]


def train_tiny_tokenizer(directory: str):
  from data_pipeline import tokenizer as tokenizer_lib  # the builder trains; jaxlm.data loads
  sentences = _CORPUS * 20
  return tokenizer_lib.train_tokenizer(None, 400, os.path.join(directory, "tokenizer"),
                                       sentences=sentences, num_threads=1)


def tiny_model_config(vocab_size: int, **overrides) -> dict:
  from jaxlm import model as model_lib
  return model_lib.model_config({**TINY_MODEL, "vocab_size": vocab_size, **overrides}).to_dict()


def tiny_checkpoint(workdir: str, steps: int = 6) -> dict:
  """A training-workdir-like tree; returns its paths and objects."""
  import jax
  from jaxlm import checkpoint as checkpoint_lib
  from jaxlm import model as model_lib

  os.makedirs(workdir, exist_ok=True)
  tok = train_tiny_tokenizer(workdir)
  config = tiny_model_config(tok.vocab_size)
  params = model_lib.init_params(model_lib.model_config(config), jax.random.PRNGKey(0))
  ckpt = checkpoint_lib.save_params(os.path.join(workdir, "best", "best_step_0006"), params,
                                    config)
  with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
    json.dump({"tokenizer": tok.path, "seq_len": 128, "model": config}, f)
  with open(os.path.join(workdir, "metrics.jsonl"), "w", encoding="utf-8") as f:
    for step in range(1, steps + 1):
      f.write(json.dumps({"step": step, "loss": float(6 - 0.5 * step),
                          "learning_rate": 1e-3 * step / steps}) + "\n")
    f.write(json.dumps({"step": steps, "val_loss": 3.5}) + "\n")
  return {"workdir": workdir, "checkpoint": ckpt, "tokenizer": tok, "params": params,
          "model_config": config}


def np_tree_equal(a, b) -> bool:
  import jax
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
