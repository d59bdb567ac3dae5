"""Loading a SentencePiece tokenizer with the ids and chat markers the runtime needs.

Any SentencePiece model loads (for example a Llama `tokenizer.model`); one trained by
`python -m data_pipeline.tokenizer` has ids 0-3 = <pad> <unk> <s> </s> and the chat /
tool-protocol markers of `chat_format.SPECIAL_TOKENS` as single pieces.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import sentencepiece as spm

from jaxlm.data import chat_format
from jaxlm.data.shards import file_sha256

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3


class Tokenizer:
  """A thin wrapper over SentencePieceProcessor with the ids the pipeline needs."""

  def __init__(self, path: str):
    if not os.path.exists(path):
      raise FileNotFoundError(f"tokenizer model {path} does not exist")
    self.path = os.path.abspath(path)
    self.sp = spm.SentencePieceProcessor()
    try:
      self.sp.Load(path)
    except (OSError, RuntimeError) as e:
      raise ValueError(f"{path} is not a SentencePiece model: {e}") from None
    self.sha256 = file_sha256(path)
    self.vocab_size = self.sp.GetPieceSize()
    self.bos_id, self.eos_id = self.sp.bos_id(), self.sp.eos_id()
    self.pad_id = self.sp.pad_id() if self.sp.pad_id() >= 0 else self.eos_id
    self._special = {}
    for piece in chat_format.SPECIAL_TOKENS:
      pid = self.sp.PieceToId(piece)
      if pid != self.sp.unk_id():
        self._special[piece] = pid

  def encode(self, text: str) -> list[int]:
    return self.sp.EncodeAsIds(text)

  def encode_batch(self, texts: Sequence[str], num_threads: int = -1) -> list[list[int]]:
    return self.sp.Encode(list(texts), out_type=int, num_threads=num_threads)

  def decode(self, ids: Iterable[int]) -> str:
    return self.sp.DecodeIds([int(i) for i in ids])

  def special_id(self, piece: str) -> int:
    """Id of a chat/tool marker; a tokenizer without it cannot render chats."""
    if piece not in self._special:
      raise KeyError(f"tokenizer {self.path} has no special token {piece!r}; train one with "
                     f"python -m data_pipeline.tokenizer")
    return self._special[piece]

  @property
  def has_chat_tokens(self) -> bool:
    return len(self._special) == len(chat_format.SPECIAL_TOKENS)


def load_tokenizer(path: str) -> Tokenizer:
  return Tokenizer(path)
