"""SentencePiece tokenizer: train one with the project's special tokens, or load any model.

  python -m data_pipeline.tokenizer --input a.txt b.jsonl ... --vocab_size 8000 \
      --model_prefix data/tokenizer/jaxlm8k

trains BPE with byte fallback and split digits (numbers tokenise digit by digit, which helps
arithmetic and passkey copying), ids 0-3 = <pad> <unk> <s> </s>, and the chat / tool-protocol
markers of `chat_format.SPECIAL_TOKENS` reserved as single tokens. An existing SentencePiece
model (for example a Llama `tokenizer.model`) loads with `jaxlm.data.tokenizer.load_tokenizer`.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from typing import Iterable, Iterator, Sequence

import sentencepiece as spm

from jaxlm.data import chat_format
from jaxlm.data.shards import atomic_write_bytes
from jaxlm.data.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer


def _read_lines(paths: Sequence[str], max_chars: int) -> Iterator[str]:
  total = 0
  for path in paths:
    if not os.path.exists(path):
      raise FileNotFoundError(f"tokenizer input {path} does not exist")
    with open(path, encoding="utf-8", errors="replace") as f:
      for line in f:
        line = line.rstrip("\n")
        if not line.strip():
          continue
        # SentencePiece skips sentences longer than max_sentence_length; cut instead of losing.
        for i in range(0, len(line), 4096):
          yield line[i:i + 4096]
        total += len(line)
        if total >= max_chars:
          return


def train_tokenizer(inputs: Sequence[str] | None, vocab_size: int, model_prefix: str, *,
                    sentences: Iterable[str] | None = None, max_chars: int = 200_000_000,
                    num_threads: int = os.cpu_count() or 1) -> Tokenizer:
  """Trains BPE over text files and/or an iterable of sentences; writes `model_prefix.model`."""
  if vocab_size < len(chat_format.SPECIAL_TOKENS) + 4 + 256:
    raise ValueError(f"vocab_size {vocab_size} is too small: byte fallback alone needs 256 ids "
                     f"plus {len(chat_format.SPECIAL_TOKENS) + 4} special tokens")
  def iterator():
    if inputs:
      yield from _read_lines(inputs, max_chars)
    if sentences is not None:
      for s in sentences:
        for line in s.split("\n"):
          if line.strip():
            yield line[:4096]
  model = io.BytesIO()
  spm.SentencePieceTrainer.Train(
      sentence_iterator=iterator(), model_writer=model, model_type="bpe",
      vocab_size=vocab_size, byte_fallback=True, split_digits=True, character_coverage=0.9995,
      pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
      user_defined_symbols=chat_format.SPECIAL_TOKENS, add_dummy_prefix=False,
      remove_extra_whitespaces=False, normalization_rule_name="identity",
      allow_whitespace_only_pieces=True, input_sentence_size=2_000_000,
      # Digits always get their own pieces, even in a small corpus with few numbers: passkeys,
      # arithmetic and tool arguments are digit strings.
      required_chars="0123456789",
      shuffle_input_sentence=True, num_threads=num_threads, minloglevel=2,
      hard_vocab_limit=False)
  path = model_prefix + ".model"
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  atomic_write_bytes(path, [model.getvalue()])
  return Tokenizer(path)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--input", nargs="+", required=True, help="text files, one sentence a line")
  parser.add_argument("--vocab_size", type=int, default=32000)
  parser.add_argument("--model_prefix", required=True, help="writes PREFIX.model")
  parser.add_argument("--max_chars", type=int, default=200_000_000)
  args = parser.parse_args(argv)
  try:
    tok = train_tokenizer(args.input, args.vocab_size, args.model_prefix, max_chars=args.max_chars)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  print(f"wrote {tok.path}: vocab {tok.vocab_size}, sha256 {tok.sha256[:12]}")


if __name__ == "__main__":
  main()
