"""KV-cache sampling against full recomputation and against transformers; the CLIs."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlm import model as model_lib
from jaxlm import sample
from tests import sampling_helpers as helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(scan_layers=True, **overrides):
  config = model_lib.model_config(helpers.tiny_model_config(97, scan_layers=scan_layers,
                                                            **overrides))
  return config, model_lib.init_params(config, jax.random.PRNGKey(1))


def _greedy_by_recomputation(params, config, prompts, steps):
  """Greedy tokens from a full forward pass per step (no cache), for each prompt.

  Sequences are right-padded to one width so a single compilation serves every step:
  causal attention makes the logits at position n-1 independent of what follows.
  """
  model = model_lib.Transformer(config)
  width = max(map(len, prompts)) + steps
  forward = jax.jit(lambda p, t, n: model.apply({"params": p}, t)[0, n - 1])
  results = []
  for prompt in prompts:
    seq, new = list(prompt), []
    for _ in range(steps):
      padded = jnp.asarray([seq + [0] * (width - len(seq))], jnp.int32)
      token = int(jnp.argmax(forward(params, padded, len(seq))))
      new.append(token)
      seq.append(token)
    results.append(new)
  return results


@pytest.mark.parametrize("scan_layers", [True, False])
def test_kv_cache_greedy_equals_full_recomputation(scan_layers):
  config, params = _tiny(scan_layers)
  # Different lengths in one batch: left padding must not change any row's tokens.
  prompts = [[1, 5, 7, 9, 11], [2, 3], list(range(4, 17))]
  out = sample.generate(params, config, prompts, max_new_tokens=12)
  assert out == _greedy_by_recomputation(params, config, prompts, 12)
  assert len({tuple(o) for o in out}) == 3  # the rows really differ


def test_long_prompt_prefills_in_chunks():
  config, params = _tiny(max_seq_len=1100)
  prompt = [int(t) for t in np.random.default_rng(0).integers(3, 97, 600)]
  assert sample.bucket_length(600) == 1024  # two prefill chunks of 512
  new = sample.generate(params, config, [prompt, prompt[:7]], max_new_tokens=4)
  assert new == _greedy_by_recomputation(params, config, [prompt, prompt[:7]], 4)


def test_stop_ids_end_each_row_and_batch_size_groups_rows():
  config, params = _tiny()
  prompts = [[1, 5, 7], [2, 3], [4, 4, 4, 4], [9]]
  full = sample.generate(params, config, prompts, max_new_tokens=8)
  stop = full[0][2]
  stopped = sample.generate(params, config, prompts, max_new_tokens=8, stop_ids=[stop],
                            batch_size=3)
  for whole, cut in zip(full, stopped):
    expected = whole[:whole.index(stop)] if stop in whole else whole
    assert cut == expected


def test_filter_logits_top_k_and_top_p():
  logits = jnp.log(jnp.asarray([[0.5, 0.2, 0.15, 0.1, 0.05]]))
  kept = lambda k, p: np.isfinite(np.asarray(sample.filter_logits(logits, k, p)))[0].tolist()
  assert kept(0, 1.0) == [True] * 5
  assert kept(2, 1.0) == [True, True, False, False, False]
  assert kept(0, 0.6) == [True, True, False, False, False]  # 0.5 < 0.6, 0.5 + 0.2 >= 0.6
  assert kept(0, 0.5) == [True, False, False, False, False]
  assert kept(0, 0.01) == [True, False, False, False, False]  # the top token always stays
  assert kept(3, 0.9) == [True, True, True, False, False]


def test_sampling_is_seeded_and_top_k_1_is_greedy():
  config, params = _tiny()
  prompts = [[1, 5, 7], [2, 3]]
  a = sample.generate(params, config, prompts, 10, temperature=1.0, seed=3)
  b = sample.generate(params, config, prompts, 10, temperature=1.0, seed=3)
  c = sample.generate(params, config, prompts, 10, temperature=1.0, seed=4)
  assert a == b and a != c
  greedy = sample.generate(params, config, prompts, 10)
  assert sample.generate(params, config, prompts, 10, temperature=1.0, top_k=1, seed=5) == greedy


def test_bad_prompts_are_refused():
  config, params = _tiny()
  with pytest.raises(ValueError, match="prompt 1 is empty"):
    sample.generate(params, config, [[1], []], 4)
  with pytest.raises(ValueError, match=r"prompt 0 has token ids \[97\]"):
    sample.generate(params, config, [[1, 97]], 4)


def test_greedy_matches_transformers_generate():
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
  from jaxlm import convert
  hf_config = transformers.LlamaConfig(
      vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
      rms_norm_eps=1e-5, rope_theta=10000.0, initializer_range=0.3, tie_word_embeddings=False,
      bos_token_id=None, eos_token_id=None, pad_token_id=None)
  torch.manual_seed(0)
  hf_model = transformers.LlamaForCausalLM(hf_config).eval()
  state = {k: v.detach().numpy() for k, v in hf_model.state_dict().items()}
  params, model_config = convert.hf_state_dict_to_params(state, hf_config.to_dict())
  model_config.update(compute_dtype="float32", attention="xla")
  prompts = [[5, 17, 33, 2, 90, 64, 7], [11, 12]]
  ours = sample.generate(params, model_config, prompts, max_new_tokens=10)
  for prompt, new in zip(prompts, ours):
    with torch.no_grad():
      out = hf_model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt)),
                              max_new_tokens=10, min_new_tokens=10, do_sample=False)
    assert new == out[0, len(prompt):].tolist()


# --------------------------------------------------------------------------- CLIs


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory):
  return helpers.tiny_checkpoint(str(tmp_path_factory.mktemp("workdir")))


def _run(module, *args, stdin=None, timeout=120):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", module, *args], input=stdin, cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def test_sample_cli_prompt_ids_prints_the_generated_ids(tiny_workdir):
  result = _run("jaxlm.sample", "--checkpoint", os.path.join(tiny_workdir["workdir"], "best"),
                "--prompt_ids", "2,40,41,42", "--max_new_tokens", "6")
  assert result.returncode == 0, result.stderr
  expected = sample.generate(tiny_workdir["params"], tiny_workdir["model_config"],
                             [[2, 40, 41, 42]], 6)[0]
  assert result.stdout.strip().splitlines()[-1] == " ".join(map(str, expected))


def test_sample_cli_text_prompts_use_the_recorded_tokenizer(tiny_workdir, tmp_path):
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("The grass is\nWhat is the pass key?\n")
  result = _run("jaxlm.sample", "--checkpoint", tiny_workdir["checkpoint"],
                "--prompts_file", str(prompts), "--max_new_tokens", "5",
                "--temperature", "0.8", "--top_p", "0.9")
  assert result.returncode == 0, result.stderr
  assert "### The grass is" in result.stdout and "### What is the pass key?" in result.stdout


def test_sample_cli_errors_name_the_problem(tiny_workdir, tmp_path):
  result = _run("jaxlm.sample", "--checkpoint", str(tmp_path / "missing"), "--prompt_ids", "1")
  assert result.returncode == 1 and "missing" in result.stderr
  bare = tmp_path / "bare"
  from jaxlm import checkpoint as checkpoint_lib
  checkpoint_lib.save_params(str(bare), tiny_workdir["params"], tiny_workdir["model_config"])
  result = _run("jaxlm.sample", "--checkpoint", str(bare), "--prompt", "hi")
  assert result.returncode == 1 and "pass --tokenizer" in result.stderr


def test_chat_cli_handles_commands_and_tool_results(tiny_workdir, tmp_path):
  tools = tmp_path / "tools.json"
  tools.write_text(json.dumps([{"name": "get_weather", "parameters": {"type": "object"}}]))
  script = "\n".join([
      "Hello there", "/system Be brief.", "/tools " + str(tools), "What is the weather?",
      "/tool {\"temp_c\": 3}", "/tool not json", "/history", "/reset", "/frobnicate",
      "Hi again", "/quit", "this line is never read"]) + "\n"
  result = _run("jaxlm.chat", "--checkpoint", tiny_workdir["checkpoint"],
                "--max_new_tokens", "8", stdin=script)
  assert result.returncode == 0, result.stderr
  out = result.stdout
  assert out.count("assistant> ") + out.count("tool call> ") >= 3
  assert "(system prompt set: 'Be brief.')" in out
  assert "(tools offered: get_weather)" in out
  # The random model makes no call, so a tool result is refused rather than crashing.
  assert "error: /tool answers a tool call" in out
  assert "error: /tool wants a JSON result" in out
  assert "<|system|>Be brief." in out and "<tools>" in out  # /history shows the template
  assert "(conversation reset)" in out and "(unknown command /frobnicate" in out
  assert out.rstrip().endswith("bye")


def test_chat_session_tool_round_trip():
  from jaxlm.data import chat_format
  tok = helpers.CharTokenizer()
  tok.special_id = lambda piece: 0
  replies = iter(['<tool_call>{"name": "get_weather", "arguments": {"city": "Oslo"}}'
                  '</tool_call><|end|>', "It is 3 C.<|end|>"])
  prompts = []

  def generate_fn(ids, max_new):
    prompts.append(tok.decode(ids))
    return tok.encode(next(replies))

  from jaxlm import chat
  tool = {"name": "get_weather", "parameters": {"type": "object", "required": ["city"]}}
  session = chat.ChatSession(tok, generate_fn, max_len=4096, max_new_tokens=16,
                             system="Sys", tools=[tool])
  first = session.user("Weather in Oslo?")
  assert first["calls"][0]["name"] == "get_weather" and first["calls"][0]["problems"] == []
  second = session.tool_result('{"temp_c": 3}')
  assert second == {"content": "It is 3 C.", "calls": []}
  assert prompts[1] == chat_format.render_text(
      [{"role": "system", "content": "Sys"}, {"role": "user", "content": "Weather in Oslo?"},
       {"role": "assistant", "content": "",
        "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
       {"role": "tool", "content": '{"temp_c": 3}'}], [tool]) + chat_format.ASSISTANT


def test_chat_drops_old_turns_to_fit_the_context():
  tok = helpers.CharTokenizer()
  from jaxlm import chat
  session = chat.ChatSession(tok, lambda ids, n: tok.encode("ok"), max_len=120,
                             max_new_tokens=10)
  for i in range(5):
    session.user(f"message number {i}")
  # Each user + assistant pair renders to 53 characters; two pairs and the prompt fit 120.
  assert [m["content"] for m in session.history] == ["message number 3", "ok",
                                                     "message number 4", "ok"]
  with pytest.raises(ValueError, match="too long"):
    session.user("x" * 200)
  # A message that cannot fit is dropped and the conversation is left as it was.
  assert [m["content"] for m in session.history] == ["message number 3", "ok",
                                                     "message number 4", "ok"]


def test_eval_cli_writes_json_next_to_the_checkpoint(tiny_workdir):
  best = os.path.join(tiny_workdir["workdir"], "best")
  result = _run("jaxlm.eval", "--checkpoint", best, "--suite", "passkey",
                "--lengths", "160,250", "--depths", "0,1", "--samples", "1")
  assert result.returncode == 0, result.stderr
  assert "passkey accuracy: " in result.stdout
  with open(os.path.join(best, "eval_passkey.json")) as f:
    written = json.load(f)
  assert set(written["passkey"]["by_length_depth"]) == {"160", "250"}
  assert len(written["passkey"]["records"]) == 4
  assert 0.0 <= written["passkey"]["accuracy"] <= 1.0


def test_val_suite_matches_the_model_loss(tiny_workdir, tmp_path):
  from jaxlm.data import shards
  from jaxlm import eval as eval_lib
  rng = np.random.default_rng(0)
  vocab = tiny_workdir["model_config"]["vocab_size"]
  with shards.ShardDirWriter(str(tmp_path / "shards"), vocab_size=vocab, bos_id=2, eos_id=3,
                             splits=("val",)) as writer:
    for i in range(12):
      source = "a" if i % 2 else "b"
      writer.add("val", [2] + rng.integers(4, vocab, 30).tolist() + [3], source=source)
  val_dir = str(tmp_path / "shards" / "val")
  result = eval_lib.val_suite(tiny_workdir["params"], tiny_workdir["model_config"],
                              val_dir=val_dir, seq_len=32, val_batches=2, val_batch_size=2)
  assert set(result["by_source"]) == {"a", "b"} and result["batches"] == 2
  # The overall number is the model's plain weighted cross-entropy over the same batches,
  # the packed window read as one sequence (cross_document_attention=True, as trained).
  from configs import common
  from jaxlm import input_pipeline
  config = common.get_base_config()
  config.update(val_dir=val_dir, seq_len=32, val_batches=2, val_batch_size=2)
  batches, _ = input_pipeline.make_val_batches(config, vocab_size=vocab)
  model = model_lib.Transformer(model_lib.model_config(tiny_workdir["model_config"]))
  total, weight = 0.0, 0.0
  for batch in batches:
    logits = model.apply({"params": tiny_workdir["params"]}, batch["inputs"])
    loss, w = model_lib.cross_entropy_loss(logits, batch["targets"], batch["loss_weights"])
    total, weight = total + float(loss) * float(w), weight + float(w)
  assert result["loss"] == pytest.approx(total / weight, rel=1e-5)


def test_run_cheap_suites_gives_flat_passkey_metrics(tiny_workdir):
  from configs import common
  from jaxlm import eval as eval_lib
  config = common.get_base_config()
  config.seq_len = 200
  with pytest.raises(ValueError, match="config.tokenizer"):
    eval_lib.run_cheap_suites(tiny_workdir["params"], tiny_workdir["model_config"], config)
  config.tokenizer = tiny_workdir["tokenizer"].path
  metrics = eval_lib.run_cheap_suites(tiny_workdir["params"],
                                      model_lib.model_config(tiny_workdir["model_config"]),
                                      config)
  assert set(metrics) == {"eval/passkey", "eval/passkey_200"}
  assert metrics["eval/passkey"] == metrics["eval/passkey_200"]
  assert metrics["eval/passkey"] in (0.0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0)
