"""Multi-process start-up: one JAX process per host (or per GPU), joined by a coordinator.

Call `maybe_initialize()` first thing in main, before anything touches a device. It
connects the processes when the launch says there are several, and does nothing for an
ordinary single-process run:

* explicit arguments (e.g. from --coordinator_address/--num_processes/--process_id flags),
* else the environment: JAX_COORDINATOR_ADDRESS (read by jax itself too) with
  JAX_NUM_PROCESSES and JAX_PROCESS_ID (read here; jax leaves those two to the caller),
* else a cluster jax recognises by itself (SLURM with several tasks, Open MPI's mpirun):
  `jax.distributed.initialize()` without arguments finds coordinator and ranks there.

After it, `jax.devices()` lists every process's devices and `jax.process_index()` /
`jax.process_count()` say who we are; `is_main_process()` decides who logs and writes
non-Orbax files (Orbax coordinates checkpoint writes across processes by itself).
"""

from __future__ import annotations

import os

from absl import logging
import jax

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def _env_int(name: str) -> int | None:
  value = os.environ.get(name, "").strip()
  if not value:
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _managed_cluster() -> str | None:
  """Name of a multi-process launcher jax can configure itself from, if this is one."""
  if "OMPI_MCA_orte_hnp_uri" in os.environ and int(
      os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return "Open MPI"
  slurm = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
           "SLURM_LOCALID")
  if all(v in os.environ for v in slurm) and int(os.environ["SLURM_NTASKS"]) > 1:
    return "SLURM"
  return None


def _use_gloo_on_cpu() -> None:
  # CPU devices of different processes need a cross-process collectives library for the
  # all-reduces of a CPU run (tests, debugging); GPUs use NCCL and ignore this setting.
  if not getattr(jax.config, "jax_cpu_collectives_implementation", None):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


def maybe_initialize(coordinator_address: str | None = None,
                     num_processes: int | None = None,
                     process_id: int | None = None,
                     local_device_ids: list[int] | None = None) -> bool:
  """Joins a multi-process JAX job if the launch asks for one; returns True if it did.

  Safe to call more than once (later calls see jax already initialised).
  """
  if jax.distributed.is_initialized():
    return True
  coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
  if num_processes is None:
    num_processes = _env_int(ENV_NUM_PROCESSES)
  if process_id is None:
    process_id = _env_int(ENV_PROCESS_ID)

  if coordinator_address:
    if num_processes == 1:
      return False
    missing = [name for name, value in (("num_processes (JAX_NUM_PROCESSES)", num_processes),
                                        ("process_id (JAX_PROCESS_ID)", process_id))
               if value is None]
    if missing and _managed_cluster() is None:
      raise ValueError(f"coordinator address {coordinator_address!r} given but "
                       f"{' and '.join(missing)} not set")
    _use_gloo_on_cpu()
    logging.info("Joining %s processes via coordinator %s as process %s",
                 num_processes, coordinator_address, process_id)
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id,
                               local_device_ids=local_device_ids)
    return True

  if num_processes not in (None, 1) or process_id not in (None, 0):
    raise ValueError(f"num_processes={num_processes}, process_id={process_id} given without a "
                     f"coordinator address (flag or {ENV_COORDINATOR})")
  cluster = _managed_cluster()
  if cluster is not None:
    _use_gloo_on_cpu()
    logging.info("Detected a %s launch; letting jax.distributed find its peers", cluster)
    jax.distributed.initialize(local_device_ids=local_device_ids)
    return True
  return False


def is_main_process() -> bool:
  """True on the process that logs, writes metrics files and prints."""
  return jax.process_index() == 0


def quiet_non_main_processes() -> None:
  """Only process 0 logs at INFO; the others keep warnings and errors (absl logging)."""
  if not is_main_process():
    logging.set_verbosity(logging.WARNING)
