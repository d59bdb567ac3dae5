"""Text from a TensorFlow Datasets dataset, read without TensorFlow.

`tfds.data_source` opens a dataset prepared in the array_record file format (the format Grain
reads) with random access and decodes examples in numpy, so no TensorFlow is needed. Prepare a
dataset once (on any machine) with

  tfds build NAME --data_dir DIR --file_format=array_record

then builders take `tfds:NAME[/CONFIG][:SPLIT]` as an input, e.g. `tfds:wikipedia/20230601.en`
or `tfds:gsm8k:train[:90%]` (split slicing works as in tfds; the default split is train).
Datasets prepared as tfrecord cannot be read this way (that path needs TensorFlow).
"""

from __future__ import annotations

import os
from typing import Iterator

TFDS_PREFIX = "tfds:"


def is_tfds_spec(text: str) -> bool:
  return text.startswith(TFDS_PREFIX)


def parse_tfds_spec(spec: str) -> tuple[str, str]:
  """'tfds:NAME[/CONFIG][:SPLIT]' -> (NAME[/CONFIG], SPLIT or 'train')."""
  if not is_tfds_spec(spec):
    raise ValueError(f"{spec!r} is not a tfds input (expected tfds:NAME[/CONFIG][:SPLIT])")
  name, _, split = spec[len(TFDS_PREFIX):].partition(":")
  if not name:
    raise ValueError(f"{spec!r}: no dataset name (expected tfds:NAME[/CONFIG][:SPLIT])")
  return name, split or "train"


def open_tfds_source(name: str, data_dir: str | None, split: str):
  """A random-access source over the prepared dataset (refusals name the dataset and dir)."""
  import tensorflow_datasets as tfds  # slow import; only when a tfds input is used

  if data_dir and not os.path.isdir(data_dir):
    raise FileNotFoundError(f"tfds data_dir {data_dir} does not exist")
  where = data_dir or "the default tfds data_dir"
  try:
    return tfds.data_source(name, data_dir=data_dir, split=split)
  except tfds.core.registered.DatasetNotFoundError:
    raise FileNotFoundError(f"tfds dataset {name!r} is not prepared in {where} (prepare it "
                            f"with: tfds build {name.split('/')[0]} --data_dir DIR "
                            f"--file_format=array_record)") from None
  except (ValueError, AssertionError, FileNotFoundError, NotImplementedError) as e:
    first_line = str(e).strip().split("\n")[0]
    raise ValueError(f"tfds dataset {name!r} split {split!r} in {where}: {first_line}") from None


def iter_tfds_texts(name: str, data_dir: str | None, split: str = "train",
                    field: str = "text") -> Iterator[str]:
  """Yields `field` of every example, decoded as UTF-8 text, in the dataset's stored order."""
  source = open_tfds_source(name, data_dir, split)
  for i in range(len(source)):
    example = source[i]
    if field not in example:
      raise KeyError(f"tfds dataset {name!r} has no field {field!r}; fields are "
                     f"{sorted(example)}")
    value = example[field]
    if isinstance(value, bytes):
      value = value.decode("utf-8", errors="replace")
    elif not isinstance(value, str):
      raise ValueError(f"tfds dataset {name!r} field {field!r} is {type(value).__name__}, "
                       f"not text")
    yield value
