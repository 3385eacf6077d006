"""Fine-tune (distillation, resume after a kill) and ONNX export (parity, card, downloads)."""

import importlib.metadata
import json
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.__main__ import build_parser, finetune_recipe
from engine.config import (
    Constraint,
    DataSpec,
    ExportConfig,
    FinetuneRecipe,
    ModelSpec,
    RunConfig,
    SearchConfig,
)
from engine.errors import Cancelled, ConfigError, StoreError
from engine.export import FILES, export_subnet, load_subnet_files
from engine.finetune import STATE_FILE, finetune, finetune_id
from engine.loop import distillation_loss
from engine.models import read_state_dict
from engine.onnx import PARITY_TOLERANCE, latencies_ms, session
from engine.runtime import runtime_flops
from engine.search import run_search
from engine.store import Store
from engine.workspace import delete_run, exports_dir, finetune_dir, rebuild_parent
from tests.conftest import REPO

DATA = DataSpec(train_size=512, test_size=128, calib_size=128, val_size=128)
MODEL = ModelSpec(name="resnet20", weights="random")
SEARCH = SearchConfig(num_subnets=3, sampler="uniform", constraint=Constraint.parse("flops=70%"))
CARD_FIELDS = {"parent", "subnet", "accuracy", "parity", "latency", "run_id", "versions"}


def _new_run(db: Path) -> tuple[str, int]:
    """A stored run on tiny data; returns it with a pruned (not full-width) subnet id."""
    with Store(db) as store:
        run_id = run_search(store, RunConfig(model=MODEL, data=DATA, search=SEARCH))
        rows = store.subnets(run_id)
        run = store.run(run_id)
    pruned = rows[rows["flops"] < run["parent_flops"]].iloc[0]
    return run_id, int(pruned["subnet_id"])


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    db = tmp_path_factory.mktemp("ft") / "r.duckdb"
    run_id, subnet_id = _new_run(db)
    with Store(db) as store:
        parent = rebuild_parent(store.run(run_id))
    return db, run_id, subnet_id, parent


def test_distillation_loss_is_ce_at_alpha_zero_and_kl_vanishes_on_the_teacher():
    torch.manual_seed(0)
    teacher = torch.nn.Linear(6, 4)
    x, y = torch.randn(16, 6), torch.randint(0, 4, (16,))
    ce = torch.nn.functional.cross_entropy(teacher(x), y)
    plain = distillation_loss(teacher, FinetuneRecipe(distill=True, alpha=0.0))
    assert plain(teacher(x), y, x).item() == pytest.approx(ce.item(), rel=1e-6)
    kd_only = distillation_loss(teacher, FinetuneRecipe(distill=True, alpha=1.0))
    assert kd_only(teacher(x), y, x).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_only(torch.zeros(16, 4), y, x).item() > 0.01


def test_recipe_refuses_nonsense():
    for bad in ({"epochs": 0}, {"lr": 0}, {"alpha": 1.5}, {"optimizer": "lbfgs"}):
        with pytest.raises(ConfigError):
            FinetuneRecipe.with_training(**bad)


def test_finetune_records_before_and_after_and_reuses_a_finished_one(stored):
    db, run_id, subnet_id, parent = stored
    recipe = FinetuneRecipe.with_training(epochs=2, distill=True)
    events = []
    with Store(db) as store:
        row = finetune(store, run_id, subnet_id, recipe, parent=parent, progress=events.append)
        subnet = store.subnet(run_id, subnet_id)
        again = finetune(store, run_id, subnet_id, recipe, parent=parent)
        frame = store.finetunes(run_id, subnet_id)
    assert row["status"] == "done" and row["epochs_done"] == 2 and len(row["history"]) == 2
    # "before" is the stored subnet exactly as the search scored it
    assert row["val_accuracy_before"] == pytest.approx(subnet["accuracy"], abs=1e-9)
    assert 0 <= row["val_accuracy_after"] <= 1 and 0 <= row["test_accuracy_after"] <= 1
    assert row["recipe"]["distill"] is True and row["recipe"]["train"]["schedule"] == "cosine"
    assert FinetuneRecipe.from_dict(row["recipe"]) == recipe  # stored exactly as given
    assert [e["epoch"] for e in events if e["stage"] == "epoch"] == [1, 2]
    batches = -(-len(parent.splits.fit_idx) // recipe.train.batch_size)
    assert [e["batch"] for e in events if e["stage"] == "train"] == [*range(1, batches + 1)] * 2
    assert again["updated_at"] == row["updated_at"]  # a finished fine-tune is not redone
    assert frame.iloc[0]["flops"] == subnet["flops"]
    weights = read_state_dict(row["checkpoint"])
    assert weights["conv1.weight"].shape[0] == subnet["encoding"][0]


def test_cancelled_finetune_resumes_to_the_same_weights(tmp_path, stored):
    """Cancel after epoch 1, resume, and land where an uninterrupted fine-tune lands."""
    db, run_id, subnet_id, parent = stored
    recipe = FinetuneRecipe.with_training(epochs=2, seed=3)
    with Store(db) as store:
        straight = finetune(store, run_id, subnet_id, recipe, parent=parent)
        parent_encoding = store.subnet(run_id, subnet_id)["encoding"]
    # the same subnet in a second, identical run: same network, its own fine-tune id and folder
    other_db = tmp_path / "other.duckdb"
    other_run, other_subnet = _new_run(other_db)
    cancel = threading.Event()

    def stop_after_first_epoch(event):
        if event["stage"] == "epoch":
            cancel.set()

    with Store(other_db) as store:
        assert store.subnet(other_run, other_subnet)["encoding"] == parent_encoding
        with pytest.raises(Cancelled):
            finetune(
                store,
                other_run,
                other_subnet,
                recipe,
                progress=stop_after_first_epoch,
                cancel=cancel,
            )
        fid = finetune_id(other_run, other_subnet, recipe)
        cancelled = store.finetune(fid)
        assert cancelled["status"] == "cancelled" and cancelled["epochs_done"] == 1
        resumed = finetune(store, other_run, other_subnet, recipe)
    assert resumed["status"] == "done" and resumed["epochs_done"] == 2
    assert resumed["history"][0] == cancelled["history"][0]  # epoch 1 was not trained again
    a, b = read_state_dict(straight["checkpoint"]), read_state_dict(resumed["checkpoint"])
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)


def test_export_parity_card_zip_and_rebuild(tmp_path, stored):
    db, run_id, subnet_id, parent = stored
    out = tmp_path / "export"
    steps = []
    with Store(db) as store:
        report = export_subnet(
            store,
            run_id,
            subnet_id,
            out_dir=out,
            config=ExportConfig(runs=3),
            parent=parent,
            progress=steps.append,
        )
        rows = store.exports(run_id)
        subnet = store.subnet(run_id, subnet_id)
    assert [s["step"] for s in steps][:2] == ["model", "onnx"] and steps[-1]["step"] == "card"
    assert report["parity"]["ok"] and report["parity"]["batch_8"] <= PARITY_TOLERANCE
    assert report["subnet"]["params_counted"] == subnet["params"]
    assert report["subnet"]["flops_ratio"] < 0.75 and report["subnet"]["size_ratio"] < 0.9
    lat = report["latency"]
    assert lat["threads"] >= 1 and lat["subnet"]["batch_32_ms"] > 0 and lat["speedup_batch_32"] > 0
    assert report["accuracy"]["val_before_finetune"] == pytest.approx(subnet["accuracy"], abs=1e-9)
    assert report["int8"] is None and not (out / FILES["onnx_int8"]).exists()
    block = report["channel_block"]
    assert report["parent"]["runtime_flops"] == runtime_flops(parent.model, parent.example_input)
    assert report["subnet"]["runtime_flops"] >= report["subnet"]["flops"]  # padding only adds
    assert (block > 1) or report["subnet"]["runtime_flops"] == report["subnet"]["flops"]

    card = json.loads((out / "model_card.json").read_text())
    assert set(card) >= CARD_FIELDS and card["subnet"]["encoding"] == subnet["encoding"]
    assert card["versions"]["torch"] == importlib.metadata.version("torch")
    text = (out / "MODEL_CARD.md").read_text()
    assert run_id in text and "parity" in text and "**passed**" in text
    assert f"padded to multiples of {block}" in text
    assert len(rows) == 1 and rows.iloc[0]["report"]["export_id"] == report["export_id"]

    # the downloaded zip rebuilds in PyTorch to what ONNX Runtime computes from its ONNX file
    with zipfile.ZipFile(out / report["files"]["zip"]) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path / "unzipped")
    assert {
        "model.onnx",
        "model.safetensors",
        "subnet.json",
        "model_card.json",
        "MODEL_CARD.md",
    } <= names
    unzipped = tmp_path / "unzipped"
    model = load_subnet_files(unzipped / "model.safetensors", unzipped / "subnet.json")
    x = parent.splits.tensors("val")[0][:16]
    with torch.inference_mode():
        expected = model(x).numpy()
    got = session(unzipped / "model.onnx", 1).run(None, {"input": x.numpy()})[0]
    assert np.abs(got - expected).max() <= PARITY_TOLERANCE
    assert got.shape == (16, parent.splits.num_classes)  # the batch dimension is dynamic


def test_export_refuses_a_foreign_or_unfinished_finetune(stored):
    db, run_id, subnet_id, parent = stored
    with Store(db) as store, pytest.raises(ConfigError, match="does not belong"):
        export_subnet(store, run_id, subnet_id, finetune_id="nope", parent=parent)
    with Store(db) as store, pytest.raises(StoreError, match="no subnet 999"):
        export_subnet(store, run_id, 999, parent=parent)


def _cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=REPO, capture_output=True, text=True, **kwargs
    )


@pytest.mark.slow
def test_sigkilled_cli_finetune_resumes_and_exports_int8(tmp_path):
    db = tmp_path / "kill.duckdb"
    run_id, subnet_id = _new_run(db)
    args = ["finetune", run_id, str(subnet_id), "--epochs", "4", "--db", str(db)]
    fid = finetune_id(run_id, subnet_id, FinetuneRecipe.with_training(epochs=4))
    state = finetune_dir(fid) / STATE_FILE
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 240
    while not state.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists(), proc.stderr.read().decode(errors="replace")
    epochs_before = json.loads(torch.load(state, weights_only=True)["extra"])["epochs_done"]
    assert 1 <= epochs_before < 4

    result = _cli(*args, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == fid
    with Store(db, read_only=True) as store:
        row = store.finetune(fid)
    assert row["status"] == "done" and [h["epoch"] for h in row["history"]] == [1, 2, 3, 4]

    out = tmp_path / "out"
    export = ["export", run_id, str(subnet_id), "--finetuned", "--int8", "--runs", "3"]
    result = _cli(*export, "--out", str(out), "--db", str(db), timeout=300)
    assert result.returncode == 0, result.stderr
    card = json.loads((out / "model_card.json").read_text())
    assert card["finetune_id"] == fid and card["accuracy"]["test_after_finetune"] is not None
    assert card["int8"]["bytes"] < card["subnet"]["onnx_bytes"]
    assert 0 <= card["int8"]["val_accuracy"] <= 1 and (out / "model.int8.onnx").exists()
    assert "INT8" in result.stdout and "parity" in result.stdout


def test_cli_export_of_a_missing_run_is_a_clear_error(tmp_path):
    db = tmp_path / "empty.duckdb"
    Store(db).close()
    result = _cli("export", "nope", "1", "--out", str(tmp_path / "o"), "--db", str(db))
    assert result.returncode == 2 and "no run 'nope'" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "o").exists()


def test_deleting_a_run_removes_its_files_but_not_a_users_out_dir(tmp_path, stored):
    db, run_id, subnet_id, _ = stored
    managed = exports_dir() / "to-go"
    managed.mkdir(parents=True)
    (managed / "model.onnx").write_bytes(b"x")
    users = tmp_path / "mine"
    users.mkdir()
    with Store(db) as store:
        for out in (managed, users):
            store.add_export({"run_id": run_id, "subnet_id": subnet_id, "out_dir": str(out)})
        folders = [finetune_dir(f) for f in store.finetunes(run_id)["finetune_id"]]
        assert folders and all(f.is_dir() for f in folders)
        delete_run(store, run_id)
        assert store.runs().empty and store.finetunes(run_id).empty
    assert not managed.exists() and users.is_dir() and not any(f.exists() for f in folders)


class _Clocked:
    """A stand-in ORT session that logs its calls and takes a fixed time per run."""

    def __init__(self, name, log, seconds):
        self.name, self.log, self.seconds = name, log, seconds

    def get_inputs(self):
        return [type("Input", (), {"name": "x"})]

    def run(self, _outputs, feed):
        self.log.append(self.name)
        time.sleep(self.seconds)
        return [feed["x"]]


def test_latencies_take_turns_so_load_hits_every_session_alike():
    log = []
    sessions = {"parent": _Clocked("parent", log, 0.004), "subnet": _Clocked("subnet", log, 0.001)}
    ms = latencies_ms(sessions, (3, 4, 4), batch=2, runs=6)
    turns = log[6:]  # after 3 warm-ups each: blocks of one untimed + up to 5 timed runs
    assert turns == ["parent"] * 6 + ["subnet"] * 6 + ["subnet"] * 2 + ["parent"] * 2
    assert ms["parent"] > ms["subnet"] >= 1.0


def test_finetune_flags_describe_the_whole_recipe():
    args = build_parser().parse_args(
        ["finetune", "r", "3", "--epochs", "2", "--weight-decay", "0", "--no-augment"]
    )
    recipe = finetune_recipe(args)
    assert recipe == FinetuneRecipe.with_training(epochs=2, weight_decay=0.0, augment=False)
    default = finetune_recipe(build_parser().parse_args(["finetune", "r", "3", "--epochs", "5"]))
    assert default == FinetuneRecipe()  # the CLI's defaults are the engine's
