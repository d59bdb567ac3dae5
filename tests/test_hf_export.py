"""The Hugging Face export with its tokenizer, chat template and stop ids, against transformers.

What a user of the exported directory does (AutoTokenizer / apply_chat_template / generate)
must give jaxlm's own ids and replies; export then import must change nothing.
"""

import glob
import json
import os
import random
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxlm import convert
from jaxlm import model as model_lib
from jaxlm import sample
from jaxlm.data import chat_format
from jaxlm.data import hf_tokenizer
from tests import builders_helpers
from tests import sampling_helpers

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --------------------------------------------------------------------------- fixtures


def fixture_conversations():
  """(source, messages, tools) for every record of the public-schema fixtures, converted by
  the SFT / tool builders as training data is."""
  from data_pipeline import sft
  out = []
  for name in ("openhermes2_5_sample.json", "hermes_function_calling_v1_sample.json",
               "glaive_function_calling_v2_sample.json"):
    with open(builders_helpers.fixture(name), encoding="utf-8") as f:
      for record in json.load(f):
        out.append((name, *sft.convert_record(record)))
  with open(builders_helpers.fixture("ultrachat_200k_sample.jsonl"), encoding="utf-8") as f:
    for line in f:
      out.append(("ultrachat_200k_sample.jsonl", *sft.convert_record(json.loads(line))))
  return out


def rendering_cases(conversations):
  """(label, messages, tools, add_generation_prompt): each conversation whole, each prefix
  that ends before an assistant turn as a generation prompt, and, for conversations without
  tools, the same offered the tools of the tool-calling records."""
  offered = next(tools for _, _, tools in conversations if tools)
  cases = []
  for source, messages, tools in conversations:
    variants = [(tools, "")] + ([] if tools else [(offered, " +tools")])
    for tools_, tag in variants:
      cases.append((f"{source}{tag} whole", messages, tools_, False))
      for i, m in enumerate(messages):
        if m["role"] == "assistant":
          cases.append((f"{source}{tag} prompt before turn {i}", messages[:i], tools_, True))
  return cases


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
  """A tokenizer trained on stdlib code and the fixture conversations (so merges cross the
  chat text), and a random tiny checkpoint laid out like a training workdir."""
  import sysconfig
  from data_pipeline.tokenizer import train_tokenizer
  root = str(tmp_path_factory.mktemp("workdir"))
  stdlib = sysconfig.get_paths()["stdlib"]
  files = [os.path.join(stdlib, f) for f in ("json/decoder.py", "argparse.py", "textwrap.py")]
  texts = [chat_format.render_text(m, t) for _, m, t in fixture_conversations()]
  tok = train_tokenizer(files, 1000, os.path.join(root, "tokenizer"), sentences=texts * 5,
                        num_threads=1)
  config = sampling_helpers.tiny_model_config(tok.vocab_size)
  params = model_lib.init_params(model_lib.model_config(config), jax.random.PRNGKey(0))
  from jaxlm import checkpoint
  ckpt = checkpoint.save_params(os.path.join(root, "final"), params, config)
  with open(os.path.join(root, "config.json"), "w", encoding="utf-8") as f:
    json.dump({"tokenizer": tok.path, "model": config}, f)
  return {"root": root, "tokenizer": tok, "checkpoint": ckpt, "params": params,
          "model_config": config}


@pytest.fixture(scope="module")
def exported(workdir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("hf") / "model")
  path, tok_path = convert.export_hf(workdir["checkpoint"], out)
  assert tok_path == workdir["tokenizer"].path  # found through the workdir's config.json
  return path


@pytest.fixture(scope="module")
def hf_tok(exported):
  return transformers.AutoTokenizer.from_pretrained(exported)


def run_module(module, *args, timeout=300):
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)
  return proc.returncode, proc.stdout, proc.stderr


# --------------------------------------------------------------------------- tokenizer


def parity_texts():
  rng = random.Random(0)
  texts = ["", " ", "Hello world", "héllo wörld – ‘quotes’ «guillemets» 日本語テキスト 😀 👍🏽",
           "x = 12345678901234567890; y = 3.14159e-10; -42", "1,000,000 and 007 and 2025-03-14",
           "▁ a literal lower-one-eighth block", "tab\tand\r\nwindows\x0bline\x0cends\u2028",
           "<|user|>hi<|end|><|assistant|>", "<tool_call>{\"a\": 1}</tool_call>",
           "<tools>[]</tools><|system|><|tool|>", "<|end", "end|>", "<tool_call", "\u0000\u0001"]
  for n in range(1, 33):
    texts += [" " * n, "a" + " " * n + "b", "\n" * n, " " * n + "def f():", "9" * n,
              "\t" * n + "x", "x" + " \n" * n]
  for path in sorted(glob.glob(os.path.join(REPO, "jaxlm", "*.py")))[:6] + [
      os.path.join(REPO, "README.md")]:
    with open(path, encoding="utf-8") as f:
      lines = f.read().split("\n")
    texts += lines[:150] + ["\n".join(lines[i:i + 9]) for i in range(0, 150, 5)]
  alphabet = list(" \n\t  abcXYZ0123456789<>|/_{}[]\":,.éü日本😀▁") + [
      "<|end|>", "<tools>", "</tool_call>", "    ", "Oslo", "the "]
  texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(1500)]
  # Typed control pieces are the one documented difference (see the end of the first test).
  return [t for t in texts if not any(p in t for p in ("<s>", "</s>", "<pad>", "<unk>"))]


def test_encode_and_decode_match_sentencepiece(workdir, hf_tok):
  tok = workdir["tokenizer"]
  texts = parity_texts()
  assert len(texts) > 2000
  for text in texts:
    ids = tok.encode(text)
    # tokenizer(text) starts with BOS, as jaxlm.sample's text prompts do.
    assert hf_tok.encode(text) == [tok.bos_id] + ids, text
    assert hf_tok.encode(text, add_special_tokens=False) == ids, text
    assert hf_tok.decode(ids) == tok.decode(ids), text
  assert (hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.pad_token_id) == (
      tok.bos_id, tok.eos_id, tok.pad_id)
  # Markers are single tokens with jaxlm's ids; the turn markers are special (skipped when
  # decoding with skip_special_tokens), the tool markers stay visible to call parsers.
  for marker in chat_format.SPECIAL_TOKENS:
    assert hf_tok.convert_tokens_to_ids(marker) == tok.special_id(marker)
  reply = tok.encode("<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call><|end|>")
  assert hf_tok.decode(reply, skip_special_tokens=True) == \
      "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>"
  # The documented difference: typed control pieces are special tokens for HF, unless split.
  text = "a <s> b </s> <pad>"
  assert hf_tok.encode(text, add_special_tokens=False) != tok.encode(text)
  assert hf_tok.encode(text, add_special_tokens=False, split_special_tokens=True) == \
      tok.encode(text)


def test_tokenizer_json_matches_on_a_larger_vocabulary(tmp_path):
  """8000 pieces trained on more code: more merges that compete for the same characters."""
  import sysconfig
  import tokenizers
  from data_pipeline.tokenizer import train_tokenizer
  stdlib = sysconfig.get_paths()["stdlib"]
  files = sorted(glob.glob(os.path.join(stdlib, "*.py")))
  tok = train_tokenizer(files[:60], 8000, str(tmp_path / "tok8k"), num_threads=1,
                        max_chars=3_000_000)
  assert tok.vocab_size == 8000
  backend = tokenizers.Tokenizer.from_str(json.dumps(hf_tokenizer.tokenizer_json(tok.path)))
  texts = parity_texts()
  for path in files[60:90]:  # held-out code
    with open(path, encoding="utf-8", errors="replace") as f:
      source = f.read()
    texts += [source[i:i + 2000] for i in range(0, len(source), 2000)]
  mismatches = [t for t in texts
                if backend.encode(t, add_special_tokens=False).ids != tok.encode(t)]
  assert not mismatches, (len(mismatches), mismatches[:3])


def test_unsupported_sentencepiece_models_are_refused(workdir, tmp_path):
  import sentencepiece as spm
  spm.SentencePieceTrainer.Train(
      sentence_iterator=iter(["hello world", "the sky is blue"] * 50),
      model_prefix=str(tmp_path / "dummy"), model_type="bpe", vocab_size=290,
      byte_fallback=True, add_dummy_prefix=True, minloglevel=2, hard_vocab_limit=False)
  with pytest.raises(ValueError, match=r"add_dummy_prefix=True.*--tokenizer=none"):
    convert.export_hf(workdir["checkpoint"], str(tmp_path / "hf"),
                      tokenizer=str(tmp_path / "dummy.model"))
  assert not os.path.exists(tmp_path / "hf")
  path, tok_path = convert.export_hf(workdir["checkpoint"], str(tmp_path / "hf"),
                                     tokenizer="none")
  assert tok_path is None
  assert sorted(os.listdir(path)) == ["config.json", "model.safetensors"]


# --------------------------------------------------------------------------- chat template


def test_chat_template_gives_jaxlm_ids_for_fixture_conversations(workdir, hf_tok):
  tok = workdir["tokenizer"]
  conversations = fixture_conversations()
  assert {s for s, _, _ in conversations} == {
      "openhermes2_5_sample.json", "hermes_function_calling_v1_sample.json",
      "glaive_function_calling_v2_sample.json", "ultrachat_200k_sample.jsonl"}
  cases = rendering_cases(conversations)
  assert len(cases) >= 20
  kinds = {"tools": 0, "tool_calls": 0, "tool results": 0, "multi-turn": 0, "system": 0}
  for label, messages, tools, prompt in cases:
    kinds["tools"] += bool(tools)
    kinds["tool_calls"] += any(m.get("tool_calls") for m in messages)
    kinds["tool results"] += any(m["role"] == "tool" for m in messages)
    kinds["multi-turn"] += sum(m["role"] == "user" for m in messages) > 1
    kinds["system"] += any(m["role"] == "system" for m in messages)
    want = (chat_format.encode_prompt(tok, messages, tools) if prompt else
            chat_format.encode_conversation(tok, messages, tools)[0])
    got = hf_tok.apply_chat_template(messages, tools=tools or None, tokenize=True,
                                     add_generation_prompt=prompt, return_dict=False)
    assert got == want, label
    text = hf_tok.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                      add_generation_prompt=prompt)
    assert text == "<s>" + (chat_format.generation_prompt(messages, tools) if prompt else
                            chat_format.render_text(messages, tools) + "</s>"), label
  assert all(kinds.values()), kinds


def test_chat_template_gives_jaxlm_ids_for_synthetic_tool_conversations(workdir, hf_tok):
  """The tool-protocol builder's conversations (parallel and sequential calls, errors), and
  the same in the OpenAI / transformers shape ({"type": "function", "function": ...})."""
  from data_pipeline import tool_synth
  tok = workdir["tokenizer"]
  for seed in range(15):
    messages, tools, _ = tool_synth.synthesize(random.Random(seed))
    want = chat_format.encode_conversation(tok, messages, tools)[0]
    assert hf_tok.apply_chat_template(messages, tools=tools, return_dict=False) == want
    hf_shaped = [{**m, "tool_calls": [{"type": "function", "function": c}
                                      for c in m["tool_calls"]]} if m.get("tool_calls") else m
                 for m in messages]
    hf_tools = [{"type": "function", "function": t} for t in tools]
    assert hf_tok.apply_chat_template(hf_shaped, tools=hf_tools, return_dict=False) == want
    prompt = messages[:next(i for i, m in enumerate(messages) if m["role"] == "assistant")]
    assert hf_tok.apply_chat_template(prompt, tools=tools, add_generation_prompt=True,
                                      return_dict=False) == chat_format.encode_prompt(
                                          tok, prompt, tools)


def test_chat_template_json_is_byte_exact(hf_tok):
  """Key order as given (no sorting), ', ' / ': ' separators, non-ASCII unescaped."""
  tools = [{"name": "zeta", "parameters": {"type": "object", "properties": {
      "ü": {"type": "string", "description": "Grüße \"quoted\" \\ back"}, "a": {"enum": [1, 2.5]}}},
            "description": "last key"}]
  messages = [{"role": "system", "content": ""},
              {"role": "user", "content": "Zeta, bitte."},
              {"role": "assistant", "content": None,
               "tool_calls": [{"name": "zeta", "arguments": {"ü": "日本", "a": 2.5, "n": None}}]},
              {"role": "tool", "content": "{\"ok\": true}"}]
  text = hf_tok.apply_chat_template(messages, tools=tools, tokenize=False)
  assert text == "<s>" + chat_format.render_text(messages, tools) + "</s>"
  assert '"ü": "日本", "a": 2.5, "n": null' in text and '<|system|><tools>[{"name": "zeta"' in text
  # The renderer --from_hf checks foreign templates with is transformers' environment.
  assert hf_tokenizer.render_chat_template(hf_tok.chat_template, messages, tools,
                                           bos_token="<s>", eos_token="</s>") == text
  with pytest.raises(Exception, match="unknown role"):
    hf_tok.apply_chat_template([{"role": "narrator", "content": "x"}], tokenize=False)
  with pytest.raises(chat_format.ChatFormatError, match="unknown role"):
    chat_format.render_text([{"role": "narrator", "content": "x"}])


# --------------------------------------------------------------------------- a trained model

REPLY_PROMPT = "Say hello to the team."
WEATHER_TOOLS = [{"name": "get_weather", "description": "Current weather for a city",
                  "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                 "required": ["city"]}}]
TRAINING_CHATS = [
    ([{"role": "user", "content": REPLY_PROMPT},
      {"role": "assistant", "content": "Hello, team! Have a great day."}], None),
    ([{"role": "user", "content": "What is the weather in Oslo?"},
      {"role": "assistant", "content": "",
       "tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]},
      {"role": "tool", "content": "{\"temp_c\": 3}"},
      {"role": "assistant", "content": "It is 3 °C in Oslo."}], WEATHER_TOOLS),
]


def train_tiny_chat_model(tok, steps=250):
  """A tiny model that has learned TRAINING_CHATS by heart (greedy replies end in <|end|>)."""
  import optax
  config = sampling_helpers.tiny_model_config(tok.vocab_size, d_model=64, mlp_dim=128,
                                              head_dim=16, max_seq_len=512)
  docs = [chat_format.encode_conversation(tok, m, t)[0] for m, t in TRAINING_CHATS]
  width = max(map(len, docs))
  tokens = np.zeros((len(docs), width), np.int32)
  mask = np.zeros((len(docs), width), np.float32)
  for row, doc in enumerate(docs):
    tokens[row, :len(doc)] = doc
    mask[row, 1:len(doc)] = 1
  model = model_lib.Transformer(model_lib.model_config(config))
  params = model_lib.init_params(model_lib.model_config(config), jax.random.PRNGKey(0))
  optimizer = optax.adam(3e-3)

  def loss_fn(p):
    logits = model.apply({"params": p}, tokens)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], tokens[:, 1:])
    return (nll * mask[:, 1:]).sum() / mask.sum()

  @jax.jit
  def step(p, state):
    loss, grads = jax.value_and_grad(loss_fn)(p)
    updates, state = optimizer.update(grads, state, p)
    return optax.apply_updates(p, updates), state, loss

  state = optimizer.init(params)
  for _ in range(steps):
    params, state, loss = step(params, state)
  assert float(loss) < 0.05, float(loss)
  return jax.device_get(params), config


@pytest.fixture(scope="module")
def trained(workdir, tmp_path_factory):
  from jaxlm import checkpoint
  tok = workdir["tokenizer"]
  params, config = train_tiny_chat_model(tok)
  root = str(tmp_path_factory.mktemp("trained"))
  ckpt = checkpoint.save_params(os.path.join(root, "phase3_final"), params, config)
  with open(os.path.join(root, "config.json"), "w", encoding="utf-8") as f:
    json.dump({"tokenizer": tok.path}, f)
  hf_dir = os.path.join(root, "hf")
  code, out, err = run_module("jaxlm.convert", f"--to_hf={ckpt}", f"--out={hf_dir}")
  assert code == 0, err[-3000:]
  assert f"tokenizer {tok.path}" in out
  return {"checkpoint": ckpt, "hf_dir": hf_dir, "params": params, "config": config}


def hf_generate(hf_dir, messages, tools=None, max_new_tokens=40):
  tok = transformers.AutoTokenizer.from_pretrained(hf_dir)
  model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
  inputs = tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True,
                                   return_tensors="pt", return_dict=True)
  with torch.no_grad():
    out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
  return tok, out[0, inputs["input_ids"].shape[1]:].tolist()


def test_exported_model_replies_as_jaxlm_sample_chat_and_stops_at_end_of_turn(workdir, trained):
  tok = workdir["tokenizer"]
  end = tok.special_id(chat_format.END_OF_TURN)
  code, out, err = run_module("jaxlm.sample", "--checkpoint", trained["checkpoint"], "--chat",
                              "--prompt", REPLY_PROMPT, "--max_new_tokens", "40",
                              "--compute_dtype", "float32")
  assert code == 0, err[-3000:]
  jaxlm_reply = out.rstrip("\n").split("\n")[-1]
  assert jaxlm_reply == "Hello, team! Have a great day."

  hf, new = hf_generate(trained["hf_dir"], [{"role": "user", "content": REPLY_PROMPT}])
  assert new[-1] == end and len(new) < 40  # generate() stopped at <|end|>, not at the limit
  assert hf.decode(new, skip_special_tokens=True) == jaxlm_reply
  ours = sample.generate(trained["params"], trained["config"],
                         [chat_format.encode_prompt(tok, [{"role": "user",
                                                           "content": REPLY_PROMPT}])],
                         40, stop_ids=sample.chat_stop_ids(tok))[0]
  assert new[:-1] == ours

  # The pipeline stops there too and hands back the reply alone.
  generator = transformers.pipeline("text-generation", model=trained["hf_dir"],
                                    dtype=torch.float32)
  chat = generator([{"role": "user", "content": REPLY_PROMPT}], max_new_tokens=40,
                   do_sample=False)[0]["generated_text"]
  assert chat[-1] == {"role": "assistant", "content": jaxlm_reply}


def test_exported_model_makes_the_same_tool_call(workdir, trained):
  tok = workdir["tokenizer"]
  messages = TRAINING_CHATS[1][0][:1]
  hf, new = hf_generate(trained["hf_dir"], messages, WEATHER_TOOLS)
  ours = sample.generate(trained["params"], trained["config"],
                         [chat_format.encode_prompt(tok, messages, WEATHER_TOOLS)], 40,
                         stop_ids=sample.chat_stop_ids(tok))[0]
  assert new[:-1] == ours and new[-1] == tok.special_id(chat_format.END_OF_TURN)
  parsed = chat_format.parse_assistant_output(hf.decode(new, skip_special_tokens=True))
  assert [chat_format.parse_tool_call(p) for p in parsed["tool_calls"]] == [
      ("get_weather", {"city": "Oslo"})]


# --------------------------------------------------------------------------- round trip


def test_export_import_export_keeps_weights_tokenizer_and_template(workdir, exported, tmp_path):
  code, out, err = run_module("jaxlm.convert", f"--from_hf={exported}",
                              f"--out={tmp_path / 'ckpt'}")
  assert code == 0, err[-3000:]
  assert "chat template = jaxlm's chat format" in out
  with open(tmp_path / "ckpt" / "tokenizer.model", "rb") as f, \
      open(workdir["tokenizer"].path, "rb") as g:
    assert f.read() == g.read()
  assert sample.find_tokenizer(str(tmp_path / "ckpt")) == str(tmp_path / "ckpt" /
                                                              "tokenizer.model")
  from jaxlm import checkpoint
  params, config = checkpoint.load_params(str(tmp_path / "ckpt"))
  jax.tree.map(np.testing.assert_array_equal, params, workdir["params"])
  # The architecture comes back; what HF's config has no field for (how to initialise, which
  # attention kernel, YaRN's original length without YaRN) takes jaxlm's defaults, and the
  # model samples in the dtype of the exported weights.
  changed = {k for k in config if config[k] != workdir["model_config"][k]}
  assert changed <= {"init_std", "attention", "rope_original_max_len", "compute_dtype"}
  assert config["compute_dtype"] == "float32"

  code, _, err = run_module("jaxlm.convert", f"--to_hf={tmp_path / 'ckpt'}",
                            f"--out={tmp_path / 'hf2'}")
  assert code == 0, err[-3000:]
  names = sorted(os.listdir(exported))
  assert names == ["config.json", "generation_config.json", "model.safetensors",
                   "special_tokens_map.json", "tokenizer.json", "tokenizer.model",
                   "tokenizer_config.json"]
  assert sorted(os.listdir(tmp_path / "hf2")) == names
  for name in names:
    with open(os.path.join(exported, name), "rb") as f, open(tmp_path / "hf2" / name, "rb") as g:
      assert f.read() == g.read(), name
  hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf2"))
  assert hf.chat_template == hf_tokenizer.chat_template()
  generation = transformers.GenerationConfig.from_pretrained(str(tmp_path / "hf2"))
  assert generation.eos_token_id == sample.chat_stop_ids(workdir["tokenizer"])


def _with_template(src, dst, template):
  shutil.copytree(src, dst)
  path = os.path.join(dst, "tokenizer_config.json")
  with open(path, encoding="utf-8") as f:
    config = json.load(f)
  config["chat_template"] = template
  with open(path, "w", encoding="utf-8") as f:
    json.dump(config, f)


CHATML = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_import_refuses_a_chat_format_it_cannot_reconcile(exported, tmp_path):
  _with_template(exported, tmp_path / "chatml", CHATML)
  with pytest.raises(ValueError, match=r"not jaxlm's chat format.*<\|im_start\|>.*"
                                       r"--ignore_chat_template"):
    convert.import_hf(str(tmp_path / "chatml"), str(tmp_path / "out"))
  assert not os.path.exists(tmp_path / "out")
  code, _, err = run_module("jaxlm.convert", f"--from_hf={tmp_path / 'chatml'}",
                            f"--out={tmp_path / 'out'}")
  assert code != 0 and "not jaxlm's chat format" in err and "--ignore_chat_template" in err
  _, found = convert.import_hf(str(tmp_path / "chatml"), str(tmp_path / "out"),
                               ignore_chat_template=True)
  assert found == "tokenizer.model, chat template ignored"
  assert os.path.isfile(tmp_path / "out" / "tokenizer.model")

  # A template written differently that renders the same text is the same format.
  same = hf_tokenizer.chat_template().replace("{%- endfor -%}", "{%- endfor %}\n")
  assert same != hf_tokenizer.chat_template()
  _with_template(exported, tmp_path / "same", same)
  _, found = convert.import_hf(str(tmp_path / "same"), str(tmp_path / "out2"))
  assert found == "tokenizer.model, chat template = jaxlm's chat format"

  # A chat template with no SentencePiece model: jaxlm could not tokenize that format.
  shutil.copytree(tmp_path / "chatml", tmp_path / "no_spm")
  os.remove(tmp_path / "no_spm" / "tokenizer.model")
  with pytest.raises(ValueError, match="no SentencePiece tokenizer.model"):
    convert.import_hf(str(tmp_path / "no_spm"), str(tmp_path / "out3"))

  # tokenizer.json and tokenizer.model that number the markers differently.
  shutil.copytree(exported, tmp_path / "mixed")
  with open(tmp_path / "mixed" / "tokenizer.json", encoding="utf-8") as f:
    data = json.load(f)
  for token in data["added_tokens"]:
    if token["content"] == "<|end|>":
      token["id"] += 1
  with open(tmp_path / "mixed" / "tokenizer.json", "w", encoding="utf-8") as f:
    json.dump(data, f)
  with pytest.raises(ValueError, match=r"disagree.*<\|end\|>"):
    convert.import_hf(str(tmp_path / "mixed"), str(tmp_path / "out4"))


@pytest.mark.parametrize("module", ["jaxlm.sample", "jaxlm.chat", "jaxlm.eval"])
def test_samplers_take_compute_dtype(workdir, module):
  """sample, chat and eval build the model through sample.load_model(..., --compute_dtype)."""
  args = ["--prompt_ids", "2,5"] if module == "jaxlm.sample" else []
  code, _, err = run_module(module, "--checkpoint", workdir["checkpoint"], *args,
                            "--compute_dtype", "fp8")
  # Refused by the argument parser (exit 2), naming the flag, the value and the choices.
  assert code == 2 and "--compute_dtype" in err and "'fp8'" in err and "bfloat16" in err, \
      err[-2000:]
