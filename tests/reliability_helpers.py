"""Running `python -m jaxlm.main` as a real subprocess on the tiny test model, and
reading back what it left on disk (metrics, checkpoints, file digests)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_config(path: str, workdir: str, shard_dir: str, **overrides) -> str:
  """A config file for jaxlm.main: tests.train_helpers.tiny_config with `overrides`."""
  with open(path, "w") as f:
    f.write(
        "from configs import phase2\n"
        "from tests import train_helpers\n\n\n"
        "def get_config():\n"
        f"  return train_helpers.tiny_config(phase2, {workdir!r}, {shard_dir!r},\n"
        f"                                   **{overrides!r})\n")
  return path


def main_command(config_path: str, *flags: str) -> list[str]:
  return [sys.executable, "-m", "jaxlm.main", f"--config={config_path}", *flags]


def child_env(compile_cache: str | None = None) -> dict[str, str]:
  """CPU, one device (the tests' 8 fake host devices are for the sharding tests).

  `compile_cache`: a JAX persistent compilation cache shared by the runs of a test, so
  only the first one compiles (same executables, a few seconds less per run).
  """
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  env.update(JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
  if compile_cache:
    env.update(JAX_COMPILATION_CACHE_DIR=compile_cache,
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  return env


def run(command: list[str], timeout: float = 300, **env_args) -> subprocess.CompletedProcess:
  return subprocess.run(command, cwd=REPO, env=child_env(**env_args), capture_output=True,
                        text=True, timeout=timeout)


def start(command: list[str], log_path: str, **env_args) -> subprocess.Popen:
  """Starts `command` in the background, appending its output to `log_path`."""
  log = open(log_path, "ab")
  process = subprocess.Popen(command, cwd=REPO, env=child_env(**env_args), stdout=log,
                             stderr=subprocess.STDOUT)
  log.close()  # the child holds its own descriptor
  return process


def wait_for(predicate, process: subprocess.Popen, timeout: float = 120.0,
             interval: float = 0.001):
  """Polls `predicate()` until it returns something truthy; None if the process ended."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    found = predicate()
    if found:
      return found
    if process.poll() is not None:
      return predicate() or None
    time.sleep(interval)
  raise TimeoutError(f"condition not met within {timeout}s")


def records(workdir: str, kind: str = "train") -> dict[int, dict]:
  """{step: record} of metrics.jsonl; a resumed run appends, so the last record wins."""
  path = os.path.join(workdir, "metrics.jsonl")
  out = {}
  if not os.path.exists(path):
    return out
  with open(path) as f:
    for line in f:
      if not line.endswith("\n"):
        break  # a line being written when the process was killed
      record = json.loads(line)
      if record["kind"] == kind:
        out[record["step"]] = record
  return out


def checkpoint_names(directory: str) -> list[str]:
  """Committed checkpoints under a CheckpointManager root (Orbax temp dirs excluded)."""
  if not os.path.isdir(directory):
    return []
  return sorted((n for n in os.listdir(directory) if "tmp" not in n),
                key=lambda n: int(n.rsplit("_", 1)[-1]))


def temp_names(directory: str) -> list[str]:
  if not os.path.isdir(directory):
    return []
  return sorted(n for n in os.listdir(directory) if "orbax-checkpoint-tmp" in n)


def tree_digest(*roots: str) -> dict[str, str]:
  """sha256 of every file under the roots (missing roots count as empty)."""
  out = {}
  for root in roots:
    for dirpath, _, files in os.walk(root):
      for name in files:
        path = os.path.join(dirpath, name)
        with open(path, "rb") as f:
          out[path] = hashlib.sha256(f.read()).hexdigest()
  return out
