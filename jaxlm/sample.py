r"""Sampling from a checkpoint with a KV cache.

  python -m jaxlm.sample --checkpoint models/phase2_5_final --prompt "Once upon a time"
  python -m jaxlm.sample --checkpoint DIR --prompt_ids 2,450,17 --max_new_tokens 20
  python -m jaxlm.sample --checkpoint DIR --prompts_file prompts.txt --temperature 0.8 \
      --top_p 0.95
  python -m jaxlm.sample --checkpoint DIR --chat --prompt "What is 17 * 3?"

How it runs: prompts are left-padded (right-aligned) to a bucket length, so every row's
last prompt token sits in the same cache slot; padding gets segment id 0, the prompt
segment 1 and its own positions from 0, which the model's decode path turns into a mask.
One jitted function does the prefill (in chunks of at most 512 tokens, so the [T, S]
attention scores of an 8k prompt stay small) and then a `lax.while_loop` over decode
steps that ends early once every row has produced a stop token. It compiles once per
(batch size, prompt bucket, max_new_tokens, greedy or not); buckets are powers of two up
to 512 and multiples of 512 beyond. Temperature 0 is greedy; top-k and top-p filter the
distribution before sampling.

`generate(params, model_config, prompt_ids, max_new_tokens, ...)` is the library entry
point (eval, quickstart, chat). It returns each row's new tokens, stopping before the
first stop token.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from jaxlm import model as model_lib

PREFILL_CHUNK = 512


# ------------------------------------------------------------------------------- config


def as_model_config(model_config: Mapping[str, Any] | ml_collections.ConfigDict
                    ) -> ml_collections.ConfigDict:
  """A complete ConfigDict for `Transformer` from a checkpoint's model_config dict."""
  if isinstance(model_config, ml_collections.ConfigDict):
    model_config = model_config.to_dict()
  return model_lib.model_config(model_config)


def _config_key(config: ml_collections.ConfigDict) -> str:
  return json.dumps(config.to_dict(), sort_keys=True, default=str)


def bucket_length(n: int) -> int:
  """Prompt length to pad to: the next power of two up to 512, then multiples of 512."""
  if n <= PREFILL_CHUNK:
    return max(8, 1 << (n - 1).bit_length())
  return -(-n // PREFILL_CHUNK) * PREFILL_CHUNK


# ------------------------------------------------------------------------------- filtering


def filter_logits(logits, top_k, top_p):
  """Sets logits outside the top-k / top-p (nucleus) set to -inf. [B, V] float32.

  `top_k` <= 0 and `top_p` >= 1 switch the filters off. Both may be traced values: one
  descending sort serves both, so changing them does not recompile.
  """
  vocab = logits.shape[-1]
  ordered = jnp.sort(logits, axis=-1)[:, ::-1]
  k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
  kth_largest = jnp.take_along_axis(ordered, jnp.broadcast_to(k - 1, (logits.shape[0], 1)),
                                    axis=-1)
  ordered = jnp.where(ordered >= kth_largest, ordered, -jnp.inf)
  probs = jax.nn.softmax(ordered, axis=-1)
  # Keep a token when the mass before it is below top_p (the first token always stays).
  mass_before = jnp.cumsum(probs, axis=-1) - probs
  kept = (mass_before < top_p) & (ordered > -jnp.inf)
  threshold = jnp.min(jnp.where(kept, ordered, jnp.inf), axis=-1, keepdims=True)
  return jnp.where(logits >= threshold, logits, -jnp.inf)


def choose_tokens(logits, rng, temperature, top_k, top_p, greedy: bool):
  if greedy:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  filtered = filter_logits(logits / temperature, top_k, top_p)
  return jax.random.categorical(rng, filtered, axis=-1).astype(jnp.int32)


# ------------------------------------------------------------------------------- decoding


def _head_logits(hidden_last, params, config):
  """Logits [B, V] of the last position, computed like the model's own head."""
  head = model_lib.lm_head_matrix(params, config)
  return jnp.einsum("bd,dv->bv", hidden_last, head.astype(hidden_last.dtype),
                    preferred_element_type=jnp.float32)


def _generate_impl(params, tokens, positions, segment_ids, prompt_lengths, rng, temperature,
                   top_k, top_p, stop_ids, *, config, max_new_tokens, greedy):
  """Prefill + decode loop. tokens/positions/segment_ids [B, P]; returns [B, N] and counts."""
  batch, prompt_len = tokens.shape
  model = model_lib.Transformer(config, cache_len=prompt_len + max_new_tokens)
  cache = model_lib.init_cache(config, batch, prompt_len + max_new_tokens)

  def run(cache, tok, pos, seg):
    hidden, variables = model.apply({"params": params, "cache": cache}, tok, positions=pos,
                                    segment_ids=seg, decode=True, return_hidden=True,
                                    mutable=["cache"])
    return variables["cache"], hidden[:, -1]

  chunk = min(prompt_len, PREFILL_CHUNK)
  def split(x):
    return x.reshape(batch, prompt_len // chunk, chunk).swapaxes(0, 1)

  def prefill_chunk(cache, xs):
    cache, last = run(cache, *xs)
    return cache, last

  cache, lasts = jax.lax.scan(prefill_chunk, cache,
                              (split(tokens), split(positions), split(segment_ids)))
  logits = _head_logits(lasts[-1], params, config)

  def is_stop(tok):
    return jnp.any(tok[:, None] == stop_ids[None, :], axis=-1)

  first = choose_tokens(logits, jax.random.fold_in(rng, 0), temperature, top_k, top_p, greedy)
  out = jnp.zeros((batch, max_new_tokens), jnp.int32).at[:, 0].set(first)
  done = is_stop(first)

  def cond(state):
    step, _, _, done, _ = state
    return (step < max_new_tokens) & ~jnp.all(done)

  def body(state):
    step, cache, prev, done, out = state
    pos = (prompt_lengths + step - 1)[:, None]
    cache, hidden = run(cache, prev[:, None], pos, jnp.ones_like(pos))
    tok = choose_tokens(_head_logits(hidden, params, config), jax.random.fold_in(rng, step),
                        temperature, top_k, top_p, greedy)
    tok = jnp.where(done, 0, tok)
    out = jax.lax.dynamic_update_slice(out, tok[:, None], (0, step))
    return step + 1, cache, tok, done | is_stop(tok), out

  steps, _, _, _, out = jax.lax.while_loop(cond, body, (jnp.int32(1), cache, first, done, out))
  return out, steps


@functools.lru_cache(maxsize=16)
def _compiled(config_key: str, max_new_tokens: int, greedy: bool):
  config = ml_collections.ConfigDict(json.loads(config_key))
  return jax.jit(functools.partial(_generate_impl, config=config,
                                   max_new_tokens=max_new_tokens, greedy=greedy))


def pad_left(prompt_ids: Sequence[Sequence[int]], length: int, pad_id: int = 0):
  """Right-aligned tokens, positions and segment ids [B, length] (padding: segment 0)."""
  batch = len(prompt_ids)
  tokens = np.full((batch, length), pad_id, np.int32)
  positions = np.zeros((batch, length), np.int32)
  segments = np.zeros((batch, length), np.int32)
  for row, ids in enumerate(prompt_ids):
    n = len(ids)
    tokens[row, length - n:] = ids
    positions[row, length - n:] = np.arange(n)
    segments[row, length - n:] = 1
  return tokens, positions, segments


def generate(params, model_config, prompt_ids: Sequence[Sequence[int]], max_new_tokens: int,
             temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0, seed: int = 0,
             stop_ids: Sequence[int] = (), batch_size: int | None = None
             ) -> list[list[int]]:
  """New tokens for each prompt (without the prompt; ends before the first stop token).

  Args:
    params: the model's param tree; model_config: its config (dict or ConfigDict).
    prompt_ids: token id lists (BOS included if the model wants one), any lengths >= 1.
    temperature: 0 = greedy (argmax); otherwise logits / temperature are sampled.
    top_k: keep the k most likely tokens (0 = all). top_p: nucleus mass (1 = all).
    seed: sampling RNG seed (rows and steps get their own draws).
    stop_ids: generation of a row ends at any of these (EOS, chat end-of-turn).
    batch_size: rows per compiled call (None = all prompts at once); the last group is
      padded with dummy rows so every call has the same shape.
  """
  config = as_model_config(model_config)
  prompts = [list(map(int, p)) for p in prompt_ids]
  if not prompts:
    return []
  vocab = int(config.vocab_size)
  for i, p in enumerate(prompts):
    if not p:
      raise ValueError(f"prompt {i} is empty; give at least one token (e.g. BOS)")
    bad = [t for t in p if not 0 <= t < vocab]
    if bad:
      raise ValueError(f"prompt {i} has token ids {bad[:5]} outside the vocabulary [0, {vocab})")
  if max_new_tokens < 1:
    raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
  if temperature < 0:
    raise ValueError(f"temperature must be >= 0, got {temperature}")
  greedy = temperature == 0
  fn = _compiled(_config_key(config), int(max_new_tokens), greedy)
  stops = jnp.asarray(list(stop_ids) or [-1], jnp.int32)
  batch_size = batch_size or len(prompts)
  results: list[list[int]] = []
  for start in range(0, len(prompts), batch_size):
    group = prompts[start:start + batch_size]
    rows = group + [group[0]] * (batch_size - len(group))
    tokens, positions, segments = pad_left(rows, bucket_length(max(map(len, rows))))
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), start)
    out, _ = fn(params, tokens, positions, segments,
                jnp.asarray([len(r) for r in rows], jnp.int32), rng,
                jnp.float32(temperature or 1.0), jnp.int32(top_k), jnp.float32(top_p), stops)
    out = np.asarray(out)
    for row in range(len(group)):
      new = out[row].tolist()
      for i, tok in enumerate(new):
        if tok in stop_ids:
          new = new[:i]
          break
      results.append(new)
  return results


# ------------------------------------------------------------------------------- loading


def find_tokenizer(checkpoint: str, tokenizer_flag: str = "") -> str:
  """The tokenizer path: the flag, else one recorded next to the checkpoint.

  Looks in the checkpoint directory and up to three parents for `tokenizer.model`, or a
  `config.json` whose "tokenizer" names an existing file (the training loop's saved config).
  """
  if tokenizer_flag:
    if not os.path.exists(tokenizer_flag):
      raise FileNotFoundError(f"--tokenizer {tokenizer_flag} does not exist")
    return tokenizer_flag
  looked = []
  directory = os.path.abspath(checkpoint)
  for _ in range(4):
    candidate = os.path.join(directory, "tokenizer.model")
    looked.append(candidate)
    if os.path.exists(candidate):
      return candidate
    config_path = os.path.join(directory, "config.json")
    looked.append(config_path)
    if os.path.exists(config_path):
      with open(config_path, encoding="utf-8") as f:
        try:
          recorded = json.load(f).get("tokenizer") or ""
        except (json.JSONDecodeError, AttributeError) as e:
          raise ValueError(f"{config_path} is not a JSON object: {e}") from None
      if recorded:
        for path in (recorded, os.path.join(directory, recorded)):
          if os.path.exists(path):
            return path
        raise FileNotFoundError(f"{config_path} names tokenizer {recorded!r}, which does not "
                                "exist; pass --tokenizer")
    directory = os.path.dirname(directory)
  raise FileNotFoundError(
      f"no tokenizer for checkpoint {checkpoint}: pass --tokenizer PATH (looked for "
      f"{', '.join(looked)})")


COMPUTE_DTYPES = ("float32", "bfloat16", "float16")


def load_model(checkpoint: str, compute_dtype: str = ""):
  """(params, model ConfigDict) of any checkpoint `jaxlm.checkpoint.load_params` accepts.

  The model computes in the checkpoint's recorded `compute_dtype` (what it was trained in;
  for `jaxlm.convert --from_hf`, the HF config's dtype) unless `compute_dtype` is given.
  """
  from jaxlm import checkpoint as checkpoint_lib  # pylint: disable=import-outside-toplevel
  if compute_dtype and compute_dtype not in COMPUTE_DTYPES:
    raise ValueError(f"--compute_dtype {compute_dtype!r}; expected one of {COMPUTE_DTYPES}")
  params, model_config = checkpoint_lib.load_params(checkpoint)
  if not model_config:
    raise ValueError(f"checkpoint {checkpoint} has no model_config item; cannot build the model")
  if compute_dtype:
    model_config = {**model_config, "compute_dtype": compute_dtype}
  return params, as_model_config(model_config)


def chat_stop_ids(tokenizer) -> list[int]:
  """EOS plus the chat end-of-turn marker when the tokenizer has it."""
  from jaxlm.data import chat_format  # pylint: disable=import-outside-toplevel
  stops = [tokenizer.eos_id]
  try:
    stops.append(tokenizer.special_id(chat_format.END_OF_TURN))
  except KeyError:
    pass
  return stops


# ------------------------------------------------------------------------------- CLI

def add_model_args(parser: argparse.ArgumentParser) -> None:
  """--checkpoint, --tokenizer, --compute_dtype: shared by sample, chat and eval."""
  parser.add_argument("--checkpoint", required=True,
                      help="params checkpoint (step dir, manager root or final tag)")
  parser.add_argument("--tokenizer", default="",
                      help="SentencePiece model (default: recorded with the checkpoint)")
  add_compute_dtype_arg(parser)


def add_compute_dtype_arg(parser: argparse.ArgumentParser) -> None:
  parser.add_argument("--compute_dtype", default="", choices=("",) + COMPUTE_DTYPES,
                      help="compute dtype of the model (default: the one recorded with the "
                           "checkpoint)")


def add_sampling_args(parser: argparse.ArgumentParser, max_new_tokens: int = 64) -> None:
  """How tokens are drawn: shared by sample and chat."""
  parser.add_argument("--max_new_tokens", type=int, default=max_new_tokens,
                      help="tokens to generate per prompt")
  parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
  parser.add_argument("--top_k", type=int, default=0,
                      help="keep the k most likely tokens (0 = off)")
  parser.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling mass (1 = off)")
  parser.add_argument("--seed", type=int, default=0, help="sampling seed")


def sampling_kwargs(args: argparse.Namespace) -> dict[str, Any]:
  """The `generate` keywords of `add_sampling_args`'s flags."""
  return dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
              top_k=args.top_k, top_p=args.top_p, seed=args.seed)


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m jaxlm.sample",
                                   description=__doc__.split("\n\n")[0])
  add_model_args(parser)
  prompts = parser.add_mutually_exclusive_group(required=True)
  prompts.add_argument("--prompt", help="prompt text")
  prompts.add_argument("--prompt_ids",
                       help="prompt token ids, comma-separated (no tokenizer needed)")
  prompts.add_argument("--prompts_file", help="a file of prompts, one per line (batched)")
  add_sampling_args(parser)
  parser.add_argument("--batch_size", type=int, default=8,
                      help="prompts per compiled call with --prompts_file")
  parser.add_argument("--chat", action="store_true",
                      help="wrap each prompt as a user turn of the chat template")
  return parser.parse_args(argv)


def _prompt_texts(args: argparse.Namespace) -> list[str]:
  if args.prompts_file:
    if not os.path.exists(args.prompts_file):
      raise FileNotFoundError(f"--prompts_file {args.prompts_file} does not exist")
    with open(args.prompts_file, encoding="utf-8") as f:
      texts = [line.rstrip("\n") for line in f if line.strip()]
    if not texts:
      raise ValueError(f"--prompts_file {args.prompts_file} holds no prompts")
    return texts
  return [args.prompt]


def _main(args: argparse.Namespace) -> None:
  params, config = load_model(args.checkpoint, args.compute_dtype)
  sampling = sampling_kwargs(args)

  if args.prompt_ids:
    try:
      ids = [int(t) for t in args.prompt_ids.replace(" ", "").split(",") if t]
    except ValueError:
      raise ValueError(f"--prompt_ids {args.prompt_ids!r} is not a comma-separated list of "
                       "integers") from None
    # No tokenizer is needed here; one found with the checkpoint adds its stop ids and a
    # decoded line.
    from jaxlm.data import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel
    try:
      tokenizer = tokenizer_lib.load_tokenizer(find_tokenizer(args.checkpoint, args.tokenizer))
    except FileNotFoundError:
      if args.tokenizer:
        raise
      tokenizer = None
    stops = chat_stop_ids(tokenizer) if tokenizer else ()
    new = generate(params, config, [ids], stop_ids=stops, **sampling)[0]
    if tokenizer:
      print(tokenizer.decode(new))
    print(" ".join(map(str, new)))
    return

  from jaxlm.data import chat_format  # pylint: disable=import-outside-toplevel
  from jaxlm.data import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel
  tokenizer = tokenizer_lib.load_tokenizer(find_tokenizer(args.checkpoint, args.tokenizer))
  texts = _prompt_texts(args)
  if args.chat:
    prompts = [chat_format.encode_prompt(tokenizer, [{"role": "user", "content": t}])
               for t in texts]
  else:
    prompts = [[tokenizer.bos_id] + tokenizer.encode(t) for t in texts]
  outputs = generate(params, config, prompts, stop_ids=chat_stop_ids(tokenizer),
                     batch_size=min(args.batch_size, len(prompts)), **sampling)
  for text, new in zip(texts, outputs):
    if len(texts) > 1:
      print(f"### {text}")
    print(tokenizer.decode(new))


def main(argv=None):
  args = parse_args(argv)
  try:
    _main(args)
  except (ValueError, FileNotFoundError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  main()
