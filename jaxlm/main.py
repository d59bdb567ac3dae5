r"""Entry point: python -m jaxlm.main --config=configs/<phase>.py[:tiny] [--config.KEY=VALUE ...]

Examples:
  python -m jaxlm.main --config=configs/phase2_5.py
  python -m jaxlm.main --config=configs/phase2_5.py:tiny --config.workdir=/tmp/p25
  python -m jaxlm.main --config=configs/phase2.py --config.total_opt_steps=100 \
      --config.optimizer.learning_rate=1e-4

Running the same command again on the same workdir resumes from workdir/latest.
A key that is not in the config (e.g. a misspelt --config.val_evry_opt) is refused
with the list of valid keys before anything runs.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging as std_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from jaxlm import distributed
from jaxlm import preflight
from jaxlm import train

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Phase config file, e.g. configs/phase2_5.py or configs/phase2_5.py:tiny.",
    lock_config=True)
# Several processes (hosts): the same command on each; the environment variables
# JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID work as well, and under
# SLURM or Open MPI nothing is needed.
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for multi-process runs.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's rank.")


def _all_keys(config, prefix="") -> list[str]:
  keys = []
  for key, value in config.items():
    keys.append(prefix + key)
    if hasattr(value, "items") and not isinstance(value, dict):
      keys.extend(_all_keys(value, prefix + key + "."))
  return keys


def check_override_keys(argv: list[str], config) -> None:
  """Exits with the list of valid keys if a --config.KEY override names no key.

  config_flags refuses such overrides too, but its message does not say which keys
  exist; this check runs first and does.
  """
  valid = _all_keys(config)
  for arg in argv:
    if not arg.startswith("--config."):
      continue
    key = arg[len("--config."):].split("=", 1)[0]
    if key not in valid:
      near = difflib.get_close_matches(key, valid, n=3)
      hint = f" Did you mean {', '.join(near)}?" if near else ""
      sys.exit(f"Unknown config key {key!r}.{hint}\nValid keys:\n  " + "\n  ".join(valid))


def _load_config(config_arg: str):
  """The ConfigDict that --config=PATH[:ARG] names (as config_flags would build it)."""
  path, _, arg = config_arg.partition(":")
  if not os.path.isfile(path):
    sys.exit(f"Config file not found: {path}")
  spec = importlib.util.spec_from_file_location("_jaxlm_config_check", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _flags_parser(argv: list[str]):
  """Parses flags after checking every --config.KEY override against the config."""
  config_arg = None
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      config_arg = arg.split("=", 1)[1]
    elif arg == "--config" and i + 1 < len(argv):
      config_arg = argv[i + 1]
  if config_arg:
    check_override_keys(argv[1:], _load_config(config_arg))
  return flags.FLAGS(argv)


def _drop_library_info(record) -> bool:
  """Orbax logs every save step at INFO; keep only its warnings and errors."""
  return record.levelno >= std_logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.get_absl_logger().addFilter(_drop_library_info)
  distributed.maybe_initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  distributed.quiet_non_main_processes()
  config = _CONFIG.value
  logging.info("JAX devices: %s", jax.devices())
  logging.info("Config:\n%s", config)
  try:
    result = train.train_and_evaluate(config)
  except preflight.PreflightError as e:  # bad input: the message names it, no traceback
    sys.exit(f"error: {e}")
  except train.NonFiniteError as e:
    logging.error("%s", e)
    sys.exit(str(e))
  if result.get("interrupted"):
    sys.exit(1)


if __name__ == "__main__":
  flags.mark_flag_as_required("config")
  app.run(main, flags_parser=_flags_parser)
