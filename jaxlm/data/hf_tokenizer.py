"""The project's tokenizer and chat format as Hugging Face files.

`python -m jaxlm.convert --to_hf` writes these beside the weights, so that
`AutoTokenizer.from_pretrained(HF_DIR)` encodes as `jaxlm.data.tokenizer` does and
`apply_chat_template` renders what `chat_format` renders:

  tokenizer.model          the SentencePiece model itself, byte for byte
  tokenizer.json           the same BPE for the `tokenizers` library (what transformers runs)
  tokenizer_config.json    special tokens, add_bos_token, and `chat_template`: Jinja generated
                           here from chat_format's constants, so the format lives in one place
  special_tokens_map.json  the special tokens again, for older readers
  generation_config.json   stop ids: EOS and the end-of-turn marker, where jaxlm.chat stops

Why tokenizer.json encodes exactly as SentencePiece: SentencePiece BPE encodes by merging,
again and again, the adjacent pair whose concatenation is the highest-scoring piece. A
`tokenizers` BPE whose merges are every split of every normal piece into two normal pieces,
ranked by the piece's score, does the same. The user-defined pieces (the chat markers) are
added tokens, cut out before the BPE as SentencePiece's prefix matcher does; byte fallback is
the same; and with the settings `data_pipeline.tokenizer` trains with (no dummy prefix,
identity normalization, no whitespace squashing) the only normalization is " " -> "▁".
Models with other settings are refused with the setting named (`check_exportable`).

`tokenizer(text)` adds BOS, as jaxlm.sample does for a text prompt;
`encode(text, add_special_tokens=False)` is `jaxlm.data.tokenizer.Tokenizer.encode(text)`.
One difference remains, the one every HF Llama tokenizer has: the text of a control piece
(`<s>`, `</s>`, `<pad>`, `<unk>`) typed inside a text is that special token for Hugging Face
and plain characters for SentencePiece (`split_special_tokens=True`, or
`apply_chat_template(..., sanitize_control_tokens=True)`, gives SentencePiece's ids there too).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Sequence

from jaxlm.data import chat_format

# sentencepiece_model.proto piece types.
_NORMAL, _UNKNOWN, _CONTROL, _USER_DEFINED, _UNUSED, _BYTE = 1, 2, 3, 4, 5, 6
_BPE = 2

# Markers that end or open a turn are special (decode(skip_special_tokens=True) drops them);
# the tool markers are not, so a parser reading decoded text still sees the calls.
SPECIAL_MARKERS = (chat_format.SYSTEM, chat_format.USER, chat_format.ASSISTANT, chat_format.TOOL,
                   chat_format.END_OF_TURN)

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json")


# --------------------------------------------------------------------------- tokenizer.json


def _model_proto(path: str):
  from sentencepiece import sentencepiece_model_pb2  # pylint: disable=import-outside-toplevel
  proto = sentencepiece_model_pb2.ModelProto()
  with open(path, "rb") as f:
    try:
      proto.ParseFromString(f.read())
    except Exception as e:  # protobuf's DecodeError has no stable import path
      raise ValueError(f"{path} is not a SentencePiece model: {e}") from None
  return proto


def check_exportable(path: str) -> None:
  """Raises ValueError naming each setting of the model that tokenizer.json cannot mirror."""
  proto = _model_proto(path)
  spec, norm = proto.trainer_spec, proto.normalizer_spec
  problems = []
  if spec.model_type != _BPE:
    problems.append(f"model_type {spec.model_type} (only BPE, 2)")
  if not spec.byte_fallback:
    problems.append("byte_fallback=False")
  if norm.add_dummy_prefix:
    problems.append("add_dummy_prefix=True")
  if norm.remove_extra_whitespaces:
    problems.append("remove_extra_whitespaces=True")
  if norm.precompiled_charsmap:
    problems.append(f"normalization rule {norm.name!r} (only identity)")
  if not norm.escape_whitespaces or spec.treat_whitespace_as_suffix:
    problems.append("whitespace not escaped as a '▁' prefix")
  if any(p.type == _UNUSED for p in proto.pieces):
    problems.append("unused pieces")
  if problems:
    raise ValueError(
        f"tokenizer {path} cannot be exported to Hugging Face exactly: {', '.join(problems)}. "
        "The export mirrors the tokenizers python -m data_pipeline.tokenizer trains (BPE, byte "
        "fallback, no dummy prefix, identity normalization); pass --tokenizer=none to export "
        "the weights alone")


def _added_token(i: int, piece: str, special: bool) -> dict:
  return {"id": i, "content": piece, "single_word": False, "lstrip": False, "rstrip": False,
          "normalized": False, "special": special}


def tokenizer_json(path: str) -> dict:
  """The `tokenizers` serialization of the SentencePiece model at `path` (see module doc)."""
  check_exportable(path)
  proto = _model_proto(path)
  pieces = proto.pieces
  normal = {p.piece: (p.score, i) for i, p in enumerate(pieces) if p.type == _NORMAL}
  ranked = []
  for piece, (score, i) in normal.items():
    for cut in range(1, len(piece)):
      left, right = piece[:cut], piece[cut:]
      if left in normal and right in normal:
        ranked.append((-score, i, left, right))
  added = [_added_token(i, p.piece, p.type != _USER_DEFINED or p.piece in SPECIAL_MARKERS)
           for i, p in enumerate(pieces) if p.type in (_CONTROL, _UNKNOWN, _USER_DEFINED)]
  spec = proto.trainer_spec
  bos = pieces[spec.bos_id].piece if spec.bos_id >= 0 else None
  post = None
  if bos is not None:  # tokenizer(text) starts with BOS, like jaxlm.sample's text prompts
    post = {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos, "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": bos, "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos: {"id": bos, "ids": [spec.bos_id], "tokens": [bos]}}}
  return {
      "version": "1.0",
      "truncation": None,
      "padding": None,
      "added_tokens": added,
      "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
      "pre_tokenizer": None,
      "post_processor": post,
      "decoder": {"type": "Sequence", "decoders": [
          {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
          {"type": "ByteFallback"},
          {"type": "Fuse"}]},
      "model": {"type": "BPE", "dropout": None, "unk_token": spec.unk_piece or "<unk>",
                "continuing_subword_prefix": None, "end_of_word_suffix": None,
                "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                "vocab": {p.piece: i for i, p in enumerate(pieces)},
                "merges": [[left, right] for _, _, left, right in sorted(ranked)]},
  }


# --------------------------------------------------------------------------- chat template


def _lit(text: str) -> str:
  """A Jinja string literal for one of chat_format's markers."""
  if any(c in text for c in "\"\\\n{}%#"):
    raise ValueError(f"marker {text!r} cannot be quoted in the chat template")
  return f'"{text}"'


def chat_template() -> str:
  """Jinja that renders what chat_format renders, for transformers' apply_chat_template.

  Without add_generation_prompt it is `encode_conversation`'s document (BOS, the turns, EOS);
  with it, `encode_prompt` (BOS, the turns, the assistant marker). Tools and tool calls may
  also come in the OpenAI/transformers shape ({"type": "function", "function": {...}}), which
  the SFT builders unwrap the same way. JSON is transformers' `tojson`, i.e. json.dumps with
  ensure_ascii=False, default separators and key order kept: chat_format's own json.dumps.
  """
  c = chat_format
  headers = ", ".join(f"{_lit(role)}: {_lit(marker)}" for role, marker in c.ROLE_HEADERS.items()
                      if role != "assistant")
  lines = [
      "{{- bos_token -}}",
      "{%- set ns = namespace(tools='') -%}",
      "{%- for tool in (tools or []) -%}",
      "  {%- set fn = tool.function if (tool.type is defined and tool.type == 'function'"
      " and tool.function is mapping) else tool -%}",
      "  {%- set ns.tools = ns.tools ~ (', ' if not loop.first else '') ~ (fn | tojson) -%}",
      "{%- endfor -%}",
      "{%- if tools -%}",
      f"  {{%- set ns.tools = {_lit(c.TOOLS_OPEN)} ~ '[' ~ ns.tools ~ ']' ~ "
      f"{_lit(c.TOOLS_CLOSE)} -%}}",
      "{%- endif -%}",
      "{%- if ns.tools and not (messages and messages[0].role == 'system') -%}",
      f"  {{{{- {_lit(c.SYSTEM)} ~ ns.tools ~ {_lit(c.END_OF_TURN)} -}}}}",
      "{%- endif -%}",
      "{%- for message in messages -%}",
      "  {%- set content = message.content if message.content else '' -%}",
      "  {%- if loop.first and message.role == 'system' and ns.tools -%}",
      "    {%- set content = (content ~ '\\n' if content else '') ~ ns.tools -%}",
      "  {%- endif -%}",
      "  {%- if message.role == 'assistant' -%}",
      f"    {{{{- {_lit(c.ASSISTANT)} ~ content -}}}}",
      "    {%- for call in (message.tool_calls or []) -%}",
      "      {%- set fn = call.function if call.function is defined else call -%}",
      "      {%- set args = fn.arguments if fn.arguments is defined else {} -%}",
      f"      {{{{- {_lit(c.TOOL_CALL_OPEN)} ~ '{{\"name\": ' ~ (fn.name | tojson) ~ "
      f"', \"arguments\": ' ~ (args if args is string else args | tojson) ~ '}}' ~ "
      f"{_lit(c.TOOL_CALL_CLOSE)} -}}}}",
      "    {%- endfor -%}",
      f"    {{{{- {_lit(c.END_OF_TURN)} -}}}}",
      f"  {{%- elif message.role in {{{headers}}} -%}}",
      f"    {{{{- {{{headers}}}[message.role] ~ content ~ {_lit(c.END_OF_TURN)} -}}}}",
      "  {%- else -%}",
      "    {{- raise_exception('unknown role ' ~ message.role ~ '; roles are "
      + ", ".join(sorted(c.ROLE_HEADERS)) + "') -}}",
      "  {%- endif -%}",
      "{%- endfor -%}",
      "{%- if add_generation_prompt -%}",
      f"  {{{{- {_lit(c.ASSISTANT)} -}}}}",
      "{%- else -%}",
      "  {{- eos_token -}}",
      "{%- endif -%}",
  ]
  return "\n".join(lines)


def render_chat_template(template: str, messages: Sequence[dict],
                         tools: Sequence[dict] | None = None, add_generation_prompt: bool = False,
                         **tokens: str) -> str:
  """Renders a chat template in the environment transformers gives it (needs jinja2)."""
  import jinja2  # pylint: disable=import-outside-toplevel
  from jinja2 import ext, sandbox  # pylint: disable=import-outside-toplevel

  def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)

  def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)

  env = sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                              extensions=[ext.loopcontrols])
  env.filters["tojson"] = tojson
  env.globals["raise_exception"] = raise_exception
  # transformers drops keys whose value is None before rendering.
  messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
  return env.from_string(template).render(messages=messages, tools=tools,
                                          add_generation_prompt=add_generation_prompt,
                                          **tokens)


# --------------------------------------------------------------------------- the files


def special_tokens(tokenizer) -> dict[str, str]:
  """bos/eos/unk/pad pieces of a jaxlm.data.tokenizer.Tokenizer."""
  sp = tokenizer.sp
  out = {"bos_token": sp.IdToPiece(tokenizer.bos_id), "eos_token": sp.IdToPiece(tokenizer.eos_id),
         "pad_token": sp.IdToPiece(tokenizer.pad_id)}
  if sp.unk_id() >= 0:
    out["unk_token"] = sp.IdToPiece(sp.unk_id())
  return out


def tokenizer_config(tokenizer, model_max_length: int) -> dict:
  """tokenizer_config.json: the class, special tokens, BOS behaviour and the chat template."""
  config: dict[str, Any] = {
      # The generic fast tokenizer loads tokenizer.json as written (transformers 4 and 5);
      # a model class such as LlamaTokenizer would rebuild its own pipeline instead.
      "tokenizer_class": "PreTrainedTokenizerFast",
      **special_tokens(tokenizer),
      "add_bos_token": True,
      "add_eos_token": False,
      "clean_up_tokenization_spaces": False,
      "model_max_length": int(model_max_length),
      "padding_side": "left",  # batched generation, as jaxlm.sample pads
  }
  if tokenizer.has_chat_tokens:
    config["additional_special_tokens"] = list(SPECIAL_MARKERS)
    config["chat_template"] = chat_template()
  return config


def stop_ids(tokenizer) -> list[int]:
  """EOS and the end-of-turn marker: where jaxlm.sample.chat_stop_ids stops."""
  stops = [tokenizer.eos_id]
  if tokenizer.has_chat_tokens:
    stops.append(tokenizer.special_id(chat_format.END_OF_TURN))
  return stops


def generation_config(tokenizer) -> dict:
  return {"bos_token_id": tokenizer.bos_id, "eos_token_id": stop_ids(tokenizer),
          "pad_token_id": tokenizer.pad_id}


def write_tokenizer_files(out_dir: str, tokenizer, model_max_length: int) -> list[str]:
  """Writes TOKENIZER_FILES into out_dir; returns their names."""
  config = tokenizer_config(tokenizer, model_max_length)
  shutil.copyfile(tokenizer.path, os.path.join(out_dir, "tokenizer.model"))
  files = {"tokenizer.json": tokenizer_json(tokenizer.path),
           "tokenizer_config.json": config,
           "special_tokens_map.json": {
               k: v for k, v in config.items()
               if k.endswith("_token") or k == "additional_special_tokens"}}
  for name, obj in files.items():
    with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
      json.dump(obj, f, indent=2, ensure_ascii=False)
      f.write("\n")
  return list(TOKENIZER_FILES)


# --------------------------------------------------------------------------- reading back

# Conversations a foreign chat template must render as chat_format does to count as the same
# format: every role, tools in a system turn and in a new one, calls with and without text,
# a tool result, non-ASCII text, and both ends (document and generation prompt).
_TOOLS = [{"name": "get_weather", "description": "Weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}},
          {"name": "add", "description": "", "parameters": {"type": "object", "properties": {
              "a": {"type": "number"}, "b": {"type": "number"}}}}]
PROBES: list[tuple[list[dict], list[dict] | None]] = [
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}], None),
    ([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
      {"role": "assistant", "content": "4"}, {"role": "user", "content": "Grüße, 日本"}], None),
    ([{"role": "system", "content": "You call tools."},
      {"role": "user", "content": "Weather in Oslo?"},
      {"role": "assistant", "content": "",
       "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
      {"role": "tool", "content": "{\"temp_c\": 3}"},
      {"role": "assistant", "content": "It is 3 °C."}], _TOOLS),
    ([{"role": "user", "content": "Add 2 and 3, then 4 and 5."},
      {"role": "assistant", "content": "Adding.",
       "tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 3}},
                      {"name": "add", "arguments": {"b": 5, "a": 4}}]}], _TOOLS),
]


def chat_template_problems(template: str, tokenizer, special: dict[str, str] | None = None
                           ) -> list[str]:
  """Why `template` is not chat_format's format for `tokenizer` (empty list: it is)."""
  if not tokenizer.has_chat_tokens:
    return [f"the SentencePiece model lacks chat_format's markers {chat_format.SPECIAL_TOKENS} "
            "as single pieces"]
  if template == chat_template():
    return []
  ours = special_tokens(tokenizer)
  special = {**ours, **(special or {})}
  for messages, tools in PROBES:
    roles = [m["role"] for m in messages]
    for prompt in (False, True):
      want = ours["bos_token"] + (chat_format.generation_prompt(messages, tools) if prompt else
                                  chat_format.render_text(messages, tools) + ours["eos_token"])
      try:
        got = render_chat_template(template, messages, tools, prompt, **special)
      except ImportError:
        return ["it differs from jaxlm's template and checking how it renders needs jinja2"]
      except Exception as e:  # pylint: disable=broad-except  # a foreign template fails any way
        return [f"it fails to render a {roles} conversation: {type(e).__name__}: {e}"]
      if got != want:
        at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b),
                  min(len(got), len(want)))
        return [f"for a {roles} conversation{' with tools' if tools else ''} "
                f"(add_generation_prompt={prompt}) it renders {got[max(0, at - 20):at + 40]!r} "
                f"where jaxlm renders {want[max(0, at - 20):at + 40]!r}"]
  return []


def read_chat_template(hf_dir: str) -> str | None:
  """The chat template of an HF directory (chat_template.jinja, .json or tokenizer_config)."""
  path = os.path.join(hf_dir, "chat_template.jinja")
  if os.path.isfile(path):
    with open(path, encoding="utf-8") as f:
      return f.read()
  for name in ("chat_template.json", "tokenizer_config.json"):
    path = os.path.join(hf_dir, name)
    if os.path.isfile(path):
      with open(path, encoding="utf-8") as f:
        try:
          template = json.load(f).get("chat_template")
        except (json.JSONDecodeError, AttributeError) as e:
          raise ValueError(f"{path} is not a JSON object: {e}") from None
      if isinstance(template, list):  # named templates: the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"),
                        None)
      if template:
        return template
  return None


def read_special_tokens(hf_dir: str) -> dict[str, str]:
  """bos/eos/... token strings declared in tokenizer_config.json (or special_tokens_map)."""
  out = {}
  for name in ("special_tokens_map.json", "tokenizer_config.json"):
    path = os.path.join(hf_dir, name)
    if os.path.isfile(path):
      with open(path, encoding="utf-8") as f:
        data = json.load(f)
      for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = data.get(key)
        if isinstance(value, dict):
          value = value.get("content")
        if isinstance(value, str):
          out[key] = value
  return out


def vocab_problems(hf_dir: str, tokenizer) -> list[str]:
  """Ids in HF_DIR/tokenizer.json that disagree with the SentencePiece model's (markers, BOS...)."""
  path = os.path.join(hf_dir, "tokenizer.json")
  if not os.path.isfile(path):
    return []
  with open(path, encoding="utf-8") as f:
    data = json.load(f)
  vocab = (data.get("model") or {}).get("vocab")
  ids = dict(vocab) if isinstance(vocab, dict) else {}  # a Unigram vocab is a list: no ids
  ids.update({t["content"]: t["id"] for t in data.get("added_tokens") or []})
  sp = tokenizer.sp
  pieces = list(special_tokens(tokenizer).values()) + [
      p for p in chat_format.SPECIAL_TOKENS if sp.PieceToId(p) != sp.unk_id()]
  return [f"{path} gives {p!r} id {ids[p]}, tokenizer.model gives {sp.PieceToId(p)}"
          for p in pieces if p in ids and ids[p] != sp.PieceToId(p)]
