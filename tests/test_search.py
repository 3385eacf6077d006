"""Evaluation rows, rebuild fidelity, samplers, resumable search, CLI — on tiny data."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from engine.config import Constraint, DataSpec, ModelSpec, RunConfig, SearchConfig
from engine.errors import ConstraintError
from engine.evaluate import SubnetEvaluator, accuracy_and_loss, predict, rebuild_subnet
from engine.parent import load_parent
from engine.runtime import runtime_flops
from engine.samplers import Evaluated, make_sampler
from engine.search import budget_for, run_search
from engine.space import encoding_hash, materialize
from engine.store import Store
from engine.workspace import rebuild_parent, run_config, scored_subnet
from tests.conftest import REPO

DATA = DataSpec(train_size=600, test_size=200, calib_size=128, val_size=128)
MODEL = ModelSpec(name="resnet20", weights="random")


@pytest.fixture(scope="module")
def parent():
    torch.manual_seed(0)
    return load_parent(MODEL, DATA)


def test_row_is_flat_and_timed(parent):
    encoding = parent.space.uniform(0.5)
    row = SubnetEvaluator(parent)(encoding, "test")
    assert row["error"] is None and 0 <= row["accuracy"] <= 1 and row["loss"] > 0
    assert row["hash"] == encoding_hash(encoding) and row["encoding"] == list(encoding)
    assert (row["flops"], row["params"]) == parent.cost.cost(encoding)
    assert row["flops"] < parent.cost.parent_flops
    assert all(
        row[k] > 0 for k in ("seconds_materialize", "seconds_recalibrate", "seconds_evaluate")
    )


def test_failing_subnet_becomes_an_error_row(parent):
    row = SubnetEvaluator(parent)([13] * len(parent.space.groups), "test")
    assert row["accuracy"] is None and "not allowed" in row["error"]


def test_recalibration_changes_batchnorm_statistics(parent):
    sub = rebuild_subnet(parent, parent.space.uniform(0.5))
    bn = sub.bn1
    assert not torch.allclose(bn.running_mean, parent.model.bn1.running_mean[: bn.num_features])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("flops=50%", Constraint("flops", 50, True)),
        ("params<2e5", Constraint("params", 2e5, False)),
        ("RUNTIME_FLOPS: 25 %", Constraint("runtime_flops", 25, True)),
    ],
)
def test_constraint_parses_and_prints_back(text, expected):
    assert Constraint.parse(text) == expected
    assert Constraint.parse(str(expected)) == expected


@pytest.mark.parametrize("text", ["latency=50%", "flops=150%", "flops=0", "flops=abc%"])
def test_constraint_refuses_what_it_cannot_mean(text):
    with pytest.raises(ConstraintError):
        Constraint.parse(text)


def test_constraint_below_minimum_is_refused_naming_it(parent):
    with pytest.raises(
        ConstraintError, match=r"smallest subnet this space reaches has [\d,]+ FLOPs"
    ):
        budget_for(parent, Constraint.parse("flops=0.5%"))
    assert budget_for(parent, Constraint.parse("flops=50%")) == pytest.approx(
        parent.cost.parent_flops / 2
    )
    assert budget_for(parent, Constraint.parse("params=2e5")) == 2e5


def test_search_stores_exact_unique_count_and_rebuilds_identically(parent, tmp_path):
    cfg = SearchConfig(num_subnets=6, sampler="random", constraint=Constraint.parse("flops=60%"))
    with Store(tmp_path / "r.duckdb") as store:
        run_id = run_search(store, RunConfig(model=MODEL, data=DATA, search=cfg))
        run, rows = store.run(run_id), store.subnets(run_id)
        assert run["status"] == "done" and len(rows) == 6 and rows["hash"].is_unique
        assert (rows["flops"] <= run["budget"]).all() and rows["error"].isna().all()
        # A fresh parent rebuilt from the stored run gives the same network and the same score.
        rebuilt_parent = rebuild_parent(run)
        row = rows.iloc[0]
        first = scored_subnet(rebuilt_parent, run, row["encoding"])
        second = scored_subnet(rebuilt_parent, run, row["encoding"])
        val_x, val_y = rebuilt_parent.splits.tensors("val")
        assert accuracy_and_loss(first, val_x, val_y)[0] == pytest.approx(row["accuracy"], abs=1e-9)
        torch.testing.assert_close(predict(first, val_x), predict(second, val_x))


def test_runtime_flops_constraint_limits_flops_padded_to_the_run_block(parent, tmp_path):
    constraint = Constraint.parse("runtime_flops=45%")
    cfg = SearchConfig(num_subnets=6, sampler="random", channel_block=16, constraint=constraint)
    with Store(tmp_path / "r.duckdb") as store:
        run_id = run_search(store, RunConfig(model=MODEL, data=DATA, search=cfg))
        run, rows = store.run(run_id), store.subnets(run_id)
    example = parent.example_input
    assert run["status"] == "done" and run["channel_block"] == 16
    assert run_config(run).search.channel_block == 16  # a resumed run pads to the same block
    assert run["parent_runtime_flops"] == pytest.approx(runtime_flops(parent.model, example, 16))
    assert run["budget"] == pytest.approx(0.45 * run["parent_runtime_flops"])
    assert len(rows) == 6 and (rows["runtime_flops"] <= run["budget"]).all()
    for row in rows.head(3).itertuples():
        built = materialize(parent.model, parent.space, row.encoding, example)
        assert row.runtime_flops == pytest.approx(runtime_flops(built, example, 16))
    # unpadded FLOPs would have let wider subnets in: the budget binds on the padded count
    assert (rows["runtime_flops"] > rows["flops"]).any()
    with pytest.raises(ConstraintError, match=r"[\d,]+ runtime FLOPs"):
        budget_for(parent, Constraint.parse("runtime_flops=1%"), 16)


def _history(sampler, encodings, accuracy=0.5):
    return [Evaluated(tuple(e), float(sampler.metric_of([e])[0]), accuracy) for e in encodings]


@pytest.mark.parametrize("name", ["uniform", "random", "guided"])
def test_samplers_are_deterministic_and_never_repeat(parent, name):
    budget = parent.cost.parent_flops * 0.5
    sampler = make_sampler(name, parent.space, parent.cost, "flops", budget, total=20)
    history = []
    for i in range(12):
        proposal = sampler.propose(history, np.random.default_rng([0, i]))
        if proposal is None:
            break
        again = sampler.propose(history, np.random.default_rng([0, i]))
        assert again == proposal
        history += _history(
            sampler, [proposal[0]], accuracy=float(np.random.default_rng(i).random())
        )
    hashes = [encoding_hash(h.encoding) for h in history]
    assert len(hashes) == len(set(hashes)) >= 5
    if name == "random":
        assert all(h.cost <= budget for h in history)


def test_uniform_sweep_spans_the_range_first(parent):
    sampler = make_sampler(
        "uniform", parent.space, parent.cost, "flops", parent.cost.parent_flops, 10
    )
    sweep = sampler.sweep()
    # the parent is the run's reference, never a subnet: the sweep ends just below it
    largest = max(sweep, key=lambda e: sampler.metric_of([e])[0])
    assert sweep[0] == parent.space.minimal() and sweep[1] == largest
    assert parent.space.full() not in sweep and largest != parent.space.full()


def test_guided_starts_from_the_largest_uniform_subnets_within_the_budget(parent):
    budget = parent.cost.parent_flops * 0.5
    sampler = make_sampler("guided", parent.space, parent.cost, "flops", budget, total=20)
    sweep = sampler.uniform.sweep()
    within = sorted(
        (e for e in sweep if sampler.metric_of([e])[0] <= budget),
        key=lambda e: -sampler.metric_of([e])[0],
    )
    history = []
    for i in range(2):
        encoding, name = sampler.propose(history, np.random.default_rng([2, i]))
        assert (encoding, name) == (within[i], "uniform")
        history += _history(sampler, [encoding])
    # then the rest of the sweep, coarse to fine: the first front spans the whole range
    encoding, _ = sampler.propose(history, np.random.default_rng([2, 2]))
    assert encoding == parent.space.minimal()


def test_guided_spends_proposals_near_the_budget(parent):
    budget = parent.cost.parent_flops * 0.5
    sampler = make_sampler("guided", parent.space, parent.cost, "flops", budget, total=20)
    history = _history(sampler, sampler.uniform.sweep())  # seeds done: evolution from here
    costs = []
    for i in range(30):
        proposal = sampler.propose(history, np.random.default_rng([1, i]))
        costs.append(sampler.metric_of([proposal[0]])[0])
        history += _history(sampler, [proposal[0]])
    near = [c for c in costs if 0.8 * budget <= c <= budget]
    assert len(near) >= 8  # about half are aimed just under the budget
    assert max(costs) <= budget  # and none is spent above it


def _cli(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "engine", *args], cwd=REPO, capture_output=True, text=True, **kwargs
    )


TINY_ARGS = [
    "--model",
    "resnet20",
    "--weights",
    "random",
    "--dataset",
    "synthetic",
    "--calib-size",
    "256",
    "--val-size",
    "256",
]


@pytest.mark.slow
def test_sigkilled_search_resumes_without_re_evaluating(tmp_path):
    db = tmp_path / "kill.duckdb"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "engine",
            "search",
            *TINY_ARGS,
            "--constraint",
            "flops=70%",
            "--subnets",
            "10",
            "--sampler",
            "random",
            "--db",
            str(db),
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    buffer, run_id = b"", None
    deadline = time.time() + 240
    while time.time() < deadline:
        buffer += os.read(proc.stderr.fileno(), 4096)
        run_id = run_id or (m := re.search(rb"run ([0-9a-f]{12})", buffer)) and m.group(1).decode()
        counts = [int(c) for c in re.findall(rb"(\d+)/10", buffer)]
        if run_id and counts and max(counts) >= 3:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert run_id, buffer.decode(errors="replace")
    with Store(db) as store:
        run = store.run(run_id)
        before = store.subnets(run_id)
    assert run["status"] == "interrupted" and 3 <= len(before) < 10

    result = _cli("search", "--resume", run_id, "--subnets", "10", "--db", str(db), timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"evaluated {10 - len(before)} new subnets" in result.stdout
    with Store(db, read_only=True) as store:
        after = store.subnets(run_id)
        assert store.run(run_id)["status"] == "done"
    assert len(after) == 10 and after["hash"].is_unique
    kept = after[after["hash"].isin(before["hash"])].sort_values("subnet_id")
    assert kept["accuracy"].tolist() == before.sort_values("subnet_id")["accuracy"].tolist()
    assert (kept["created_at"].values == before.sort_values("subnet_id")["created_at"].values).all()

    runs = json.loads(_cli("runs", "--db", str(db), "--json").stdout)
    assert [r["run_id"] for r in runs] == [run_id] and runs[0]["evaluated"] == 10
    front = json.loads(_cli("front", run_id, "--db", str(db), "--json").stdout)
    assert front and {"subnet_id", "flops", "params", "accuracy"} <= set(front[0])
    assert [f["flops"] for f in front] == sorted(f["flops"] for f in front)


def test_cli_reports_an_impossible_constraint_clearly(tmp_path):
    result = _cli(
        "search",
        *TINY_ARGS,
        "--constraint",
        "flops=0.1%",
        "--subnets",
        "3",
        "--db",
        str(tmp_path / "x.duckdb"),
    )
    assert result.returncode == 2
    assert "Impossible constraint" in result.stderr and "smallest subnet" in result.stderr
    assert "Traceback" not in result.stderr
