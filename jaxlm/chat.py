r"""Interactive multi-turn chat with a checkpoint, in the project's chat template.

  python -m jaxlm.chat --checkpoint models/phase3_final [--tools_file tools.json] \
      [--system "You are a helpful assistant."] [--temperature 0.7 --top_p 0.9]

Type a message and press enter. Commands:
  /system TEXT   set the system prompt (the conversation so far is kept)
  /tools FILE    offer the function schemas in FILE (a JSON list) to the model
  /tool JSON     give the result of the model's last tool call; the model then continues
  /reset         forget the conversation (system prompt and tools stay)
  /history       print the conversation as the model sees it
  /help          this list
  /quit          leave (end of input does the same)

Tool calls the model writes are shown with their arguments and whether they validate
against the offered schemas (jaxlm.data.chat_format.validate_tool_call). When the
conversation no longer fits the model's context, the oldest turns are dropped.
Reads stdin line by line, so it can be scripted:  printf 'hi\n/quit\n' | python -m jaxlm.chat ...
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, Sequence, TextIO


from jaxlm.data import chat_format

HELP = __doc__.split("Type a message")[1].split("Tool calls the model")[0]


class ChatSession:
  """A conversation: the messages so far, the system prompt and the offered tools.

  `generate_fn(prompt_ids, max_new_tokens) -> new ids` is the model (stops at end of turn).
  """

  def __init__(self, tokenizer, generate_fn: Callable[[list[int], int], list[int]],
               max_len: int, max_new_tokens: int = 256, system: str = "",
               tools: Sequence[dict] | None = None):
    self.tokenizer, self.generate_fn = tokenizer, generate_fn
    self.max_len, self.max_new_tokens = max_len, max_new_tokens
    self.system, self.tools = system, list(tools or [])
    self.history: list[dict[str, Any]] = []

  def messages(self) -> list[dict[str, Any]]:
    head = [{"role": "system", "content": self.system}] if self.system else []
    return head + self.history

  def prompt_ids(self) -> list[int]:
    """The prompt for the next assistant turn; drops the oldest turns until it fits."""
    history = list(self.history)
    while True:
      head = [{"role": "system", "content": self.system}] if self.system else []
      ids = chat_format.encode_prompt(self.tokenizer, head + history, self.tools or None)
      if len(ids) + self.max_new_tokens <= self.max_len:
        self.history = history
        return ids
      # Drop the oldest turn: everything up to the next user message.
      later_users = [i for i, m in enumerate(history) if m["role"] == "user" and i > 0]
      if not later_users:
        raise ValueError(f"the message is too long: {len(ids)} prompt tokens + "
                         f"{self.max_new_tokens} new tokens exceed the model's context of "
                         f"{self.max_len}")
      history = history[later_users[0]:]

  def respond(self) -> dict[str, Any]:
    """Generates the assistant turn, records it, returns {"content", "calls": [...]}."""
    try:
      ids = self.prompt_ids()
    except ValueError:
      self.history.pop()  # the message that did not fit
      raise
    text = self.tokenizer.decode(self.generate_fn(ids, self.max_new_tokens))
    parsed = chat_format.parse_assistant_output(text)
    calls = []
    for payload in parsed["tool_calls"]:
      call = {"payload": payload, "problems": chat_format.validate_tool_call(payload, self.tools)}
      try:
        call["name"], call["arguments"] = chat_format.parse_tool_call(payload)
      except chat_format.ChatFormatError:
        pass
      calls.append(call)
    if calls and all("name" in c for c in calls):
      self.history.append({"role": "assistant", "content": parsed["content"],
                           "tool_calls": [{"name": c["name"], "arguments": c["arguments"]}
                                          for c in calls]})
    else:
      # Keep what the model wrote verbatim, so the next prompt shows it its own output.
      self.history.append({"role": "assistant",
                           "content": text.split(chat_format.END_OF_TURN, 1)[0]})
    return {"content": parsed["content"], "calls": calls}

  def user(self, text: str) -> dict[str, Any]:
    self.history.append({"role": "user", "content": text})
    return self.respond()

  def tool_result(self, result: str) -> dict[str, Any]:
    if not self.history or not self.history[-1].get("tool_calls"):
      raise ValueError("/tool answers a tool call, but the model's last turn made none")
    self.history.append({"role": "tool", "content": result})
    return self.respond()

  def reset(self) -> None:
    self.history = []


def load_tools(path: str) -> list[dict]:
  try:
    with open(path, encoding="utf-8") as f:
      tools = json.load(f)
  except FileNotFoundError:
    raise FileNotFoundError(f"tools file {path} does not exist") from None
  except json.JSONDecodeError as e:
    raise ValueError(f"tools file {path} is not valid JSON: {e}") from None
  if not isinstance(tools, list) or not all(isinstance(t, dict) and "name" in t for t in tools):
    raise ValueError(f"tools file {path} must hold a JSON list of objects with a 'name'")
  return tools


def _show(reply: dict[str, Any], out: TextIO) -> None:
  if reply["content"] or not reply["calls"]:
    print(f"assistant> {reply['content']}", file=out)
  for call in reply["calls"]:
    shown = (f"{call['name']}({json.dumps(call['arguments'], ensure_ascii=False)})"
             if "name" in call else call["payload"])
    verdict = "valid" if not call["problems"] else "invalid: " + "; ".join(call["problems"])
    print(f"tool call> {shown}  [{verdict}]", file=out)
  if any(not c["problems"] for c in reply["calls"]):
    print("(answer with /tool {json result})", file=out)


def run(session: ChatSession, lines: TextIO, out: TextIO, interactive: bool = False) -> None:
  """The read-eval-print loop over `lines` (stdin)."""
  while True:
    if interactive:
      print("you> ", end="", file=out, flush=True)
    line = lines.readline()
    if not line:
      print("bye", file=out)
      return
    line = line.strip()
    if not line:
      continue
    command, _, arg = line.partition(" ")
    try:
      if command == "/quit":
        print("bye", file=out)
        return
      elif command == "/help":
        print(HELP.strip("\n"), file=out)
      elif command == "/reset":
        session.reset()
        print("(conversation reset)", file=out)
      elif command == "/system":
        session.system = arg.strip()
        print(f"(system prompt set: {session.system!r})", file=out)
      elif command == "/tools":
        session.tools = load_tools(arg.strip())
        print(f"(tools offered: {', '.join(t['name'] for t in session.tools)})", file=out)
      elif command == "/history":
        print(chat_format.render_text(session.messages(), session.tools or None), file=out)
      elif command == "/tool":
        try:
          json.loads(arg)
        except json.JSONDecodeError as e:
          raise ValueError(f"/tool wants a JSON result: {e}") from None
        _show(session.tool_result(arg.strip()), out)
      elif command.startswith("/"):
        print(f"(unknown command {command}; /help lists them)", file=out)
      else:
        _show(session.user(line), out)
    except (ValueError, FileNotFoundError) as e:
      print(f"error: {e}", file=out)
    out.flush()


def parse_args(argv=None) -> argparse.Namespace:
  from jaxlm import sample  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(prog="python -m jaxlm.chat",
                                   description=__doc__.split("\n\n")[0])
  sample.add_model_args(parser)
  parser.add_argument("--system", default="", help="initial system prompt")
  parser.add_argument("--tools_file", default="", help="JSON list of function schemas to offer")
  sample.add_sampling_args(parser, max_new_tokens=256)
  # A conversation samples by default (each turn draws a new seed from --seed).
  parser.set_defaults(temperature=0.7, top_p=0.9)
  return parser.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  from jaxlm.data import tokenizer as tokenizer_lib  # pylint: disable=import-outside-toplevel
  from jaxlm import sample  # pylint: disable=import-outside-toplevel
  try:
    tools = load_tools(args.tools_file) if args.tools_file else []
    tokenizer = tokenizer_lib.load_tokenizer(
        sample.find_tokenizer(args.checkpoint, args.tokenizer))
    if not tokenizer.has_chat_tokens:
      raise ValueError(f"tokenizer {tokenizer.path} lacks the chat markers "
                       f"{chat_format.SPECIAL_TOKENS}; chat needs a project tokenizer")
    params, config = sample.load_model(args.checkpoint, args.compute_dtype)
  except (ValueError, FileNotFoundError, KeyError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  stops = sample.chat_stop_ids(tokenizer)
  sampling = sample.sampling_kwargs(args)
  max_new_tokens = sampling.pop("max_new_tokens")
  turn = [0]

  def generate_fn(ids, max_new_tokens):
    turn[0] += 1
    return sample.generate(params, config, [ids], max_new_tokens, stop_ids=stops,
                           **{**sampling, "seed": args.seed * 100_003 + turn[0]})[0]

  session = ChatSession(tokenizer, generate_fn, int(config.max_seq_len), max_new_tokens,
                        args.system, tools)
  interactive = sys.stdin.isatty()
  if interactive:
    print("Chat with the model; /help lists commands.")
  run(session, sys.stdin, sys.stdout, interactive)


if __name__ == "__main__":
  main()
