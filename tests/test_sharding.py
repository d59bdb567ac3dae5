"""Mesh, shardings and sharded training on 8 CPU devices (tests/conftest.py forces them)."""

from __future__ import annotations

import os

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from experiments import multiprocess_train as mp
from jaxlm import checkpoint
from jaxlm import distributed
from jaxlm import sharding
from jaxlm import train
from tests import sharding_helpers
from tests import train_helpers

SEQ_LEN, MICRO, ACCUM = 16, 8, 2


def _mesh(data, fsdp, tensor):
  n = data * fsdp * tensor
  return sharding.make_mesh(dict(data=data, fsdp=fsdp, tensor=tensor),
                            devices=jax.devices()[:n])


def _config(**mesh):
  return mp.make_config("unused", sharding_helpers.VOCAB,
                        mesh=mesh or dict(data=1, fsdp=1, tensor=1), steps=2,
                        seq_len=SEQ_LEN, micro_batch_size=MICRO, grad_accum_steps=ACCUM)


def _flat(tree):
  return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


# --------------------------------------------------------------------------- mesh


def test_eight_devices_available():
  assert jax.device_count() == 8, "tests/conftest.py should force 8 host devices"


@pytest.mark.parametrize("config, expected", [
    (dict(data=1, fsdp=-1, tensor=1), (1, 8, 1)),
    (dict(data=2, fsdp=-1, tensor=2), (2, 2, 2)),
    (dict(data=-1, fsdp=1, tensor=1), (8, 1, 1)),
    (dict(data=2, fsdp=4, tensor=1), (2, 4, 1)),
])
def test_mesh_shape_fills_minus_one(config, expected):
  assert sharding.mesh_shape(config, 8) == expected
  mesh = sharding.make_mesh(config)
  assert mesh.axis_names == sharding.MESH_AXES
  assert tuple(mesh.shape.values()) == expected


def test_mesh_on_fewer_devices_takes_the_first_ones():
  mesh = sharding.make_mesh(dict(data=2, fsdp=2, tensor=1))
  assert list(mesh.devices.flat) == jax.devices()[:4]
  single = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1))
  assert single.size == 1


@pytest.mark.parametrize("config, message", [
    (dict(data=-1, fsdp=-1, tensor=1), "only one axis may be -1"),
    (dict(data=3, fsdp=-1, tensor=1), "not divisible"),
    (dict(data=4, fsdp=4, tensor=1), "needs 16 devices but 8"),
    (dict(data=0, fsdp=-1, tensor=1), "config.mesh.data=0"),
    (dict(data=1, fsdp=-1), "config.mesh.tensor is missing"),
])
def test_bad_mesh_config_is_refused(config, message):
  with pytest.raises(ValueError, match=message):
    sharding.mesh_shape(config, 8)


# --------------------------------------------------------------------------- rules


def test_logical_to_spec_drops_axes_that_do_not_divide():
  mesh = _mesh(2, 4, 1)
  # Batch rows over ('data', 'fsdp'): 8 rows take both, 2 rows only 'data', 3 rows none.
  assert sharding.logical_to_spec(("batch", None), (8, 5), mesh) == P(("data", "fsdp"), None)
  assert sharding.logical_to_spec(("batch", None), (2, 5), mesh) == P("data", None)
  assert sharding.logical_to_spec(("batch", None), (3, 5), mesh) == P(None, None)
  # 'embed' -> fsdp (size 4): 12 divides, 6 does not.
  assert sharding.logical_to_spec(("embed", "mlp"), (12, 5), mesh) == P("fsdp", None)
  assert sharding.logical_to_spec(("embed", "mlp"), (6, 5), mesh) == P(None, None)
  # A mesh axis is used at most once per array.
  rules = sharding.logical_axis_rules({"mlp": "fsdp"})
  assert sharding.logical_to_spec(("embed", "mlp"), (8, 8), mesh, rules) == P("fsdp", None)


def test_bad_rules_are_refused():
  with pytest.raises(ValueError, match="'model' is not a mesh axis"):
    sharding.logical_axis_rules({"embed": "model"})
  with pytest.raises(ValueError, match="no sharding rule for logical axis 'experts'"):
    sharding.logical_to_spec(("experts",), (4,), _mesh(1, 4, 1))


def _abstract_state():
  """(abstract params, abstract optimizer state) of the tiny model."""
  abstract = train.build_program(_config()).abstract_state(with_shardings=False)
  return abstract["params"], abstract["opt_state"]


def test_param_and_optimizer_specs_follow_the_rules():
  mesh = _mesh(1, 4, 2)  # fsdp=4, tensor=2
  abstract_params, abstract_opt = _abstract_state()
  params = sharding.param_shardings(abstract_params, mesh)
  specs = {k: s.spec for k, s in _flat(params).items()}
  assert specs["['embed']['embedding']"] == P("tensor", "fsdp")  # [V, D]
  assert specs["['layers']['attn']['q_proj']['kernel']"] == P(None, "fsdp", "tensor", None)
  assert specs["['layers']['attn']['k_proj']['kernel']"] == P(None, "fsdp", "tensor", None)
  assert specs["['layers']['attn']['o_proj']['kernel']"] == P(None, "tensor", None, "fsdp")
  assert specs["['layers']['mlp']['gate_proj']['kernel']"] == P(None, "fsdp", "tensor")
  assert specs["['layers']['mlp']['down_proj']['kernel']"] == P(None, "tensor", "fsdp")
  assert specs["['lm_head']['kernel']"] == P("fsdp", "tensor")  # [D, V]
  for norm in ("['layers']['attn_norm']['scale']", "['layers']['mlp_norm']['scale']",
               "['final_norm']['scale']"):
    assert specs[norm] == P()

  opt = _flat(sharding.state_shardings(abstract_opt, params, mesh))
  moments = {k: v for k, v in opt.items() if ".mu[" in k or ".nu[" in k}
  assert len(moments) == 2 * len(specs)
  for key, value in moments.items():
    param_key = key.split(".mu", 1)[-1].split(".nu", 1)[-1]
    assert value == _flat(params)[param_key], key
  others = {k: v for k, v in opt.items() if k not in moments}
  assert any(k.endswith(".count") for k in others)
  assert all(v.spec == P() for v in others.values()), others


def test_rules_fall_back_to_replicated_when_heads_do_not_divide():
  mesh = _mesh(1, 1, 8)  # tensor=8: 4 heads, 2 kv heads do not divide; mlp 128, vocab 256 do
  abstract_params, _ = _abstract_state()
  specs = {k: s.spec for k, s in _flat(sharding.param_shardings(abstract_params, mesh)).items()}
  assert specs["['layers']['attn']['q_proj']['kernel']"] == P(None, None, None, None)
  assert specs["['layers']['attn']['k_proj']['kernel']"] == P(None, None, None, None)
  assert specs["['layers']['mlp']['up_proj']['kernel']"] == P(None, None, "tensor")
  assert specs["['embed']['embedding']"] == P("tensor", None)


# --------------------------------------------------------------------------- batches


def test_shard_batch_builds_global_arrays():
  mesh = _mesh(2, 4, 1)
  batch = sharding_helpers.random_batch(np.random.default_rng(0), 16, SEQ_LEN)
  flat = sharding.shard_batch(batch, mesh)
  assert flat["inputs"].sharding == NamedSharding(mesh, P(("data", "fsdp")))
  assert flat["inputs"].addressable_shards[0].data.shape == (2, SEQ_LEN)
  np.testing.assert_array_equal(np.asarray(flat["targets"]), batch["targets"])

  accum = sharding.shard_batch(batch, mesh, accum_steps=2)
  assert accum["inputs"].shape == (2, 8, SEQ_LEN)
  assert accum["inputs"].sharding.spec == P(None, ("data", "fsdp"))
  np.testing.assert_array_equal(np.asarray(accum["loss_weights"]),
                                batch["loss_weights"].reshape(2, 8, SEQ_LEN))

  with pytest.raises(ValueError, match=r"batch\['inputs'\].*12 rows.*data\*fsdp = 8"):
    sharding.shard_batch({"inputs": batch["inputs"][:12]}, mesh)
  with pytest.raises(ValueError, match="not divisible by grad_accum_steps=3"):
    sharding.shard_batch({"inputs": batch["inputs"]}, mesh, accum_steps=3)


# --------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def fresh_params():
  """The initial params as numpy (initialised once: compiling init is slow; numpy because
  the step donates its input arrays)."""
  return jax.device_get(train.build_program(_config()).init(jax.random.PRNGKey(0))["params"])


def _optimizer(kind):
  """The trainer's optimizer (clipping + AdamW) or plain SGD on the same LR schedule, with
  each step's gradient recorded in opt_state[0] (train_helpers.record_gradients)."""
  program = train.build_program(_config())
  inner = program.optimizer if kind == "adamw" else optax.sgd(program.schedule)
  return optax.chain(train_helpers.record_gradients(), inner)


def _train(mesh, batches, params, kind):
  """Steps of the jitted train_step on `mesh` from `params`: (final state, its shardings,
  losses, learning rates, each step's gradient as numpy)."""
  program = train.build_program(_config())
  optimizer = _optimizer(kind)
  state = train.state_from_params(params, optimizer)
  abstract = jax.eval_shape(lambda s: s, state)
  shardings = sharding.state_shardings(
      abstract, sharding.param_shardings(abstract["params"], mesh), mesh)
  state = jax.device_put(state, shardings)
  step = train.jit_train_step(program.model, optimizer, program.schedule, shardings, mesh)
  losses, lrs, grads = [], [], []
  for batch in batches:
    state, metrics = step(state, sharding.shard_batch(batch, mesh, accum_steps=ACCUM))
    losses.append(float(metrics["loss"]))
    lrs.append(float(metrics["learning_rate"]))
    grads.append(jax.device_get(state["opt_state"][0]))
  return state, shardings, losses, lrs, grads


@pytest.fixture(scope="module")
def batches():
  rng = np.random.default_rng(1)
  return [sharding_helpers.random_batch(rng, MICRO * ACCUM, SEQ_LEN) for _ in range(2)]


@pytest.fixture(scope="module")
def single_device_runs(batches, fresh_params):
  return {kind: _train(_mesh(1, 1, 1), batches, fresh_params, kind)
          for kind in ("sgd", "adamw")}


@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 4, 1), (1, 8, 1), (2, 2, 2)],
                         ids=["data8", "data2_fsdp4", "fsdp8", "data2_fsdp2_tensor2"])
def test_sharded_training_matches_one_device(shape, batches, fresh_params, single_device_runs):
  mesh = _mesh(*shape)
  # Every loss and gradient element is a sum over the step's tokens, which the mesh splits
  # and all-reduces in another order: equal up to the float32 reordering bound
  # (train_helpers). A wrong shard of the batch or a missing all-reduce is off by percents.
  tokens = batches[0]["inputs"].size
  tol = train_helpers.reorder_tolerance(tokens)

  # Two SGD steps: losses and each step's gradient tight, and the params, which move by
  # lr * gradient, within lr * (gradient tolerance) plus a rounding of the param per step.
  _, _, ref_losses, lrs, ref_grads = ref = single_device_runs["sgd"]
  state, _, losses, _, grads = _train(mesh, batches, fresh_params, "sgd")
  np.testing.assert_allclose(losses, ref_losses, rtol=tol)
  assert losses[1] != losses[0]
  for i, (got, want) in enumerate(zip(grads, ref_grads)):
    train_helpers.assert_gradients_close(got, want, tokens, what=f"step {i + 1} gradient")
  ref_params = _flat(jax.device_get(ref[0]["params"]))
  grad_scale = [{k: np.abs(v).max() for k, v in _flat(g).items()} for g in ref_grads]
  for key, value in _flat(jax.device_get(state["params"])).items():
    atol = sum(lr * tol * scale[key] for lr, scale in zip(lrs, grad_scale))
    np.testing.assert_allclose(value, ref_params[key], rtol=len(lrs) * train_helpers.F32_EPS,
                               atol=atol, err_msg=key)

  # Two steps of the trainer's AdamW. Its update lr * m/(sqrt(v) + eps) is at most ~lr per
  # element and step (|m| <= 1.0003 sqrt(v) in the first two steps with b1=0.9, b2=0.95, by
  # Cauchy-Schwarz; weight decay adds lr * 0.1 * p, the same on both sides), but where a
  # gradient is itself at rounding level the last-bit differences above can turn it
  # around: params can differ by 2 lr per step there, and no bound is tighter. Losses stay
  # tight: such elements have a gradient ~0, so moving them changes the loss only to
  # second order.
  ref_state, _, ref_losses, lrs, _ = single_device_runs["adamw"]
  state, shardings, losses, _, _ = _train(mesh, batches, fresh_params, "adamw")
  np.testing.assert_allclose(losses, ref_losses, rtol=tol)
  for key, value in _flat(jax.device_get(ref_state["params"])).items():
    np.testing.assert_allclose(_flat(jax.device_get(state["params"]))[key], value, rtol=0,
                               atol=2.01 * sum(lrs), err_msg=key)
  assert int(state["train_state"]["step"]) == 2

  # The step kept every leaf in the sharding the rules chose, really split across devices.
  for key, leaf in _flat(state).items():
    assert leaf.sharding == _flat(shardings)[key], key
  embedding = state["params"]["embed"]["embedding"]
  v, d = embedding.shape
  expected = (v // mesh.shape["tensor"], d // mesh.shape["fsdp"])
  assert embedding.addressable_shards[0].data.shape == expected


# --------------------------------------------------------------------------- checkpoints


def _random_state(mesh, seed=0):
  """A train state of the tiny model's shapes filled with random numbers, laid out on
  `mesh` by the rules (device_put: nothing to compile)."""
  abstract = train.build_program(_config()).abstract_state(with_shardings=False)
  shardings = sharding.state_shardings(
      abstract, sharding.param_shardings(abstract["params"], mesh), mesh)
  rng = np.random.default_rng(seed)
  values = jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(a.dtype), abstract)
  return jax.device_put(values, shardings), shardings


def _params_on(mesh):
  state, shardings = _random_state(mesh)
  return state["params"], shardings["params"]


def test_orbax_restores_onto_another_mesh_8_to_1(tmp_path):
  params8, _ = _params_on(_mesh(1, 4, 2))
  assert params8["embed"]["embedding"].sharding.spec == P("tensor", "fsdp")
  path = tmp_path / "ckpt8"
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(path, params8)
  one = _mesh(1, 1, 1)
  targets = sharding.with_shardings(jax.eval_shape(lambda p: p, params8),
                                    sharding.param_shardings(params8, one))
  with ocp.StandardCheckpointer() as ckptr:
    restored = ckptr.restore(path, targets)
  for key, value in _flat(jax.device_get(params8)).items():
    leaf = _flat(restored)[key]
    assert leaf.sharding.device_set == {jax.devices()[0]}, key
    np.testing.assert_array_equal(np.asarray(leaf), value, err_msg=key)


def test_params_checkpoint_restores_onto_another_mesh_1_to_4(tmp_path):
  params1, _ = _params_on(_mesh(1, 1, 1))
  path = checkpoint.save_params(str(tmp_path / "final"), params1, {"note": "one device"})
  mesh4 = _mesh(1, 2, 2)
  shardings4 = sharding.param_shardings(params1, mesh4)
  restored = sharding.restore_params_sharded(path, jax.eval_shape(lambda p: p, params1),
                                             shardings4)
  for key, value in _flat(jax.device_get(params1)).items():
    leaf = _flat(restored)[key]
    assert leaf.sharding == _flat(shardings4)[key], key
    np.testing.assert_array_equal(np.asarray(leaf), value, err_msg=key)
  q = restored["layers"]["attn"]["q_proj"]["kernel"]  # [L, D, N, H] split D/2, N/2
  assert q.addressable_shards[0].data.shape == (q.shape[0], q.shape[1] // 2, q.shape[2] // 2,
                                                q.shape[3])


def test_training_checkpoint_resumes_on_another_mesh(tmp_path):
  """Full training state saved on fsdp=8, restored onto data=2 x tensor=2 (4 devices)."""
  state, _ = _random_state(_mesh(1, 8, 1))
  mu_embedding = [v for k, v in _flat(state["opt_state"]).items() if ".mu['embed']" in k]
  assert [v.sharding.spec for v in mu_embedding] == [P(None, "fsdp")]
  ckpts = checkpoint.TrainCheckpoints(str(tmp_path / "work"))
  ckpts.save_latest(1, {**state, "model_config": {"d_model": 64}, "data_iter": {"pos": 1}})
  ckpts.wait_until_finished()

  mesh4 = _mesh(2, 1, 2)
  abstract = jax.eval_shape(lambda s: s, state)
  shardings4 = sharding.state_shardings(
      abstract, sharding.param_shardings(abstract["params"], mesh4), mesh4)
  restored = ckpts.restore_latest({**sharding.with_shardings(abstract, shardings4),
                                   "model_config": None, "data_iter": None})
  ckpts.close()
  assert restored["data_iter"] == {"pos": 1}
  expected = _flat(jax.device_get(state))
  got = {k: v for k, v in _flat({n: restored[n] for n in state}).items()}
  assert got.keys() == expected.keys()
  for key, leaf in got.items():
    assert leaf.sharding == _flat(shardings4)[key], key
    np.testing.assert_array_equal(np.asarray(leaf), expected[key], err_msg=key)


# --------------------------------------------------------------------------- distributed


@pytest.fixture
def clean_env(monkeypatch):
  for name in list(os.environ):
    if name.startswith(("JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "SLURM_",
                        "OMPI_")):
      monkeypatch.delenv(name)
  return monkeypatch


def test_single_process_launch_does_not_initialize(clean_env):
  assert distributed.maybe_initialize() is False
  assert not jax.distributed.is_initialized()
  clean_env.setenv("JAX_NUM_PROCESSES", "1")
  assert distributed.maybe_initialize(coordinator_address="127.0.0.1:1") is False
  assert distributed.is_main_process()


def test_incomplete_multi_process_launch_is_refused(clean_env):
  with pytest.raises(ValueError, match=r"process_id \(JAX_PROCESS_ID\) not set"):
    distributed.maybe_initialize(coordinator_address="127.0.0.1:1", num_processes=2)
  clean_env.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")
  with pytest.raises(ValueError, match=r"num_processes \(JAX_NUM_PROCESSES\) and process_id"):
    distributed.maybe_initialize()
  clean_env.delenv("JAX_COORDINATOR_ADDRESS")
  with pytest.raises(ValueError, match="without a coordinator address"):
    distributed.maybe_initialize(num_processes=2, process_id=1)
  clean_env.setenv("JAX_PROCESS_ID", "first")
  with pytest.raises(ValueError, match="JAX_PROCESS_ID='first' is not an integer"):
    distributed.maybe_initialize()
  assert not jax.distributed.is_initialized()
