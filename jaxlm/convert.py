"""Hugging Face Llama <-> jaxlm checkpoint conversion.

    python -m jaxlm.convert --from_hf HF_DIR --out CKPT_DIR [--ignore_chat_template]
    python -m jaxlm.convert --to_hf CKPT_DIR --out HF_DIR [--tokenizer T.model | none]

--to_hf writes config.json and model.safetensors, and with the tokenizer the checkpoint was
trained with (found as jaxlm.sample finds it, or --tokenizer) also tokenizer.model,
tokenizer.json, tokenizer_config.json (with the chat template), special_tokens_map.json and
generation_config.json (stop ids: EOS and <|end|>); see jaxlm/data/hf_tokenizer.py. Then

    tok = AutoTokenizer.from_pretrained(HF_DIR)
    model = AutoModelForCausalLM.from_pretrained(HF_DIR)
    model.generate(**tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                             return_tensors="pt", return_dict=True),
                   max_new_tokens=256)

--from_hf copies the directory's SentencePiece tokenizer.model into the checkpoint (so
sample, chat, eval and the phase-3 SFT builder find it), records the compute dtype from
config.json's dtype / torch_dtype, and checks the directory's chat template: jaxlm renders
conversations only in its own format (jaxlm/data/chat_format.py), so a template that renders
differently is refused unless --ignore_chat_template.

HF Llama applies RoPE in the "rotate_half" layout (dimension i pairs with i + H/2),
which is the layout jaxlm.model.apply_rope uses, so q/k weights need no permutation:
conversion is only transposes and reshapes. Supported: LlamaForCausalLM with SiLU,
no biases, rope types default / linear / yarn (jaxlm's 'ntk' is exported as a plain
larger rope_theta, which is exactly what it is).

Pure functions (used by the CLI and the tests):
    read_hf_checkpoint(hf_dir) -> (state_dict {name: np.ndarray}, hf_config dict)
    hf_config_to_model_config(hf_config) -> dict
    hf_state_dict_to_params(state_dict, hf_config) -> (params, model_config dict)
    params_to_hf_state_dict(params, model_config) -> (state_dict, hf_config dict)
    write_hf_checkpoint(out_dir, state_dict, hf_config, tokenizer=None)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import uuid

from absl import logging
import jax
import numpy as np

from jaxlm import model as model_lib
from jaxlm.data import hf_tokenizer
from jaxlm.sample import COMPUTE_DTYPES

_SUPPORTED_ROPE = ("default", "linear", "yarn")
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


# --------------------------------------------------------------------------- reading


def _load_safetensors(path):
  from safetensors import safe_open
  out = {}
  # The flax framework understands bfloat16, which plain numpy cannot represent.
  with safe_open(path, framework="flax") as f:
    for name in f.keys():
      out[name] = np.asarray(f.get_tensor(name), dtype=np.float32)
  return out


def _load_torch_bin(path):
  try:
    import torch
  except ImportError as e:
    raise ValueError(f"{path} is a PyTorch checkpoint; reading it needs torch installed") from e
  state = torch.load(path, map_location="cpu", weights_only=True)
  return {k: v.to(torch.float32).numpy() for k, v in state.items()}


def read_hf_checkpoint(hf_dir):
  """Reads config.json and the weights (safetensors or pytorch_model.bin, sharded or not)."""
  config_path = os.path.join(hf_dir, "config.json")
  if not os.path.isfile(config_path):
    raise FileNotFoundError(f"{config_path} not found: not a Hugging Face model directory")
  with open(config_path) as f:
    hf_config = json.load(f)

  candidates = [("model.safetensors.index.json", _load_safetensors),
                ("model.safetensors", _load_safetensors),
                ("pytorch_model.bin.index.json", _load_torch_bin),
                ("pytorch_model.bin", _load_torch_bin)]
  for name, loader in candidates:
    path = os.path.join(hf_dir, name)
    if not os.path.isfile(path):
      continue
    if name.endswith(".index.json"):
      with open(path) as f:
        shard_names = sorted(set(json.load(f)["weight_map"].values()))
      state_dict = {}
      for shard in shard_names:
        shard_path = os.path.join(hf_dir, shard)
        if not os.path.isfile(shard_path):
          raise FileNotFoundError(f"{shard_path} (listed in {path}) not found")
        state_dict.update(loader(shard_path))
      return state_dict, hf_config
    return loader(path), hf_config
  raise FileNotFoundError(
      f"no weights in {hf_dir}: expected one of {[n for n, _ in candidates]}")


# --------------------------------------------------------------------------- config


def _rope_parameters(hf_config):
  """(theta, rope dict) from either the v5 'rope_parameters' or legacy 'rope_scaling'."""
  params = dict(hf_config.get("rope_parameters") or {})
  legacy = hf_config.get("rope_scaling") or {}
  for key, value in legacy.items():
    params.setdefault(key, value)
  if "type" in params and "rope_type" not in params:
    params["rope_type"] = params.pop("type")
  theta = params.get("rope_theta", hf_config.get("rope_theta", 10000.0))
  return float(theta), params


def _hf_dtype(hf_config) -> str:
  """The compute dtype HF uses for this config: `dtype` (v5) or `torch_dtype` (v4).

  HF stores the weights in it and by default computes in it; an imported model samples in
  it too (a float32 model sampled in bfloat16 parts from HF's greedy tokens).
  """
  dtype = hf_config.get("dtype") or hf_config.get("torch_dtype") or "float32"
  dtype = str(dtype).removeprefix("torch.")
  return dtype if dtype in COMPUTE_DTYPES else "float32"


def hf_config_to_model_config(hf_config) -> dict:
  """jaxlm model config dict for an HF Llama config; unsupported features raise."""
  arch = hf_config.get("architectures") or []
  if hf_config.get("model_type") != "llama" or (arch and "LlamaForCausalLM" not in arch):
    raise ValueError(f"unsupported architecture model_type={hf_config.get('model_type')!r} "
                     f"architectures={arch}; only LlamaForCausalLM (model_type 'llama')")
  if hf_config.get("hidden_act", "silu") != "silu":
    raise ValueError(f"unsupported hidden_act={hf_config['hidden_act']!r}; only 'silu'")
  for bias in ("attention_bias", "mlp_bias"):
    if hf_config.get(bias):
      raise ValueError(f"unsupported {bias}=True; jaxlm Llama blocks have no biases")
  theta, rope = _rope_parameters(hf_config)
  rope_type = rope.get("rope_type", "default")
  if rope_type not in _SUPPORTED_ROPE:
    raise ValueError(f"unsupported rope_scaling type {rope_type!r}; supported {_SUPPORTED_ROPE}")
  n_heads = int(hf_config["num_attention_heads"])
  d_model = int(hf_config["hidden_size"])
  config = dict(
      vocab_size=int(hf_config["vocab_size"]),
      d_model=d_model,
      n_layers=int(hf_config["num_hidden_layers"]),
      n_heads=n_heads,
      n_kv_heads=int(hf_config.get("num_key_value_heads") or n_heads),
      head_dim=int(hf_config.get("head_dim") or d_model // n_heads),
      mlp_dim=int(hf_config["intermediate_size"]),
      max_seq_len=int(hf_config.get("max_position_embeddings", 2048)),
      rope_theta=theta,
      rope_scaling="none",
      rope_scaling_factor=1.0,
      rope_original_max_len=int(hf_config.get("max_position_embeddings", 2048)),
      tie_embeddings=bool(hf_config.get("tie_word_embeddings", False)),
      norm_eps=float(hf_config.get("rms_norm_eps", 1e-6)),
      compute_dtype=_hf_dtype(hf_config),
  )
  if rope_type != "default":
    config["rope_scaling"] = rope_type
    config["rope_scaling_factor"] = float(rope["factor"])
  if rope_type == "yarn":
    custom = {k: rope[k] for k in ("attention_factor", "mscale", "mscale_all_dim")
              if rope.get(k) is not None}
    paper_betas = {"beta_fast": 32, "beta_slow": 1}
    custom.update({k: rope[k] for k, default in paper_betas.items()
                   if rope.get(k) not in (None, default)})
    if rope.get("truncate") is False:
      custom["truncate"] = False
    if custom:
      raise ValueError(f"unsupported yarn rope parameters {custom}; jaxlm implements "
                       "yarn with beta_fast=32, beta_slow=1 and the default attention factor")
    config["rope_original_max_len"] = int(rope.get("original_max_position_embeddings")
                                          or config["max_seq_len"])
  return config


def model_config_to_hf_config(model_config) -> dict:
  cfg = model_lib.model_config({k: v for k, v in dict(model_config).items()
                                if k in model_lib.default_config()})
  theta = float(cfg.rope_theta)
  rope = {"rope_type": "default", "rope_theta": theta}
  if cfg.rope_scaling == "ntk":
    # NTK-aware scaling is a larger base and nothing else.
    dim = model_lib.head_dim(cfg)
    rope["rope_theta"] = theta * cfg.rope_scaling_factor ** (dim / (dim - 2))
  elif cfg.rope_scaling == "linear":
    rope.update(rope_type="linear", factor=float(cfg.rope_scaling_factor))
  elif cfg.rope_scaling == "yarn":
    rope.update(rope_type="yarn", factor=float(cfg.rope_scaling_factor),
                original_max_position_embeddings=int(cfg.rope_original_max_len))
  legacy_scaling = None if rope["rope_type"] == "default" else {
      k: v for k, v in rope.items() if k != "rope_theta"}
  return {
      "architectures": ["LlamaForCausalLM"],
      "model_type": "llama",
      "vocab_size": int(cfg.vocab_size),
      "hidden_size": int(cfg.d_model),
      "intermediate_size": int(cfg.mlp_dim),
      "num_hidden_layers": int(cfg.n_layers),
      "num_attention_heads": int(cfg.n_heads),
      "num_key_value_heads": int(cfg.n_kv_heads),
      "head_dim": model_lib.head_dim(cfg),
      "hidden_act": "silu",
      "max_position_embeddings": int(cfg.max_seq_len),
      "rms_norm_eps": float(cfg.norm_eps),
      "tie_word_embeddings": bool(cfg.tie_embeddings),
      "attention_bias": False,
      "mlp_bias": False,
      "rope_theta": rope["rope_theta"],
      "rope_scaling": legacy_scaling,
      "rope_parameters": rope,
      "dtype": "float32",
  }


# --------------------------------------------------------------------------- tensors


def _layer_names(i):
  p = f"model.layers.{i}."
  return {
      ("attn", "q_proj"): p + "self_attn.q_proj.weight",
      ("attn", "k_proj"): p + "self_attn.k_proj.weight",
      ("attn", "v_proj"): p + "self_attn.v_proj.weight",
      ("attn", "o_proj"): p + "self_attn.o_proj.weight",
      ("mlp", "gate_proj"): p + "mlp.gate_proj.weight",
      ("mlp", "up_proj"): p + "mlp.up_proj.weight",
      ("mlp", "down_proj"): p + "mlp.down_proj.weight",
      ("attn_norm",): p + "input_layernorm.weight",
      ("mlp_norm",): p + "post_attention_layernorm.weight",
  }


def _hf_shapes(cfg):
  """HF tensor shapes ([out, in] for linear layers) for one layer."""
  d, n, k, h, f = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"], \
      cfg["mlp_dim"]
  return {("attn", "q_proj"): (n * h, d), ("attn", "k_proj"): (k * h, d),
          ("attn", "v_proj"): (k * h, d), ("attn", "o_proj"): (d, n * h),
          ("mlp", "gate_proj"): (f, d), ("mlp", "up_proj"): (f, d),
          ("mlp", "down_proj"): (d, f), ("attn_norm",): (d,), ("mlp_norm",): (d,)}


def _to_jax_layout(key, w, cfg):
  d, n, k, h = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"], cfg["head_dim"]
  if key in (("attn_norm",), ("mlp_norm",)):
    return w
  if key == ("attn", "q_proj"):
    return w.T.reshape(d, n, h)
  if key in (("attn", "k_proj"), ("attn", "v_proj")):
    return w.T.reshape(d, k, h)
  if key == ("attn", "o_proj"):
    return w.T.reshape(n, h, d)
  return w.T


def _to_hf_layout(key, w):
  if key in (("attn_norm",), ("mlp_norm",)):
    return w
  if key == ("attn", "o_proj"):
    return w.reshape(-1, w.shape[-1]).T
  if key[0] == "attn":
    return w.reshape(w.shape[0], -1).T
  return w.T


def _take(state_dict, name, shape, used):
  if name not in state_dict:
    raise ValueError(f"tensor {name} missing from the Hugging Face checkpoint")
  w = np.asarray(state_dict[name], np.float32)
  if tuple(w.shape) != tuple(shape):
    raise ValueError(f"tensor {name} has shape {tuple(w.shape)}, expected {tuple(shape)} "
                     "from config.json")
  used.add(name)
  return w


def _set(tree, path, value):
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def hf_state_dict_to_params(state_dict, hf_config):
  """HF Llama tensors -> (jaxlm params in the scanned layout, model config dict)."""
  cfg = hf_config_to_model_config(hf_config)
  d, v = cfg["d_model"], cfg["vocab_size"]
  used = set()
  params = {"embed": {"embedding": _take(state_dict, "model.embed_tokens.weight", (v, d), used)},
            "final_norm": {"scale": _take(state_dict, "model.norm.weight", (d,), used)}}
  per_layer = []
  for i in range(cfg["n_layers"]):
    layer = {}
    shapes = _hf_shapes(cfg)
    for key, name in _layer_names(i).items():
      leaf = "scale" if key[-1].endswith("norm") else "kernel"
      _set(layer, key + (leaf,), _to_jax_layout(key, _take(state_dict, name, shapes[key], used),
                                                cfg))
    per_layer.append(layer)
  params["layers"] = _stack(per_layer)
  if cfg["tie_embeddings"]:
    if "lm_head.weight" in state_dict:
      head = _take(state_dict, "lm_head.weight", (v, d), used)
      if not np.array_equal(head, params["embed"]["embedding"]):
        raise ValueError("tie_word_embeddings=True but tensor lm_head.weight differs from "
                         "model.embed_tokens.weight")
  else:
    params["lm_head"] = {"kernel": _take(state_dict, "lm_head.weight", (v, d), used).T}
  unknown = sorted(n for n in state_dict
                   if n not in used and not n.endswith(_IGNORED_SUFFIXES))
  if unknown:
    raise ValueError(f"unexpected tensors in the Hugging Face checkpoint (unsupported "
                     f"architecture?): {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
  return params, cfg


def _stack(layers):
  if not layers:
    raise ValueError("config.json has num_hidden_layers=0")
  return jax.tree.map(lambda *xs: np.stack(xs), *layers)


def params_to_hf_state_dict(params, model_config):
  """jaxlm params (scanned or unscanned layout) -> (HF tensors, HF config dict)."""
  hf_config = model_config_to_hf_config(model_config)
  cfg = hf_config_to_model_config(hf_config)
  params = dict(params)
  if "layers" not in params:
    params = model_lib.stack_layers(params)
  state_dict = {"model.embed_tokens.weight": params["embed"]["embedding"],
                "model.norm.weight": params["final_norm"]["scale"]}
  for i in range(cfg["n_layers"]):
    for key, name in _layer_names(i).items():
      leaf = "scale" if key[-1].endswith("norm") else "kernel"
      node = params["layers"]
      for part in key + (leaf,):
        node = node[part]
      state_dict[name] = _to_hf_layout(key, np.asarray(node[i]))
  if not cfg["tie_embeddings"]:
    state_dict["lm_head.weight"] = np.asarray(params["lm_head"]["kernel"]).T
  state_dict = {k: np.ascontiguousarray(np.asarray(v, np.float32))
                for k, v in state_dict.items()}
  expected = _hf_shapes(cfg)
  for i in range(cfg["n_layers"]):
    for key, name in _layer_names(i).items():
      if state_dict[name].shape != expected[key]:
        raise ValueError(f"parameter for {name} has shape {state_dict[name].shape}, "
                         f"expected {expected[key]} from the model config")
  return state_dict, hf_config


def _replace_dir(tmp, out_dir):
  """Moves the finished directory tmp to out_dir, replacing what was there."""
  if os.path.exists(out_dir):
    old = os.path.join(os.path.dirname(out_dir),
                       f".{os.path.basename(out_dir)}.old-{uuid.uuid4().hex[:8]}")
    os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.replace(tmp, out_dir)


def write_hf_checkpoint(out_dir, state_dict, hf_config, tokenizer=None):
  """Writes config.json + model.safetensors into out_dir atomically.

  With `tokenizer` (a jaxlm.data.tokenizer.Tokenizer) also the tokenizer files, the chat
  template and generation_config.json, and config.json gets its BOS / EOS / pad ids.
  """
  from safetensors.numpy import save_file
  out_dir = os.path.abspath(out_dir)
  parent = os.path.dirname(out_dir)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f".{os.path.basename(out_dir)}.tmp-{uuid.uuid4().hex[:8]}")
  os.makedirs(tmp)
  try:
    if tokenizer is not None:
      if tokenizer.vocab_size > int(hf_config["vocab_size"]):
        raise ValueError(f"tokenizer {tokenizer.path} has {tokenizer.vocab_size} pieces but the "
                         f"model only {hf_config['vocab_size']} embeddings: not its tokenizer")
      generation = hf_tokenizer.generation_config(tokenizer)
      hf_config = {**hf_config, "bos_token_id": generation["bos_token_id"],
                   "eos_token_id": tokenizer.eos_id, "pad_token_id": generation["pad_token_id"]}
      hf_tokenizer.write_tokenizer_files(tmp, tokenizer, hf_config["max_position_embeddings"])
      with open(os.path.join(tmp, "generation_config.json"), "w") as f:
        json.dump(generation, f, indent=2)
    with open(os.path.join(tmp, "config.json"), "w") as f:
      json.dump(hf_config, f, indent=2)
    save_file(state_dict, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    _replace_dir(tmp, out_dir)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return out_dir


# --------------------------------------------------------------------------- tokenizer


def _hf_tokenizer(hf_dir, vocab_size, ignore_chat_template=False):
  """The SentencePiece model of an HF directory that jaxlm can use as the model's own.

  Returns (path or None, what was found, in words). Raises ValueError where the directory's
  tokenizer or chat template cannot be jaxlm's (see the module doc).
  """
  from jaxlm.data import tokenizer as tokenizer_lib
  sp_path = os.path.join(hf_dir, "tokenizer.model")
  template = None if ignore_chat_template else hf_tokenizer.read_chat_template(hf_dir)
  escape = ("; pass --ignore_chat_template to import the model anyway (jaxlm then chats "
            "with it and fine-tunes it in jaxlm's format, not the one it was trained in)")
  if not os.path.isfile(sp_path):
    if template:
      raise ValueError(f"{hf_dir} has a chat template but no SentencePiece tokenizer.model: "
                       "jaxlm tokenizes with SentencePiece only, so it cannot render that "
                       f"model's chat format{escape}")
    others = [n for n in ("tokenizer.json", "tokenizer_config.json")
              if os.path.isfile(os.path.join(hf_dir, n))]
    return None, (f"no tokenizer: {hf_dir} has {', '.join(others)} but no SentencePiece "
                  "tokenizer.model, the only kind jaxlm reads; pass --tokenizer when sampling"
                  if others else "no tokenizer")
  tok = tokenizer_lib.load_tokenizer(sp_path)
  if tok.vocab_size > vocab_size:
    raise ValueError(f"{sp_path} has {tok.vocab_size} pieces but the model only {vocab_size} "
                     "embeddings: not the model's tokenizer")
  problems = hf_tokenizer.vocab_problems(hf_dir, tok)
  if problems:
    raise ValueError(f"{hf_dir}: tokenizer.json and tokenizer.model disagree: {problems[0]}")
  if not template:
    return sp_path, "tokenizer.model" + (", chat template ignored" if ignore_chat_template else "")
  problems = hf_tokenizer.chat_template_problems(template, tok,
                                                 hf_tokenizer.read_special_tokens(hf_dir))
  if problems:
    raise ValueError(f"the chat template of {hf_dir} is not jaxlm's chat format "
                     f"(jaxlm/data/chat_format.py): {problems[0]}{escape}")
  return sp_path, "tokenizer.model, chat template = jaxlm's chat format"


# --------------------------------------------------------------------------- CLI


def import_hf(hf_dir, out_dir, overrides=None, ignore_chat_template=False):
  """HF directory -> jaxlm params checkpoint at out_dir (+ its tokenizer.model).

  Returns (model config dict, what tokenizer was imported, in words).
  """
  from jaxlm import checkpoint
  state_dict, hf_config = read_hf_checkpoint(hf_dir)
  params, cfg = hf_state_dict_to_params(state_dict, hf_config)
  cfg = dict(model_lib.model_config({**cfg, **(overrides or {})}))
  sp_path, found = _hf_tokenizer(hf_dir, cfg["vocab_size"], ignore_chat_template)
  out_dir = os.path.abspath(out_dir)
  # Built beside out_dir and renamed into place, so out_dir never lacks its tokenizer.
  tmp = os.path.join(os.path.dirname(out_dir),
                     f".{os.path.basename(out_dir)}.import-{uuid.uuid4().hex[:8]}")
  try:
    checkpoint.save_params(tmp, params, cfg)
    if sp_path:
      # Where jaxlm.sample.find_tokenizer looks first.
      shutil.copyfile(sp_path, os.path.join(tmp, "tokenizer.model"))
    _replace_dir(tmp, out_dir)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
  return cfg, found


def export_hf(ckpt_dir, out_dir, tokenizer=""):
  """jaxlm params checkpoint -> HF directory (weights, config and the tokenizer files).

  `tokenizer`: a SentencePiece model; "" = the one recorded with the checkpoint (found as
  jaxlm.sample finds it; without one the weights are exported alone); "none" = weights only.
  Returns (out_dir, the tokenizer path or None).
  """
  from jaxlm import checkpoint
  from jaxlm import sample
  from jaxlm.data import tokenizer as tokenizer_lib
  params, cfg = checkpoint.load_params(ckpt_dir)
  tok = None
  if tokenizer != "none":
    try:
      path = sample.find_tokenizer(ckpt_dir, tokenizer)
    except FileNotFoundError as e:
      if tokenizer:
        raise
      logging.warning("exporting the weights without a tokenizer: %s", e)
    else:
      tok = tokenizer_lib.load_tokenizer(path)
      hf_tokenizer.check_exportable(tok.path)
  state_dict, hf_config = params_to_hf_state_dict(params, cfg)
  return write_hf_checkpoint(out_dir, state_dict, hf_config, tok), tok.path if tok else None


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m jaxlm.convert",
                                   description=__doc__.split("\n\n")[0])
  direction = parser.add_mutually_exclusive_group(required=True)
  direction.add_argument("--from_hf", help="Hugging Face Llama directory to import")
  direction.add_argument("--to_hf", help="jaxlm params checkpoint to export")
  parser.add_argument("--out", required=True, help="output directory")
  parser.add_argument("--tokenizer", default="",
                      help="--to_hf: SentencePiece model to export (default: the one recorded "
                           "with the checkpoint; 'none': weights only)")
  parser.add_argument("--ignore_chat_template", action="store_true",
                      help="--from_hf: import a model whose chat template is not jaxlm's chat "
                           "format (it is then used in jaxlm's)")
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  try:
    if args.from_hf:
      cfg, found = import_hf(args.from_hf, args.out,
                             ignore_chat_template=args.ignore_chat_template)
      print(f"wrote jaxlm checkpoint {args.out} ({cfg['n_layers']} layers, "
            f"d_model {cfg['d_model']}, vocab {cfg['vocab_size']}, compute "
            f"{cfg['compute_dtype']}; {found})")
    else:
      _, tok_path = export_hf(args.to_hf, args.out, args.tokenizer)
      print(f"wrote Hugging Face model {args.out} "
            f"({'tokenizer ' + tok_path if tok_path else 'no tokenizer'})")
  except (ValueError, FileNotFoundError) as e:
    raise SystemExit(f"error: {e}")


if __name__ == "__main__":
  main()
