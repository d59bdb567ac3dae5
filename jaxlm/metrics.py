"""Training metrics: JSON lines + TensorBoard event files, and model FLOPs utilisation.

TensorBoard files are written with TensorBoard's own event writer and protos, which
work without TensorFlow installed.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Mapping

import jax
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

# Dense bf16 peak FLOP/s per chip (no sparsity), matched by substring of device_kind.
PEAK_BF16_FLOPS = (
    ("h200", 989e12),
    ("h100", 989e12),
    ("gh200", 989e12),
    ("a100", 312e12),
    ("a6000", 155e12),
    ("l40s", 362e12),
    ("l4", 121e12),
    ("a10", 125e12),
    ("4090", 165e12),
    ("4080", 97e12),
    ("3090", 71e12),
    ("v100", 125e12),  # fp16 tensor cores (no bf16)
    ("tpu v4", 275e12),
    ("tpu v5 lite", 197e12),
    ("tpu v5e", 197e12),
    ("tpu v5p", 459e12),
    ("tpu v5", 459e12),
    ("tpu v6", 918e12),
)


def peak_flops_per_device(device_kind: str | None = None) -> float | None:
  """Peak bf16 FLOP/s of one device, or None when unknown (e.g. CPU)."""
  kind = (device_kind or jax.devices()[0].device_kind).lower()
  for name, flops in PEAK_BF16_FLOPS:
    if name in kind:
      return flops
  return None


class MetricWriter:
  """Appends scalars to workdir/metrics.jsonl and (optionally) TensorBoard events."""

  def __init__(self, workdir: str, tensorboard: bool = True, enabled: bool = True):
    # enabled=False (processes other than 0 of a multi-process run): writes nothing.
    self.enabled = enabled
    self.jsonl_path = os.path.join(workdir, "metrics.jsonl")
    self._jsonl = self._events = None
    if not enabled:
      return
    os.makedirs(workdir, exist_ok=True)
    self._jsonl = open(self.jsonl_path, "a", buffering=1)
    if tensorboard:
      self._events = EventFileWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, scalars: Mapping[str, float], kind: str = "train") -> None:
    """Writes one record; non-finite values become null in JSON (still logged)."""
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items() if v is not None}
    record = {"step": int(step), "kind": kind, "time": time.time()}
    record.update({k: (v if math.isfinite(v) else None) for k, v in clean.items()})
    self._jsonl.write(json.dumps(record) + "\n")
    if self._events is not None:
      values = [summary_pb2.Summary.Value(tag=f"{kind}/{k}", simple_value=v)
                for k, v in clean.items()]
      self._events.add_event(event_pb2.Event(
          wall_time=time.time(), step=int(step), summary=summary_pb2.Summary(value=values)))

  def flush(self) -> None:
    if self._jsonl is not None:
      self._jsonl.flush()
    if self._events is not None:
      self._events.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._events is not None:
      self._events.close()
