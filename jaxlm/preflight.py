"""Checks that a training config fits its files and device, before any work is done.

`check(config)` runs before the training loop builds, compiles or allocates anything, and
raises one `PreflightError` listing every problem it finds, each naming the config key and
the file or value at fault:

  data        every split dir (train_dir, val_dir, data.sources) exists, is a readable
              shard split (meta.json, shard files of the sizes it lists) and holds tokens;
              its vocabulary fits model.vocab_size.
  tokenizer   config.tokenizer's vocabulary fits model.vocab_size, and every split dir was
              written with that tokenizer (sha256 in meta.json); without config.tokenizer,
              the split dirs must at least agree with each other.
  checkpoint  resuming (workdir/latest holds a step): that checkpoint's architecture must
              be the config's; otherwise config.init_from must be a checkpoint of the same
              architecture. Only the JSON model_config stored beside the params is read.
  context     seq_len beyond model.rope_original_max_len needs a RoPE extension choice
              (see `rope_problems`).
  attention   model.attention names a backend this device can run.

Nothing is written: a refused run leaves the workdir and every checkpoint as they were.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax

from jaxlm.data import shards
from jaxlm import attention as attention_lib
from jaxlm import checkpoint as ckpt_lib
from jaxlm import model as model_lib

# Model settings that decide the names and shapes of the params: a checkpoint can only
# seed (or resume) a model that agrees on all of them.
ARCHITECTURE_KEYS = ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim",
                     "mlp_dim", "tie_embeddings", "scan_layers")
DEFAULT_ROPE_THETA = model_lib.default_config().rope_theta


class PreflightError(ValueError):
  """The config cannot run as given; the message lists every problem found."""


def check(config) -> None:
  """Raises PreflightError if `config` cannot run here (see the module docstring)."""
  problems, metas = data_problems(config)
  problems += tokenizer_problems(config, metas)
  checkpoint_config, more = checkpoint_problems(config)
  problems += more
  problems += rope_problems(config.model, config.seq_len, checkpoint_config)
  problems += attention_problems(config.model)
  if problems:
    raise PreflightError(
        f"{len(problems)} problem(s) found before training (nothing was changed):\n  - "
        + "\n  - ".join(problems))


# ----------------------------------------------------------------------------------
# Data and tokenizer.


def _split_dirs(config) -> list[tuple[str, str]]:
  """(config key, split dir) of every split the run reads."""
  sources = config.data.get("sources") or {}
  if sources:
    from jaxlm import input_pipeline  # Grain: imported only when a mixture is given
    dirs = [(f"data.sources.{name}", directory)
            for name, directory, _ in input_pipeline.parse_sources(sources)]
  else:
    dirs = [("train_dir", config.train_dir)]
  if config.val_dir:
    dirs.append(("val_dir", config.val_dir))
  return dirs


def data_problems(config) -> tuple[list[str], list[tuple[str, str, dict]]]:
  """Problems with the split dirs, and (key, dir, meta) of those that opened."""
  problems, metas = [], []
  vocab = int(config.model.vocab_size)
  for key, directory in _split_dirs(config):
    if not directory:
      problems.append(f"config.{key} is empty: give a split dir (e.g. .../train)")
      continue
    directory = os.path.abspath(directory)
    try:
      split = shards.SplitDir(directory)  # meta.json, shard headers and sizes; no token scan
    except (ValueError, FileNotFoundError) as e:
      problems.append(f"config.{key}={directory}: {e}")
      continue
    metas.append((key, directory, split.meta))
    data_vocab = split.meta.get("vocab_size")
    if data_vocab is not None and int(data_vocab) > vocab:
      problems.append(
          f"config.{key}={directory}: meta.json says vocab_size {data_vocab}, more than "
          f"model.vocab_size={vocab}: the tokens would not fit the embedding")
    if key != "val_dir" and split.num_tokens <= config.seq_len:
      problems.append(f"config.{key}={directory}: {split.num_tokens} tokens are fewer than "
                      f"one window of seq_len + 1 = {config.seq_len + 1}")
  return problems, metas


def _recorded_sha(meta: Mapping[str, Any]) -> str | None:
  return (meta.get("tokenizer") or {}).get("sha256")


def tokenizer_problems(config, metas) -> list[str]:
  """config.tokenizer against model.vocab_size and against what each split recorded."""
  problems = []
  if not config.tokenizer:
    # No tokenizer to compare with: the splits must at least come from the same one.
    known = [(key, d, _recorded_sha(m)) for key, d, m in metas if _recorded_sha(m)]
    for key, directory, sha in known[1:]:
      first_key, first_dir, first_sha = known[0]
      if sha != first_sha:
        problems.append(
            f"config.{key}={directory} was written with tokenizer sha256 {sha[:12]}…, "
            f"config.{first_key}={first_dir} with {first_sha[:12]}…: the splits use "
            f"different tokenizers")
    return problems

  from jaxlm.data import tokenizer as tokenizer_lib
  try:
    tokenizer = tokenizer_lib.load_tokenizer(config.tokenizer)
  except (ValueError, FileNotFoundError) as e:
    return [f"config.tokenizer={config.tokenizer}: {e}"]
  if tokenizer.vocab_size > config.model.vocab_size:
    problems.append(
        f"config.tokenizer={tokenizer.path} has {tokenizer.vocab_size} pieces but "
        f"model.vocab_size={config.model.vocab_size}: the model is too small for it")
  for key, directory, meta in metas:
    sha = _recorded_sha(meta)
    if sha and sha != tokenizer.sha256:
      recorded = (meta.get("tokenizer") or {}).get("path")
      problems.append(
          f"config.{key}={directory}: meta.json records tokenizer {recorded} (sha256 "
          f"{sha[:12]}…), but config.tokenizer={tokenizer.path} has sha256 "
          f"{tokenizer.sha256[:12]}…: the token ids mean different things")
    elif not sha and meta.get("vocab_size") not in (None, tokenizer.vocab_size) and not (
        (meta.get("builder") or {}).get("vocab_size_inferred")):
      problems.append(
          f"config.{key}={directory}: meta.json says vocab_size {meta['vocab_size']}, "
          f"config.tokenizer={tokenizer.path} has {tokenizer.vocab_size}")
  return problems


# ----------------------------------------------------------------------------------
# Checkpoints: the one the run resumes from, or init_from.


def architecture(model_config: Mapping[str, Any]) -> dict[str, Any]:
  """The shape-deciding settings of a model config (defaults filled, head_dim resolved)."""
  full = model_lib.model_config(model_config)
  out = {key: full[key] for key in ARCHITECTURE_KEYS}
  out["head_dim"] = model_lib.head_dim(full)
  return out


def architecture_changes(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[str]:
  """'key: checkpoint X vs config Y' for every shape-deciding setting that differs."""
  old, new = architecture(stored), architecture(wanted)
  return [f"{k}: checkpoint {old[k]!r} vs config {new[k]!r}" for k in ARCHITECTURE_KEYS
          if old[k] != new[k]]


def resume_dir(workdir: str) -> str | None:
  """The committed step of workdir/latest the run would resume from, if any."""
  latest = os.path.join(os.path.abspath(workdir), "latest")
  if not os.path.isdir(latest):
    return None
  try:
    return ckpt_lib.resolve_checkpoint_dir(latest)
  except FileNotFoundError:
    return None  # only uncommitted (killed) saves: the run starts fresh


def checkpoint_problems(config) -> tuple[dict | None, list[str]]:
  """(model_config of the checkpoint the run starts from or None, problems)."""
  resume = resume_dir(config.workdir) if config.workdir else None
  if resume is not None:
    key, path, role = "workdir", resume, "the checkpoint this run would resume from"
  elif config.init_from:
    key, path, role = "init_from", config.init_from, "the init_from checkpoint"
  else:
    return None, []
  try:
    stored = ckpt_lib.read_model_config(path)
  except (ValueError, FileNotFoundError) as e:
    return None, [f"config.{key}={path}: {e}"]
  except Exception as e:  # Orbax raises its own types for unreadable metadata
    return None, [f"config.{key}={path}: cannot read its model_config ({type(e).__name__}: "
                  f"{e})"]
  changes = architecture_changes(stored, config.model.to_dict())
  if changes:
    hint = (" Use a new workdir for a different model." if key == "workdir" else "")
    return stored, [f"config.{key}={path}: {role} holds another architecture ("
                    + "; ".join(changes) + ")." + hint]
  return stored, []


# ----------------------------------------------------------------------------------
# Context length and attention backend.


def rope_problems(model_config, seq_len: int, start_config: Mapping[str, Any] | None) -> list[str]:
  """Refuses training beyond the RoPE base's context without an extension choice.

  Past model.rope_original_max_len, RoPE needs one of: a scaling scheme
  (model.rope_scaling != 'none'), or a base frequency raised above the one the starting
  params were trained with (the init/resume checkpoint's rope_theta, else the default
  10k), as phase 2.5 does (10k -> 500k). A start checkpoint already built for this length
  with the same base (phase 3 from phase 2.5, or a resumed run) needs nothing more.
  """
  seq_len = int(seq_len)
  original = int(model_config.rope_original_max_len)
  if seq_len <= original or model_config.rope_scaling != "none":
    return []
  theta = float(model_config.rope_theta)
  if start_config is not None:
    start = model_lib.model_config(start_config)
    start_theta = float(start["rope_theta"])
    if theta > start_theta:
      return []
    if (theta == start_theta and start["rope_scaling"] == "none"
        and int(start["max_seq_len"]) >= seq_len):
      return []
    reference = f"the start checkpoint's rope_theta={start_theta:g}"
  else:
    if theta > DEFAULT_ROPE_THETA:
      return []
    reference = f"the default rope_theta={DEFAULT_ROPE_THETA:g}"
  return [f"config.seq_len={seq_len} is longer than model.rope_original_max_len={original} "
          f"with model.rope_scaling='none' and model.rope_theta={theta:g} not above "
          f"{reference}: choose a RoPE extension (model.rope_scaling=linear|ntk|yarn, or "
          f"raise model.rope_theta, e.g. 500000) or raise model.rope_original_max_len"]


def attention_problems(model_config) -> list[str]:
  """The attention backend must exist and run on this device as configured."""
  name = model_config.attention
  if name not in attention_lib.IMPLEMENTATIONS:
    return [f"config.model.attention={name!r} is not a backend; expected one of "
            f"{attention_lib.IMPLEMENTATIONS}"]
  platform = jax.default_backend()
  if name == "splash" and platform != "tpu":
    return [f"config.model.attention='splash' needs a TPU, but JAX's backend here is "
            f"{platform!r}; use 'auto', 'blockwise' or 'xla'"]
  if name != "cudnn":
    return []
  problems = []
  if platform != "gpu":
    problems.append(f"config.model.attention='cudnn' needs an NVIDIA GPU, but JAX's backend "
                    f"here is {platform!r}; use 'auto', 'blockwise' or 'xla'")
  if model_config.compute_dtype not in ("bfloat16", "float16"):
    problems.append(f"config.model.attention='cudnn' needs compute_dtype bfloat16 or float16, "
                    f"not {model_config.compute_dtype!r}")
  head = model_lib.head_dim(model_config)
  if head > 128 or head % 8:
    problems.append(f"config.model.attention='cudnn' needs head_dim <= 128 and a multiple of "
                    f"8, not {head}")
  return problems
