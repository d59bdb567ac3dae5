"""Training and validation batches from token shards, as a short Grain pipeline.

A split directory (see `jaxlm.data.shards`) is one long token stream. It is cut into
non-overlapping windows of `seq_len + 1` tokens (window i starts at token i * seq_len, so
consecutive windows share one token: the last target of one is the first input of the next).
The Grain pipeline works on window *indices* and reads a whole batch at once:

  range(num_windows) -> [process_index::process_count] -> shuffle(seed) -> repeat()
    (-> mix over sources with their weights) -> batch(B) -> map(read windows) -> iterator

so the per-element Python work is tiny and the reads are a few numpy slice copies per row.

Batch (numpy, [B, T]): inputs = window[:-1], targets = window[1:], loss_weights = the weight of
each target token, segment_ids / positions of the inputs (a new document starts at BOS or right
after EOS; the window's first token always opens segment 1, possibly mid-document),
source_ids of the targets. Packing keeps the prediction across a document boundary (the EOS
input predicts the next document's BOS, with that BOS's weight): standard practice for packed
pre-training, and it costs nothing. The model can still mask attention with segment_ids.

Batch sizes are global; each of `process_count` processes yields its rows of every batch
(`rows // process_count`), and the windows are split between processes before shuffling.
In a mixture (`config.data.sources`), source_ids index the mixture's source names in the
order `parse_sources(config.data.sources)` returns them (a ConfigDict iterates its keys
sorted), not the sources recorded inside each split directory.
"""

from __future__ import annotations

import math
import numbers
import os
from typing import Any, Mapping, Sequence

from absl import flags
from absl import logging
import grain
import numpy as np

from jaxlm.data import shards


# ----------------------------------------------------------------------------------------------
# Reading windows


class WindowReader:
  """Reads windows of `seq_len + 1` tokens from one split directory.

  Pickles by path (workers reopen the memmaps instead of copying them).
  """

  def __init__(self, split_dir: str, seq_len: int, vocab_size: int | None = None):
    self.split_dir = os.path.abspath(split_dir) if split_dir else split_dir
    self.seq_len = int(seq_len)
    self.vocab_size = vocab_size
    self._open(check=True)

  def _open(self, check: bool = False):
    if not self.split_dir:
      raise FileNotFoundError("no data directory given (empty path)")
    self.split = shards.SplitDir(self.split_dir)
    if check and self.vocab_size is not None:
      self.split.check_vocab(self.vocab_size)
    self.num_windows = (self.split.num_tokens - 1) // self.seq_len
    if self.num_windows <= 0:
      raise ValueError(f"{self.split_dir}: {self.split.num_tokens} tokens are fewer than one "
                       f"window of seq_len + 1 = {self.seq_len + 1}")
    self.bos_id, self.eos_id = self.split.bos_id, self.split.eos_id

  def __getstate__(self):
    return {"split_dir": self.split_dir, "seq_len": self.seq_len, "vocab_size": self.vocab_size}

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._open(check=False)  # checked once in the parent process

  def read(self, window: int) -> dict[str, np.ndarray]:
    return self.split.read(int(window) * self.seq_len, self.seq_len + 1)


def _segment_starts(tokens: np.ndarray, bos_id, eos_id) -> np.ndarray:
  starts = np.zeros(tokens.shape, bool)
  if bos_id is not None:
    starts |= tokens == bos_id
  if eos_id is not None:
    starts[..., 1:] |= tokens[..., :-1] == eos_id
  return starts


def windows_to_batch(rows: Sequence[dict[str, np.ndarray]], readers: Sequence[WindowReader],
                     source_ids: Sequence[int] | None = None) -> dict[str, np.ndarray]:
  """Stacks windows ([B, T+1]) into the training batch ([B, T]).

  `source_ids`: one id per row overriding the split's own per-token sources (mixtures).
  """
  tokens = np.stack([r["tokens"] for r in rows])
  weights = np.stack([r["loss_weights"] for r in rows])
  inputs = tokens[:, :-1]
  starts = np.zeros(inputs.shape, bool)
  for i, reader in enumerate(readers):  # per row: a mixture's sources may differ in BOS/EOS
    starts[i] = _segment_starts(inputs[i], reader.bos_id, reader.eos_id)
  starts[:, 0] = False
  segments = (np.cumsum(starts, axis=-1) + 1).astype(np.int32)
  if source_ids is None:
    sources = np.stack([r["source_ids"] for r in rows])[:, 1:]
  else:
    sources = np.broadcast_to(np.asarray(source_ids, np.int32)[:, None], inputs.shape)
  return {
      "inputs": np.ascontiguousarray(inputs),
      "targets": np.ascontiguousarray(tokens[:, 1:]),
      "loss_weights": np.ascontiguousarray(weights[:, 1:]),
      "segment_ids": segments,
      "positions": shards.positions_from_segments(segments),
      "source_ids": np.ascontiguousarray(sources, dtype=np.int32),
  }


class _ReadBatch(grain.transforms.Map):
  """Grain map: a batch of (source index, window index) pairs -> a training batch."""

  def __init__(self, readers: Sequence[WindowReader], mixture: bool):
    self.readers = list(readers)
    self.mixture = mixture

  def map(self, element):
    source_index, window_index = element
    rows, readers = [], []
    for s, w in zip(np.asarray(source_index).tolist(), np.asarray(window_index).tolist()):
      rows.append(self.readers[s].read(w))
      readers.append(self.readers[s])
    return windows_to_batch(rows, readers, source_index if self.mixture else None)


# ----------------------------------------------------------------------------------------------
# Sources and sizes


def _local_rows(rows: int, process_count: int, what: str) -> int:
  if rows <= 0 or rows % process_count:
    raise ValueError(f"{what} = {rows} rows must be a positive multiple of the process count "
                     f"{process_count}")
  return rows // process_count


def parse_sources(sources: Mapping[str, Any] | Sequence[Any]) -> list[tuple[str, str, float]]:
  """Validates a mixture: {name: (dir, weight)} or [(name, dir, weight), ...].

  Refuses a weight that is not a positive finite number and a name given twice.
  """
  items = list(sources.items()) if hasattr(sources, "items") else [
      (item[0], tuple(item[1:])) for item in sources]
  parsed, seen = [], set()
  for name, value in items:
    if isinstance(value, (str, bytes)) or len(value) != 2:
      raise ValueError(f"source {name!r}: expected (directory, weight), got {value!r}")
    directory, weight = value
    if name in seen:
      raise ValueError(f"source name {name!r} is given twice")
    seen.add(name)
    if (isinstance(weight, bool) or not isinstance(weight, numbers.Real)
        or not math.isfinite(weight) or weight <= 0):
      raise ValueError(f"source {name!r}: weight {weight!r} is not a positive number")
    parsed.append((str(name), str(directory), float(weight)))
  return parsed


class _TagWithSource(grain.transforms.Map):

  def __init__(self, index: int):
    self.index = index

  def map(self, window):
    return (self.index, window)


def _source_seed(seed: int, index: int) -> int:
  return int(np.random.SeedSequence([int(seed), index]).generate_state(1)[0])


def _window_indices(reader: WindowReader, index: int, seed: int, process_index: int,
                    process_count: int) -> grain.MapDataset:
  ds = grain.MapDataset.range(reader.num_windows)[process_index::process_count]
  if len(ds) == 0:
    raise ValueError(f"{reader.split_dir}: {reader.num_windows} windows cannot be split over "
                     f"{process_count} processes")
  ds = ds.shuffle(seed=_source_seed(seed, index)).repeat()  # each epoch reshuffles
  return ds.map(_TagWithSource(index))


def _read_options(prefetch: int) -> grain.ReadOptions:
  # Elements are whole batches: `prefetch` of them ahead, read by as many threads (numpy
  # copies release the GIL). Grain's default (500 elements) would hold GBs of 8k batches.
  return grain.ReadOptions(num_threads=max(1, min(int(prefetch), 4)),
                           prefetch_buffer_size=max(0, int(prefetch)))


def make_train_iterator(config, *, vocab_size: int | None, process_index: int = 0,
                        process_count: int = 1) -> grain.DatasetIterator:
  """An endless, checkpointable iterator of training batches (see the module docstring)."""
  rows = _local_rows(config.micro_batch_size * config.grad_accum_steps, process_count,
                     "micro_batch_size * grad_accum_steps")
  sources = config.data.get("sources") or {}
  if sources:
    mixture = parse_sources(sources)
    readers = [WindowReader(d, config.seq_len, vocab_size) for _, d, _ in mixture]
    weights = [w for _, _, w in mixture]
  else:
    readers = [WindowReader(config.train_dir, config.seq_len, vocab_size)]
    weights = [1.0]
  parts = [_window_indices(r, i, config.seed, process_index, process_count)
           for i, r in enumerate(readers)]
  ds = parts[0] if len(parts) == 1 else grain.MapDataset.mix(parts, weights)
  ds = ds.batch(rows, drop_remainder=True).map(_ReadBatch(readers, mixture=bool(sources)))
  prefetch = config.data.get("prefetch", 2)
  num_workers = int(config.data.get("num_workers", 0))
  if num_workers > 0:
    if not flags.FLAGS.is_parsed():
      # Grain's worker processes read absl flags; outside an absl app (tests, notebooks)
      # take the defaults instead of failing.
      flags.FLAGS.mark_as_parsed()
    it_ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1))
    it_ds = it_ds.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=num_workers, per_worker_buffer_size=max(1, int(prefetch))))
  else:
    it_ds = ds.to_iter_dataset(_read_options(prefetch))
  logging.info("train data: %s", ", ".join(
      f"{r.split_dir} ({r.num_windows} windows, weight {w})" for r, w in zip(readers, weights)))
  return iter(it_ds)


def make_val_batches(config, *, vocab_size: int | None, process_index: int = 0,
                     process_count: int = 1) -> tuple[list[dict[str, np.ndarray]], list[str]]:
  """The first `val_batches` batches of consecutive windows of config.val_dir.

  Returns (batches, source names of the split). Fewer batches if the split is too small.
  """
  reader = WindowReader(config.val_dir, config.seq_len, vocab_size)
  rows = int(config.val_batch_size)
  local = _local_rows(rows, process_count, "val_batch_size")
  num_batches = min(int(config.val_batches), reader.num_windows // rows)
  if num_batches == 0:
    raise ValueError(f"{reader.split_dir}: {reader.num_windows} windows of {config.seq_len + 1} "
                     f"tokens are fewer than one validation batch of {rows} rows")
  if num_batches < config.val_batches:
    logging.warning("%s holds only %d validation batches of %d x %d tokens (asked for %d)",
                    reader.split_dir, num_batches, rows, config.seq_len, config.val_batches)
  batches = []
  for b in range(num_batches):
    first = b * rows + process_index * local
    windows = [reader.read(w) for w in range(first, first + local)]
    batches.append(windows_to_batch(windows, [reader] * local))
  return batches, reader.split.sources
