"""experiments.bridge.passkey_factors: each cell changes exactly the factor it names."""

import json
import random
import re

import jax

from data_pipeline import longctx_hard
from experiments.bridge import passkey_factors as pf
from jaxlm import checkpoint, eval_tasks
from jaxlm import model as model_lib
from tests.builders_helpers import tokenizer, tokenizer_path  # noqa: F401  (pytest fixtures)

PROSE = ["Return the value of the named attribute of the object, or the default when it has "
         "none. The lookup goes through the class.",
         "Helpers for reading configuration files: sections, options and their values."]


def questions(phrasing):
  if phrasing == "train":
    return [re.escape(q) for _, q in longctx_hard.PASSKEY_TEMPLATES]
  if phrasing == "heldout":
    return [re.escape(q) for _, q in eval_tasks.PASSKEY_HELDOUT_TEMPLATES]
  return [longctx_hard._frame_pattern(lead) for _, _, lead in longctx_hard.PASSKEY_FRAMES]


def test_each_cell_changes_only_its_factor(tokenizer):
  for phrasing, filler, instruction, layout in pf.cells(pf.PHRASINGS):
    probe = pf.factor_probe(tokenizer, 256, phrasing, filler, instruction, layout, 31968,
                            0.5, 11, PROSE)
    assert len(probe.prompt_ids) <= 256 and probe.references == ["31968"]
    text = tokenizer.decode(probe.prompt_ids[1:])
    cell = (phrasing, filler, instruction, layout)
    needle, _ = pf.needle_and_question(phrasing, 31968, random.Random(11))
    assert text.count("31968") == needle.count("31968"), cell  # the needle's key only
    assert text.startswith(eval_tasks.PASSKEY_HELDOUT_INSTRUCTION) == instruction, cell
    held_filler = any(s in text for s in eval_tasks.PASSKEY_HELDOUT_FILLER)
    assert held_filler == (filler == "heldout"), cell
    assert any(re.search(q + r"\Z", text) for q in questions(phrasing)), (cell, text[-80:])
    sep = "\n" if layout == "line" else " "
    assert needle + sep in text and (layout == "inline") == ("\n" not in text), cell


def test_main_writes_one_cell_per_combination(tmp_path, tokenizer_path):
  config = model_lib.model_config(dict(vocab_size=1024, d_model=32, n_layers=1, n_heads=2,
                                       n_kv_heads=1, head_dim=16, mlp_dim=64, max_seq_len=128))
  ck = checkpoint.save_params(str(tmp_path / "ck"),
                              model_lib.init_params(config, jax.random.PRNGKey(0)), dict(config))
  out = tmp_path / "factors.json"
  pf.main(["--checkpoint", ck, "--tokenizer", tokenizer_path, "--length", "112", "--samples",
           "1", "--phrasings", "heldout", "--output", str(out)])
  result = json.loads(out.read_text())
  assert len(result["cells"]) == 8
  assert {(c["filler"], c["instruction"], c["layout"]) for c in result["cells"]} == {
      (f, i, la) for f in pf.FILLERS for i in (False, True) for la in pf.LAYOUTS}
  assert all(0.0 <= c["accuracy"] <= 1.0 for c in result["cells"])
