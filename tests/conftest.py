"""Shared fixtures: every test writes under a temporary PRUNESCOPE_HOME, never into data/.

`tiny_parent` (ResNet-20 on tiny data), `store` (a results file in tmp_path), `db` (the
dashboard pointed at its own results file and data folder) and `run_factory` (runs recorded
as a search leaves them; see tests/factories.py, which bench/ uses too).
"""

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(autouse=True, scope="session")
def _isolated_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("prunescope-home")
    old = {k: os.environ.get(k) for k in ("PRUNESCOPE_HOME", "PRUNESCOPE_DB")}
    os.environ["PRUNESCOPE_HOME"] = str(home)
    os.environ.pop("PRUNESCOPE_DB", None)
    yield home
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_parent():
    """A random ResNet-20 on the tiny synthetic set: model, splits, space and cost model."""
    import torch

    from engine.parent import load_parent
    from tests.factories import TINY_DATA, TINY_MODEL

    torch.manual_seed(0)
    return load_parent(TINY_MODEL, TINY_DATA)


@pytest.fixture
def store(tmp_path):
    """A results file of its own, closed after the test."""
    from engine.store import Store

    with Store(tmp_path / "results.duckdb") as opened:
        yield opened


@pytest.fixture
def db(tmp_path, monkeypatch):
    """The dashboard's results file and data folder, in tmp_path; waits for jobs at the end."""
    from ui.jobs import registry

    path = tmp_path / "results.duckdb"
    monkeypatch.setenv("PRUNESCOPE_DB", str(path))
    monkeypatch.setenv("PRUNESCOPE_HOME", str(tmp_path / "home"))
    yield path
    deadline = time.time() + 60  # never leave a worker running into the next test
    while registry().active() and time.time() < deadline:
        time.sleep(0.2)


@pytest.fixture
def run_factory():
    """`run_factory(path, n=40, ...)`: a run with made-up scores, as a search would leave it."""
    from tests.factories import make_run

    return make_run


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """`streamlit run app.py` on a free port with its own data folder; yields the base URL."""
    home = tmp_path_factory.mktemp("server-home")
    port = _free_port()
    env = {**os.environ, "PRUNESCOPE_HOME": str(home)}
    env.pop("PRUNESCOPE_DB", None)
    log = open(home / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            "app.py",
            f"--server.port={port}",
            "--server.headless=true",
            "--server.address=127.0.0.1",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError((home / "server.log").read_text(errors="replace"))
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (Debian's, else Playwright's own) driven by Playwright."""
    playwright = pytest.importorskip("playwright.sync_api")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    with playwright.sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=executable,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        yield chromium
        chromium.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
