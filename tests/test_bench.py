"""jaxlm.bench: the CLI prints sane JSON on CPU, and FLOPs match a hand count."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import phase2_5
from jaxlm import bench
from jaxlm import model as model_lib

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_cli_prints_json_with_positive_throughput():
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # one CPU device, as on a one-GPU machine
  proc = subprocess.run(
      [sys.executable, "-m", "jaxlm.bench", "--config=configs/phase2_5.py:tiny",
       "--steps", "3", "--json"],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])

  config = phase2_5.get_config("tiny")
  tokens_per_step = config.seq_len * config.micro_batch_size * config.grad_accum_steps
  assert result["tokens_per_step"] == tokens_per_step
  assert result["steps"] == 3 and result["step_time_s"] > 0
  assert result["tokens_per_s"] > 0
  assert result["tokens_per_s"] == pytest.approx(tokens_per_step / result["step_time_s"])
  assert result["flops_per_token"] == model_lib.flops_per_token(config.model, config.seq_len)
  assert result["model_tflops"] == pytest.approx(
      result["tokens_per_s"] * result["flops_per_token"] / 1e12)
  # CPU: no peak FLOP/s and no allocator statistics, reported as null rather than guessed.
  assert result["mfu"] is None and result["peak_memory_bytes"] is None
  assert result["compile_time_s"] > 0
  assert result["compiled_memory"]["temp_bytes"] > 0
  # Random tokens over a 32000 vocabulary: the loss starts near ln(32000) = 10.37.
  assert abs(result["loss_first"] - math.log(config.model.vocab_size)) < 0.5
  assert math.isfinite(result["loss_last"])


def test_flops_per_token_matches_hand_count():
  cfg = model_lib.model_config(dict(
      vocab_size=10, d_model=8, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=4,
      mlp_dim=16, tie_embeddings=False))
  # Per layer: q 8*2*4 = 64, k 8*1*4 = 32, v 32, o 64; SwiGLU 3*8*16 = 384;
  # two RMSNorm scales 2*8 = 16 -> 592. Two layers + final norm 8 = 1192.
  # Output head 8*10 = 80 -> N = 1272 matmul-side params; 6N = 7632.
  # Attention: 12 * layers 2 * heads 2 * head_dim 4 * T 32 = 6144.
  assert model_lib.flops_per_token(cfg, 32) == 7632 + 6144
  full, causal = bench.flop_counts(cfg, 32)
  assert full == 13776
  assert causal == 7632 + 6144 / 2


def test_flop_counts_match_the_reference_table_convention():
  # experiments/PERFORMANCE.md: HF Llama at ~370M, B=2, T=8192 gave 62K tokens/s = 20%
  # of 989 TFLOP/s. Those figures halve attention for causality: check we reproduce them.
  sys.path.insert(0, REPO_ROOT)
  from experiments import bench_vs_torch
  _, causal = bench_vs_torch.flop_counts("370m", 8192)
  assert 62_000 * causal / 989e12 == pytest.approx(0.20, abs=0.01)
  _, causal = bench_vs_torch.flop_counts("130m", 8192)
  assert 159_000 * causal / 989e12 == pytest.approx(0.18, abs=0.01)


def test_torch_model_has_the_same_parameter_count_as_jaxlm():
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from experiments import bench_vs_torch
  shape = bench_vs_torch.SIZES["small"]
  hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
      vocab_size=bench_vs_torch.VOCAB, hidden_size=shape["d_model"],
      intermediate_size=shape["mlp_dim"], num_hidden_layers=shape["n_layers"],
      num_attention_heads=shape["n_heads"], num_key_value_heads=shape["n_kv_heads"],
      head_dim=shape["head_dim"], tie_word_embeddings=False))
  hf_params = sum(p.numel() for p in hf.parameters())
  cfg = bench_vs_torch.model_config("small", 128)
  assert hf_params == model_lib.count_params(cfg, non_embedding=False)
  del torch


def test_random_batch_is_a_shifted_window_and_bad_steps_are_refused():
  config = phase2_5.get_config("tiny")
  batch = bench.random_batch(config, vocab_size=100)
  rows = config.micro_batch_size * config.grad_accum_steps
  for name in ("inputs", "targets", "loss_weights", "segment_ids", "positions"):
    assert batch[name].shape == (rows, config.seq_len), name
  np.testing.assert_array_equal(batch["inputs"][:, 1:], batch["targets"][:, :-1])
  assert batch["inputs"].max() < 100
  with pytest.raises(ValueError, match="--steps"):
    bench.benchmark(config, steps=0, warmup=0)
