"""Real text found on every machine: the Python standard library's docstrings, comments and code.

The long-context builder needs filler that is real language and real code (a model learns
nothing useful from random tokens, and random tokens make retrieval trivially salient), and it
must build offline. The stdlib (`sysconfig.get_paths()['stdlib']`) is always there:
  prose     docstrings and comment blocks (English technical text)
  code      whole top-level functions and classes
  functions public functions/methods with their parameter list and docstring first line,
            for "definition far before use" tasks.
Files are visited in a seeded shuffled order until `max_chars` of source have been read, so a
small cap still samples many modules. Test suites and third-party packages are left out.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import os
import random
import sysconfig
import textwrap
import tokenize

EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__", "test", "tests",
                           "idle_test", "lib2to3", "turtledemo", "config-3", "ensurepip"})


def stdlib_root() -> str:
  return sysconfig.get_paths()["stdlib"]


def python_files(root: str | None = None) -> list[str]:
  """Sorted paths (relative to root) of the .py files under root, tests and packages excluded."""
  root = root or stdlib_root()
  if not os.path.isdir(root):
    raise FileNotFoundError(f"source directory {root} does not exist")
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames
                         if d not in EXCLUDED_DIRS and not d.startswith("config-"))
    for name in sorted(filenames):
      if name.endswith(".py"):
        out.append(os.path.relpath(os.path.join(dirpath, name), root))
  return sorted(out)


@dataclasses.dataclass(frozen=True)
class FunctionDef:
  name: str
  path: str
  source: str  # dedented, from the `def` line to the end of the body
  params: str  # the text between the parentheses of the def, whitespace collapsed
  doc_first_line: str | None


@dataclasses.dataclass
class Corpus:
  prose: list[str]
  code: list[str]
  functions: list[FunctionDef]
  files: int


def collapse_ws(text: str) -> str:
  return " ".join(text.split())


def def_params_span(text: str, name: str, start: int = 0) -> tuple[int, int] | None:
  """(start, end) of the parameter text of the first `def name(` at/after start (parens balanced)."""
  key = f"def {name}("
  i = text.find(key, start)
  if i < 0:
    return None
  depth, j = 1, i + len(key)
  while j < len(text) and depth:
    depth += {"(": 1, ")": -1}.get(text[j], 0)
    j += 1
  return None if depth else (i + len(key), j - 1)


def def_params(text: str, name: str, start: int = 0) -> str | None:
  """Parameter list of the first `def name(` in text, whitespace collapsed."""
  span = def_params_span(text, name, start)
  return None if span is None else collapse_ws(text[span[0]:span[1]])


def _comment_blocks(source: str) -> list[str]:
  blocks, current, last_line = [], [], -2
  try:
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
      if tok.type == tokenize.COMMENT:
        line = tok.start[0]
        text = tok.string.lstrip("#").strip()
        if line != last_line + 1 and current:
          blocks.append(" ".join(current))
          current = []
        if text and not text.startswith("!"):
          current.append(text)
        last_line = line
  except (tokenize.TokenError, SyntaxError, IndentationError):
    pass
  if current:
    blocks.append(" ".join(current))
  return blocks


def _extract(source: str, relpath: str, corpus: Corpus):
  try:
    tree = ast.parse(source)
  except (SyntaxError, ValueError):
    return
  lines = source.splitlines()
  for node in ast.walk(tree):
    if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
      doc = ast.get_docstring(node)
      if doc and len(doc) >= 80:
        corpus.prose.append(doc.strip())
  corpus.prose.extend(b for b in _comment_blocks(source) if len(b) >= 80)
  for node in tree.body:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.end_lineno:
      code = "\n".join(lines[node.lineno - 1: node.end_lineno])
      if 200 <= len(code) <= 6000:
        corpus.code.append(code)
  for node in ast.walk(tree):
    if not isinstance(node, ast.FunctionDef) or node.name.startswith("_") or len(node.name) < 5:
      continue
    text = textwrap.dedent("\n".join(lines[node.lineno - 1: node.end_lineno]))
    params = def_params(text, node.name)
    if params is None or not params or len(text) > 2500 or len(params) > 120:
      continue
    doc = ast.get_docstring(node)
    first = doc.strip().splitlines()[0].strip() if doc and doc.strip() else None
    if first is not None and not 20 <= len(first) <= 120:
      first = None
    corpus.functions.append(FunctionDef(node.name, relpath, text, params, first))


def load_corpus(max_chars: int = 4_000_000, root: str | None = None, seed: int = 0) -> Corpus:
  """Prose, code and functions from a seeded sample of stdlib files (deterministic per machine)."""
  root = root or stdlib_root()
  files = python_files(root)
  random.Random(seed).shuffle(files)
  corpus, read = Corpus([], [], [], 0), 0
  for rel in files:
    if read >= max_chars:
      break
    try:
      with open(os.path.join(root, rel), encoding="utf-8") as f:
        source = f.read()
    except (UnicodeDecodeError, OSError):
      continue
    read += len(source)
    corpus.files += 1
    _extract(source, rel, corpus)
  if not corpus.prose or not corpus.code:
    raise ValueError(f"{root}: found no usable Python sources for filler text "
                     f"({len(files)} .py files)")
  return corpus
