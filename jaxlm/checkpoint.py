"""Checkpoints via Orbax: params-only tags and full training state.

Two kinds of checkpoint live on disk, both ordinary Orbax checkpoint directories:

* A *params checkpoint* (``save_params``): items ``params`` (the Flax param tree) and
  ``model_config`` (the ``config.model`` dict as JSON). The final tag of a phase
  (e.g. ``models/phase2_final``) and ``jaxlm.convert`` outputs are of this kind.
* A *training checkpoint* (written by ``TrainCheckpoints`` through an Orbax
  CheckpointManager): the same two items plus ``opt_state``, ``train_state`` (step,
  RNG key, counters) and ``data_iter`` (the Grain iterator state as JSON).

``load_params`` reads the params of either kind, so any step of ``workdir/latest``,
``workdir/best`` or a final tag can seed the next phase (``init_from``) or the sampler.

Layout of a training workdir::

    workdir/
      latest/<step>/{params,opt_state,model_config,train_state,data_iter}/
      best/best_step_0400/{params,model_config,...}    # best val loss so far, one kept
      metrics.jsonl
      tensorboard/events.out.tfevents.*

Orbax writes every checkpoint into a temporary directory and renames it when complete,
and only committed steps are listed, so a run killed mid-save never resumes from a
partial checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from typing import Any, Mapping

from absl import logging
import jax
from jax.experimental import multihost_utils
import numpy as np
import orbax.checkpoint as ocp

PARAMS = "params"
MODEL_CONFIG = "model_config"
OPT_STATE = "opt_state"
TRAIN_STATE = "train_state"
DATA_ITER = "data_iter"
RUN_CONFIG_FILE = "config.json"

_TMP_MARKER = "orbax-checkpoint-tmp"


# ----------------------------------------------------------------------------------
# Locating a checkpoint.


def _is_item_dir(path: str) -> bool:
  """True if `path` is one checkpoint (it holds a committed `params` item)."""
  return os.path.isdir(os.path.join(path, PARAMS)) and _TMP_MARKER not in os.path.basename(path)


def _step_of(name: str) -> int | None:
  match = re.fullmatch(r"(?:.*_)?(\d+)", name)
  return int(match.group(1)) if match else None


def resolve_checkpoint_dir(path: str) -> str:
  """Returns the single checkpoint directory that `path` designates.

  `path` may be a checkpoint itself (a step dir or a final tag dir) or the root of a
  CheckpointManager (``workdir/latest``, ``workdir/best``), in which case the
  highest-numbered committed step is used. Temporary (uncommitted) saves are ignored.
  """
  path = os.path.abspath(os.fspath(path))
  if not os.path.isdir(path):
    raise FileNotFoundError(f"Checkpoint directory not found: {path}")
  if _is_item_dir(path):
    return path
  steps = []
  for name in os.listdir(path):
    child = os.path.join(path, name)
    step = _step_of(name)
    if step is not None and _is_item_dir(child):
      steps.append((step, child))
  if not steps:
    raise FileNotFoundError(
        f"No checkpoint in {path}: expected a directory holding a '{PARAMS}' item "
        "(a step dir or final tag), or a CheckpointManager root with numbered step dirs. "
        f"Found: {sorted(os.listdir(path))}")
  return max(steps)[1]


# ----------------------------------------------------------------------------------
# Params checkpoints.


def _checkpointer() -> ocp.Checkpointer:
  """A synchronous checkpointer that knows the handler of each item we write."""
  return ocp.Checkpointer(ocp.CompositeCheckpointHandler(**{
      PARAMS: ocp.StandardCheckpointHandler(),
      MODEL_CONFIG: ocp.JsonCheckpointHandler(),
  }))


def _to_plain(tree: Any) -> Any:
  """ConfigDict / tuples -> JSON-friendly dicts and lists."""
  if hasattr(tree, "to_dict"):
    tree = tree.to_dict()
  if isinstance(tree, Mapping):
    return {str(k): _to_plain(v) for k, v in tree.items()}
  if isinstance(tree, (list, tuple)):
    return [_to_plain(v) for v in tree]
  if isinstance(tree, np.generic):
    return tree.item()
  return tree


def write_run_config(directory: str, config: Mapping[str, Any]) -> None:
  """`directory/config.json`: the run's config (samplers find the tokenizer there)."""
  if jax.process_index() != 0:
    return
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, RUN_CONFIG_FILE)
  tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(_to_plain(config), f, indent=2, sort_keys=True, default=str)
    f.write("\n")
  os.replace(tmp, path)


def _sync(name: str) -> None:
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def save_params(path: str, params: Any, model_config: Mapping[str, Any],
                run_config: Mapping[str, Any] | None = None) -> str:
  """Writes `params` and `model_config` as an Orbax checkpoint at `path`.

  The write is atomic: the checkpoint is built under a temporary sibling name and
  swapped into place, so `path` is either the old checkpoint or the complete new one.
  With several processes every process writes its shards into the same temporary
  directory (its name is deterministic) and process 0 does the swap. `run_config`, if
  given, is stored beside the items as config.json. Returns the absolute path.
  """
  path = os.path.abspath(os.fspath(path))
  parent = os.path.dirname(path)
  tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp")
  if jax.process_index() == 0:
    os.makedirs(parent, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed mid-save
  _sync("jaxlm.save_params.start")
  with _checkpointer() as checkpointer:
    checkpointer.save(tmp, args=ocp.args.Composite(**{
        PARAMS: ocp.args.StandardSave(params),
        MODEL_CONFIG: ocp.args.JsonSave(_to_plain(model_config)),
    }))
  if jax.process_index() == 0:
    if run_config is not None:
      write_run_config(tmp, run_config)
    if os.path.exists(path):
      old = os.path.join(parent, f".{os.path.basename(path)}.old-{uuid.uuid4().hex[:8]}")
      os.replace(path, old)
      os.replace(tmp, path)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, path)
  _sync("jaxlm.save_params.done")
  return path


def read_model_config(path: str) -> dict:
  """Returns the `model_config` dict stored with a checkpoint (any accepted form)."""
  ckpt_dir = resolve_checkpoint_dir(path)
  if not os.path.isdir(os.path.join(ckpt_dir, MODEL_CONFIG)):
    raise FileNotFoundError(f"Checkpoint {ckpt_dir} has no '{MODEL_CONFIG}' item.")
  with _checkpointer() as checkpointer:
    restored = checkpointer.restore(
        ckpt_dir, args=ocp.args.Composite(**{MODEL_CONFIG: ocp.args.JsonRestore()}))
  return dict(restored[MODEL_CONFIG])


def params_shapes(path: str) -> dict[str, tuple[tuple[int, ...], str]]:
  """Returns {'/'-joined param name: (shape, dtype)} from a checkpoint's metadata."""
  ckpt_dir = resolve_checkpoint_dir(path)
  with _checkpointer() as checkpointer:
    metadata = checkpointer.metadata(ckpt_dir)
  tree = metadata.item_metadata[PARAMS].tree
  return {
      name: (tuple(leaf.shape), str(leaf.dtype))
      for name, leaf in _flatten_with_names(tree).items()
  }


def _flatten_with_names(tree: Any) -> dict[str, Any]:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {"/".join(_key_name(k) for k in key_path): leaf for key_path, leaf in flat}


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def check_params_match(abstract_params: Any, stored: Mapping[str, tuple], source: str) -> None:
  """Raises ValueError listing every param whose name or shape differs from `stored`.

  Only names and shapes must agree; dtypes are cast on restore, and model settings
  that do not change shapes (e.g. rope_theta) may differ between phases.
  """
  wanted = {name: tuple(leaf.shape) for name, leaf in _flatten_with_names(abstract_params).items()}
  problems = []
  for name in sorted(wanted.keys() | stored.keys()):
    if name not in stored:
      problems.append(f"  {name}: missing in checkpoint (model wants {wanted[name]})")
    elif name not in wanted:
      problems.append(f"  {name}: in checkpoint {stored[name][0]} but not in the model")
    elif tuple(stored[name][0]) != wanted[name]:
      problems.append(f"  {name}: checkpoint {tuple(stored[name][0])} vs model {wanted[name]}")
  if problems:
    raise ValueError(
        f"Params in {source} do not match the model ({len(problems)} mismatched):\n"
        + "\n".join(problems))


def _with_default_sharding(abstract: Any) -> Any:
  """Orbax needs a sharding per leaf to restore; default to this process's first device."""
  default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

  def fill(leaf):
    sharding = getattr(leaf, "sharding", None)
    return jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding or default)

  return jax.tree.map(fill, abstract)


def load_params(path: str, abstract_params: Any = None) -> tuple[Any, dict]:
  """Loads (params, model_config dict) from a params or training checkpoint.

  Args:
    path: a step dir, a final tag dir, or a CheckpointManager root (latest step).
    abstract_params: optional pytree of jax.ShapeDtypeStruct (e.g. from
      ``jax.eval_shape(model.init, ...)``), possibly carrying shardings. When given,
      names and shapes are checked first (ValueError listing mismatches) and arrays
      are restored with those dtypes and shardings.
  """
  ckpt_dir = resolve_checkpoint_dir(path)
  items: dict[str, Any] = {}
  if abstract_params is not None:
    check_params_match(abstract_params, params_shapes(ckpt_dir), ckpt_dir)
    items[PARAMS] = ocp.args.StandardRestore(_with_default_sharding(abstract_params))
  else:
    # Shapes and dtypes from the checkpoint's metadata, placed on this process's first
    # device: a checkpoint written on any mesh (several GPUs or hosts) loads here.
    with _checkpointer() as checkpointer:
      tree = checkpointer.metadata(ckpt_dir).item_metadata[PARAMS].tree
    abstract = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(tuple(leaf.shape), leaf.dtype),
                            tree)
    items[PARAMS] = ocp.args.StandardRestore(_with_default_sharding(abstract))
  has_config = os.path.isdir(os.path.join(ckpt_dir, MODEL_CONFIG))
  if has_config:
    items[MODEL_CONFIG] = ocp.args.JsonRestore()
  with _checkpointer() as checkpointer:
    restored = checkpointer.restore(ckpt_dir, args=ocp.args.Composite(**items))
  model_config = dict(restored[MODEL_CONFIG]) if has_config else {}
  return restored[PARAMS], model_config


# ----------------------------------------------------------------------------------
# Training checkpoints (latest + best) through Orbax CheckpointManagers.


class TrainCheckpoints:
  """`workdir/latest` (resume) and `workdir/best` (best val loss) managers.

  Every save writes the full training state, so a best checkpoint can also be
  resumed from; `load_params` reads its params for the next phase.

  Saves are asynchronous: Orbax commits them in background threads. Use the object as a
  context manager (``with TrainCheckpoints(...) as checkpoints:``): leaving the block,
  normally or by an exception, waits until every save is committed and closes both
  managers, so no write is left running when the process reaches interpreter shutdown
  (where Orbax's commit thread would fail with "cannot schedule new futures after
  interpreter shutdown").

  With several processes the two managers must never finalize at the same time: Orbax
  names its cross-process barriers by `barrier_sync_key_prefix` only (e.g.
  "ThreadSaveMultiHostValueHolder:set_value_start" for every save of every manager), so
  two managers committing concurrently can meet at each other's barrier, which fails with
  "Barrier ... is already ongoing" on one process and deadlocks the other. Each manager
  gets its own prefix, and a save first waits for the other manager's save to commit.
  """

  def __init__(self, workdir: str, keep_latest: int = 2):
    workdir = os.path.abspath(workdir)
    self.latest_dir = os.path.join(workdir, "latest")
    self.best_dir = os.path.join(workdir, "best")
    # cleanup_tmp_directories: a save cut short by a kill leaves an uncommitted temp dir
    # (a full training state); it is never resumed from, and is deleted on the next start.
    self.latest = ocp.CheckpointManager(
        self.latest_dir,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep_latest, create=True, cleanup_tmp_directories=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix="jaxlm_latest")))
    self.best = ocp.CheckpointManager(
        self.best_dir,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1,
            best_fn=lambda metrics: metrics["val_loss"],
            best_mode="min",
            keep_checkpoints_without_metrics=False,
            step_prefix="best_step",
            step_format_fixed_length=4,
            create=True,
            cleanup_tmp_directories=True,
            multiprocessing_options=ocp.options.MultiprocessingOptions(
                barrier_sync_key_prefix="jaxlm_best")))
    self._closed = False

  @staticmethod
  def _save_args(state: Mapping[str, Any]) -> ocp.args.Composite:
    return ocp.args.Composite(**{
        PARAMS: ocp.args.StandardSave(state[PARAMS]),
        OPT_STATE: ocp.args.StandardSave(state[OPT_STATE]),
        TRAIN_STATE: ocp.args.StandardSave(state[TRAIN_STATE]),
        MODEL_CONFIG: ocp.args.JsonSave(_to_plain(state[MODEL_CONFIG])),
        DATA_ITER: ocp.args.JsonSave(_to_plain(state[DATA_ITER])),
    })

  def latest_step(self) -> int | None:
    return self.latest.latest_step()

  def save_latest(self, step: int, state: Mapping[str, Any]) -> None:
    """Saves `state` (params, opt_state, train_state, model_config, data_iter)."""
    if step in self.latest.all_steps():
      return
    self.best.wait_until_finished()  # one manager committing at a time (class docstring)
    self.latest.save(step, args=self._save_args(state), force=True)

  def save_best(self, step: int, state: Mapping[str, Any], val_loss: float) -> bool:
    """Saves `state` under best/ if `val_loss` beats the best so far; returns whether it did."""
    self.latest.wait_until_finished()  # one manager committing at a time (class docstring)
    self.best.wait_until_finished()  # the previous best's metrics are known once committed
    best_step = self.best.best_step()
    if best_step is not None:
      best_loss = self.best_metrics().get("val_loss", float("inf"))
      if not val_loss < best_loss:
        return False
    if step in self.best.all_steps():
      return False
    self.best.save(step, args=self._save_args(state),
                   metrics={"val_loss": float(val_loss)}, force=True)
    return True

  def best_metrics(self) -> dict:
    best_step = self.best.best_step()
    if best_step is None:
      return {}
    return dict(self.best.metrics(best_step) or {})

  def restore_latest(self, abstract_state: Mapping[str, Any]) -> dict:
    """Restores the latest step into the structure/shardings of `abstract_state`."""
    step = self.latest.latest_step()
    if step is None:
      raise FileNotFoundError(f"No checkpoint under {self.latest_dir}")
    restored = self.latest.restore(step, args=ocp.args.Composite(**{
        PARAMS: ocp.args.StandardRestore(_with_default_sharding(abstract_state[PARAMS])),
        OPT_STATE: ocp.args.StandardRestore(_with_default_sharding(abstract_state[OPT_STATE])),
        TRAIN_STATE: ocp.args.StandardRestore(
            _with_default_sharding(abstract_state[TRAIN_STATE])),
        MODEL_CONFIG: ocp.args.JsonRestore(),
        DATA_ITER: ocp.args.JsonRestore(),
    }))
    return {name: restored[name] for name in
            (PARAMS, OPT_STATE, TRAIN_STATE, MODEL_CONFIG, DATA_ITER)}

  def wait_until_finished(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    """Waits until every save is committed, then closes both managers (idempotent)."""
    if self._closed:
      return
    self._closed = True
    try:
      self.latest.close()
    finally:
      self.best.close()

  def __enter__(self) -> "TrainCheckpoints":
    return self

  def __exit__(self, exc_type, exc, tb) -> bool:
    if exc_type is None:
      self.close()  # a failed commit is an error of the run
      return False
    try:  # an error (or a second Ctrl-C) is unwinding: still commit what is in flight
      self.close()
    except BaseException:  # pylint: disable=broad-except
      logging.exception("Closing the checkpoint managers after %s failed too.",
                        exc_type.__name__)
    return False  # the original exception propagates
