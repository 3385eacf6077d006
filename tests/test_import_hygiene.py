"""The engine's import rules, one subprocess per module so a failure names it:
no engine module imports a UI library, and the workflows never import one another."""

import pkgutil
import subprocess
import sys

import pytest

import engine
from tests.conftest import REPO

FORBIDDEN = {
    "streamlit": "the engine runs headless (CLI, benchmarks, workers); the UI lives in ui/ and pages/",
    "plotly": "charts are the dashboard's business; the engine returns frames and dicts",
}
# Peers: each uses the workspace and the pruning core, never another workflow.
WORKFLOWS = ("engine.search", "engine.train", "engine.finetune", "engine.export")
MODULES = sorted(f"engine.{m.name}" for m in pkgutil.iter_modules(engine.__path__))


def _imported_after(module: str) -> list[str]:
    """Every module loaded by `import module` in a fresh interpreter."""
    code = f"import importlib, sys\nimportlib.import_module({module!r})\nprint('\\n'.join(sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_every_engine_module_is_checked():
    assert {"engine.workspace", "engine.jobs", "engine.onnx", *WORKFLOWS} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_engine_module_imports_no_ui_library(module):
    loaded = _imported_after(module)
    for library, why in FORBIDDEN.items():
        bad = sorted(m for m in loaded if m == library or m.startswith(f"{library}."))
        assert not bad, f"{module} imports {library} ({bad[:3]}): {why}"


@pytest.mark.parametrize("workflow", WORKFLOWS)
def test_workflows_are_peers(workflow):
    loaded = set(_imported_after(workflow))
    others = sorted(w for w in WORKFLOWS if w != workflow and w in loaded)
    assert not others, f"{workflow} imports {others}: share code through engine.workspace instead"
