"""The engine never imports Streamlit, directly or through anything it imports."""

import pkgutil
import subprocess
import sys

import engine
from tests.conftest import REPO


def test_engine_modules_do_not_import_streamlit():
    modules = sorted(f"engine.{m.name}" for m in pkgutil.iter_modules(engine.__path__))
    assert modules, "no engine modules found"
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'streamlit' or m.startswith('streamlit.'))\n"
        "print(repr(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
