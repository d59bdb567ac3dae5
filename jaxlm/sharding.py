"""Device mesh and shardings: data parallel, FSDP and tensor parallel through jax.jit.

One jitted train step runs on any mesh: params, optimizer state and batch arrays carry
NamedShardings and XLA's SPMD partitioner inserts the collectives (all-gathers of FSDP
shards before a matmul, reduce-scatters of gradients, all-reduces over the batch axes).

Mesh axes, outermost first (the innermost axis gets neighbouring devices, so keep the
chattiest one, tensor, inside a host):

    data    pure data parallelism: params replicated, batch split
    fsdp    batch split AND params/optimizer state split along their 'embed' dimension
    tensor  params split along heads / kv_heads / mlp / vocab (Megatron-style)

Logical axes (from `jaxlm.model.param_logical_axes`) map to mesh axes with RULES. A rule
that does not divide a dimension is dropped for that dimension (it stays replicated), and
vectors (norm scales: one dimension besides 'layers') are always replicated, because an
all-gather per use costs more than the bytes it would save.

Typical use with the trainer's state dict (see experiments/SCALING.md):

    mesh = make_mesh(config.mesh)
    abstract = jax.eval_shape(fresh_state, rng)          # {'params', 'opt_state', ...}
    shardings = state_shardings(abstract, param_shardings(abstract['params'], mesh), mesh)
    state = jax.jit(fresh_state, out_shardings=shardings)(rng)   # born sharded
    step = jax.jit(train_step, in_shardings=(shardings, batch_sharding(mesh, accum=True)),
                   out_shardings=(shardings, replicated(mesh)), donate_argnums=0)
    state, metrics = step(state, shard_batch(numpy_batch, mesh, accum_steps))
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from jaxlm import model as model_lib

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical axis -> mesh axis (or a tuple of mesh axes, or None = replicated).
RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": BATCH_AXES,
    "vocab": "tensor",
    "embed": "fsdp",
    "heads": "tensor",
    "kv_heads": "tensor",
    "mlp": "tensor",
    "head_dim": None,
    "layers": None,
}


# --------------------------------------------------------------------------- the mesh


def mesh_shape(mesh_config: Mapping[str, int] | Any, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) sizes; one axis may be -1 and takes the remaining devices."""
  sizes = []
  for name in MESH_AXES:
    try:
      sizes.append(int(mesh_config[name]))
    except (KeyError, AttributeError, TypeError) as err:
      raise ValueError(f"config.mesh.{name} is missing (mesh config: {mesh_config})") from err
  for name, size in zip(MESH_AXES, sizes):
    if size == 0 or size < -1:
      raise ValueError(f"config.mesh.{name}={size}; expected a positive size or -1")
  fill = [i for i, s in enumerate(sizes) if s == -1]
  if len(fill) > 1:
    raise ValueError(f"config.mesh: only one axis may be -1, got "
                     f"{dict(zip(MESH_AXES, sizes))}")
  known = math.prod(s for s in sizes if s != -1)
  if fill:
    if num_devices % known:
      raise ValueError(f"config.mesh {dict(zip(MESH_AXES, sizes))}: {num_devices} devices "
                       f"are not divisible by the fixed axes' product {known}")
    sizes[fill[0]] = num_devices // known
  if math.prod(sizes) > num_devices:
    raise ValueError(f"config.mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} "
                     f"devices but {num_devices} are available; set one axis to -1")
  # Fewer than all devices (e.g. data=fsdp=tensor=1 for a one-device run on a multi-GPU
  # host) is allowed: make_mesh takes the first ones.
  return tuple(sizes)


def make_mesh(mesh_config: Mapping[str, int] | Any,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('data', 'fsdp', 'tensor') mesh over all devices (of every process) or `devices`.

  Axis types are Auto: shardings are hints to XLA's partitioner, so model code needs no
  sharding annotations of its own.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_config, len(devices))
  devices = devices[:math.prod(shape)]
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


# --------------------------------------------------------------------------- logical rules


def logical_axis_rules(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """RULES updated with `overrides` (e.g. {'embed': None} for plain data parallelism).

  Mesh axis names in the result are checked against MESH_AXES.
  """
  rules = dict(RULES)
  rules.update(dict(overrides or {}))
  for logical, target in rules.items():
    targets = target if isinstance(target, (tuple, list)) else (target,)
    for axis in targets:
      if axis is not None and axis not in MESH_AXES:
        raise ValueError(f"logical axis rule {logical!r} -> {target!r}: {axis!r} is not a "
                         f"mesh axis {MESH_AXES}")
  return rules


def logical_to_spec(logical_axes: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
                    rules: Mapping[str, Any] | None = None) -> P:
  """PartitionSpec for an array with these logical axes and shape.

  Per dimension, the rule's mesh axes are kept only while their product divides the
  dimension, and a mesh axis is used at most once per array (first dimension wins).
  Mesh axes of size 1 are left out, so the spec names only real splits.
  """
  rules = logical_axis_rules() if rules is None else rules
  if len(logical_axes) != len(shape):
    raise ValueError(f"logical axes {tuple(logical_axes)} do not match shape {tuple(shape)}")
  used: set[str] = set()
  spec = []
  for name, size in zip(logical_axes, shape):
    if name is not None and name not in rules:
      raise ValueError(f"no sharding rule for logical axis {name!r}; rules: {sorted(rules)}")
    target = rules.get(name) if name is not None else None
    targets = target if isinstance(target, (tuple, list)) else (target,)
    kept: list[str] = []
    for axis in targets:
      if axis is None or axis in used or mesh.shape[axis] == 1:
        continue  # a size-1 axis splits nothing; leaving it out keeps specs readable
      if size % (math.prod(mesh.shape[a] for a in kept) * mesh.shape[axis]):
        break  # not divisible: this axis (and any after it) replicate this dimension
      kept.append(axis)
    used.update(kept)
    spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
  return P(*spec)


def param_specs(abstract_params: Any, mesh: Mesh,
                rules: Mapping[str, Any] | None = None) -> Any:
  """A pytree like `abstract_params` of PartitionSpecs (see `param_shardings`)."""
  logical = model_lib.param_logical_axes(abstract_params)

  def spec(axes, leaf):
    if sum(a != "layers" for a in axes) < 2:
      return P()  # vectors (norm scales) stay replicated
    return logical_to_spec(axes, leaf.shape, mesh, rules)

  return jax.tree.map(spec, logical, abstract_params,
                      is_leaf=lambda x: isinstance(x, tuple))


def param_shardings(abstract_params: Any, mesh: Mesh,
                    rules: Mapping[str, Any] | None = None) -> Any:
  """A pytree like `abstract_params` (arrays or ShapeDtypeStructs) of NamedShardings."""
  return jax.tree.map(lambda spec: NamedSharding(mesh, spec),
                      param_specs(abstract_params, mesh, rules),
                      is_leaf=lambda x: isinstance(x, P))


# --------------------------------------------------------------------------- optimizer state


def _key_name(key: Any) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def state_shardings(abstract_state: Any, param_shardings_tree: Any, mesh: Mesh) -> Any:
  """NamedShardings for a tree that contains param-shaped subtrees (optimizer state, a train
  state dict holding params and opt_state, ...).

  A leaf takes the sharding of the param whose path is a suffix of its own path and whose
  shape equals its shape (Adam's mu/nu mirror the params: ``.../mu/layers/mlp/up_proj/kernel``
  matches ``layers/mlp/up_proj/kernel``). Everything else (step counts, scalars, RNG keys)
  is replicated.
  """
  by_path: dict[tuple[str, ...], NamedSharding] = {}
  for path, sharding in jax.tree_util.tree_flatten_with_path(param_shardings_tree)[0]:
    by_path[tuple(_key_name(k) for k in path)] = sharding
  longest = max((len(p) for p in by_path), default=0)

  def pick(path, leaf):
    names = tuple(_key_name(k) for k in path)
    shape = tuple(getattr(leaf, "shape", ()))
    if shape:
      for start in range(max(0, len(names) - longest), len(names)):
        sharding = by_path.get(names[start:])
        if sharding is not None and _fits(sharding, shape):
          return sharding
    return replicated(mesh)

  return jax.tree_util.tree_map_with_path(pick, abstract_state)


def _fits(sharding: NamedSharding, shape: tuple[int, ...]) -> bool:
  spec = tuple(sharding.spec)
  if len(spec) > len(shape):
    return False
  for entry, size in zip(spec, shape):
    axes = entry if isinstance(entry, tuple) else (entry,)
    if size % math.prod(sharding.mesh.shape[a] for a in axes if a is not None):
      return False
  return True


def with_shardings(abstract_tree: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying `shardings` (targets for Orbax restore or jit lowering)."""
  return jax.tree.map(
      lambda leaf, sharding: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=sharding),
      abstract_tree, shardings)


# --------------------------------------------------------------------------- batches


def batch_sharding(mesh: Mesh, accum: bool = False) -> NamedSharding:
  """Rows split over ('data', 'fsdp'), replicated over 'tensor'; the sequence is not split.

  With accum=True the arrays are [grad_accum_steps, rows, T] and rows are axis 1.
  """
  return NamedSharding(mesh, P(None, BATCH_AXES) if accum else P(BATCH_AXES))


def batch_shards(mesh: Mesh) -> int:
  """Number of distinct row blocks of a batch (rows must be a multiple of it)."""
  return math.prod(mesh.shape[a] for a in BATCH_AXES)


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh,
                accum_steps: int | None = None) -> dict[str, jax.Array]:
  """This process's rows of a batch (numpy dict of [rows, ...]) -> global jax.Arrays.

  Every process passes its own rows (what `input_pipeline.make_train_iterator(...,
  process_index, process_count)` yields); the global batch holds all processes' rows,
  split over the mesh's ('data', 'fsdp') devices. Works unchanged for one process.

  With `accum_steps`, each process's rows are first cut into that many consecutive micro
  batches, giving global arrays [accum_steps, micro rows of all processes, ...] (the
  layout of `jaxlm.train.train_step`): micro batch k holds every process's k-th slice.
  """
  accum = accum_steps is not None
  sharding = batch_sharding(mesh, accum)
  shards = batch_shards(mesh)
  out = {}
  for name, local in batch.items():
    local = np.asarray(local)
    if accum:
      if local.shape[0] % accum_steps:
        raise ValueError(f"batch['{name}'] has {local.shape[0]} rows per process, not "
                         f"divisible by grad_accum_steps={accum_steps}")
      local = local.reshape((accum_steps, local.shape[0] // accum_steps) + local.shape[1:])
    row_axis = 1 if accum else 0
    global_shape = list(local.shape)
    global_shape[row_axis] *= jax.process_count()
    if global_shape[row_axis] % shards:
      raise ValueError(
          f"batch['{name}']: {local.shape[row_axis]} rows per process x "
          f"{jax.process_count()} processes = {global_shape[row_axis]} rows"
          f"{' per micro batch' if accum else ''}, not divisible by the mesh's data*fsdp = "
          f"{shards} (mesh {dict(mesh.shape)}); use a batch size that is a multiple of it")
    out[name] = jax.make_array_from_process_local_data(sharding, local, tuple(global_shape))
  return out


# --------------------------------------------------------------------------- checkpoints


def restore_params_sharded(path: str, abstract_params: Any, shardings: Any) -> Any:
  """Params from an Orbax params/training checkpoint, laid out as `shardings`.

  The checkpoint may have been written on any mesh (or one device): Orbax reads each
  device's slice of every array straight into place. Returns the params only.
  """
  from jaxlm import checkpoint  # local: Orbax is slow to import and only needed here

  params, _ = checkpoint.load_params(path, with_shardings(abstract_params, shardings))
  return params


def describe(shardings: Any) -> str:
  """One line per leaf, 'path: spec', for logs."""
  lines = []
  for path, sharding in jax.tree_util.tree_flatten_with_path(shardings)[0]:
    spec = sharding.spec if isinstance(sharding, NamedSharding) else sharding
    lines.append(f"{'/'.join(_key_name(k) for k in path)}: {spec}")
  return "\n".join(lines)
