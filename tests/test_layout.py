"""The package layering: the runtime (jaxlm/) owns its file formats and never reaches back
into the builders (data_pipeline/) or the phase configs (configs/)."""

import ast
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _imported_modules(path):
  tree = ast.parse(open(path, encoding="utf-8").read(), path)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      yield node.module


def test_jaxlm_imports_neither_data_pipeline_nor_configs():
  offending = []
  for root, _, files in os.walk(os.path.join(REPO, "jaxlm")):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(root, name)
        offending += [f"{os.path.relpath(path, REPO)}: {module}"
                      for module in _imported_modules(path)
                      if module.split(".")[0] in ("data_pipeline", "configs")]
  assert not offending, offending
