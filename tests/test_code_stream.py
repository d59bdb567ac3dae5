"""data_pipeline.code_stream: filters counted by reason, path headers, --long packages."""

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_pipeline import builder_utils as bu
from data_pipeline import code_stream
from tests.builders_helpers import (documents, read_report, tokenizer,  # noqa: F401
                                    tokenizer_path, tree_digest)

GOOD = "def add(a, b):\n    return a + b\n"


def make_tree(root):
  files = {
      "pkg/a.py": GOOD,
      "pkg/b.py": "class Point:\n    x = 1\n",
      "pkg/copy_of_a.py": GOOD,  # exact duplicate
      "pkg/gen.py": "# This file is auto-generated. DO NOT EDIT.\nx = 1\n",
      "pkg/wide.py": "data = '" + "z" * 3000 + "'\n",
      "pkg/big.py": "x = 1\n" * 2000,
      "pkg/empty.py": "\n\n",
      "pkg/notes.txt": "not code",
      "lib/util.c": "int main(void) { return 0; }\n",
      "lib/more.c": "static int k = 3;\n",
  }
  for rel, text in files.items():
    os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
    with open(os.path.join(root, rel), "w") as f:
      f.write(text)
  with open(os.path.join(root, "pkg", "blob.py"), "wb") as f:
    f.write(b"\x00\x01binary")
  return str(root)


def build(out, tokenizer_path, inputs, *extra, workers=1):
  argv = ["--out_dir", str(out), "--tokenizer", tokenizer_path, "--quiet", "--val_fraction", "0",
          "--max_file_bytes", "5000", "--num_workers", str(workers), *extra]
  for i in inputs:
    argv += ["--input", i]
  code_stream.main(argv)
  return str(out)


def texts(out, tok):
  return [tok.decode(d["tokens"][1:-1]) for d in documents(os.path.join(out, "train"))]


def test_filters_counted_and_headers_written(tmp_path, tokenizer_path, tokenizer):
  src = make_tree(tmp_path / "src")
  out = build(tmp_path / "out", tokenizer_path, [src])
  assert sorted(texts(out, tokenizer)) == sorted([
      "// path: lib/more.c\nstatic int k = 3;\n", "// path: lib/util.c\nint main(void) "
      "{ return 0; }\n", f"# path: pkg/a.py\n{GOOD}", "# path: pkg/b.py\nclass Point:\n    x = 1\n"])
  report = read_report(out)
  assert report["skipped"] == {"duplicate": 1, "generated": 1, "generated_long_lines": 1,
                               "oversized": 1, "empty": 1, "not_code_extension": 1, "binary": 1}
  assert report["skip_examples"]["duplicate"] == os.path.join("pkg", "copy_of_a.py")
  assert set(report["tokens_per_source"]) == {"code/python", "code/c"}


def test_long_mode_joins_a_package(tmp_path, tokenizer_path, tokenizer):
  src = make_tree(tmp_path / "src")
  out = build(tmp_path / "out", tokenizer_path, [src], "--long")
  docs = texts(out, tokenizer)
  assert len(docs) == 2  # lib/ and pkg/
  assert docs[0] == ("// path: lib/more.c\nstatic int k = 3;\n"
                     "// path: lib/util.c\nint main(void) { return 0; }\n")
  assert docs[1].startswith(f"# path: pkg/a.py\n{GOOD}# path: pkg/b.py\n")


def test_records_and_refusals(tmp_path, tokenizer_path, tokenizer):
  jsonl = tmp_path / "code.jsonl"
  jsonl.write_text(json.dumps({"path": "x/y.go", "content": "package y\n"}) + "\n"
                   + json.dumps({"text": "fn main() {}\n", "path": "m.rs"}) + "\n")
  good_pq = tmp_path / "code.parquet"
  pq.write_table(pa.table({"content": ["print(1)\n"], "path": ["p.py"]}), good_pq)
  out = build(tmp_path / "out", tokenizer_path, [str(jsonl), str(good_pq)])
  assert texts(out, tokenizer) == ["// path: x/y.go\npackage y\n", "// path: m.rs\nfn main() {}\n",
                                   "# path: p.py\nprint(1)\n"]
  blob_ids = tmp_path / "stack_edu.parquet"
  pq.write_table(pa.table({"blob_id": ["abc"], "repo_name": ["r"]}), blob_ids)
  with pytest.raises(SystemExit, match=r"stack_edu.parquet has neither a 'content' nor a 'text'"):
    bu.run_main(lambda: build(tmp_path / "o2", tokenizer_path, [str(blob_ids)]))
  with pytest.raises(SystemExit, match="missing_dir does not exist"):
    bu.run_main(lambda: build(tmp_path / "o3", tokenizer_path, [str(tmp_path / "missing_dir")]))


def test_stdlib_input_deterministic_across_workers(tmp_path, tokenizer_path):
  import sysconfig
  json_pkg = os.path.join(sysconfig.get_paths()["stdlib"], "json")
  a = build(tmp_path / "a", tokenizer_path, [json_pkg], "--val_fraction", "0.3", "--max_file_bytes", "1000000")
  b = build(tmp_path / "b", tokenizer_path, [json_pkg], "--val_fraction", "0.3", "--max_file_bytes", "1000000", workers=2)
  assert tree_digest(a) == tree_digest(b)
  report = read_report(a)
  assert report["tokens"]["train"] > 10000 and report["documents"]["train"] >= 3
