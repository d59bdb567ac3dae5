"""data_pipeline.tokenizer: training, special tokens, byte fallback, digits, refusals."""

import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipeline import tokenizer
from jaxlm.data import tokenizer as tokenizer_lib
from jaxlm.data import chat_format
from tests.data_core_helpers import stdlib_texts, train_tiny_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
  return train_tiny_tokenizer(tmp_path_factory.mktemp("tok"), vocab_size=600)


def test_trains_on_stdlib_files(tok):
  assert os.path.exists(tok.path) and tok.path.endswith("tok600.model")
  assert tok.vocab_size == 600
  assert (tok.pad_id, tok.sp.unk_id(), tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
  assert len(tok.sha256) == 64
  # Learned merges (~330 of them here): code compresses well below one token per character.
  text = open(stdlib_texts()[1], encoding="utf-8").read()[:5000]
  assert len(tok.encode(text)) < 0.7 * len(text)
  assert tok.decode(tok.encode(text)) == text
  again = tokenizer_lib.load_tokenizer(tok.path)
  assert again.sha256 == tok.sha256 and again.encode("def f(x):") == tok.encode("def f(x):")


def test_special_tokens_are_single_ids(tok):
  assert tok.has_chat_tokens
  ids = set()
  for piece in chat_format.SPECIAL_TOKENS:
    pid = tok.special_id(piece)
    assert tok.encode(piece) == [pid], piece
    encoded = tok.encode(f"say{piece}hi")
    assert encoded.count(pid) == 1 and tok.decode(encoded) == f"say{piece}hi"
    ids.add(pid)
  assert len(ids) == len(chat_format.SPECIAL_TOKENS)
  assert ids.isdisjoint({0, 1, 2, 3})


def test_byte_fallback_round_trips_arbitrary_unicode(tok):
  rng = np.random.default_rng(0)
  ranges = [(0x20, 0x7f), (0xa0, 0x2000), (0x3040, 0x30ff), (0x4e00, 0x9fff), (0x1f300, 0x1faff),
            (0x0300, 0x036f)]
  for _ in range(50):
    chars = []
    for _ in range(rng.integers(1, 40)):
      lo, hi = ranges[rng.integers(len(ranges))]
      chars.append(chr(int(rng.integers(lo, hi))))
    text = "".join(chars)
    ids = tok.encode(text)
    assert tok.sp.unk_id() not in ids, text
    assert tok.decode(ids) == text
  assert tok.decode(tok.encode("  two spaces\tand a tab\n")) == "  two spaces\tand a tab\n"
  pieces = [tok.sp.IdToPiece(i) for i in tok.encode("🦀")]
  assert pieces == ["<0xF0>", "<0x9F>", "<0xA6>", "<0x80>"]  # unseen: its UTF-8 bytes


def _piece_text(tok, i):
  piece = tok.sp.IdToPiece(i)
  return chr(int(piece[3:5], 16)) if tok.sp.IsByte(i) else piece


def test_digits_are_split(tok):
  # A digit rare in the training text may be a byte piece (<0x37>), but never shares a piece.
  for number in ("0", "1234567890", "3.14159", "x=100000", "2024-05-20"):
    pieces = [_piece_text(tok, i) for i in tok.encode(number)]
    digit_pieces = [p for p in pieces if any(c.isdigit() for c in p)]
    assert all(len(p) == 1 for p in digit_pieces), pieces
    assert "".join(digit_pieces) == "".join(c for c in number if c.isdigit())


def test_bad_paths_are_named(tmp_path):
  missing = str(tmp_path / "missing.model")
  with pytest.raises(FileNotFoundError, match=missing):
    tokenizer_lib.load_tokenizer(missing)
  junk = tmp_path / "junk.model"
  junk.write_bytes(b"this is not a sentencepiece model")
  with pytest.raises(ValueError, match=f"{junk} is not a SentencePiece model"):
    tokenizer_lib.load_tokenizer(str(junk))
  no_input = str(tmp_path / "no_such.txt")
  with pytest.raises(FileNotFoundError, match=no_input):
    tokenizer.train_tokenizer([no_input], 400, str(tmp_path / "t"))
  result = subprocess.run([sys.executable, "-m", "data_pipeline.tokenizer", "--input", no_input,
                           "--vocab_size", "400", "--model_prefix", str(tmp_path / "t")],
                          cwd=REPO, capture_output=True, text=True)
  assert result.returncode != 0 and no_input in result.stderr
  assert not os.path.exists(tmp_path / "t.model")
  with pytest.raises(ValueError, match="vocab_size 100 is too small"):
    tokenizer.train_tokenizer(stdlib_texts(), 100, str(tmp_path / "t"))
