"""Shared machinery of the data builders (longctx_hard, tool_synth, code_stream, sft).

Every builder turns a stream of *items* (a document index, or a raw record) into documents
with a pure function of the item, so the output depends only on the seed and the inputs:
- `doc_rng(seed, *keys)` gives document i of split s its own random generator;
- `OrderedPool` maps the per-item function over worker processes in batches and returns
  results in item order, so 1 or N workers write identical bytes;
- `WeightedInterleave` mixes several result streams in proportion to their weights,
  deterministically (the source furthest behind its share goes next);
- `WindowPacker` lays short documents into `seq_len`-token slots so that none straddles a
  reader window (windows start at multiples of seq_len, see jaxlm.input_pipeline);
- `Report` counts tokens, documents and skipped records by reason and prints the closing
  report; `progress` is the tqdm bar on stderr; `run_main` turns bad-input errors into a
  non-zero exit with the message.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import multiprocessing
import os
import random
import sys
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import tqdm

from jaxlm.data import shards


class SkipRecord(Exception):
  """A record that cannot become a document; `reason` is the report's counter key."""

  def __init__(self, reason: str, detail: str = ""):
    super().__init__(f"{reason}: {detail}" if detail else reason)
    self.reason, self.detail = reason, detail


@dataclasses.dataclass
class Document:
  """One finished document: token ids (BOS ... EOS), optional loss weights, provenance."""
  tokens: np.ndarray
  weights: np.ndarray | None = None
  source: str = "default"
  info: dict | None = None  # builder-specific per-document facts (e.g. dependency distance)

  @property
  def num_tokens(self) -> int:
    return int(self.tokens.size)


@dataclasses.dataclass
class Skipped:
  """A record that was skipped, carried through the ordered stream so it can be counted."""
  reason: str
  where: str = ""
  num_tokens: int = 0


# ----------------------------------------------------------------------------------------------
# Seeds


def doc_rng(seed: int, *keys: Any) -> random.Random:
  """A generator that depends only on (seed, keys): e.g. doc_rng(seed, "train", i)."""
  # random.Random seeds a str through sha512, so this is stable across runs and processes.
  return random.Random("/".join(str(k) for k in (seed,) + keys))


def stable_fraction(*keys: Any) -> float:
  """A number in [0, 1) fixed by the keys (used for hash-based train/val assignment)."""
  digest = hashlib.sha256("/".join(str(k) for k in keys).encode()).digest()
  return int.from_bytes(digest[:8], "little") / 2**64


def pseudo_word(rng: random.Random, letters: int) -> str:
  """A pronounceable made-up word (consonant, vowel, ...): no prior predicts it, so a model
  can only copy it from its context."""
  consonants, vowels = "bcdfghjklmnprstvz", "aeiou"
  return "".join(rng.choice(consonants if k % 2 == 0 else vowels) for k in range(letters))


# ----------------------------------------------------------------------------------------------
# Ordered parallel map


_WORKER_STATE: dict[str, Any] = {}


def worker_state() -> Any:
  """The object the pool's initializer built in this process."""
  return _WORKER_STATE["state"]


def _init_worker(make_state, state_arg):
  _WORKER_STATE["state"] = make_state(state_arg)


class OrderedPool:
  """Maps `fn(item)` over items in worker processes; results come back in item order.

  `make_state(state_arg)` runs once per worker (tokenizer, filler text...) and its result is
  reachable as `worker_state()`. With num_workers <= 1 everything runs in this process. Items
  go out in batches so an endless item stream never queues more than one batch ahead.
  """

  def __init__(self, make_state: Callable[[Any], Any], state_arg: Any, num_workers: int,
               batch_size: int | None = None):
    self.num_workers = max(1, int(num_workers))
    self.batch_size = batch_size or 64 * self.num_workers
    self._pool = None
    if self.num_workers == 1:
      _init_worker(make_state, state_arg)
    else:
      # spawn: workers start clean (no inherited sentencepiece threads or open files).
      ctx = multiprocessing.get_context("spawn")
      self._pool = ctx.Pool(self.num_workers, initializer=_init_worker,
                            initargs=(make_state, state_arg))

  def map(self, fn: Callable, items: Sequence) -> list:
    if self._pool is None:
      return [fn(item) for item in items]
    chunk = max(1, len(items) // (2 * self.num_workers))
    return self._pool.map(fn, items, chunksize=chunk)

  def imap(self, fn: Callable, items: Iterable) -> Iterator:
    batch = []
    for item in items:
      batch.append(item)
      if len(batch) >= self.batch_size:
        yield from self.map(fn, batch)
        batch = []
    if batch:
      yield from self.map(fn, batch)

  def close(self):
    if self._pool is not None:
      self._pool.terminate()
      self._pool.join()
      self._pool = None

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False


# ----------------------------------------------------------------------------------------------
# Mixing and packing


class WeightedInterleave:
  """Draws from several result streams so their token counts follow the weights.

  At every step the stream with the smallest tokens_taken / weight goes next (ties: the
  order given), so the mix is deterministic and smooth. Exhausted streams drop out.
  """

  def __init__(self, streams: Sequence[tuple[str, Iterator, float]],
               stop_when_exhausted: Sequence[str] = ()):
    """`stop_when_exhausted`: the mix ends once all of these have run out (e.g. the real
    sources, so an endless synthetic stream cannot take over)."""
    self.streams = [(name, iter(it), float(w)) for name, it, w in streams if w > 0]
    self.taken = {name: 0 for name, _, _ in self.streams}
    self.exhausted: list[str] = []
    self.stop_when = set(stop_when_exhausted) & set(self.taken)

  def __iter__(self):
    alive = list(self.streams)
    while alive and not (self.stop_when and self.stop_when <= set(self.exhausted)):
      name, it, weight = min(alive, key=lambda s: self.taken[s[0]] / s[2])
      try:
        result = next(it)
      except StopIteration:
        alive = [s for s in alive if s[0] != name]
        self.exhausted.append(name)
        continue
      # Skipped records count a nominal token so a stream of skips cannot stall the mix.
      self.taken[name] += max(1, getattr(result, "num_tokens", 0))
      yield name, result


class WindowPacker:
  """Packs documents into `slot`-token slots so that no document straddles a slot boundary.

  The reader cuts a split into windows starting at multiples of seq_len (each window also
  sees the first token of the next), so a document that starts inside a slot and fits in the
  rest of it is never cut. Packing is greedy with a small lookahead: the oldest waiting
  document goes next if it fits the rest of the slot, otherwise the first waiting document
  that fits goes instead; if none fits, the gap is filled with a pad document of EOS tokens
  with loss weight 0 and the oldest document starts the next slot. Deterministic: it depends
  only on the order of the documents. Documents longer than a slot must be cut or dropped by
  the caller first.
  """

  def __init__(self, slot: int, eos_id: int, lookahead: int = 32, pad_source: str = "pad"):
    self.slot, self.eos_id, self.pad_source = int(slot), int(eos_id), pad_source
    self.lookahead = lookahead
    self.used = 0
    self.pad_tokens = 0
    self.waiting: list[Document] = []

  def _emit(self, doc: Document) -> list[Document]:
    out = []
    if self.used + doc.num_tokens > self.slot:
      gap = self.slot - self.used
      out.append(Document(np.full(gap, self.eos_id, np.int32), np.zeros(gap, np.uint8),
                          self.pad_source))
      self.pad_tokens += gap
      self.used = 0
    out.append(doc)
    self.used = (self.used + doc.num_tokens) % self.slot
    return out

  def _next(self) -> list[Document]:
    room = self.slot - self.used
    pick = 0
    if self.waiting[0].num_tokens > room:
      pick = next((i for i, d in enumerate(self.waiting) if d.num_tokens <= room), 0)
    return self._emit(self.waiting.pop(pick))

  def pack(self, doc: Document) -> list[Document]:
    """Takes a document; returns the documents (and pads) ready to be written, in order."""
    if self.slot <= 0:
      return [doc]
    if doc.num_tokens > self.slot:
      raise ValueError(f"document of {doc.num_tokens} tokens is longer than the slot {self.slot}")
    self.waiting.append(doc)
    return self._next() if len(self.waiting) > self.lookahead else []

  def flush(self) -> list[Document]:
    out = []
    while self.waiting:
      out += self._next()
    return out


# ----------------------------------------------------------------------------------------------
# Report and progress


class Report:
  """Tokens and documents per split, skipped records by reason, throughput, extras."""

  def __init__(self, builder: str):
    self.builder = builder
    self.start = time.time()
    self.tokens = collections.Counter()
    self.documents = collections.Counter()
    self.skipped = collections.Counter()
    self.skip_examples: dict[str, str] = {}
    self.extra: dict[str, Any] = {}

  def add_document(self, split: str, doc: Document):
    self.tokens[split] += doc.num_tokens
    self.documents[split] += 1

  def skip(self, reason: str, where: str = ""):
    self.skipped[reason] += 1
    if where and reason not in self.skip_examples:
      self.skip_examples[reason] = where

  @property
  def seconds(self) -> float:
    return time.time() - self.start

  def as_dict(self) -> dict:
    total = sum(self.tokens.values())
    return {"builder": self.builder, "tokens": dict(self.tokens),
            "documents": dict(self.documents), "skipped": dict(self.skipped),
            "skip_examples": self.skip_examples, "seconds": round(self.seconds, 3),
            "tokens_per_second": round(total / max(self.seconds, 1e-9), 1), **self.extra}

  def format(self) -> str:
    d = self.as_dict()
    lines = [f"== {self.builder} report =="]
    for split in sorted(self.tokens):
      lines.append(f"  {split}: {self.tokens[split]:,} tokens in {self.documents[split]:,} documents")
    if self.skipped:
      lines.append("  skipped records:")
      for reason, n in sorted(self.skipped.items()):
        example = f"  (first: {self.skip_examples[reason]})" if reason in self.skip_examples else ""
        lines.append(f"    {reason}: {n:,}{example}")
    else:
      lines.append("  skipped records: none")
    for key, value in self.extra.items():
      if isinstance(value, dict) and key.endswith("histogram"):
        lines.append(f"  {key}:")
        total = max(1, sum(value.values()))
        for bucket, n in value.items():
          lines.append(f"    {bucket:>14}: {n:7,} {'#' * round(40 * n / total)}")
      else:
        lines.append(f"  {key}: {value}")
    lines.append(f"  time: {d['seconds']:.1f}s, {d['tokens_per_second']:,.0f} tokens/s")
    return "\n".join(lines)

  def write(self, path: str):
    shards.atomic_write_json(path, self.as_dict())


def progress(total: int | None, desc: str, quiet: bool = False):
  return tqdm.tqdm(total=total, desc=desc, unit="tok", unit_scale=True, file=sys.stderr,
                   disable=quiet, dynamic_ncols=True)


def write_jsonl(path: str, rows: Iterable[dict]):
  """JSON lines, written atomically."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  shards.atomic_write_bytes(path, [(json.dumps(r, ensure_ascii=False) + "\n").encode()
                                   for r in rows])


# ----------------------------------------------------------------------------------------------
# CLI


def add_common_args(parser: argparse.ArgumentParser, targets_required: bool = True):
  parser.add_argument("--out_dir", required=True, help="shard directory to write (train/, val/)")
  parser.add_argument("--tokenizer", required=True, help="SentencePiece model (.model)")
  parser.add_argument("--target_train_tokens", type=int, required=targets_required,
                      default=None, help="stop the train split at (about) this many tokens")
  parser.add_argument("--target_val_tokens", type=int, required=targets_required,
                      default=None, help="stop the val split at (about) this many tokens")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--num_workers", type=int, default=1,
                      help="worker processes; the output is identical for any count")
  parser.add_argument("--overwrite", action="store_true", help="replace an existing out_dir")
  parser.add_argument("--shard_tokens", type=int, default=shards.DEFAULT_SHARD_TOKENS)
  parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run_main(main: Callable[[], Any]):
  """Runs a builder's main; bad input exits non-zero with the message (naming the file)."""
  try:
    main()
  except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
    sys.exit(f"error: {e}")


def staged_path(writer: shards.ShardDirWriter, path: str) -> str:
  """Where to write `path` so that it is committed together with the shards.

  A path inside the writer's out_dir maps to the same place in its staging dir, so a run
  killed at any moment leaves either no out_dir or one with every extra file (and a rerun
  then starts clean). A path elsewhere is returned unchanged.
  """
  path = os.path.abspath(path)
  rel = os.path.relpath(path, writer.out_dir)
  if rel == os.pardir or rel.startswith(os.pardir + os.sep):
    return path
  return os.path.join(writer.staging_dir, rel)


def commit_report(report: Report, writer: shards.ShardDirWriter) -> None:
  """Stores the report as out_dir/report.json; call it last inside the writer's `with`."""
  report.write(os.path.join(writer.staging_dir, "report.json"))


def finish(report: Report) -> None:
  """Prints the closing report to stderr (report.json is already committed)."""
  print(report.format(), file=sys.stderr)


def histogram(values: Iterable[int], edges: Sequence[int]) -> dict[str, int]:
  """Counts per [edges[i], edges[i+1]) bucket, labelled like '2048-4095'; last bucket open."""
  values = np.asarray(list(values), np.int64)
  out = {}
  for lo, hi in zip(edges, list(edges[1:]) + [None]):
    sel = values >= lo if hi is None else (values >= lo) & (values < hi)
    out[f"{lo}+" if hi is None else f"{lo}-{hi - 1}"] = int(sel.sum())
  return out


def write_documents(writer: shards.ShardDirWriter, split: str, results: Iterable,
                    report: Report, bar, target: int | None = None,
                    packer: WindowPacker | None = None,
                    on_document: Callable[[Document], None] | None = None) -> None:
  """Writes Documents (counting Skipped ones) to `split` until `target` tokens are reached.

  With a packer, documents still waiting in its lookahead when the target is reached are
  dropped (the target is met); at the end of a finite stream they are written.
  """
  if target is not None and target <= 0:
    return

  def write(docs) -> bool:
    for doc in docs:
      writer.add(split, doc.tokens, loss_weights=doc.weights, source=doc.source)
      report.tokens[split] += doc.num_tokens
      bar.update(doc.num_tokens)
      if packer is None or doc.source != packer.pad_source:
        report.documents[split] += 1
        if on_document is not None:
          on_document(doc)
      if target is not None and report.tokens[split] >= target:
        return True
    return False

  for result in results:
    if isinstance(result, Skipped):
      report.skip(result.reason, result.where)
      continue
    if write(packer.pack(result) if packer else [result]):
      return
  if packer is not None:
    write(packer.flush())


# ----------------------------------------------------------------------------------------------
# Record readers (JSON arrays streamed, JSON lines, parquet)


class MalformedRecord(ValueError):
  """A record that cannot be read at all; raised with the file and record index/line."""


def iter_json_array(path: str, chunk_chars: int = 1 << 20) -> Iterator[Any]:
  """Streams the elements of a top-level JSON array without loading the whole file.

  Elements are decoded one at a time with raw_decode over a sliding buffer, so memory stays
  near the size of the largest element. A syntax error cannot be resynchronised, so it stops
  the file with an error naming the element index.
  """
  decoder = json.JSONDecoder()
  with open(path, encoding="utf-8") as f:
    buf, pos, eof, index = f.read(chunk_chars), 0, False, 0

    def skip_ws(buf, pos):
      while pos < len(buf) and buf[pos] in " \t\r\n":
        pos += 1
      return pos

    pos = skip_ws(buf, pos)
    if not buf[pos:pos + 1] == "[":
      raise MalformedRecord(f"{path}: expected a JSON array (file starts with {buf[:20]!r})")
    pos += 1
    expect_value = True
    while True:
      pos = skip_ws(buf, pos)
      if pos >= len(buf) - 1 and not eof:  # keep at least one char of lookahead
        more = f.read(chunk_chars)
        eof = not more
        buf, pos = buf[pos:] + more, 0
        continue
      if pos >= len(buf):
        raise MalformedRecord(f"{path}: unexpected end of file in the JSON array "
                              f"after element {index}")
      ch = buf[pos]
      if ch == "]":
        return
      if ch == "," and not expect_value:
        pos, expect_value = pos + 1, True
        continue
      try:
        value, end = decoder.raw_decode(buf, pos)
      except json.JSONDecodeError as e:
        if not eof and len(buf) - pos < (256 << 20):  # maybe cut by the buffer end: read more
          more = f.read(max(chunk_chars, len(buf)))
          eof = not more
          buf, pos = buf[pos:] + more, 0
          continue
        raise MalformedRecord(f"{path}: record {index} is not valid JSON: {e}") from None
      if end == len(buf) and not eof:  # a number or literal may continue past the buffer
        more = f.read(chunk_chars)
        eof = not more
        buf, pos = buf[pos:] + more, 0
        continue
      yield value
      index += 1
      pos, expect_value = end, False


def _first_char(path: str) -> str:
  with open(path, encoding="utf-8") as f:
    while True:
      ch = f.read(1)
      if not ch or not ch.isspace():
        return ch


def iter_records(path: str, columns: Sequence[str] | None = None
                 ) -> Iterator[tuple[str, Any]]:
  """(location, record) for every record of a JSON array, JSON lines or parquet file.

  Unreadable JSON lines come back as (location, MalformedRecord) so the caller can count or
  refuse them; a broken JSON array raises (it cannot be resynchronised).
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"input file {path} does not exist")
  if path.endswith(".parquet"):
    import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
    try:
      pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own error types
      raise ValueError(f"{path}: not a readable parquet file: {e}") from None
    names = pf.schema_arrow.names
    cols = [c for c in columns if c in names] if columns else None
    row = 0
    for batch in pf.iter_batches(batch_size=1024, columns=cols):
      for rec in batch.to_pylist():
        yield f"{path}:row {row}", rec
        row += 1
    return
  first = _first_char(path)
  if first == "[":
    for i, rec in enumerate(iter_json_array(path)):
      yield f"{path}:record {i}", rec
    return
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        yield f"{path}:line {lineno}", json.loads(line)
      except json.JSONDecodeError as e:
        yield f"{path}:line {lineno}", MalformedRecord(f"{path}:line {lineno}: bad JSON ({e})")
