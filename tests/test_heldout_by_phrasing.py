"""experiments.bridge.heldout_by_phrasing: the held-out passkey split by phrasing and filler."""

import json

import pytest

from experiments.bridge import heldout_by_phrasing as hbp
from jaxlm import eval_tasks
from tests import sampling_helpers as helpers


def _records(tok, lengths, depths, samples, seed, score):
  probes = eval_tasks.passkey_probes(tok, lengths, depths, samples, seed=seed, phrasing="heldout")
  return probes, [{"length": p.length, "depth": p.depth, "references": p.references,
                   "prompt_tokens": len(p.prompt_ids),
                   "score": score(tok.decode(p.prompt_ids))} for p in probes]


def test_counts_follow_the_phrasing_and_the_filler(tmp_path, capsys):
  """Scores that depend only on the phrasing come back per phrasing; the short probes (no
  paragraph fits) and the long ones land in the columns they belong to."""
  tok = helpers.CharTokenizer()
  vault = eval_tasks.PASSKEY_HELDOUT_TEMPLATES[0][1]
  probes, records = _records(tok, [260, 1200], [0.0, 1.0], 6, 11,
                             lambda text: 0.0 if text.endswith(vault) else 1.0)
  rebuilt = hbp.rebuild_probes(tok, records, 11, "x.json")
  counts = hbp.by_phrasing(tok, records, rebuilt, max_length=10_000)
  assert sum(n for _, n in counts.values()) == len(records)
  for (phrasing, _), (correct, n) in counts.items():
    assert correct == (0 if phrasing == 0 else n)
  assert {filled for _, filled in counts} == {True}  # even 260 characters hold filler now
  assert sum(n for _, n in hbp.by_phrasing(tok, records, rebuilt, 260).values()) == 12
  path = tmp_path / "eval.json"
  path.write_text(json.dumps({"passkey_heldout": {"records": records}}))
  with pytest.raises(ValueError, match=f"{path}: its keys are not those of --seed 12"):
    hbp.rebuild_probes(tok, records, 12, str(path))
  records[0] = {**records[0], "prompt_tokens": records[0]["prompt_tokens"] - 5}
  with pytest.raises(ValueError, match="its prompts are not the ones"):
    hbp.rebuild_probes(tok, records, 11, "x.json")
  with pytest.raises(ValueError, match="no held-out question"):
    hbp.phrasing_of("The pass key is")
