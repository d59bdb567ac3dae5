r"""A few sharded training steps of a tiny model, run as one process of a multi-process job.

It puts the pieces of multi-host training together the way the trainer does: join the
job (`jaxlm.distributed`), build the mesh and shardings over every process's devices
(`jaxlm.sharding`), read this process's share of the data (`jaxlm.input_pipeline` with
process_index/process_count), run the trainer's own jitted step (`jaxlm.train.build_program`,
the Program `train_and_evaluate` uses) on global arrays,
save and restore an Orbax training checkpoint from every process. At the end each process
writes, under --out_dir,

  params_process<i>.npz   the full (gathered) params after the last step
  result_process<i>.json  losses per step, process/device counts, whether the restored
                          checkpoint equals the trained state

tests/test_multiprocess.py runs two of these on one machine (CPU, gloo collectives) and
checks both processes end with the same params as a one-process run on the same rows.
By hand, on one machine:

  for i in 0 1; do
    JAX_PLATFORMS=cpu XLA_FLAGS=--xla_force_host_platform_device_count=2 \
    python -m experiments.multiprocess_train --coordinator_address=127.0.0.1:12355 \
      --num_processes=2 --process_id=$i --train_dir=data/shards/tiny/train \
      --out_dir=/tmp/mp_run --mesh=data=2,fsdp=-1,tensor=1 &
  done; wait

On several hosts run the same command on each (coordinator = host 0's address).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from typing import Any, NamedTuple

from absl import logging
import jax
import numpy as np

from jaxlm import distributed


def parse_args(argv=None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description="One process of a multi-process tiny run.")
  parser.add_argument("--coordinator_address", default=None,
                      help="host:port of process 0 (or env JAX_COORDINATOR_ADDRESS); "
                           "unset = single process")
  parser.add_argument("--num_processes", type=int, default=None,
                      help="processes in the job (or JAX_NUM_PROCESSES)")
  parser.add_argument("--process_id", type=int, default=None,
                      help="this process's rank (or env JAX_PROCESS_ID)")
  parser.add_argument("--train_dir", required=True, help="split directory of training shards")
  parser.add_argument("--out_dir", required=True, help="where params/results/checkpoints go")
  parser.add_argument("--mesh", default="data=1,fsdp=-1,tensor=1",
                      help="mesh axis sizes, -1 = the rest")
  parser.add_argument("--steps", type=int, default=3, help="optimizer steps")
  parser.add_argument("--seq_len", type=int, default=32, help="tokens per row")
  parser.add_argument("--micro_batch_size", type=int, default=4, help="global rows per micro batch")
  parser.add_argument("--grad_accum_steps", type=int, default=2,
                      help="micro batches per optimizer step")
  return parser.parse_args(argv)


def parse_mesh(text: str) -> dict[str, int]:
  """'data=2,fsdp=-1,tensor=1' -> {'data': 2, 'fsdp': -1, 'tensor': 1}."""
  sizes = {"data": 1, "fsdp": -1, "tensor": 1}
  for item in filter(None, text.split(",")):
    name, _, value = item.partition("=")
    if name not in sizes:
      raise ValueError(f"--mesh: unknown axis {name!r} in {text!r}; axes: {sorted(sizes)}")
    try:
      sizes[name] = int(value)
    except ValueError:
      raise ValueError(f"--mesh: {item!r} in {text!r} is not axis=int") from None
  return sizes


def make_config(train_dir: str, vocab_size: int, *, mesh: dict[str, int], steps: int = 3,
                seq_len: int = 32, micro_batch_size: int = 4, grad_accum_steps: int = 2):
  """The trainer's config with a tiny float32 model (exact comparisons across meshes)."""
  from configs import common

  config = common.get_base_config()
  config.model.update(common.MODEL_TINY)
  config.model.update(vocab_size=vocab_size, max_seq_len=seq_len, param_dtype="float32",
                      compute_dtype="float32", attention="xla", scan_layers=True)
  config.train_dir = train_dir
  config.seq_len = seq_len
  config.micro_batch_size = micro_batch_size
  config.grad_accum_steps = grad_accum_steps
  config.total_opt_steps = steps
  config.optimizer.warmup_steps = 1
  config.optimizer.learning_rate = 1e-2
  config.data.prefetch = 0
  config.mesh.update(mesh)
  return config


def data_iterators(config, vocab_size: int, simulate_processes: int | None = None):
  """This process's iterator, or (simulate_processes=N) all N processes' iterators."""
  from jaxlm import input_pipeline

  if simulate_processes:
    return [input_pipeline.make_train_iterator(config, vocab_size=vocab_size,
                                               process_index=p, process_count=simulate_processes)
            for p in range(simulate_processes)]
  return [input_pipeline.make_train_iterator(config, vocab_size=vocab_size,
                                             process_index=jax.process_index(),
                                             process_count=jax.process_count())]


def next_local_batch(iterators, accum_steps: int) -> dict[str, np.ndarray]:
  """This process's rows; with several (simulated) iterators, the rows all of them would
  contribute, laid out so `shard_batch(..., accum_steps)` gives the multi-process batch."""
  from jaxlm import train as train_lib

  batches = [next(it) for it in iterators]
  out = {}
  for name in train_lib.TRAIN_FIELDS:
    parts = [np.asarray(b[name]) for b in batches]
    per_micro = [p.reshape((accum_steps, -1) + p.shape[1:]) for p in parts]
    merged = np.concatenate(per_micro, axis=1)
    out[name] = merged.reshape((-1,) + merged.shape[2:])
  return out


class TrainResult(NamedTuple):
  state: Any  # final train state (global, sharded jax.Arrays)
  shardings: Any  # the state's NamedShardings
  mesh: Any  # the mesh the run used
  losses: list[float]  # loss of each step
  batch_digests: list[str]  # sha256 of this process's input rows at each step
  iterators: list[Any]  # the data iterators (for their checkpointable state)


def train(config, vocab_size: int, simulate_processes: int | None = None) -> TrainResult:
  """Runs config.total_opt_steps optimizer steps of the trainer's own jitted step (its
  `Program`, on the config's mesh) from a fresh state."""
  from jaxlm import train as train_lib

  program = train_lib.build_program(config)
  state = program.init(jax.random.PRNGKey(config.seed))  # created directly in its shards
  iterators = data_iterators(config, vocab_size, simulate_processes)
  losses, digests = [], []
  for _ in range(config.total_opt_steps):
    local = next_local_batch(iterators, config.grad_accum_steps)
    digests.append(hashlib.sha256(local["inputs"].tobytes()).hexdigest())
    batch = program.shard_batch(local, train_lib.TRAIN_FIELDS, config.grad_accum_steps)
    state, metrics = program.train_step(state, batch)
    losses.append(float(metrics["loss"]))
  return TrainResult(state, program.state_shardings, program.mesh, losses, digests, iterators)


def gather(tree) -> dict[str, np.ndarray]:
  """Full numpy copies of every (possibly cross-process sharded) leaf, keyed by path."""
  from jax.experimental import multihost_utils

  full = multihost_utils.process_allgather(tree, tiled=True)
  flat = jax.tree_util.tree_flatten_with_path(full)[0]
  return {"/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path): np.asarray(v)
          for path, v in flat}


def save_and_restore(workdir: str, state, shardings, model_config, data_state) -> bool:
  """Saves a training checkpoint from every process, restores it onto the same shardings
  and says whether the restored state equals `state` on every process."""
  from jax.experimental import multihost_utils
  from jaxlm import checkpoint
  from jaxlm import sharding

  checkpoints = checkpoint.TrainCheckpoints(workdir)
  step = int(state["train_state"]["step"])
  checkpoints.save_latest(step, {**state, "model_config": model_config,
                                 "data_iter": data_state})
  checkpoints.wait_until_finished()
  abstract = sharding.with_shardings(jax.eval_shape(lambda s: s, state), shardings)
  restored = checkpoints.restore_latest({**abstract, "model_config": None, "data_iter": None})
  checkpoints.close()
  same_layout = all(
      a.sharding == b.sharding for a, b in
      zip(jax.tree.leaves(restored["params"]), jax.tree.leaves(state["params"])))
  local_equal = same_layout and all(
      np.array_equal(np.asarray(sa.data), np.asarray(sb.data))
      for a, b in zip(jax.tree.leaves({k: restored[k] for k in ("params", "opt_state")}),
                      jax.tree.leaves({k: state[k] for k in ("params", "opt_state")}))
      for sa, sb in zip(a.addressable_shards, b.addressable_shards))
  # Every process checked its own shards; all of them must agree.
  votes = multihost_utils.process_allgather(np.int32(local_equal))
  return bool(np.all(votes))


def main(argv=None):
  args = parse_args(argv)
  logging.set_verbosity(logging.INFO)  # process 0's progress lines (the others: warnings)
  distributed.maybe_initialize(args.coordinator_address, args.num_processes, args.process_id)
  distributed.quiet_non_main_processes()
  from jaxlm.data import shards

  vocab_size = int(shards.SplitDir(args.train_dir).meta["vocab_size"])
  config = make_config(args.train_dir, vocab_size, mesh=parse_mesh(args.mesh),
                       steps=args.steps, seq_len=args.seq_len,
                       micro_batch_size=args.micro_batch_size,
                       grad_accum_steps=args.grad_accum_steps)
  result = train(config, vocab_size)
  mesh = result.mesh
  if distributed.is_main_process():
    logging.info("%d processes, %d devices, mesh %s", jax.process_count(), jax.device_count(),
                 dict(mesh.shape))
  restore_ok = save_and_restore(os.path.join(args.out_dir, "workdir"), result.state,
                                result.shardings, config.model.to_dict(),
                                result.iterators[0].get_state())
  params = gather(result.state["params"])

  rank = jax.process_index()
  os.makedirs(args.out_dir, exist_ok=True)
  summary = {"process_index": rank, "process_count": jax.process_count(),
            "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
            "mesh": dict(mesh.shape), "losses": result.losses,
             "batch_digests": result.batch_digests, "restore_matches": restore_ok}
  for name, payload in ((f"params_process{rank}.npz", params),
                        (f"result_process{rank}.json", summary)):
    path = os.path.join(args.out_dir, name)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
      if name.endswith(".npz"):
        np.savez(f, **payload)
      else:
        f.write(json.dumps(payload, indent=1).encode())
    os.replace(tmp, path)
  if distributed.is_main_process():
    logging.info("losses %s; checkpoint restore matches: %s", result.losses, restore_ok)


if __name__ == "__main__":
  main()
