"""experiments/inspect_checkpoint.ipynb runs headless on a tiny checkpoint, and is committed
without outputs."""

import hashlib
import os

import pytest

from tests import sampling_helpers as helpers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "experiments", "inspect_checkpoint.ipynb")


def _digest(path):
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()


def test_notebook_is_committed_without_outputs():
  nbformat = pytest.importorskip("nbformat")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(not c.outputs and c.execution_count is None for c in code)
  assert any(line.startswith("CHECKPOINT = ") for line in code[0].source.splitlines())
  assert 'if "google.colab" in sys.modules:' in code[1].source


def test_notebook_runs_on_a_tiny_checkpoint(tmp_path, monkeypatch):
  nbformat = pytest.importorskip("nbformat")
  nbclient = pytest.importorskip("nbclient")
  work = helpers.tiny_checkpoint(str(tmp_path / "workdir"))
  before = _digest(NOTEBOOK)
  # The kernel inherits the environment: point it at the tiny run, keep it on CPU.
  monkeypatch.setenv("JAXLM_CHECKPOINT", os.path.join(work["workdir"], "best"))
  monkeypatch.setenv("JAXLM_PASSKEY_LENGTHS", "160,250,100000")
  monkeypatch.setenv("JAXLM_PASSKEY_SAMPLES", "1")
  monkeypatch.setenv("PYTHONPATH", REPO)
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  nb = nbformat.read(NOTEBOOK, as_version=4)
  client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()  # raises CellExecutionError on any failing cell

  text = "\n".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for out in cell.outputs)
  assert "checkpoint: " + work["checkpoint"] in text
  assert "max_seq_len" in text and "run config" in text
  assert "layers/attn/q_proj/kernel" in text and "(2, 32, 4, 8)" in text
  assert "total parameters:" in text
  assert "layer" in text and "q_proj" in text
  assert "6 training rows, 1 validation rows" in text
  assert "passkey accuracy (%)" in text
  # Lengths beyond the model's context are left out of the heatmap.
  assert "100000" not in text.split("passkey accuracy (%)")[1]
  assert "--- 'Once upon a time'" in text
  assert _digest(NOTEBOOK) == before  # outputs never go back into the repo file
