"""Evaluation depth (engine.rungs): a cheap screen, full validation for what comes near the
front, a short distilled fine-tune for the best few under the budget, and a pick that uses the
deepest rung."""

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch

from engine.config import Constraint, RunConfig, SearchConfig
from engine.data import load_dataset
from engine.pareto import best_pick, pareto_front
from engine.rungs import SCREEN_MARGIN, promotion_bar
from engine.search import run_search
from tests.factories import TINY_DATA, TINY_MODEL


def test_promotion_bar_is_the_best_cheaper_screen_less_the_margin():
    screened = [(10.0, 0.30), (20.0, 0.50), (30.0, 0.40)]
    assert promotion_bar(screened, 5.0) == -math.inf  # nothing cheaper: always promoted
    assert promotion_bar(screened, 25.0) == pytest.approx(0.50 - SCREEN_MARGIN)
    assert promotion_bar(screened, 10.0) == pytest.approx(0.30 - SCREEN_MARGIN)


def test_best_pick_uses_the_deepest_rung_there_is():
    rows = pd.DataFrame(
        {
            "subnet_id": [1, 2, 3, 4],
            "flops": [10.0, 20.0, 30.0, 90.0],
            "accuracy": [0.9, 0.6, 0.5, 0.99],  # 1 is only screened, 4 above the budget
            "depth": ["screen", "val", "finetune", "finetune"],
            "tuned_accuracy": [None, None, 0.7, 0.99],
            "error": [None] * 4,
        }
    )
    assert best_pick(rows, 50.0)["subnet_id"] == 3  # tuned beats a higher untuned accuracy
    untuned = rows.assign(tuned_accuracy=None, depth=["screen", "val", "val", "val"])
    assert best_pick(untuned, 50.0)["subnet_id"] == 2  # validated beats a lucky screen
    assert best_pick(untuned.assign(depth="screen"), 50.0)["subnet_id"] == 1
    legacy = rows.drop(columns=["depth", "tuned_accuracy"])  # files from before rungs
    assert best_pick(legacy, 50.0)["subnet_id"] == 1
    assert best_pick(rows, 5.0) is None


def test_a_sample_of_a_class_sorted_split_holds_every_class():
    splits = copy.copy(load_dataset(TINY_DATA))  # (load_dataset's own object is shared)
    order = torch.argsort(splits.train_y, stable=True)  # images sorted by class, like a folder
    splits.train_x, splits.train_y = splits.train_x[order], splits.train_y[order]
    splits.calib_idx, splits._cache = torch.arange(256), {}
    _, first = splits.tensors("calib")
    _, sample = splits.sample("calib", 32)
    assert len(sample) == 32 and len(set(sample.tolist())) > len(set(first[:32].tolist()))
    assert torch.equal(splits.sample("calib", 32)[1], sample)  # seeded


@pytest.mark.slow
def test_rungs_screen_promote_the_front_and_fine_tune_the_finalists(store):
    cfg = SearchConfig(
        num_subnets=24,
        constraint=Constraint.parse("flops=50%"),
        screen_images=48,
        tune_top=2,
        tune_images=128,
    )
    run_id = run_search(store, RunConfig(model=TINY_MODEL, data=TINY_DATA, search=cfg))
    run, rows = store.run(run_id), store.subnets(run_id)
    assert run["status"] == "done" and rows["error"].isna().all()
    assert (
        set(rows["depth"]) <= {"screen", "val", "finetune"}
        and rows["screen_accuracy"].notna().all()
    )
    screen_only = rows[rows["depth"] == "screen"]
    assert (screen_only["accuracy"] == screen_only["screen_accuracy"]).all()
    deep = rows[rows["depth"] != "screen"]
    assert len(screen_only) and len(deep)  # the screen filtered some, promoted others
    assert (rows[rows["sampler"].str.startswith("peer:")]["depth"] != "screen").all()
    # promotion keeps the best: every subnet no cheaper one out-screened went to full validation
    front = pareto_front(rows, y="screen_accuracy")
    assert (front["depth"] != "screen").all()
    # the finalists: the best fully validated subnets under the budget, fine-tuned, picked from
    tuned = rows[rows["tuned_accuracy"].notna()]
    assert (tuned["depth"] == "finetune").all() and len(tuned) == 2
    under = deep[deep["flops"] <= run["budget"]]
    best_two = sorted(under["accuracy"], reverse=True)[:2]
    assert sorted(tuned["accuracy"], reverse=True) == best_two
    pick = best_pick(rows, run["budget"])
    assert pick["tuned_accuracy"] == tuned["tuned_accuracy"].max()
    assert np.isfinite(pick["tuned_accuracy"])
