"""Hugging Face Llama import/export: logit parity, round trips, refusals."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm import convert
from jaxlm import model as M

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def make_hf_model(path, tie, rope_scaling=None, kv_heads=2):
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(
      vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64,
      tie_word_embeddings=tie, rope_theta=500.0, rope_scaling=rope_scaling,
      initializer_range=0.2)
  model = transformers.LlamaForCausalLM(cfg).eval()
  model.save_pretrained(path)
  return model


def hf_logits(model, tokens):
  with torch.no_grad():
    return model(torch.tensor(np.asarray(tokens))).logits.numpy()


def jax_logits(params, model_config, tokens):
  cfg = M.model_config({**model_config, "param_dtype": "float32",
                        "compute_dtype": "float32", "attention": "xla"})
  return np.asarray(jax.jit(M.Transformer(cfg).apply)({"params": params},
                                                      jnp.asarray(tokens, jnp.int32)))


TOKENS = np.random.default_rng(0).integers(0, 64, (2, 24))


def assert_close_relative(a, b, rel=1e-4):
  assert np.abs(a - b).max() <= rel * np.abs(b).max(), np.abs(a - b).max()


@pytest.mark.parametrize("tie,rope_scaling", [
    (True, None), (False, None),
    (False, {"rope_type": "linear", "factor": 4.0}),
    (True, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}),
])
def test_import_matches_hf_logits(tmp_path, tie, rope_scaling):
  hf = make_hf_model(tmp_path / "hf", tie, rope_scaling)
  state_dict, hf_config = convert.read_hf_checkpoint(str(tmp_path / "hf"))
  params, model_config = convert.hf_state_dict_to_params(state_dict, hf_config)
  assert model_config["tie_embeddings"] == tie and model_config["n_kv_heads"] == 2
  assert_close_relative(jax_logits(params, model_config, TOKENS), hf_logits(hf, TOKENS))

  # Export then import is the identity.
  back_sd, back_cfg = convert.params_to_hf_state_dict(params, model_config)
  again, again_cfg = convert.hf_state_dict_to_params(back_sd, back_cfg)
  assert again_cfg == model_config
  jax.tree.map(np.testing.assert_array_equal, again, params)


def run_cli(*args, expect_ok=True):
  """Runs `python -m jaxlm.convert` as the user does; returns (exit code, output)."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-m", "jaxlm.convert", *args], cwd=repo,
                        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": repo})
  if expect_ok:
    assert proc.returncode == 0, proc.stderr[-3000:]
  return proc.returncode, proc.stdout + proc.stderr


def test_cli_round_trip_through_jaxlm_checkpoint(tmp_path):
  pytest.importorskip("jaxlm.checkpoint")
  hf = make_hf_model(tmp_path / "hf", tie=False)
  run_cli(f"--from_hf={tmp_path / 'hf'}", f"--out={tmp_path / 'ckpt'}")
  run_cli(f"--to_hf={tmp_path / 'ckpt'}", f"--out={tmp_path / 'hf2'}")
  assert sorted(os.listdir(tmp_path / "hf2")) == ["config.json", "model.safetensors"]
  exported = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf2")).eval()
  np.testing.assert_array_equal(hf_logits(exported, TOKENS), hf_logits(hf, TOKENS))

  from jaxlm import checkpoint
  params, model_config = checkpoint.load_params(str(tmp_path / "ckpt"))
  # Sampled in the dtype HF computes this model in (a training phase that starts from it
  # takes its own config's compute dtype).
  assert model_config["compute_dtype"] == "float32"
  assert_close_relative(jax_logits(params, model_config, TOKENS), hf_logits(hf, TOKENS))


def test_converted_float32_model_samples_like_generate_for_a_long_prompt(tmp_path):
  """The compute dtype comes from the HF config: in bfloat16, greedy tokens after 120-token
  prompts part from HF's within a few steps; in the recorded float32 they are HF's."""
  from jaxlm import sample
  torch.manual_seed(0)
  cfg = transformers.LlamaConfig(
      vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
      rms_norm_eps=1e-5, rope_theta=10000.0, initializer_range=0.3, tie_word_embeddings=False,
      bos_token_id=None, eos_token_id=None, pad_token_id=None)
  hf = transformers.LlamaForCausalLM(cfg).eval()
  hf.save_pretrained(tmp_path / "hf")
  run_cli(f"--from_hf={tmp_path / 'hf'}", f"--out={tmp_path / 'ckpt'}")
  params, config = sample.load_model(str(tmp_path / "ckpt"))
  assert config.compute_dtype == "float32"
  prompts = [np.random.default_rng(seed).integers(0, 128, 120).tolist() for seed in range(6)]
  expected = []
  for prompt in prompts:
    with torch.no_grad():
      out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, 120),
                        max_new_tokens=24, min_new_tokens=24, do_sample=False)
    expected.append(out[0, 120:].tolist())
  assert sample.generate(params, config, prompts, max_new_tokens=24) == expected

  _, bf16 = sample.load_model(str(tmp_path / "ckpt"), "bfloat16")  # --compute_dtype
  assert bf16.compute_dtype == "bfloat16"
  # What the recorded dtype fixes (on this CPU, 3 of the 6 rows part from HF's tokens).
  assert sample.generate(params, bf16, prompts, max_new_tokens=24) != expected
  with pytest.raises(ValueError, match="--compute_dtype 'fp8'"):
    sample.load_model(str(tmp_path / "ckpt"), "fp8")

  # A bfloat16 HF model is recorded as such (`dtype`, or transformers 4's `torch_dtype`).
  assert convert.hf_config_to_model_config({**hf.config.to_dict(), "dtype": "bfloat16"})[
      "compute_dtype"] == "bfloat16"
  legacy = {k: v for k, v in hf.config.to_dict().items() if k != "dtype"}
  assert convert.hf_config_to_model_config({**legacy, "torch_dtype": "bfloat16"})[
      "compute_dtype"] == "bfloat16"


def test_ntk_exports_as_a_larger_base(tmp_path):
  cfg = M.model_config(dict(vocab_size=64, d_model=32, n_layers=1, n_heads=4, n_kv_heads=2,
                            mlp_dim=48, rope_scaling="ntk", rope_scaling_factor=4.0,
                            rope_theta=500.0, compute_dtype="float32", init_std=0.2))
  params = jax.jit(M.Transformer(cfg).init)(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32))
  state_dict, hf_config = convert.params_to_hf_state_dict(params["params"], cfg)
  convert.write_hf_checkpoint(str(tmp_path / "hf"), state_dict, hf_config)
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")).eval()
  assert_close_relative(jax_logits(params["params"], dict(cfg), TOKENS), hf_logits(hf, TOKENS))


def test_pytorch_bin_checkpoint(tmp_path):
  hf = make_hf_model(tmp_path / "hf", tie=False, kv_heads=1)
  os.makedirs(tmp_path / "bin")
  torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
  with open(tmp_path / "hf" / "config.json") as f, open(tmp_path / "bin" / "config.json", "w") as g:
    g.write(f.read())
  params, model_config = convert.hf_state_dict_to_params(
      *convert.read_hf_checkpoint(str(tmp_path / "bin")))
  assert_close_relative(jax_logits(params, model_config, TOKENS), hf_logits(hf, TOKENS))


def test_refusals_name_the_problem(tmp_path):
  make_hf_model(tmp_path / "hf", tie=False)
  state_dict, hf_config = convert.read_hf_checkpoint(str(tmp_path / "hf"))

  bad = dict(state_dict)
  bad["model.layers.1.mlp.up_proj.weight"] = np.zeros((47, 32), np.float32)
  with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
    convert.hf_state_dict_to_params(bad, hf_config)

  missing = {k: v for k, v in state_dict.items() if k != "lm_head.weight"}
  with pytest.raises(ValueError, match=r"lm_head\.weight"):
    convert.hf_state_dict_to_params(missing, hf_config)

  with pytest.raises(ValueError, match="MistralForCausalLM"):
    convert.hf_state_dict_to_params(
        state_dict, {**hf_config, "model_type": "mistral",
                     "architectures": ["MistralForCausalLM"]})
  with pytest.raises(ValueError, match="llama3"):
    convert.hf_state_dict_to_params(
        state_dict, {**hf_config, "rope_parameters": {"rope_type": "llama3", "factor": 8.0,
                                                       "rope_theta": 500.0}})
  with pytest.raises(FileNotFoundError, match="config.json"):
    convert.read_hf_checkpoint(str(tmp_path))
  os.remove(tmp_path / "hf" / "model.safetensors")
  with pytest.raises(FileNotFoundError, match="no weights"):
    convert.read_hf_checkpoint(str(tmp_path / "hf"))


def test_cli_exits_nonzero_with_message(tmp_path):
  code, out = run_cli(f"--from_hf={tmp_path / 'nope'}", f"--out={tmp_path / 'out'}",
                      expect_ok=False)
  assert code != 0 and "config.json" in out and str(tmp_path / "nope") in out
  code, out = run_cli(f"--from_hf={tmp_path}", f"--to_hf={tmp_path}",
                      f"--out={tmp_path / 'out'}", expect_ok=False)
  assert code != 0 and "--to_hf: not allowed with argument --from_hf" in out
  assert not os.path.exists(tmp_path / "out")


def test_a_converted_hf_model_seeds_a_training_phase(tmp_path):
  """`jaxlm.convert --from_hf` output works as `init_from`: the phase starts from exactly
  the HF weights, with a fresh optimizer, and trains."""
  from configs import phase2_5
  from jaxlm import checkpoint, input_pipeline, train
  from tests import train_helpers

  torch.manual_seed(0)
  m = train_helpers.TINY_MODEL
  hf_config = transformers.LlamaConfig(
      vocab_size=m["vocab_size"], hidden_size=m["d_model"], intermediate_size=m["mlp_dim"],
      num_hidden_layers=m["n_layers"], num_attention_heads=m["n_heads"],
      num_key_value_heads=m["n_kv_heads"], head_dim=m["head_dim"],
      max_position_embeddings=train_helpers.SEQ_LEN, tie_word_embeddings=False,
      rope_theta=10000.0)
  transformers.LlamaForCausalLM(hf_config).save_pretrained(tmp_path / "hf")
  run_cli(f"--from_hf={tmp_path / 'hf'}", f"--out={tmp_path / 'ckpt'}")

  shards = train_helpers.write_shards(str(tmp_path / "shards"))
  config = train_helpers.tiny_config(phase2_5, str(tmp_path / "wd"), shards,
                                     init_from=str(tmp_path / "ckpt"), total_opt_steps=2)
  program = train.build_program(config)
  checkpoints = checkpoint.TrainCheckpoints(config.workdir)
  iterator = input_pipeline.make_train_iterator(config, vocab_size=train_helpers.VOCAB)
  state = train.initial_state(config, program, checkpoints, iterator)
  checkpoints.close()
  converted, _ = checkpoint.load_params(str(tmp_path / "ckpt"))
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(state["params"]), converted)
  assert int(state["train_state"]["step"]) == 0

  result = train.train_and_evaluate(config)
  assert result["step"] == 2 and np.isfinite(result["loss"])
