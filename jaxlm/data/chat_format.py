"""The chat and tool-call format. The only module that knows what a conversation looks like.

A conversation is a list of messages, `{"role": system|user|assistant|tool, "content": str}`;
assistant messages may carry `"tool_calls": [{"name": str, "arguments": dict}]`. Tools are
JSON-Schema function descriptions `{"name", "description", "parameters"}`.

Rendered text (one document, `<s>` ... `</s>` added by the encoder):

  <|system|>You are a helpful assistant.
  <tools>[{"name": "get_weather", ...}]</tools><|end|>
  <|user|>Weather in Oslo?<|end|>
  <|assistant|><tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}</tool_call><|end|>
  <|tool|>{"temp_c": 3}<|end|>
  <|assistant|>It is 3 °C in Oslo.<|end|>

Loss is taken on what the assistant writes (its content, its calls and its `<|end|>`), never on
the role headers, system, user or tool turns.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

SYSTEM, USER, ASSISTANT, TOOL = "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"
END_OF_TURN = "<|end|>"
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
TOOLS_OPEN, TOOLS_CLOSE = "<tools>", "</tools>"

ROLE_HEADERS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT, "tool": TOOL}
# Reserved as single tokens in every tokenizer the project trains.
SPECIAL_TOKENS = [SYSTEM, USER, ASSISTANT, TOOL, END_OF_TURN, TOOL_CALL_OPEN, TOOL_CALL_CLOSE,
                  TOOLS_OPEN, TOOLS_CLOSE]


class ChatFormatError(ValueError):
  pass


def format_tool_call(name: str, arguments: dict) -> str:
  return f"{TOOL_CALL_OPEN}{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}{TOOL_CALL_CLOSE}"


def render_conversation(messages: Sequence[dict], tools: Sequence[dict] | None = None
                        ) -> list[tuple[str, bool]]:
  """Returns the conversation as (text, is_trained) pieces, in order."""
  pieces: list[tuple[str, bool]] = []
  messages = list(messages)
  if tools:
    tools_text = f"{TOOLS_OPEN}{json.dumps(list(tools), ensure_ascii=False)}{TOOLS_CLOSE}"
    if messages and messages[0]["role"] == "system":
      first = dict(messages[0])
      first["content"] = (first["content"] + "\n" if first["content"] else "") + tools_text
      messages[0] = first
    else:
      messages.insert(0, {"role": "system", "content": tools_text})
  for m in messages:
    role = m.get("role")
    if role not in ROLE_HEADERS:
      raise ChatFormatError(f"unknown role {role!r}; roles are {sorted(ROLE_HEADERS)}")
    content = m.get("content") or ""
    if role == "assistant":
      body = content + "".join(format_tool_call(c["name"], c["arguments"])
                               for c in m.get("tool_calls") or [])
      pieces.append((ASSISTANT, False))
      pieces.append((body + END_OF_TURN, True))
    else:
      pieces.append((ROLE_HEADERS[role] + content + END_OF_TURN, False))
  return pieces


def render_text(messages: Sequence[dict], tools: Sequence[dict] | None = None) -> str:
  return "".join(text for text, _ in render_conversation(messages, tools))


def generation_prompt(messages: Sequence[dict], tools: Sequence[dict] | None = None) -> str:
  """The text a model continues to write the next assistant turn."""
  return render_text(messages, tools) + ASSISTANT


def encode_conversation(tokenizer, messages: Sequence[dict], tools: Sequence[dict] | None = None,
                        trained_weight: int = 1) -> tuple[list[int], list[int]]:
  """Token ids (with BOS/EOS) and per-token loss weights (assistant spans only)."""
  ids, weights = [tokenizer.bos_id], [0]
  for text, trained in render_conversation(messages, tools):
    piece = tokenizer.encode(text)
    ids.extend(piece)
    weights.extend([trained_weight if trained else 0] * len(piece))
  ids.append(tokenizer.eos_id)
  weights.append(0)
  return ids, weights


def encode_prompt(tokenizer, messages, tools=None) -> list[int]:
  ids = [tokenizer.bos_id]
  for text, _ in render_conversation(messages, tools):
    ids.extend(tokenizer.encode(text))
  ids.extend(tokenizer.encode(ASSISTANT))
  return ids


def parse_assistant_output(text: str) -> dict[str, Any]:
  """Splits generated assistant text into content and tool calls (raw payload strings).

  Generation stops at `<|end|>`; anything after it is ignored.
  """
  text = text.split(END_OF_TURN, 1)[0]
  content, calls = [], []
  rest = text
  while TOOL_CALL_OPEN in rest:
    before, after = rest.split(TOOL_CALL_OPEN, 1)
    content.append(before)
    if TOOL_CALL_CLOSE not in after:
      calls.append(after)  # unterminated: kept so validation can report it
      rest = ""
      break
    payload, rest = after.split(TOOL_CALL_CLOSE, 1)
    calls.append(payload)
  content.append(rest)
  return {"content": "".join(content).strip(), "tool_calls": calls}


def parse_tool_call(payload: str) -> tuple[str, dict]:
  """Parses one `<tool_call>` payload into (name, arguments); raises ChatFormatError."""
  try:
    obj = json.loads(payload)
  except json.JSONDecodeError as e:
    raise ChatFormatError(f"tool call is not valid JSON: {e}") from None
  if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
    raise ChatFormatError("tool call must be an object with a string 'name'")
  args = obj.get("arguments", {})
  if not isinstance(args, dict):
    raise ChatFormatError("tool call 'arguments' must be an object")
  return obj["name"], args


# What is wrong with a call, from the outside in: the payload is not a call object at all, it
# names a function that was not offered, or its arguments break that function's schema.
TOOL_CALL_KINDS = ("valid", "bad_arguments", "unknown_function", "malformed")


def check_tool_call(payload: str, tools: Sequence[dict]) -> tuple[str, list[str]]:
  """(kind, problems) of one call against the offered tools: kind is one of TOOL_CALL_KINDS;
  problems is empty exactly when kind is "valid"."""
  import jsonschema  # pylint: disable=import-outside-toplevel
  try:
    name, args = parse_tool_call(payload)
  except ChatFormatError as e:
    return "malformed", [str(e)]
  by_name = {t["name"]: t for t in tools}
  if name not in by_name:
    return "unknown_function", [f"unknown function {name!r}; offered: {sorted(by_name)}"]
  schema = by_name[name].get("parameters") or {"type": "object"}
  try:
    validator = jsonschema.Draft202012Validator(schema)
    problems = [f"{name}: {e.message}" for e in validator.iter_errors(args)]
  except (jsonschema.exceptions.SchemaError, jsonschema.exceptions.UnknownType) as e:
    # The offered schema itself is broken (public sets have "type": "float" and the like).
    problems = [f"{name}: the tool's parameter schema is invalid ({str(e).splitlines()[0]})"]
  return ("bad_arguments" if problems else "valid"), problems


def validate_tool_call(payload: str, tools: Sequence[dict]) -> list[str]:
  """Problems with a call against the offered tools; an empty list means the call is valid."""
  return check_tool_call(payload, tools)[1]
