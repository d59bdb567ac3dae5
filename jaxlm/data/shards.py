"""Token shards: llm.c's `.bin` layout, split directories and their `meta.json`.

A shard is a 256 x int32 header followed by the tokens:
  header[0] magic   20240520 (uint16 tokens, version 1) or 20240801 (uint32 tokens, version 7)
  header[1] version
  header[2] number of tokens
This is byte-compatible with llm.c, so shards move freely between the two stacks.

A *split directory* (`.../train`, `.../val`) holds `shard_00000.bin, ...`, optional sidecars
with one byte per token, and a `meta.json` describing it:
  shard_00000.weights.u8  uint8 loss weight per token (0 masked, 1 normal, >1 upweighted)
  shard_00000.sources.u8  uint8 index into meta["sources"] per token (provenance)
The sidecars do not end in `.bin`, so the usual loader glob `DIR/*.bin` (llm.c's, nanoGPT's)
yields only token shards. Directories of format version 1 named them `.weights.bin` and
`.sources.bin`; they still read (the suffix follows meta.json's "version").
A *shard directory* holds a `train/` and a `val/` split directory.

Documents are laid end to end; each starts with BOS and ends with EOS, so document (segment)
boundaries are recovered at read time without an index.

Writers never leave a half-written directory under its final name: everything goes to a hidden
temporary sibling that is renamed into place only when complete.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import shutil
import tempfile
from typing import Iterable, Sequence

import numpy as np

HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
MAGIC_UINT16, VERSION_UINT16 = 20240520, 1
MAGIC_UINT32, VERSION_UINT32 = 20240801, 7
META_FILE = "meta.json"
FORMAT_NAME = "jaxlm-shards"
FORMAT_VERSION = 2
# Sidecar suffix per meta.json version: version 1 ended them in .bin, which DIR/*.bin matched.
SIDECAR_SUFFIXES = {1: {"weights": ".weights.bin", "sources": ".sources.bin"},
                    2: {"weights": ".weights.u8", "sources": ".sources.u8"}}
DEFAULT_SHARD_TOKENS = 100_000_000  # llm.c's shard size


class ShardError(ValueError):
  """A shard or split directory is malformed; the message names the file."""


# ----------------------------------------------------------------------------------------------
# Single .bin files


def token_dtype_for_vocab(vocab_size: int) -> np.dtype:
  return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def atomic_write_bytes(path: str, chunks: Iterable[bytes | np.ndarray]) -> None:
  """Writes to `path.tmp-XXXX` in the same directory, fsyncs, then renames over `path`."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".tmp-", dir=directory)
  try:
    with os.fdopen(fd, "wb") as f:
      for chunk in chunks:
        f.write(chunk.tobytes() if isinstance(chunk, np.ndarray) else chunk)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def atomic_write_json(path: str, obj) -> None:
  atomic_write_bytes(path, [json.dumps(obj, indent=2, sort_keys=True).encode() + b"\n"])


def bin_header(num_tokens: int, dtype) -> np.ndarray:
  dtype = np.dtype(dtype)
  header = np.zeros(HEADER_INTS, dtype=np.int32)
  if dtype == np.uint16:
    header[0], header[1] = MAGIC_UINT16, VERSION_UINT16
  elif dtype == np.uint32:
    header[0], header[1] = MAGIC_UINT32, VERSION_UINT32
  else:
    raise ValueError(f"token dtype must be uint16 or uint32, got {dtype}")
  if num_tokens >= 2**31:
    raise ValueError(f"a shard holds at most 2**31-1 tokens, got {num_tokens}")
  header[2] = num_tokens
  return header


def write_bin(path: str, tokens: np.ndarray, dtype=None) -> None:
  """Writes one llm.c shard atomically. `dtype` defaults to the array's (uint16 or uint32)."""
  tokens = np.asarray(tokens)
  dtype = np.dtype(dtype or (tokens.dtype if tokens.dtype in (np.uint16, np.uint32) else np.uint32))
  if tokens.size and (tokens.min() < 0 or tokens.max() > np.iinfo(dtype).max):
    raise ValueError(f"{path}: token ids out of range for {dtype}")
  atomic_write_bytes(path, [bin_header(tokens.size, dtype), tokens.astype(dtype, copy=False)])


def read_bin_header(path: str) -> tuple[np.dtype, int]:
  """Returns (token dtype, token count) after checking magic, version and file size."""
  size = os.path.getsize(path)
  if size < HEADER_BYTES:
    raise ShardError(f"{path}: truncated shard, {size} bytes is smaller than the 1024-byte header")
  header = np.fromfile(path, dtype=np.int32, count=HEADER_INTS)
  magic, version, count = int(header[0]), int(header[1]), int(header[2])
  if magic == MAGIC_UINT16:
    dtype, expected_version = np.dtype(np.uint16), VERSION_UINT16
  elif magic == MAGIC_UINT32:
    dtype, expected_version = np.dtype(np.uint32), VERSION_UINT32
  else:
    raise ShardError(
        f"{path}: wrong magic {magic}; an llm.c shard starts with {MAGIC_UINT16} (uint16) or "
        f"{MAGIC_UINT32} (uint32). For a nanoGPT raw .bin use data_pipeline.import_bin.")
  if version != expected_version:
    raise ShardError(f"{path}: magic {magic} needs version {expected_version}, header says {version}")
  expected = HEADER_BYTES + count * dtype.itemsize
  if size != expected:
    raise ShardError(f"{path}: truncated or padded shard: header says {count} tokens "
                     f"({expected} bytes), file has {size} bytes")
  return dtype, count


def read_bin(path: str, mmap: bool = True) -> np.ndarray:
  """Returns the tokens of an llm.c shard (a read-only memmap by default)."""
  dtype, count = read_bin_header(path)
  if mmap:
    if count == 0:
      return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(count,))
  with open(path, "rb") as f:
    f.seek(HEADER_BYTES)
    return np.fromfile(f, dtype=dtype, count=count)


def read_raw_uint16(path: str) -> np.ndarray:
  """nanoGPT's `train.bin`: raw uint16 tokens, no header."""
  size = os.path.getsize(path)
  if size % 2:
    raise ShardError(f"{path}: a raw uint16 file has an even size, this one has {size} bytes")
  return np.memmap(path, dtype=np.uint16, mode="r")


def file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


# ----------------------------------------------------------------------------------------------
# Writing split / shard directories


def _stale_temp_dirs(out_dir: str) -> list[str]:
  parent, name = os.path.split(os.path.abspath(out_dir))
  return glob.glob(os.path.join(parent, f".{name}.tmp-*"))


def atomic_dir_commit(tmp_dir: str, out_dir: str, overwrite: bool) -> None:
  """Moves a finished `tmp_dir` to `out_dir`; an existing `out_dir` is replaced only if asked."""
  out_dir = os.path.abspath(out_dir)
  if os.path.exists(out_dir):
    if not overwrite:
      raise FileExistsError(f"{out_dir} already exists; pass --overwrite to replace it")
    old = f"{out_dir}.old-{os.getpid()}"
    os.replace(out_dir, old)
    os.replace(tmp_dir, out_dir)
    shutil.rmtree(old)
  else:
    os.replace(tmp_dir, out_dir)


class TempDir:
  """A hidden sibling of `out_dir` that becomes `out_dir` only on success.

  Stale temp dirs left by a killed run are removed first, so a rerun starts clean.
  """

  def __init__(self, out_dir: str, overwrite: bool = False):
    self.out_dir = os.path.abspath(out_dir)
    self.overwrite = overwrite
    if os.path.exists(self.out_dir) and not overwrite:
      raise FileExistsError(f"{self.out_dir} already exists; pass --overwrite to replace it")
    for stale in _stale_temp_dirs(self.out_dir):
      shutil.rmtree(stale, ignore_errors=True)
    os.makedirs(os.path.dirname(self.out_dir), exist_ok=True)
    self.path = tempfile.mkdtemp(prefix=f".{os.path.basename(self.out_dir)}.tmp-",
                                 dir=os.path.dirname(self.out_dir))

  def __enter__(self):
    return self.path

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      atomic_dir_commit(self.path, self.out_dir, self.overwrite)
    else:
      shutil.rmtree(self.path, ignore_errors=True)
    return False


class _SplitWriter:
  """Buffers documents for one split and flushes full shards."""

  def __init__(self, directory: str, dtype: np.dtype, shard_tokens: int):
    self.directory = directory
    self.dtype = dtype
    self.shard_tokens = shard_tokens
    os.makedirs(directory, exist_ok=True)
    self._tokens: list[np.ndarray] = []
    self._weights: list[np.ndarray] = []
    self._sources: list[np.ndarray] = []
    self._buffered = 0
    self.has_weights = False
    self.shards: list[dict] = []
    self.tokens_per_source: dict[str, int] = {}
    self.documents = 0

  def add(self, tokens: np.ndarray, weights: np.ndarray | None, source_index: int, source: str,
          documents: int = 1):
    if weights is not None:
      self.has_weights = True
    self._tokens.append(tokens.astype(self.dtype, copy=False))
    self._weights.append(weights if weights is not None else np.ones(tokens.size, np.uint8))
    self._sources.append(np.full(tokens.size, source_index, np.uint8))
    self._buffered += tokens.size
    self.tokens_per_source[source] = self.tokens_per_source.get(source, 0) + tokens.size
    self.documents += documents
    while self._buffered >= self.shard_tokens:
      self._flush(self.shard_tokens)

  def _flush(self, n: int):
    tokens = np.concatenate(self._tokens)
    weights = np.concatenate(self._weights)
    sources = np.concatenate(self._sources)
    name = f"shard_{len(self.shards):05d}"
    base = os.path.join(self.directory, name)
    write_bin(base + ".bin", tokens[:n], self.dtype)
    suffix = SIDECAR_SUFFIXES[FORMAT_VERSION]
    atomic_write_bytes(base + suffix["weights"], [weights[:n]])
    atomic_write_bytes(base + suffix["sources"], [sources[:n]])
    counts = np.bincount(sources[:n], minlength=1)
    self.shards.append({"file": name + ".bin", "tokens": int(n),
                        "source_counts": [int(c) for c in counts]})
    self._tokens, self._weights, self._sources = [tokens[n:]], [weights[n:]], [sources[n:]]
    self._buffered = tokens.size - n

  def close(self):
    if self._buffered:
      self._flush(self._buffered)
    if not self.has_weights:  # all ones: the sidecar carries no information
      for shard in self.shards:
        os.unlink(os.path.join(self.directory, shard["file"][:-len(".bin")]
                               + SIDECAR_SUFFIXES[FORMAT_VERSION]["weights"]))


class ShardDirWriter:
  """Writes a shard directory (`train/`, `val/`, each with shards and meta.json) atomically.

  with ShardDirWriter(out_dir, tokenizer_path=..., vocab_size=..., bos_id=1, eos_id=2) as w:
    w.add("train", token_ids, loss_weights=None, source="longctx")
  """

  def __init__(self, out_dir: str, *, vocab_size: int, tokenizer_path: str | None = None,
               bos_id: int | None = None, eos_id: int | None = None,
               splits: Sequence[str] = ("train", "val"), shard_tokens: int = DEFAULT_SHARD_TOKENS,
               sources: Sequence[str] = (), builder: dict | None = None, overwrite: bool = False,
               token_dtype=None, tokenizer: dict | None = None):
    self.out_dir = os.path.abspath(out_dir)
    self.vocab_size = int(vocab_size)
    self.dtype = np.dtype(token_dtype) if token_dtype else token_dtype_for_vocab(self.vocab_size)
    # `tokenizer`: a {"path", "sha256"} record carried over from input shards (interleaving,
    # imports) when the model file itself is not at hand; `tokenizer_path` wins if both.
    self.tokenizer = dict(tokenizer) if tokenizer else None
    if tokenizer_path:
      self.tokenizer = {"path": os.path.abspath(tokenizer_path),
                        "sha256": file_sha256(tokenizer_path)}
    self.bos_id, self.eos_id = bos_id, eos_id
    self.sources: list[str] = list(sources)
    self.builder = builder or {}
    self._temp = TempDir(self.out_dir, overwrite)
    self._splits = {s: _SplitWriter(os.path.join(self._temp.path, s), self.dtype, shard_tokens)
                    for s in splits}

  def __enter__(self):
    return self

  @property
  def staging_dir(self) -> str:
    """The hidden directory that becomes out_dir on commit.

    Extra outputs (reports, eval sets) written here appear together with the shards, so a
    run killed at any moment leaves either no out_dir or a complete one.
    """
    return self._temp.path

  def source_index(self, source: str) -> int:
    if source not in self.sources:
      if len(self.sources) >= 255:
        raise ValueError("at most 255 sources per shard directory")
      self.sources.append(source)
    return self.sources.index(source)

  def add(self, split: str, tokens, loss_weights=None, source: str = "default",
          documents: int = 1) -> None:
    """Appends one document, or a run of tokens holding `documents` document starts (imports,
    interleaved blocks)."""
    if split not in self._splits:
      raise ValueError(f"unknown split {split!r}; this writer has {sorted(self._splits)}")
    tokens = np.asarray(tokens)
    if tokens.size == 0:
      return
    if tokens.min() < 0 or tokens.max() >= self.vocab_size:
      raise ValueError(f"{self.out_dir}: token id {int(tokens.max())} is outside the vocabulary "
                       f"of size {self.vocab_size} (source {source!r})")
    weights = None
    if loss_weights is not None:
      weights = np.asarray(loss_weights)
      if weights.shape != tokens.shape:
        raise ValueError(f"loss_weights shape {weights.shape} != tokens shape {tokens.shape}")
      weights = np.clip(np.rint(weights), 0, 255).astype(np.uint8)
    self._splits[split].add(tokens, weights, self.source_index(source), source, documents)

  def tokens(self, split: str) -> int:
    w = self._splits[split]
    return sum(s["tokens"] for s in w.shards) + w._buffered

  def tokens_per_source(self, split: str) -> dict[str, int]:
    return dict(self._splits[split].tokens_per_source)

  def _write_meta(self):
    for split, w in self._splits.items():
      w.close()
      meta = {
          "format": FORMAT_NAME, "version": FORMAT_VERSION, "split": split,
          "tokenizer": self.tokenizer, "vocab_size": self.vocab_size,
          "token_dtype": self.dtype.name, "bos_id": self.bos_id, "eos_id": self.eos_id,
          "sources": self.sources, "has_loss_weights": w.has_weights,
          "num_tokens": sum(s["tokens"] for s in w.shards), "num_documents": w.documents,
          "tokens_per_source": w.tokens_per_source, "shards": w.shards, "builder": self.builder,
      }
      atomic_write_json(os.path.join(w.directory, META_FILE), meta)

  def __exit__(self, exc_type, exc, tb):
    if exc_type is None:
      self._write_meta()
    return self._temp.__exit__(exc_type, exc, tb)


# ----------------------------------------------------------------------------------------------
# Reading split directories


def load_meta(split_dir: str) -> dict:
  path = os.path.join(split_dir, META_FILE)
  if not os.path.isdir(split_dir):
    raise FileNotFoundError(f"data directory {split_dir} does not exist")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{split_dir} has no {META_FILE}; is it a split directory "
                            f"(.../train or .../val) written by data_pipeline?")
  try:
    with open(path) as f:
      meta = json.load(f)
  except json.JSONDecodeError as e:
    raise ShardError(f"{path}: not valid JSON ({e})") from None
  if meta.get("format") != FORMAT_NAME:
    raise ShardError(f"{path}: format is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
  if meta.get("version", 1) not in SIDECAR_SUFFIXES:
    raise ShardError(f"{path}: format version {meta.get('version')!r} is newer than this jaxlm "
                     f"reads (versions {sorted(SIDECAR_SUFFIXES)}); update jaxlm")
  return meta


@dataclasses.dataclass
class SplitDir:
  """Random access over the concatenated shards of one split directory."""

  path: str

  def __post_init__(self):
    self.meta = load_meta(self.path)
    self.shards, self.weights, self.source_ids = [], [], []
    suffix = SIDECAR_SUFFIXES[self.meta.get("version", 1)]
    for entry in self.meta["shards"]:
      file = os.path.join(self.path, entry["file"])
      if not os.path.exists(file):
        raise FileNotFoundError(f"{file} is listed in {self.path}/meta.json but missing")
      tokens = read_bin(file)
      if tokens.size != entry["tokens"]:
        raise ShardError(f"{file}: {tokens.size} tokens, meta.json says {entry['tokens']}")
      self.shards.append(tokens)
      self.weights.append(self._sidecar(file, suffix["weights"], tokens.size))
      self.source_ids.append(self._sidecar(file, suffix["sources"], tokens.size))
    sizes = [s.size for s in self.shards]
    self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    self.num_tokens = int(self.offsets[-1])
    if self.num_tokens == 0:
      raise ShardError(f"{self.path}: the split directory holds no tokens")

  @staticmethod
  def _sidecar(shard_file: str, suffix: str, n: int):
    path = shard_file[:-len(".bin")] + suffix
    if not os.path.exists(path):
      return None
    if os.path.getsize(path) != n:
      raise ShardError(f"{path}: {os.path.getsize(path)} bytes for a shard of {n} tokens")
    return np.memmap(path, dtype=np.uint8, mode="r") if n else np.zeros(0, np.uint8)

  @property
  def sources(self) -> list[str]:
    return list(self.meta.get("sources") or [])

  @property
  def bos_id(self):
    return self.meta.get("bos_id")

  @property
  def eos_id(self):
    return self.meta.get("eos_id")

  def check_vocab(self, vocab_size: int) -> None:
    """Refuses a split whose tokens do not fit `vocab_size` (scans once, fast on memmaps)."""
    for entry, tokens in zip(self.meta["shards"], self.shards):
      if tokens.size and int(tokens.max()) >= vocab_size:
        raise ShardError(f"{os.path.join(self.path, entry['file'])}: token id {int(tokens.max())}"
                         f" >= the model's vocab_size {vocab_size}")

  def check_tokenizer(self, tokenizer_path: str) -> None:
    """Refuses a tokenizer whose sha256 differs from the one the shards were written with."""
    recorded = self.meta.get("tokenizer")
    if not recorded:
      return  # imported shards with an unknown tokenizer
    digest = file_sha256(tokenizer_path)
    if digest != recorded["sha256"]:
      raise ShardError(f"tokenizer {tokenizer_path} (sha256 {digest[:12]}…) differs from the one "
                       f"{self.path}/meta.json records ({recorded['sha256'][:12]}…)")

  def _gather(self, arrays, start: int, length: int, dtype, fill) -> np.ndarray:
    out = np.empty(length, dtype)
    pos, end = start, start + length
    i = int(np.searchsorted(self.offsets, start, side="right") - 1)
    while pos < end:
      lo = pos - self.offsets[i]
      take = min(end - pos, self.shards[i].size - lo)
      dst = out[pos - start: pos - start + take]
      dst[:] = fill if arrays is None or arrays[i] is None else arrays[i][lo: lo + take]
      pos += take
      i += 1
    return out

  def read(self, start: int, length: int) -> dict[str, np.ndarray]:
    """Tokens, loss weights and source ids of the global range [start, start+length)."""
    if start < 0 or start + length > self.num_tokens:
      raise IndexError(f"range [{start}, {start + length}) outside {self.path} "
                       f"({self.num_tokens} tokens)")
    return {
        "tokens": self._gather(self.shards, start, length, np.int32, 0),
        "loss_weights": self._gather(self.weights, start, length, np.float32, 1),
        "source_ids": self._gather(self.source_ids, start, length, np.int32,
                                   0 if self.sources else -1),
    }


def segment_ids(tokens: np.ndarray, bos_id: int | None, eos_id: int | None) -> np.ndarray:
  """Document index per token, starting at 1: a new document starts at BOS or after EOS."""
  tokens = np.asarray(tokens)
  starts = np.zeros(tokens.shape, bool)
  if bos_id is not None:
    starts |= tokens == bos_id
  if eos_id is not None:
    starts[..., 1:] |= tokens[..., :-1] == eos_id
  starts[..., 0] = False
  return (np.cumsum(starts, axis=-1) + 1).astype(np.int32)


def positions_from_segments(segments: np.ndarray) -> np.ndarray:
  """Position within the document for each token (restarts at 0 at every boundary)."""
  segments = np.asarray(segments)
  idx = np.arange(segments.shape[-1])
  new = np.ones(segments.shape, bool)
  new[..., 1:] = segments[..., 1:] != segments[..., :-1]
  start = np.maximum.accumulate(np.where(new, idx, 0), axis=-1)
  return (idx - start).astype(np.int32)
